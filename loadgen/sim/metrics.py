"""The simulator's /metrics: one server's metric names (--metrics-dialect) and injected faults."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from loadgen.sim.config import MetricsDialect
from loadgen.sim.engine import Engine, EngineSequence
from loadgen.sim.metric_dialects import Increments, Observes, TextRow, server_metrics

__all__ = ["FAULT_KINDS", "SimMetrics"]

FAULT_KINDS = (
    "http_5xx",
    "rate_limit",
    "stream_cut",
    "malformed_tool_args",
    "latency_spike",
    "store_evict",
    "replica_crash",
)


class SimMetrics:
    """One registry per simulator (or per replica of a fleet), so several can live in one
    process (tests do). `labels` (a fleet replica's engine and replica) go on every sample."""

    def __init__(
        self,
        model_name: str,
        dialect: MetricsDialect = "vllm",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.dialect = dialect
        extra = dict(labels or {})
        self._server = server_metrics(dialect, model_name, self.registry, labels=extra)
        # Called after every engine step and for every token: bound straight to the dialect.
        self.on_step: Callable[[Engine], None] = self._server.on_step
        self.on_token: Callable[[EngineSequence, float], None] = self._server.on_token
        # The simulator's own counters, the same under every dialect.
        faults = Counter(
            "agentload_sim_faults_injected",
            "Faults the simulator injected, by kind.",
            ["fault", *extra],
            registry=self.registry,
        )
        self._faults = {kind: faults.labels(kind, *extra.values()) for kind in FAULT_KINDS}
        disconnects = Counter(
            "agentload_sim_client_disconnects",
            "Streams whose client went away.",
            [*extra],
            registry=self.registry,
        )
        self.disconnects: Increments = disconnects.labels(*extra.values()) if extra else disconnects
        # vLLM's dialect has no reasoning counter: a reasoning token is a generation token
        # there. This one counts the thinking alone, of requests that ended, by how: those
        # that finished are exactly what clients saw whole, so a run's own reasoning total
        # can be checked against them (a run's end aborts what is in flight, unrecorded).
        reasoning = Counter(
            "agentload_sim_reasoning_tokens",
            "Reasoning tokens generated, of requests that ended: finished, or aborted (the "
            "client left, or a fault cut the stream).",
            [*extra, "outcome"],
            registry=self.registry,
        )
        self.reasoning_tokens: Increments = reasoning.labels(*extra.values(), "finished")
        self.reasoning_tokens_aborted: Increments = reasoning.labels(*extra.values(), "aborted")
        # What clients count as server_state_lost, counted by the server itself: a test (or a
        # gateway's user) checks a run's losses against it, one server or a fleet's replica.
        lookups = Counter(
            "agentload_sim_response_lookups",
            "previous_response_id lookups on the server (a fleet: the replica) serving them: "
            "found or not_found (not_found is what clients count as server_state_lost).",
            [*extra, "result"],
            registry=self.registry,
        )
        self.lookups_found: Increments = lookups.labels(*extra.values(), "found")
        self.lookups_not_found: Increments = lookups.labels(*extra.values(), "not_found")
        # Whether the engine kept its modelled pace (a faster-than-real-time run's check):
        # wall seconds of steps at the modelled speed, and those it fell behind and lost.
        clock = Gauge(
            "agentload_sim_engine_clock_seconds",
            "Wall seconds the engine stepped at the modelled speed (busy), and those it fell "
            "more than 50 ms behind that pace and gave up on (lost); lost / busy is how much "
            "slower than modelled it ran (--speedup beyond what this machine keeps up with).",
            [*extra, "kind"],
            registry=self.registry,
        )
        self._clock_busy = clock.labels(*extra.values(), "busy")
        self._clock_lost = clock.labels(*extra.values(), "lost")

    @property
    def prompt_tokens(self) -> Increments:
        """Prompt tokens of requests that ended."""
        return self._server.prompt_tokens

    @property
    def generation_tokens(self) -> Increments:
        """Generated tokens of requests that ended."""
        return self._server.generation_tokens

    @property
    def e2e(self) -> Observes:
        """End-to-end time of requests that ran to their end."""
        return self._server.e2e

    def scraped(self, engine: Engine) -> None:
        """Bring the gauges up to date with `engine` before /metrics is rendered."""
        self.on_step(engine)
        self._clock_busy.set(engine.busy_s)
        self._clock_lost.set(engine.lost_s)

    def fault(self, kind: str) -> None:
        """Count one injected fault of `kind` (one of FAULT_KINDS)."""
        self._faults[kind].inc()

    def finished(self, reason: str) -> None:
        """Count a finished request by finish reason."""
        self._server.finished(reason)

    def text_rows(self) -> list[TextRow]:
        """The samples the dialect renders itself (llama.cpp's), for a fleet to merge."""
        return self._server.text_rows()

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return self._server.text() + generate_latest(self.registry)
