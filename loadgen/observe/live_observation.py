"""Live observation of one process's run, for any driver: metrics fed, the target sampled."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.sink import MetricsSink
from loadgen.observe.target_metrics import SocketFactory, TargetMetricsSampler

__all__ = ["LiveObservation", "ObservationSettings"]


@dataclass(frozen=True)
class ObservationSettings:
    """What to observe live; both parts are optional."""

    metrics: RunMetrics | None = None  # serve metrics.registry (MetricsServer) to be scraped
    target_metrics_url: str | None = None  # the target's /metrics, into summary["server"]
    target_metrics_interval_s: float = 2.0


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


# `start()` before the first session, `stop()` after the last; `server_report()` then gives
# the summary's "server" section.
class LiveObservation:
    """Live metrics and target sampling for the length of one process's load."""

    def __init__(self, settings: ObservationSettings) -> None:
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._sampler: TargetMetricsSampler | None = None

    async def start(
        self,
        *,
        profile: str,
        slos: Mapping[str, float],
        target_url: str,
        model: str,
        users: Callable[[], int],
        arrival_lags: Sequence[float] = (),
        target_session: aiohttp.ClientSession | None = None,
        socket_factory: SocketFactory | None = None,
    ) -> MetricsSink | None:
        """Begin sampling; returns the sink the run must send its records to (None: no metrics)."""
        # `target_session` (the run's, with its API key) is lent only to a metrics URL on the
        # target's own origin; elsewhere the sampler opens its own, with `socket_factory`
        # where the loop needs native sockets (under gevent).
        try:
            return await self._start(
                profile, slos, target_url, model, users, arrival_lags, target_session,
                socket_factory,
            )  # fmt: skip
        except BaseException:
            await self._stack.aclose()  # whatever had started stops with the failed start
            raise

    async def _start(
        self,
        profile: str,
        slos: Mapping[str, float],
        target_url: str,
        model: str,
        users: Callable[[], int],
        arrival_lags: Sequence[float],
        target_session: aiohttp.ClientSession | None,
        socket_factory: SocketFactory | None,
    ) -> MetricsSink | None:
        s = self.settings
        sink = None
        if s.metrics is not None:
            s.metrics.set_target(profile, target_url, model)
            sink = s.metrics.sink(profile, slos)
            await self._stack.enter_async_context(s.metrics.sampling(profile, users, arrival_lags))
        if s.target_metrics_url is not None:
            same_origin = _origin(s.target_metrics_url) == _origin(target_url)
            self._sampler = TargetMetricsSampler(
                s.target_metrics_url,
                session=target_session if same_origin else None,
                interval_s=s.target_metrics_interval_s,
                socket_factory=socket_factory,
            )
            await self._stack.enter_async_context(self._sampler)
        return sink

    async def stop(self) -> None:
        """Take the final samples and stop; what was measured stays readable."""
        await self._stack.aclose()

    def server_report(self) -> dict[str, Any] | None:
        """The summary's "server" section, or None when the target was not sampled."""
        return None if self._sampler is None else self._sampler.report()
