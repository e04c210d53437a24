"""One load run from start to summary: target checks, the agent swarm, results as they happen."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from loadgen.background import cancel_and_wait
from loadgen.observe import RunStats
from loadgen.observe.live_observation import LiveObservation, ObservationSettings
from loadgen.profile.loader import LoadedProfile
from loadgen.runtime.engine import Engine, StatsSink
from loadgen.runtime.load import ClosedLoop, OpenLoop
from loadgen.runtime.sinks import RecordSink
from loadgen.transport import TargetConfig

__all__ = ["RunOptions", "StatsSink", "progress_line", "run_load"]


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what to run: that is the profile)."""

    out_dir: Path
    model: str | None = None
    progress: TextIO | None = sys.stderr  # None: quiet
    progress_interval_s: float = 10.0
    target_label: dict[str, Any] | None = None  # e.g. {"builtin_sim": "fast"}
    # Live Prometheus metrics and the target's own /metrics (docs/observability.md).
    observe: ObservationSettings = field(default_factory=ObservationSettings)


async def run_load(
    loaded: LoadedProfile,
    target: TargetConfig,
    options: RunOptions,
    extra_sinks: Sequence[RecordSink] = (),
) -> dict[str, Any]:
    """Run the profile against `target` on this event loop; returns summary.json's content."""
    profile = loaded.profile
    engine = Engine(loaded, target, options.out_dir, model=options.model, extra_sinks=extra_sinks)
    await engine.start()
    try:
        assert engine.make_agent is not None
        arrival = profile.arrival
        driver: ClosedLoop | OpenLoop
        if arrival.mode == "closed":
            driver = ClosedLoop(
                arrival,
                profile.stages,
                engine.make_agent,
                engine.run_session,
                profile.time_scale,
                profile.seed,
            )
        else:
            driver = OpenLoop(
                arrival, profile.stages, engine.make_agent, engine.run_session, profile.seed
            )
        t0 = time.perf_counter()
        async with (
            _progress(options, engine.stats, t0, profile.total_duration),
            _observed(options, engine, driver) as live,
        ):
            await driver.run(profile.total_duration)
        duration = time.perf_counter() - t0
        if isinstance(driver, OpenLoop):
            engine.stats.schedule_lag_s.merge(driver.schedule_lag.histogram)
        summary = engine.summary(duration, **(options.target_label or {}))
        if (server := live.server_report()) is not None:
            summary["server"] = server
        engine.write_summary(summary)
    finally:
        await engine.stop()
    return summary


@contextlib.asynccontextmanager
async def _progress(options: RunOptions, stats: RunStats, t0: float, total: float) -> Any:
    out = options.progress
    if out is None:
        yield
        return

    async def report() -> None:
        while True:
            await asyncio.sleep(options.progress_interval_s)
            out.write(progress_line(stats, time.perf_counter() - t0, total) + "\n")
            out.flush()

    task = asyncio.create_task(report())
    try:
        yield
    finally:
        await cancel_and_wait(task)


def progress_line(stats: RunStats, elapsed: float, total: float) -> str:
    """One line of live progress for a terminal."""
    s = stats.sessions
    ttft = stats.ttft_s.percentile(95)
    failures = ", ".join(f"{k} {v}" for k, v in stats.failures.items() if v) or "none"
    tokens_per_s = stats.completion_tokens / max(elapsed, 1e-9)
    return (
        f"[{elapsed:5.0f}s/{total:.0f}s] sessions {s.completed} done, {s.failed} failed | "
        f"requests {stats.requests_total} | output {tokens_per_s:.0f} tok/s | "
        f"ttft p95 {'-' if ttft is None else f'{ttft:.2f}s'} | failures: {failures}"
    )


# -- live metrics and the target's /metrics (docs/observability.md) ----------------------


@contextlib.asynccontextmanager
async def _observed(
    options: RunOptions, engine: Engine, driver: ClosedLoop | OpenLoop
) -> AsyncIterator[LiveObservation]:
    """Feed live metrics and sample the target's /metrics while the load runs."""
    live = LiveObservation(options.observe)
    sink = await live.start(
        profile=engine.profile.name,
        slos=engine.profile.slos,
        target_url=engine.target.base_url,
        model=engine.model,
        users=_users(driver),
        arrival_lags=driver.schedule_lag if isinstance(driver, OpenLoop) else (),
        target_session=engine.transport.session,
    )
    if sink is not None:
        engine.add_sink(sink)
    try:
        yield live
    finally:
        await live.stop()


def _users(driver: ClosedLoop | OpenLoop) -> Callable[[], int]:
    """Agents running (closed loop) or sessions in flight (open loop), read when called."""
    if isinstance(driver, ClosedLoop):
        return lambda: driver.active
    return lambda: len(driver.tasks)
