"""The load generator measuring itself: event-loop lag, CPU use and schedule lag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from loadgen.background import cancel_and_wait
from loadgen.observe.histogram import LatencyHistogram

__all__ = [
    "CPU_SATURATED_PERCENT",
    "LOOP_LAG_SATURATED_S",
    "LOOP_PROBE_INTERVAL_S",
    "SCHEDULE_LAG_SATURATED_S",
    "GeneratorHealth",
    "combine_reports",
    "generator_saturated",
]

# How often the probe wakes; each wake-up costs microseconds, so 20 Hz is free.
LOOP_PROBE_INTERVAL_S = 0.05
# Average CPU of this process, in percent of one core, at or above which the generator is
# saturated: one event loop uses one core, so beyond this, work queues behind the CPU.
CPU_SATURATED_PERCENT = 90.0
# p99 event-loop lag above which token timestamps are late by more than a typical ITL.
LOOP_LAG_SATURATED_S = 0.05
# p99 lateness of step starts against plan above which the offered load is not the planned one.
SCHEDULE_LAG_SATURATED_S = 0.1


class GeneratorHealth:
    """Probes the running event loop and this process's CPU; reports whether either saturated.

    Share the run's schedule-lag histogram (`RunStats.schedule_lag_s`) to have steps feed it,
    or call `record_schedule_lag()`; not both, or each lag is counted twice.
    """

    def __init__(
        self,
        *,
        schedule_lag: LatencyHistogram | None = None,
        probe_interval_s: float = LOOP_PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        if probe_interval_s <= 0:
            raise ValueError(f"probe_interval_s must be > 0, got {probe_interval_s!r}")
        self.loop_lag = LatencyHistogram()
        self.schedule_lag = schedule_lag if schedule_lag is not None else LatencyHistogram()
        self._interval = probe_interval_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._wall_start = clock()
        self._cpu_start = cpu_clock()
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the loop-lag probe on the running loop and restart the CPU measurement."""
        if self._probe is not None:
            raise RuntimeError("GeneratorHealth is already started")
        self._wall_start = self._clock()
        self._cpu_start = self._cpu_clock()
        self._probe = asyncio.create_task(self._probe_loop(), name="agentload-loop-lag-probe")

    async def stop(self) -> None:
        """Stop the probe; what it measured stays available to `report()`."""
        probe, self._probe = self._probe, None
        await cancel_and_wait(probe)

    async def __aenter__(self) -> GeneratorHealth:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _probe_loop(self) -> None:
        clock, interval, lag = self._clock, self._interval, self.loop_lag
        while True:
            before = clock()
            await asyncio.sleep(interval)
            # A timer that fires late means callbacks held the loop for that long.
            lag.record(max(clock() - before - interval, 0.0))

    def record_schedule_lag(self, lag_s: float) -> None:
        """Record how late one step started against its plan (early counts as on time)."""
        self.schedule_lag.record(max(lag_s, 0.0))

    def cpu_percent(self) -> float | None:
        """CPU time of this process over wall time since start, in percent of one core."""
        wall = self._clock() - self._wall_start
        if wall <= 0:
            return None
        return (self._cpu_clock() - self._cpu_start) / wall * 100.0

    def report(self) -> dict[str, Any]:
        """{cpu_percent, schedule_lag_p99_s, loop_lag_p99_s, saturated, reasons}."""
        return _judge(
            cpu_percent=self.cpu_percent(),
            schedule_lag_p99_s=self.schedule_lag.percentile(99),
            loop_lag_p99_s=self.loop_lag.percentile(99),
        )


def _judge(
    *,
    cpu_percent: float | None,
    schedule_lag_p99_s: float | None,
    loop_lag_p99_s: float | None,
) -> dict[str, Any]:
    reasons = []
    if cpu_percent is not None and cpu_percent >= CPU_SATURATED_PERCENT:
        reasons.append(
            f"CPU at {cpu_percent:.0f}% of one core (saturated at {CPU_SATURATED_PERCENT:.0f}%)"
        )
    if loop_lag_p99_s is not None and loop_lag_p99_s > LOOP_LAG_SATURATED_S:
        reasons.append(
            f"event-loop lag p99 {loop_lag_p99_s * 1000:.0f} ms "
            f"(saturated above {LOOP_LAG_SATURATED_S * 1000:.0f} ms)"
        )
    if schedule_lag_p99_s is not None and schedule_lag_p99_s > SCHEDULE_LAG_SATURATED_S:
        reasons.append(
            f"schedule lag p99 {schedule_lag_p99_s * 1000:.0f} ms "
            f"(saturated above {SCHEDULE_LAG_SATURATED_S * 1000:.0f} ms)"
        )
    return {
        "cpu_percent": cpu_percent,
        "schedule_lag_p99_s": schedule_lag_p99_s,
        "loop_lag_p99_s": loop_lag_p99_s,
        "saturated": bool(reasons),
        "reasons": reasons,
    }


def generator_saturated(summary: Mapping[str, Any]) -> bool:
    """Whether a run's summary.json says its load generator saturated."""
    return bool((summary.get("generator") or {}).get("saturated"))


def _worst(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def combine_reports(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One report for several generator processes: the worst of each figure, judged again."""
    reports = list(reports)
    return _judge(
        cpu_percent=_worst(r.get("cpu_percent") for r in reports),
        schedule_lag_p99_s=_worst(r.get("schedule_lag_p99_s") for r in reports),
        loop_lag_p99_s=_worst(r.get("loop_lag_p99_s") for r in reports),
    )
