"""RunMetrics: the process's agentload_* metric families (families.py), with the sink that
feeds them from the runtime's records and the generator's health sampler."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from loadgen.observe.goodput import GoodputRule
from loadgen.observe.prometheus.families import (
    CONTEXT_TOKEN_BUCKETS,
    E2E_BUCKETS,
    ITL_BUCKETS,
    LAG_BUCKETS,
    SESSION_BUCKETS,
    STEP_BUCKETS,
    TOOL_BUCKETS,
    TTFT_BUCKETS,
    MetricFamilies,
)
from loadgen.observe.prometheus.generator import GeneratorSampler
from loadgen.observe.prometheus.sink import MetricsSink

__all__ = [
    "CONTEXT_TOKEN_BUCKETS",
    "DEFAULT_PROMETHEUS_PORT",
    "E2E_BUCKETS",
    "ITL_BUCKETS",
    "LAG_BUCKETS",
    "SESSION_BUCKETS",
    "STEP_BUCKETS",
    "TOOL_BUCKETS",
    "TTFT_BUCKETS",
    "RunMetrics",
]

# The port docs and docker-compose use for an agentload exporter (Locust's master included).
DEFAULT_PROMETHEUS_PORT = 9646


class RunMetrics(MetricFamilies):
    """The metric families of one process; `sink()` feeds them from the runtime's records."""

    def sink(self, profile: str, slos: Mapping[str, float] | None = None) -> MetricsSink:
        """A RecordSink that counts a run of `profile` into these metrics."""
        return MetricsSink(self, profile, GoodputRule(slos or {}))

    @contextlib.asynccontextmanager
    async def sampling(
        self,
        profile: str,
        users: Callable[[], int],
        arrival_lags: Sequence[float] = (),
        interval_s: float = 1.0,
    ) -> AsyncIterator[GeneratorSampler]:
        """Sample the generator's health and `users()` every `interval_s` while inside."""
        sampler = GeneratorSampler(self, profile, users, arrival_lags, interval_s)
        async with sampler:
            yield sampler
