"""One load level: settle during a warm-up, then measure a steady window on its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from loadgen.ceiling.search import LevelResult
from loadgen.ceiling.slos import WindowSink
from loadgen.observe import GeneratorHealth, RunStats
from loadgen.observe.target_metrics import TargetMetricsSampler
from loadgen.report.gates import Gate, evaluate_gates
from loadgen.report.metrics import read_metric
from loadgen.runtime.engine import Engine
from loadgen.runtime.load import ClosedLoop, OpenLoop

__all__ = ["ERROR_STORM_RATE", "LevelRunner", "Windows"]

# Past half the requests failing, the target is refusing load; more levels only hammer it.
ERROR_STORM_RATE = 0.5


@dataclass(frozen=True)
class Windows:
    """How long each level settles and is measured, and how often the target is scraped."""

    warmup_s: float = 30.0
    window_s: float = 60.0
    metrics_url: str | None = None
    scrape_interval_s: float = 2.0


class LevelRunner:
    """Holds the engine and one driver across levels; `measure(load)` runs one level."""

    def __init__(self, engine: Engine, sink: WindowSink, slos: list[Gate], windows: Windows):
        self.engine = engine
        self.sink = sink
        self.slos = slos
        self.windows = windows
        profile = engine.profile
        self.closed = profile.arrival.mode == "closed"
        assert engine.make_agent is not None, "Engine.start() first"
        # The closed-loop pool lives across levels: agents keep their state and a level
        # change only adds or retires agents, as a user raising load on a live system would.
        self.pool = ClosedLoop(
            profile.arrival, [], engine.make_agent, engine.run_session,
            profile.time_scale, profile.seed,
        )  # fmt: skip
        self.pool.start_jitter_s = min(1.0, windows.warmup_s / 2)
        self._open: asyncio.Task[None] | None = None

    async def measure(self, load: float) -> LevelResult:
        """Run `load` for warm-up + window; the verdict is from the window alone."""
        w = self.windows
        level_start = time.time()  # wall clock, as sessions record their start
        if self.closed:
            # Retiring agents leave at once: one finishing a long session would keep the
            # higher load running into the next level's steady window.
            self.pool.resize(round(load), at_once=True)
        else:
            await self._stop_open()
            self._open = asyncio.create_task(self._open_loop(load, w.warmup_s + w.window_s + 60))
        await asyncio.sleep(w.warmup_s)
        self.sink.begin(level_start)
        assert self.sink.stats is not None
        health = GeneratorHealth(schedule_lag=self.sink.stats.schedule_lag_s)
        sampler = None
        if w.metrics_url is not None:
            sampler = TargetMetricsSampler(
                w.metrics_url, session=self.engine.transport.session, interval_s=w.scrape_interval_s
            )
        t0 = time.perf_counter()
        async with health, sampler if sampler is not None else contextlib.nullcontext():
            await asyncio.sleep(w.window_s)
        duration = time.perf_counter() - t0
        stats = self.sink.end()
        server = sampler.report() if sampler is not None else None
        return self._judge(load, stats, duration, health.report(), server)

    async def stop(self) -> None:
        """Cancel every agent and session still running."""
        await self.pool.stop()
        await self._stop_open()

    async def _open_loop(self, rate: float, duration: float) -> None:
        arrival = self.engine.profile.arrival.model_copy(update={"rate": rate})
        engine = self.engine
        assert engine.make_agent is not None
        driver = OpenLoop(arrival, [], engine.make_agent, engine.run_session, engine.profile.seed)
        await driver.run(duration)

    async def _stop_open(self) -> None:
        task, self._open = self._open, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _judge(
        self,
        load: float,
        stats: RunStats,
        duration: float,
        generator: dict[str, Any],
        server: dict[str, Any] | None,
    ) -> LevelResult:
        summary = stats.summary(
            target=self.engine.target_label(),
            profile=self.engine.profile.name,
            duration_s=duration,
            generator=generator,
        )
        judged = self.sink.judged_sessions
        goodput = self.sink.goodput_sessions / judged if judged else None
        summary["goodput"] = {"ratio": goodput, "sessions": self.sink.goodput_sessions}
        results = evaluate_gates(summary, self.slos)
        figures = _figures(load, summary, stats, duration, generator, server)
        level = LevelResult(
            load=load,
            figures=figures,
            passed=all(r.passed for r in results),
            broken=[r.reason for r in results if not r.passed],
        )
        error_rate = figures["error_rate"]
        if error_rate is not None and error_rate > ERROR_STORM_RATE:
            level.stop = f"error storm: {error_rate:.0%} of requests failed at load {load:g}"
        elif generator.get("saturated"):
            reasons = "; ".join(generator.get("reasons") or [])
            level.stop = f"load generator saturated at load {load:g} ({reasons})"
        return level


def _figures(
    load: float,
    summary: dict[str, Any],
    stats: RunStats,
    duration: float,
    generator: dict[str, Any],
    server: dict[str, Any] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"load": load, "window_s": duration}
    for key, metric in (
        ("output_tokens_per_s", "output_tokens_per_s"),
        ("sessions_per_min", "sessions_per_min"),
        ("requests_per_s", "requests_per_s"),
        ("ttft_p95_s", "ttft_p95"),
        ("itl_p99_s", "itl_p99"),
        ("e2e_p95_s", "e2e_p95"),
        ("session_p90_s", "session_p90"),
        ("session_success_rate", "session_success_rate"),
        ("error_rate", "error_rate"),
        ("goodput", "goodput_ratio"),
    ):
        out[key] = read_metric(summary, metric)
    # The report reads output_tokens_per_s as a number: a window with no tokens shows 0.
    out["output_tokens_per_s"] = out["output_tokens_per_s"] or 0.0
    out["goodput_sessions_per_min"] = (out["sessions_per_min"] or 0.0) * (out["goodput"] or 0.0)
    # Estimated as throughput x goodput ratio: the judged sessions (begun at this level)
    # are a sample, and a short window holds few whole sessions.
    ratio = out["goodput"]
    out["goodput_tokens_per_s"] = None if ratio is None else out["output_tokens_per_s"] * ratio
    out["requests"] = stats.requests_total
    out["state_failures"] = {k: n for k, n in stats.failures.items() if n}
    out["generator"] = {"saturated": bool(generator.get("saturated")),
                        "reasons": list(generator.get("reasons") or [])}  # fmt: skip
    if server is not None:
        out["server"] = server
    return out
