"""Every agentload_* Prometheus metric family, defined once in one registry (see
docs/observability.md). Below the sink and the generator sampler that feed them, and below
RunMetrics (metrics.py), which hands those out."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from loadgen.observe.prometheus.histogram import HistogramFamily

__all__ = [
    "CONTEXT_TOKEN_BUCKETS",
    "E2E_BUCKETS",
    "ITL_BUCKETS",
    "LAG_BUCKETS",
    "SESSION_BUCKETS",
    "STEP_BUCKETS",
    "TOOL_BUCKETS",
    "TTFT_BUCKETS",
    "MetricFamilies",
]

# Bucket bounds (seconds unless noted), dense where SLOs usually sit, reaching minutes for
# long prefills behind a queue: a quantile is interpolated within one bucket, so its error
# is at most that bucket's width.
TTFT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
    5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
    45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
)  # fmt: skip
SESSION_BUCKETS = (
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
    3600.0, 7200.0, 14400.0,
)  # fmt: skip
STEP_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 64, 80, 100, 150, 200, 300)
CONTEXT_TOKEN_BUCKETS = (
    256, 512, 1024, 2048, 4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 98304,
    131072, 196608, 262144, 524288, 1048576,
)  # fmt: skip
TOOL_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
)  # fmt: skip
LAG_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_AGENT = ("profile", "agent")
_STEP = ("profile", "agent", "step_kind")
_REPLICA = ("profile", "replica")


# One instance may outlive several runs: every series carries the run's `profile`.
class MetricFamilies:
    """The metric families of one process, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "agentload_requests",
            "LLM requests sent, by outcome (ok: a usable reply; failed: none).",
            [*_STEP, "outcome"],
            registry=r,
        )
        self.request_errors = Counter(
            "agentload_request_errors",
            "Failed requests, by the failure kind that failed them.",
            [*_AGENT, "kind"],
            registry=r,
        )
        self.ttft = self._histogram(
            "agentload_ttft_seconds", "Time to first token of successful requests.", _STEP,
            TTFT_BUCKETS,
        )  # fmt: skip
        self.ttfat = self._histogram(
            "agentload_ttfat_seconds",
            "Time to first answer token (content or tool call) of successful requests.",
            _STEP,
            TTFT_BUCKETS,
        )
        self.itl = self._histogram(
            "agentload_itl_seconds", "Gaps between token events of successful requests.", _STEP,
            ITL_BUCKETS,
        )  # fmt: skip
        self.request_duration = self._histogram(
            "agentload_request_duration_seconds",
            "Request sent to last byte, successful requests.",
            _STEP,
            E2E_BUCKETS,
        )
        self.prompt_tokens = Counter(
            "agentload_prompt_tokens", "Server-reported prompt tokens.", _STEP, registry=r
        )
        self.completion_tokens = Counter(
            "agentload_completion_tokens", "Server-reported completion tokens.", _STEP, registry=r
        )
        self.cached_tokens = Counter(
            "agentload_cached_tokens", "Server-reported cached prompt tokens.", _STEP, registry=r
        )
        self.reasoning_tokens = Counter(
            "agentload_reasoning_tokens",
            "Reasoning tokens, part of the completion tokens (the server's count, else the "
            "reasoning deltas streamed).",
            _STEP,
            registry=r,
        )
        self.context_tokens = self._histogram(
            "agentload_context_tokens",
            "The agent's estimate of the context it sent, per step (tokens).",
            _STEP,
            CONTEXT_TOKEN_BUCKETS,
        )
        self.sessions_active = Gauge(
            "agentload_sessions_active", "Sessions in progress.", _AGENT, registry=r
        )
        self.sessions = Counter(
            "agentload_sessions",
            "Ended sessions by outcome (completed, failed, aborted).",
            [*_AGENT, "outcome"],
            registry=r,
        )
        self.session_duration = self._histogram(
            "agentload_session_duration_seconds",
            "Session duration, by outcome.",
            [*_AGENT, "outcome"],
            SESSION_BUCKETS,
        )
        self.session_steps = self._histogram(
            "agentload_session_steps",
            "LLM requests per session (sub-agents' included), by outcome.",
            [*_AGENT, "outcome"],
            STEP_BUCKETS,
        )
        self.goodput_sessions = Counter(
            "agentload_goodput_sessions",
            "Completed sessions within the profile's SLOs at every step.",
            _AGENT,
            registry=r,
        )
        self.state_failures = Counter(
            "agentload_state_failures",
            "Failures detected in steps, by canonical kind.",
            [*_AGENT, "kind"],
            registry=r,
        )
        self.recoveries = Counter(
            "agentload_recoveries",
            "Failures absorbed by the profile's reactions, by kind.",
            [*_AGENT, "kind"],
            registry=r,
        )
        self.tool_calls = Counter(
            "agentload_tool_calls",
            "Simulated tool calls, by tool and outcome (ok, error).",
            [*_AGENT, "tool", "outcome"],
            registry=r,
        )
        self.tool_latency = self._histogram(
            "agentload_tool_latency_seconds",
            "Simulated tool latency (after time_scale).",
            [*_AGENT, "tool"],
            TOOL_BUCKETS,
        )
        self.schedule_lag = self._histogram(
            "agentload_generator_schedule_lag_seconds",
            "How late steps and session arrivals started against plan.",
            ["profile"],
            LAG_BUCKETS,
        )
        self.loop_lag = self._histogram(
            "agentload_generator_event_loop_lag_seconds",
            "How late the generator's event loop ran a timer (sampled once a second).",
            ["profile"],
            LAG_BUCKETS,
        )
        self.cpu_ratio = Gauge(
            "agentload_generator_cpu_ratio",
            "Generator process CPU seconds per wall second (1 = one core).",
            ["profile"],
            registry=r,
        )
        self.users = Gauge(
            "agentload_users",
            "Agents running (closed loop) or sessions in flight (open loop).",
            ["profile"],
            registry=r,
        )
        # A fleet's replicas (several --target, or a response header naming them): families
        # of their own, so that the agent and step-kind series are not multiplied by them.
        self.replica_requests = Counter(
            "agentload_replica_requests",
            "LLM requests by the replica that served them (or was sent them), by outcome.",
            [*_REPLICA, "outcome"],
            registry=r,
        )
        self.replica_ttft = self._histogram(
            "agentload_replica_ttft_seconds",
            "Time to first token of successful requests, by replica.",
            _REPLICA,
            TTFT_BUCKETS,
        )
        self.replica_request_duration = self._histogram(
            "agentload_replica_request_duration_seconds",
            "Request sent to last byte, successful requests, by replica.",
            _REPLICA,
            E2E_BUCKETS,
        )
        self.replica_prompt_tokens = Counter(
            "agentload_replica_prompt_tokens",
            "Server-reported prompt tokens, by replica.",
            _REPLICA,
            registry=r,
        )
        self.replica_completion_tokens = Counter(
            "agentload_replica_completion_tokens",
            "Server-reported completion tokens, by replica.",
            _REPLICA,
            registry=r,
        )
        self.replica_cached_tokens = Counter(
            "agentload_replica_cached_tokens",
            "Server-reported cached prompt tokens, by replica.",
            _REPLICA,
            registry=r,
        )
        self.replica_state_failures = Counter(
            "agentload_replica_state_failures",
            "Failures detected in steps, by replica and canonical kind.",
            [*_REPLICA, "kind"],
            registry=r,
        )
        self.target_info = Info(
            "agentload_target", "The endpoint under test.", ["profile"], registry=r
        )
        # Every family above, in definition order, for readers that skip the registry's
        # full collect() (SampleTracker reads only histogram children that changed).
        self.collectors: list[Collector] = [
            v for v in vars(self).values() if isinstance(v, (MetricWrapperBase, HistogramFamily))
        ]

    def _histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> HistogramFamily:
        family = HistogramFamily(name, doc, labels, buckets)
        self.registry.register(family)
        return family

    def set_target(self, profile: str, url: str, model: str) -> None:
        """Publish agentload_target_info{profile, url, model}."""
        self.target_info.labels(profile).info({"url": url, "model": model})
