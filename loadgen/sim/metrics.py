"""The simulator's /metrics: vLLM's current metric names, plus counters of injected faults."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from loadgen.sim.engine import Engine, EngineSequence

__all__ = ["FAULT_KINDS", "SimMetrics"]

FAULT_KINDS = (
    "http_5xx",
    "rate_limit",
    "stream_cut",
    "malformed_tool_args",
    "latency_spike",
    "store_evict",
)

# vLLM's own bucket edges for request latencies (seconds).
_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip


class SimMetrics:
    """One registry per simulator, so several can live in one process (tests do)."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ["model_name"]
        self._running = Gauge(
            "vllm:num_requests_running", "Requests in the running batch.", labels, registry=r
        ).labels(model_name)
        self._waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be scheduled.", labels, registry=r
        ).labels(model_name)
        self._kv_usage = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage, 1 means 100 percent.", labels, registry=r
        ).labels(model_name)
        self._prefix_queries = Counter(
            "vllm:prefix_cache_queries",
            "Prompt tokens queried against the prefix cache.",
            labels,
            registry=r,
        ).labels(model_name)
        self._prefix_hits = Counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.", labels, registry=r
        ).labels(model_name)
        self._preemptions = Counter(
            "vllm:num_preemptions", "Cumulative preemptions.", labels, registry=r
        ).labels(model_name)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens processed.", labels, registry=r
        ).labels(model_name)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generation tokens processed.", labels, registry=r
        ).labels(model_name)
        self.request_success = Counter(
            "vllm:request_success", "Finished requests.", [*labels, "finished_reason"], registry=r
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Inter-token latency.",
            labels,
            buckets=_ITL_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.queue_time = Histogram(
            "vllm:request_queue_time_seconds",
            "Time spent waiting.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        faults = Counter(
            "agentload_sim_faults_injected",
            "Faults the simulator injected, by kind.",
            ["fault"],
            registry=r,
        )
        self._faults = {kind: faults.labels(kind) for kind in FAULT_KINDS}
        self.disconnects = Counter(
            "agentload_sim_client_disconnects", "Streams whose client went away.", registry=r
        )
        self._model_name = model_name
        self._seen_preemptions = 0
        self._seen_queries = 0
        self._seen_hits = 0

    def fault(self, kind: str) -> None:
        """Count one injected fault of `kind` (one of FAULT_KINDS)."""
        self._faults[kind].inc()

    def finished(self, reason: str) -> None:
        """Count a finished request by finish reason."""
        self.request_success.labels(self._model_name, reason).inc()

    def on_step(self, engine: Engine) -> None:
        """Refresh gauges and engine counters after an engine step."""
        self._running.set(len(engine.running))
        self._waiting.set(len(engine.waiting))
        self._kv_usage.set(engine.kv.usage())
        self._preemptions.inc(engine.preemptions - self._seen_preemptions)
        self._seen_preemptions = engine.preemptions
        self._prefix_queries.inc(engine.prefix_queries - self._seen_queries)
        self._seen_queries = engine.prefix_queries
        self._prefix_hits.inc(engine.prefix_hits - self._seen_hits)
        self._seen_hits = engine.prefix_hits

    def on_token(self, seq: EngineSequence, now: float) -> None:
        """Observe TTFT or one inter-token gap for `seq`."""
        if seq.last_token_time < 0:
            self.ttft.observe(now - seq.arrival)
            self.queue_time.observe(max(0.0, seq.first_scheduled - seq.arrival))
        else:
            self.itl.observe(now - seq.last_token_time)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
