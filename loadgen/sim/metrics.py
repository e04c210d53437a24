"""The simulator's /metrics: one server's metric names (--metrics-dialect) and injected faults."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, generate_latest

from loadgen.sim.config import MetricsDialect
from loadgen.sim.engine import Engine, EngineSequence
from loadgen.sim.metric_dialects import Increments, Observes, server_metrics

__all__ = ["FAULT_KINDS", "SimMetrics"]

FAULT_KINDS = (
    "http_5xx",
    "rate_limit",
    "stream_cut",
    "malformed_tool_args",
    "latency_spike",
    "store_evict",
)


class SimMetrics:
    """One registry per simulator, so several can live in one process (tests do)."""

    def __init__(self, model_name: str, dialect: MetricsDialect = "vllm") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.dialect = dialect
        self._server = server_metrics(dialect, model_name, self.registry)
        # Called after every engine step and for every token: bound straight to the dialect.
        self.on_step: Callable[[Engine], None] = self._server.on_step
        self.on_token: Callable[[EngineSequence, float], None] = self._server.on_token
        # The simulator's own counters, the same under every dialect.
        faults = Counter(
            "agentload_sim_faults_injected",
            "Faults the simulator injected, by kind.",
            ["fault"],
            registry=self.registry,
        )
        self._faults = {kind: faults.labels(kind) for kind in FAULT_KINDS}
        self.disconnects = Counter(
            "agentload_sim_client_disconnects",
            "Streams whose client went away.",
            registry=self.registry,
        )

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

    def fault(self, kind: str) -> None:
        """Count one injected fault of `kind` (one of FAULT_KINDS)."""
        self._faults[kind].inc()

    def finished(self, reason: str) -> None:
        """Count a finished request by finish reason."""
        self._server.finished(reason)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return self._server.text() + generate_latest(self.registry)
