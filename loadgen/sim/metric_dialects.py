"""The engine's state under each server's metric names, types and labels (`--metrics-dialect`).

Every dialect is fed the same events (engine steps, tokens, finished requests) and renders
only what that server really exposes: vLLM's current or older names, SGLang's (whose hit
rate, throughput and retractions are gauges over its last logging interval) or llama.cpp's
(no labels, no latency histograms, throughput gauges over the time since the last scrape).
docs/observability.md lists the names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from loadgen.sim.config import MetricsDialect
from loadgen.sim.engine import Engine, EngineSequence

__all__ = ["Increments", "Observes", "ServerMetrics", "TextRow", "server_metrics"]

# One sample a dialect renders itself (llama.cpp's): kind, name, help, value.
TextRow = tuple[str, str, str, float]

# vLLM's own bucket edges for request latencies (seconds).
_VLLM_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_VLLM_ITL_BUCKETS = (
    0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
# SGLang's defaults (its TokenizerMetricsCollector and SchedulerMetricsCollector).
_SGLANG_TTFT_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400,
)  # fmt: skip
_SGLANG_E2E_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600,
    1200, 1800, 2400,
)  # fmt: skip
_SGLANG_ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06,
    0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8,
)  # fmt: skip
_SGLANG_QUEUE_BUCKETS = (
    0.0, 0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 100,
    200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800, 2000, 2500, 3000,
)  # fmt: skip
# SGLang logs its scheduler stats every 40 decode batches, about a second on a GPU; the
# simulator publishes its interval gauges once a second of wall time.
SGLANG_LOG_INTERVAL_S = 1.0


class Increments(Protocol):
    """A counter's increment, as generation.py calls it."""

    def inc(self, amount: float = ...) -> None:
        """Add `amount` (default 1)."""


class Observes(Protocol):
    """A histogram's observation, as generation.py calls it."""

    def observe(self, amount: float) -> None:
        """Record one value."""


class _Discard:
    """A figure the server does not expose: fed like the others, shown nowhere."""

    def inc(self, amount: float = 1.0) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


class ServerMetrics:
    """One dialect: the engine calls the hooks, generation.py the three figures."""

    prompt_tokens: Increments
    generation_tokens: Increments
    e2e: Observes

    def __init__(self) -> None:
        self._seen_preemptions = 0
        self._seen_queries = 0
        self._seen_hits = 0

    def on_step(self, engine: Engine) -> None:
        """Refresh gauges and engine counters after an engine step (or before a scrape)."""
        preempted = engine.preemptions - self._seen_preemptions
        queried = engine.prefix_queries - self._seen_queries
        hit = engine.prefix_hits - self._seen_hits
        self._seen_preemptions = engine.preemptions
        self._seen_queries = engine.prefix_queries
        self._seen_hits = engine.prefix_hits
        self._step(engine, preempted, queried, hit)

    def _step(self, engine: Engine, preempted: int, queried: int, hit: int) -> None:
        raise NotImplementedError

    def on_token(self, seq: EngineSequence, now: float) -> None:
        """One token of `seq` was produced at loop time `now`."""

    def finished(self, reason: str) -> None:
        """A request ended with finish reason `reason`."""

    def text(self) -> bytes:
        """Exposition lines rendered outside the registry (none, except llama.cpp's)."""
        return b""

    def text_rows(self) -> list[TextRow]:
        """What text() renders, as rows (a fleet merges its replicas' rows by name)."""
        return []


@dataclass(frozen=True)
class _VllmNames:
    kv_usage: str
    prefix_queries: str
    prefix_hits: str
    itl: str


_VLLM = _VllmNames(
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:inter_token_latency_seconds",
)
# The names vLLM used before it renamed them (the v1 engine up to 0.9 or so).
_VLLM_V0 = _VllmNames(
    "vllm:gpu_cache_usage_perc",
    "vllm:gpu_prefix_cache_queries",
    "vllm:gpu_prefix_cache_hits",
    "vllm:time_per_output_token_seconds",
)


