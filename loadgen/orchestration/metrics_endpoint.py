"""The run's own /metrics (--prometheus-port) and the target's /metrics it samples."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TextIO

from loadgen.errors import UsageError
from loadgen.observe.live_observation import ObservationSettings
from loadgen.observe.prometheus.merge import MergedMetrics
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.server import MetricsServer
from loadgen.transport import TargetConfig

if TYPE_CHECKING:  # the bridge imports gevent, which a single-process ceiling never loads
    from loadgen.orchestration.bridge import LoopBridge

__all__ = ["MetricsSettings", "close_metrics", "final_scrape", "live_metrics", "serve_metrics"]

# How long a run that was being scraped waits for the scrape that reads its final values:
# longer than Prometheus's default 15 s interval.
FINAL_SCRAPE_WAIT_S = 30.0


@dataclass(frozen=True)
class MetricsSettings:
    """Where live metrics are served, and which target /metrics is sampled and how often."""

    prometheus_port: int | None = None  # None: not served (0: a free port)
    web: bool = False  # the web UI serves /metrics too
    target_metrics_url: str | None = None
    scrape_target: bool = False  # sample TARGET_ROOT/metrics when no URL is given
    target_metrics_interval_s: float = 2.0

    def target_url(self, target: TargetConfig) -> str | None:
        """The target's /metrics to sample, or None."""
        if self.target_metrics_url is not None:
            return self.target_metrics_url
        return f"{target.root_url}/metrics" if self.scrape_target else None


def live_metrics(
    settings: MetricsSettings,
    target: TargetConfig,
    mode: Literal["local", "master", "worker"],
    bridge: LoopBridge,
) -> tuple[ObservationSettings, MetricsServer | None, MergedMetrics | None]:
    """What to observe live, the started /metrics server, and (master) the workers' merge."""
    served = settings.prometheus_port is not None or settings.web
    merged = MergedMetrics() if served and mode == "master" else None
    metrics = RunMetrics() if served and mode != "master" else None
    source = merged if merged is not None else metrics
    server = None
    if settings.prometheus_port is not None and source is not None:
        serving = serve_metrics(source, settings.prometheus_port, "run")
        server = bridge.run(serving, timeout=10)
    observe = ObservationSettings(
        metrics=metrics,
        target_metrics_url=settings.target_url(target),
        target_metrics_interval_s=settings.target_metrics_interval_s,
    )
    return observe, server, merged


async def serve_metrics(
    source: RunMetrics | MergedMetrics, port: int, command: str
) -> MetricsServer:
    """Serve `source` on PORT and say where; a port in use is a usage error."""
    server = MetricsServer(source, port=port)
    try:
        await server.start()
    except OSError as exc:
        raise UsageError(
            f"--prometheus-port {port}: {exc.strerror or exc}; "
            "pick another port, or 0 for a free one"
        ) from exc
    print(f"agentload {command}: metrics on http://{server.host}:{server.port}/metrics",
          file=sys.stderr, flush=True)  # fmt: skip
    return server


async def close_metrics(server: MetricsServer, progress: TextIO | None, command: str) -> None:
    """Keep serving until a scraper that was reading the run has read its final values."""
    if server.scrapes:
        if progress is not None:
            print(f"agentload {command}: waiting up to {FINAL_SCRAPE_WAIT_S:.0f}s for "
                  "Prometheus to scrape the final values", file=progress, flush=True)  # fmt: skip
        await server.wait_for_scrape(FINAL_SCRAPE_WAIT_S)
    await server.stop()


def final_scrape(server: MetricsServer, bridge: LoopBridge, progress: TextIO | None) -> None:
    """close_metrics() for `agentload run`, on the bridge's loop."""
    bridge.run(close_metrics(server, progress, "run"), timeout=FINAL_SCRAPE_WAIT_S + 15)
