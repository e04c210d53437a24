"""Where a ceiling level's load runs and is counted: this process, or a swarm's workers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

import aiohttp

from loadgen.background import cancel_and_wait
from loadgen.ceiling.slos import WindowSink
from loadgen.ceiling.steadiness import Slice
from loadgen.observe import GeneratorHealth, LatencyHistogram
from loadgen.observe.target_metrics import SocketFactory
from loadgen.runtime.engine import Engine
from loadgen.runtime.load import ClosedLoop, OpenLoop
from loadgen.runtime.replay import TraceReplay
from loadgen.traces.timeline import retimed

__all__ = ["DriverStopped", "HealthProbe", "LevelDriver", "LocalDriver", "level_replay"]


def level_replay(
    engine: Engine, speedup: float, share: Callable[[], tuple[int, int]] | None = None
) -> TraceReplay:
    """A ceiling level's replay: the engine's trace from its start, `speedup` times as fast as
    recorded; `share` (index, count): only every count-th session, from index (a swarm's
    worker), so that the swarm together replays the whole trace at that speedup.

    ValueError when the engine's profile replays no trace (a worker given another profile).
    """
    if engine.trace is None:
        raise ValueError(
            f"profile {engine.profile.name!r} here replays no trace (arrival mode "
            f"{engine.profile.arrival.mode}): start the workers with the searched profile"
        )
    base = engine.profile.arrival.speedup  # the engine's copy is already this fast
    return engine.replay(share=share, trace=retimed(engine.trace, speedup / base))


class DriverStopped(Exception):
    """The load can no longer be driven (a worker stopped answering); ends the search."""


class HealthProbe(Protocol):
    """The generator's health over a level's steady period (`async with`, then `report()`)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def report(self) -> dict[str, Any]:
        """cpu_percent, loop_lag_p99_s and schedule_lag_p99_s (None where unknown)."""
        ...


class LevelDriver(Protocol):
    """What a LevelRunner needs to run a level and count it slice by slice."""

    closed: bool  # agents (closed loop) or sessions/s (open loop)
    profile_name: str
    target_session: aiohttp.ClientSession | None  # lent to a same-origin target sampler
    socket_factory: SocketFactory | None

    def target_label(self) -> dict[str, Any]:
        """What summary.json says about the target."""
        ...

    async def start_level(self, load: float, since_unix: float, duration_s: float) -> None:
        """Move to `load`; goodput judges sessions begun at `since_unix` or later."""
        ...

    async def open_slice(self) -> None:
        """Start counting a slice."""
        ...

    async def close_slice(self, start_s: float, duration_s: float) -> Slice:
        """Stop counting; the slice's records."""
        ...

    def typical_session_s(self) -> float | None:
        """The median length of sessions completed since the level began."""
        ...

    def health(self, schedule_lag: LatencyHistogram) -> HealthProbe:
        """A probe of the generator over the steady period; steps' lags go to `schedule_lag`."""
        ...

    async def stop(self) -> None:
        """Retire every agent and stop every arrival."""
        ...


class LocalDriver:
    """The load runs on this event loop, on one engine; its records feed `sink`."""

    def __init__(self, engine: Engine, sink: WindowSink, start_jitter_s: float) -> None:
        self.engine = engine
        self.sink = sink
        profile = engine.profile
        self.closed = profile.arrival.mode == "closed"
        self.profile_name = profile.name
        self.target_session: aiohttp.ClientSession | None = engine.transport.session
        self.socket_factory: SocketFactory | None = None
        assert engine.make_agent is not None, "Engine.start() first"
        # The closed-loop pool lives across levels: agents keep their state and a level
        # change only adds or retires agents, as a user raising load on a live system would.
        self.pool = ClosedLoop(
            profile.arrival, [], engine.make_agent, engine.run_session,
            profile.time_scale, profile.seed,
        )  # fmt: skip
        self.pool.start_jitter_s = start_jitter_s
        self._open: asyncio.Task[None] | None = None
        self._arrivals: OpenLoop | TraceReplay | None = None

    def in_flight(self) -> int:
        """Agents running (closed loop) or sessions in flight (open loop): live metrics' users."""
        if self.closed:
            return self.pool.active
        return 0 if self._arrivals is None else len(self._arrivals.tasks)

    def target_label(self) -> dict[str, Any]:
        """The engine's description of the target."""
        return self.engine.target_label()

    async def start_level(self, load: float, since_unix: float, duration_s: float) -> None:
        """Resize the pool (closed loop), or restart arrivals at the new rate (open loop) or
        the trace from its start at the new speedup (trace)."""
        self.sink.begin(since_unix)
        if self.closed:
            # Retiring agents leave at once: one finishing a long session would keep the
            # higher load running into the next level's steady window.
            self.pool.resize(round(load), at_once=True)
        else:
            await self._stop_open()
            self._open = asyncio.create_task(self._open_loop(load, duration_s))

    async def _replay(self, speedup: float, duration: float) -> None:
        # Each level replays the trace from its start, `speedup` times as fast as recorded.
        driver = level_replay(self.engine, speedup)
        self._arrivals = driver
        await driver.run(duration)

    async def open_slice(self) -> None:
        """Start counting (no await inside: no record slips between close and open)."""
        self.sink.open_slice()

    async def close_slice(self, start_s: float, duration_s: float) -> Slice:
        """Stop counting."""
        return self.sink.close_slice(start_s, duration_s)

    def typical_session_s(self) -> float | None:
        """From the sink's sessions since the level began."""
        return self.sink.typical_session_s()

    def health(self, schedule_lag: LatencyHistogram) -> HealthProbe:
        """This process's CPU and loop lag."""
        return GeneratorHealth(schedule_lag=schedule_lag)

    async def stop(self) -> None:
        """Cancel every agent and session still running."""
        await self.pool.stop()
        await self._stop_open()

    async def _open_loop(self, load: float, duration: float) -> None:
        engine = self.engine
        if engine.trace is not None:
            await self._replay(load, duration)
            return
        rate = load
        arrival = engine.profile.arrival.model_copy(update={"rate": rate})
        assert engine.make_agent is not None
        driver = OpenLoop(arrival, [], engine.make_agent, engine.run_session, engine.profile.seed)
        self._arrivals = driver
        await driver.run(duration)

    async def _stop_open(self) -> None:
        task, self._open = self._open, None
        await cancel_and_wait(task)
