"""The generator's own live health as metrics: users, CPU, event-loop and arrival lag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from loadgen.background import cancel_and_wait
from loadgen.observe.prometheus.families import MetricFamilies

__all__ = ["GeneratorSampler"]


# The CPU ratio covers the last interval, not the whole run, so a saturated phase shows up
# while it lasts. Each wake-up's lateness is one event-loop lag sample: at 1 Hz, a sparse but
# unbiased sample of what GeneratorHealth's 20 Hz probe measures in full. `arrival_lags` is
# the list the open-loop driver appends to (closed-loop lag comes with step records).
class GeneratorSampler:
    """Wakes every `interval_s` on the run's loop and updates the generator metrics."""

    def __init__(
        self,
        metrics: MetricFamilies,
        profile: str,
        users: Callable[[], int],
        arrival_lags: Sequence[float] = (),
        interval_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self._users = users
        self._arrival_lags = arrival_lags
        self._seen_lags = 0
        self._interval = interval_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._wall = clock()
        self._cpu = cpu_clock()
        self._users_gauge = metrics.users.labels(profile)
        self._cpu_gauge = metrics.cpu_ratio.labels(profile)
        self._loop_lag = metrics.loop_lag.labels(profile)
        self._schedule_lag = metrics.schedule_lag.labels(profile)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GeneratorSampler:
        self._wall, self._cpu = self._clock(), self._cpu_clock()
        self._users_gauge.set(self._users())
        self._task = asyncio.create_task(self._run(), name="agentload-generator-sampler")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.sample()  # the final values: users at the end, the last arrival lags

    async def _run(self) -> None:
        clock, interval = self._clock, self._interval
        while True:
            before = clock()
            await asyncio.sleep(interval)
            self._loop_lag.observe(max(clock() - before - interval, 0.0))
            self.sample()

    def sample(self) -> None:
        """Update users, the CPU ratio since the last sample, and new arrival lags."""
        self._users_gauge.set(self._users())
        wall, cpu = self._clock(), self._cpu_clock()
        # A ratio over a sliver of time (the final sample) is noise; keep the last one.
        if wall - self._wall >= self._interval / 2:
            self._cpu_gauge.set((cpu - self._cpu) / (wall - self._wall))
            self._wall, self._cpu = wall, cpu
        lags = self._arrival_lags
        if len(lags) > self._seen_lags:
            self._schedule_lag.observe_many(max(v, 0.0) for v in lags[self._seen_lags :])
            self._seen_lags = len(lags)
