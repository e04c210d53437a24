"""GeneratorHealth: the generator's own event-loop lag, CPU use and saturation verdict."""

from __future__ import annotations

import asyncio
import itertools
import time

from loadgen.observe import GeneratorHealth, LatencyHistogram, combine_reports


async def test_a_blocked_event_loop_shows_up_as_loop_lag() -> None:
    async with GeneratorHealth() as health:
        await asyncio.sleep(0.01)  # the probe is now waiting on its timer
        # A callback that hogs the loop, as a CPU-bound parser would.
        asyncio.get_running_loop().call_soon(time.sleep, 0.2)
        await asyncio.sleep(0.1)
    assert health.loop_lag.max is not None
    assert health.loop_lag.max >= 0.1


async def test_cpu_percent_is_within_the_range_of_a_process() -> None:
    async with GeneratorHealth() as health:
        await asyncio.sleep(0.05)
    cpu = health.report()["cpu_percent"]
    assert cpu is not None
    assert 0 <= cpu <= 200


async def test_stop_keeps_what_the_probe_measured() -> None:
    health = GeneratorHealth(probe_interval_s=0.005)
    await health.start()
    await asyncio.sleep(0.05)
    await health.stop()
    seen = health.loop_lag.count
    await asyncio.sleep(0.02)
    assert seen > 0
    assert health.loop_lag.count == seen


class _Clock:
    """A hand-driven clock, so reports do not depend on how busy the test machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_report_is_not_saturated_for_an_idle_generator() -> None:
    wall, cpu = _Clock(), _Clock()
    health = GeneratorHealth(clock=wall, cpu_clock=cpu)
    wall.now, cpu.now = 10.0, 2.0
    health.record_schedule_lag(0.01)
    report = health.report()
    assert report["cpu_percent"] == 20.0
    assert report["saturated"] is False
    assert report["reasons"] == []


def test_report_names_every_saturated_figure() -> None:
    wall, cpu = _Clock(), _Clock()
    health = GeneratorHealth(clock=wall, cpu_clock=cpu)
    wall.now, cpu.now = 10.0, 9.5
    health.record_schedule_lag(0.5)
    health.loop_lag.record(0.2)
    report = health.report()
    assert report["saturated"] is True
    assert len(report["reasons"]) == 3
    assert report["schedule_lag_p99_s"] > 0.1
    assert report["loop_lag_p99_s"] > 0.05


def test_a_shared_schedule_lag_histogram_feeds_the_report() -> None:
    shared = LatencyHistogram()
    shared.record_many([0.3] * 100)
    # Clocks pinned to an idle process: over a real microsecond of wall time, CPU reads ~100%.
    idle = GeneratorHealth(
        schedule_lag=shared, clock=itertools.count(0.0, 10.0).__next__, cpu_clock=lambda: 0.0
    )
    report = idle.report()
    assert report["saturated"] is True
    assert [r.split(" p99")[0] for r in report["reasons"]] == ["schedule lag"]


def test_combine_reports_takes_the_worst_of_each_worker() -> None:
    healthy = {"cpu_percent": 20.0, "schedule_lag_p99_s": 0.01, "loop_lag_p99_s": 0.001}
    busy = {"cpu_percent": 95.0, "schedule_lag_p99_s": None, "loop_lag_p99_s": 0.002}
    combined = combine_reports([healthy, busy])
    assert combined["cpu_percent"] == 95.0
    assert combined["schedule_lag_p99_s"] == 0.01
    assert combined["saturated"] is True