# vllm:cache_config_info's labels (vLLM writes every CacheConfig field; these are the ones a
# reader wants, num_gpu_blocks above all: the KV capacity `agentload calibrate` reads).
_CACHE_INFO = (
    "block_size",
    "cache_dtype",
    "enable_prefix_caching",
    "gpu_memory_utilization",
    "num_cpu_blocks",
    "num_gpu_blocks",
)


class _VllmMetrics(ServerMetrics):
    def __init__(
        self,
        names: _VllmNames,
        model_name: str,
        r: CollectorRegistry,
        extra: Mapping[str, str],
    ) -> None:
        super().__init__()
        # The cache config as labels of a gauge set to 1, without model_name (a fleet's
        # replica adds its engine and replica labels, as everywhere else).
        self._cache_info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            [*_CACHE_INFO, *extra],
            registry=r,
        )
        self._cache_info_extra = tuple(extra.values())
        self._cache_info_set = False
        # A fleet's replica adds engine="0", as vLLM labels its data-parallel engines.
        labels = ["model_name", *extra]
        values = (model_name, *extra.values())
        self._values = values
        self._running = Gauge(
            "vllm:num_requests_running", "Requests in the running batch.", labels, registry=r
        ).labels(*values)
        self._waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be scheduled.", labels, registry=r
        ).labels(*values)
        self._kv_usage = Gauge(
            names.kv_usage, "KV-cache usage, 1 means 100 percent.", labels, registry=r
        ).labels(*values)
        self._prefix_queries = Counter(
            names.prefix_queries,
            "Prompt tokens queried against the prefix cache.",
            labels,
            registry=r,
        ).labels(*values)
        self._prefix_hits = Counter(
            names.prefix_hits, "Prompt tokens found in the prefix cache.", labels, registry=r
        ).labels(*values)
        self._preemptions = Counter(
            "vllm:num_preemptions", "Cumulative preemptions.", labels, registry=r
        ).labels(*values)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens processed.", labels, registry=r
        ).labels(*values)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generation tokens processed.", labels, registry=r
        ).labels(*values)
        self._request_success = Counter(
            "vllm:request_success", "Finished requests.", [*labels, "finished_reason"], registry=r
        )
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=_VLLM_LATENCY_BUCKETS,
            registry=r,
        ).labels(*values)
        self._itl = Histogram(
            names.itl, "Inter-token latency.", labels, buckets=_VLLM_ITL_BUCKETS, registry=r
        ).labels(*values)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency.",
            labels,
            buckets=_VLLM_LATENCY_BUCKETS,
            registry=r,
        ).labels(*values)
        self._queue_time = Histogram(
            "vllm:request_queue_time_seconds",
            "Time spent waiting.",
            labels,
            buckets=_VLLM_LATENCY_BUCKETS,
            registry=r,
        ).labels(*values)

    def _step(self, engine: Engine, preempted: int, queried: int, hit: int) -> None:
        if not self._cache_info_set:  # the first step, or the first scrape, says it once
            self._cache_info_set = True
            cfg = engine.config
            cache = (str(cfg.block_size), "auto", "True", "0.9", "None", str(cfg.num_kv_blocks))
            self._cache_info.labels(*cache, *self._cache_info_extra).set(1)
        self._running.set(len(engine.running))
        self._waiting.set(len(engine.waiting))
        self._kv_usage.set(engine.kv.usage())
        self._preemptions.inc(preempted)
        self._prefix_queries.inc(queried)
        self._prefix_hits.inc(hit)

    def on_token(self, seq: EngineSequence, now: float) -> None:
        if seq.last_token_time < 0:
            self._ttft.observe(now - seq.arrival)
            self._queue_time.observe(max(0.0, seq.first_scheduled - seq.arrival))
        else:
            self._itl.observe(now - seq.last_token_time)

    def finished(self, reason: str) -> None:
        self._request_success.labels(*self._values, reason).inc()


