"""The /metrics endpoint of a live run, served from the run's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from types import TracebackType

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.registry import Collector

from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.text import IncrementalExposition

__all__ = ["MetricsServer"]

# The classic text format: every Prometheus 2.x understands it.
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# Scrapes are served on the run's loop, between records, so a scrape always sees whole
# records; `wait_for_scrape()` lets a run end only after a scraper read its final values.
class MetricsServer:
    """Serves metrics at http://HOST:PORT/metrics; port 0 picks a free port (see `.port`).

    Given a RunMetrics, scrapes re-render only the series that changed (cheap on the run's
    loop); given any other collector, they run prometheus_client's generate_latest().
    """

    def __init__(
        self, registry: Collector | RunMetrics, *, host: str = "0.0.0.0", port: int = 0
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port!r}")
        if isinstance(registry, RunMetrics):
            self._render: Callable[[], bytes] = IncrementalExposition(registry).render
        else:
            self._render = functools.partial(generate_latest, registry)
        self.host = host
        self._port = port
        self.scrapes = 0
        self._scraped = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port actually bound (the requested one, or the free one port 0 found)."""
        return self._port

    @property
    def url(self) -> str:
        """Where to scrape, with a loopback host when bound to every interface."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self._port}/metrics"

    async def start(self) -> None:
        """Bind and serve; OSError when the port is taken."""
        if self._runner is not None:
            raise RuntimeError("MetricsServer is already started")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for_scrape(self, timeout_s: float) -> bool:
        """Wait for a scrape that starts after this call; False when none came in time."""
        seen = self.scrapes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.scrapes == seen:
                    await self._scraped.wait()
        return self.scrapes > seen

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self._render()
        self.scrapes += 1
        # A fresh event per scrape: every waiter wakes, later waiters wait for the next one.
        self._scraped.set()
        self._scraped = asyncio.Event()
        return web.Response(body=body, headers={"Content-Type": _CONTENT_TYPE})