class _SglangMetrics(ServerMetrics):
    def __init__(
        self,
        model_name: str,
        r: CollectorRegistry,
        clock: Callable[[], float],
        extra: Mapping[str, str],
    ) -> None:
        super().__init__()
        labels = ["model_name", *extra]
        values = (model_name, *extra.values())

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r).labels(*values)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(*values)

        self._running = gauge("sglang:num_running_reqs", "The number of running requests.")
        self._queued = gauge(
            "sglang:num_queue_reqs", "The number of requests in the waiting queue."
        )
        self._token_usage = gauge("sglang:token_usage", "The token usage.")
        self._cache_hit_rate = gauge("sglang:cache_hit_rate", "The prefix cache hit rate.")
        self._gen_throughput = gauge(
            "sglang:gen_throughput", "The generation throughput (token/s)."
        )
        self._retracted = gauge("sglang:num_retracted_reqs", "The number of retracted requests.")
        self.prompt_tokens = Counter(
            "sglang:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        ).labels(*values)
        self.generation_tokens = Counter(
            "sglang:generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=r,
        ).labels(*values)
        self._cached_tokens = Counter(
            "sglang:cached_tokens", "Number of cached prompt tokens.", labels, registry=r
        ).labels(*values)
        self._ttft = histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _SGLANG_TTFT_BUCKETS,
        )
        self._itl = histogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            _SGLANG_ITL_BUCKETS,
        )
        self.e2e = histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            _SGLANG_E2E_BUCKETS,
        )
        self._queue_time = histogram(
            "sglang:queue_time_seconds",
            "Histogram of queueing time in seconds.",
            _SGLANG_QUEUE_BUCKETS,
        )
        self._clock = clock
        self._window_start = clock()
        self._window_tokens = self._window_queries = self._window_hits = 0
        self._window_retracted = 0

    def _step(self, engine: Engine, preempted: int, queried: int, hit: int) -> None:
        self._running.set(len(engine.running))
        self._queued.set(len(engine.waiting))
        self._token_usage.set(engine.kv.usage())
        self._cached_tokens.inc(hit)
        self._window_retracted += preempted
        self._window_queries += queried
        self._window_hits += hit
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < SGLANG_LOG_INTERVAL_S:
            return
        # The interval gauges hold their last logged value until the next log, as SGLang's do.
        self._gen_throughput.set(self._window_tokens / elapsed)
        self._retracted.set(self._window_retracted)
        if self._window_queries:
            self._cache_hit_rate.set(self._window_hits / self._window_queries)
        self._window_start = now
        self._window_tokens = self._window_queries = self._window_hits = 0
        self._window_retracted = 0

    def on_token(self, seq: EngineSequence, now: float) -> None:
        self._window_tokens += 1
        if seq.last_token_time < 0:
            self._ttft.observe(now - seq.arrival)
            self._queue_time.observe(max(0.0, seq.first_scheduled - seq.arrival))
        else:
            self._itl.observe(now - seq.last_token_time)


class _Tally:
    """A running total that also keeps what was added since the last `take()`."""

    def __init__(self) -> None:
        self.total = 0.0
        self._since = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.total += amount
        self._since += amount

    def take(self) -> float:
        taken, self._since = self._since, 0.0
        return taken


class _LlamacppMetrics(ServerMetrics):
    """llama.cpp's /metrics as its server writes it: no labels, no histograms, no _created."""

    def __init__(self, extra: Mapping[str, str]) -> None:
        super().__init__()
        # No labels on a single server, as llama-server writes them; a fleet's replica adds its
        # engine and replica labels (llama-server has no data-parallel label of its own).
        self._labels = "{" + ",".join(f'{k}="{v}"' for k, v in extra.items()) + "}" if extra else ""
        self.prompt_tokens = self._prompt_tokens = _Tally()
        self.generation_tokens = self._predicted = _Tally()
        self.e2e = _Discard()
        self._prompt_s = _Tally()
        self._predicted_s = _Tally()
        self._decodes = 0
        self._busy_slots = 0
        self._processing = self._deferred = 0
        self._kv_usage = 0.0
        self._kv_tokens = 0

    def _step(self, engine: Engine, preempted: int, queried: int, hit: int) -> None:
        if engine.steps > self._decodes:
            self._busy_slots += len(engine.running) * (engine.steps - self._decodes)
            self._decodes = engine.steps
        self._processing = len(engine.running)
        self._deferred = len(engine.waiting)
        self._kv_usage = engine.kv.usage()
        self._kv_tokens = engine.kv.used_blocks * engine.kv.block_size

    def on_token(self, seq: EngineSequence, now: float) -> None:
        if seq.last_token_time < 0:
            self._prompt_s.inc(max(0.0, now - seq.first_scheduled))
        else:
            self._predicted_s.inc(now - seq.last_token_time)

    def text(self) -> bytes:
        lines = []
        for kind, name, doc, value in self.text_rows():
            lines += [
                f"# HELP llamacpp:{name} {doc}",
                f"# TYPE llamacpp:{name} {kind}",
                f"llamacpp:{name}{self._labels} {float(value)!r}",
            ]
        return ("\n".join(lines) + "\n").encode()

    def text_rows(self) -> list[TextRow]:
        # Throughput gauges cover the time since the previous scrape: llama.cpp resets that
        # bucket on every /metrics request.
        prompt, prompt_s = self._prompt_tokens.take(), self._prompt_s.take()
        predicted, predicted_s = self._predicted.take(), self._predicted_s.take()
        rows = (
            ("counter", "prompt_tokens_total", "Number of prompt tokens processed.",
             self._prompt_tokens.total),
            ("counter", "prompt_seconds_total", "Prompt process time", self._prompt_s.total),
            ("counter", "tokens_predicted_total", "Number of generation tokens processed.",
             self._predicted.total),
            ("counter", "tokens_predicted_seconds_total", "Predict process time",
             self._predicted_s.total),
            ("counter", "n_decode_total", "Total number of llama_decode() calls",
             self._decodes),
            ("counter", "n_busy_slots_per_decode",
             "Average number of busy slots per llama_decode() call",
             self._busy_slots / max(self._decodes, 1)),
            ("gauge", "prompt_tokens_seconds", "Average prompt throughput in tokens/s.",
             prompt / prompt_s if prompt and prompt_s else 0.0),
            ("gauge", "predicted_tokens_seconds", "Average generation throughput in tokens/s.",
             predicted / predicted_s if predicted and predicted_s else 0.0),
            ("gauge", "kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage.",
             self._kv_usage),
            ("gauge", "kv_cache_tokens", "KV-cache tokens.", self._kv_tokens),
            ("gauge", "requests_processing", "Number of requests processing.",
             self._processing),
            ("gauge", "requests_deferred", "Number of requests deferred.", self._deferred),
        )  # fmt: skip
        return [(kind, name, doc, float(value)) for kind, name, doc, value in rows]


def server_metrics(
    dialect: MetricsDialect,
    model_name: str,
    registry: CollectorRegistry,
    clock: Callable[[], float] = time.monotonic,
    labels: Mapping[str, str] | None = None,
) -> ServerMetrics:
    """The metrics of `dialect`, registered in `registry` (llama.cpp's render themselves);
    `labels` (a fleet replica's engine and replica) are added to every sample."""
    extra = dict(labels or {})
    if dialect == "vllm":
        return _VllmMetrics(_VLLM, model_name, registry, extra)
    if dialect == "vllm-v0":
        return _VllmMetrics(_VLLM_V0, model_name, registry, extra)
    if dialect == "sglang":
        return _SglangMetrics(model_name, registry, clock, extra)
    return _LlamacppMetrics(extra)
