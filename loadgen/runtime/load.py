"""How much load, when: stages over time, closed-loop agent pools and open-loop session arrivals."""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, overload

from loadgen.agents import Agent, stable_seed
from loadgen.observe import LatencyHistogram
from loadgen.profile.schema import Arrival, Stage

__all__ = [
    "AgentFactory",
    "ArrivalLags",
    "ClosedLoop",
    "OpenLoop",
    "WeightedPicker",
    "level_at",
    "staged",
    "start_ramp_s",
]

AgentFactory = Callable[[int], tuple[Agent, str]]  # slot index -> (agent, label)
SessionFn = Callable[[Agent, str, str], Coroutine[Any, Any, object]]

_CONTROL_PERIOD_S = 0.25
# Arrival lags kept as values for a live reader (ArrivalLags): 64k to 128k floats, 2-4 MiB.
_KEPT_LAGS = 65_536


# A closed loop without stages starts its agents over a ramp, never all at once (their first
# requests in lockstep: one burst of prefills, then steps in phase): this many agents a
# second, over at most this share of the run.
START_AGENTS_PER_S = 10.0
START_RAMP_SHARE = 0.25


def start_ramp_s(agents: int, duration: float) -> float:
    """Seconds over which a closed loop of `agents` without stages starts them."""
    return min(agents / START_AGENTS_PER_S, duration * START_RAMP_SHARE)


def staged(arrival: Arrival, stages: Sequence[Stage], duration: float) -> Sequence[Stage]:
    """The stages a run follows: the profile's, or for a closed loop given none (a profile
    without stages, or one whose stages --duration replaced), a ramp up to its agents over
    start_ramp_s(), then the level held to the end."""
    if stages or arrival.mode != "closed":
        return stages
    ramp = start_ramp_s(int(arrival.level), duration)
    if ramp <= 0:
        return stages
    return [Stage(kind="ramp", duration=ramp, target=arrival.level)]


def level_at(t: float, arrival: Arrival, stages: Sequence[Stage]) -> float:
    """Agents (closed loop) or sessions/s (open loop) wanted `t` seconds into the run."""
    if not stages:
        return arrival.level
    level = 0.0 if stages[0].kind == "ramp" else arrival.level
    start = 0.0
    for stage in stages:
        end = start + stage.duration
        if t < end:
            if stage.kind == "ramp":
                assert stage.target is not None
                frac = (t - start) / stage.duration if stage.duration else 1.0
                return level + (stage.target - level) * frac
            if stage.kind == "spike":
                return float(stage.target or level)
            return float(stage.target if stage.target is not None else level)
        if stage.kind == "ramp" or (stage.kind in ("hold", "soak") and stage.target is not None):
            level = float(stage.target or 0.0)
        start = end
    return level


class WeightedPicker:
    """Smooth weighted round robin: any first n picks follow the weights as closely as possible."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = list(weights)
        self.given = [0] * len(self.weights)

    def next(self) -> int:
        """The index of the next pick."""
        j = min(range(len(self.weights)), key=lambda k: (self.given[k] + 1) / self.weights[k])
        self.given[j] += 1
        return j


class ClosedLoop:
    """N long-lived agents, each running sessions back to back (with idle time between)."""

    def __init__(
        self,
        arrival: Arrival,
        stages: Sequence[Stage],
        make_agent: AgentFactory,
        run_session: SessionFn,
        time_scale: float,
        seed: int,
    ) -> None:
        self.arrival = arrival
        self.stages = stages
        self.make_agent = make_agent
        self.run_session = run_session
        self.time_scale = time_scale
        self.rng = random.Random(stable_seed(seed, "closed-loop"))
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.retiring: set[int] = set()
        self.start_jitter_s = 1.0  # a ceiling search shortens it to fit its warm-up
        self._slots = itertools.count()

    @property
    def active(self) -> int:
        """Agents currently running (retiring ones excluded)."""
        return len(self.tasks) - len(self.retiring)

    async def run(self, duration: float) -> None:
        """Keep the pool at the staged size until `duration` ends, then cancel every agent."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stages = staged(self.arrival, self.stages, duration)
        try:
            while (elapsed := loop.time() - t0) < duration:
                self._resize(round(level_at(elapsed, self.arrival, stages)))
                await asyncio.sleep(min(_CONTROL_PERIOD_S, max(0.0, duration - elapsed)))
        finally:
            await _cancel_all(self.tasks.values())

    def resize(self, wanted: int, *, at_once: bool = False) -> None:
        """Grow to `wanted` agents now, or retire the newest (`at_once`: cancel them now)."""
        self._resize(wanted)
        if at_once:
            for slot in self.retiring:
                self.tasks[slot].cancel()

    async def stop(self) -> None:
        """Cancel every agent (for a caller that resizes the pool itself instead of `run`)."""
        await _cancel_all(self.tasks.values())

    def _resize(self, wanted: int) -> None:
        while self.active < wanted:
            slot = next(self._slots)
            agent, label = self.make_agent(slot)
            # Jittered starts keep a whole pool from firing its first requests in lockstep.
            jitter = self.rng.uniform(0, self.start_jitter_s) if slot < wanted else 0.0
            task = asyncio.create_task(self._agent_loop(slot, agent, label, jitter))
            self.tasks[slot] = task
            task.add_done_callback(functools.partial(self._forget, slot))
        for slot in sorted(self.tasks, reverse=True):
            if self.active <= wanted:
                break
            if slot not in self.retiring:
                self.retiring.add(slot)  # finishes its current session, then leaves

    def _forget(self, slot: int, _task: object = None) -> None:
        self.tasks.pop(slot, None)
        self.retiring.discard(slot)

    async def _agent_loop(self, slot: int, agent: Agent, label: str, jitter: float) -> None:
        await asyncio.sleep(jitter)
        for n in itertools.count():
            if slot in self.retiring:
                return
            await self.run_session(agent, label, f"{agent.id}-s{n}")
            if slot in self.retiring:
                return
            await asyncio.sleep(agent.idle_time() * self.time_scale)


class ArrivalLags(Sequence[float]):
    """How late each open-loop arrival started, in memory that does not grow with the run.

    Every lag goes into `histogram` (fixed size, merges exactly into the run's). Values are
    kept only for a reader that takes the new ones as they come (the live Prometheus
    sampler, every second): len() counts every lag ever appended and lags[i:] gives those
    from i on that are still kept, which is all of them for a reader less than `keep`
    arrivals behind. Older values are dropped, so iterating gives only the kept ones; take
    the histogram for all of them. (A plain list grew by a float per arrival for the whole
    run, about 32 bytes each, and under Locust nothing read it.)
    """

    __slots__ = ("_dropped", "_keep", "_kept", "histogram")

    def __init__(self, keep: int | None = None) -> None:
        self.histogram = LatencyHistogram()
        self._keep = _KEPT_LAGS if keep is None else keep
        self._kept: list[float] = []
        self._dropped = 0  # values no longer kept: the index of _kept[0]

    def append(self, lag: float) -> None:
        """Record one arrival's lag (seconds, ≥ 0)."""
        self.histogram.record(lag)
        kept = self._kept
        kept.append(lag)
        if len(kept) >= 2 * self._keep:  # trimmed in halves: amortised O(1) per arrival
            del kept[: len(kept) - self._keep]
            self._dropped += self._keep

    def __len__(self) -> int:
        return self._dropped + len(self._kept)

    def __iter__(self) -> Iterator[float]:
        return iter(self._kept)

    def __reversed__(self) -> Iterator[float]:
        return reversed(self._kept)

    @overload
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> list[float]: ...

    def __getitem__(self, index: int | slice) -> float | list[float]:
        dropped = self._dropped
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self._kept[max(start - dropped, 0) : max(stop - dropped, 0)]
            return [self._kept[i - dropped] for i in range(start, stop, step) if i >= dropped]
        at = index + len(self) if index < 0 else index
        if not dropped <= at < len(self):
            raise IndexError(f"arrival lag {index} is not kept ({len(self._kept)} are)")
        return self._kept[at - dropped]


class OpenLoop:
    """Sessions arrive at a (staged) rate, Poisson or gamma-bursty; each gets a fresh agent."""

    def __init__(
        self,
        arrival: Arrival,
        stages: Sequence[Stage],
        make_agent: AgentFactory,
        run_session: SessionFn,
        seed: int,
        max_sessions: int = 100_000,
        share: Callable[[], float] | None = None,
    ) -> None:
        self.arrival = arrival
        self.stages = stages
        self.make_agent = make_agent
        self.run_session = run_session
        self.rng = random.Random(stable_seed(seed, "open-loop"))
        self.max_sessions = max_sessions
        # This process's part of the staged rate, read at every arrival: a swarm's workers
        # can come and go mid-run, and their share with them.
        self.share = share
        self.tasks: set[asyncio.Task[object]] = set()
        self.schedule_lag = ArrivalLags()
        self.dropped = 0  # arrivals refused because max_sessions were already running

    def rate_at(self, t: float) -> float:
        """Sessions/s this driver starts `t` seconds into the run (the staged rate × share)."""
        rate = level_at(t, self.arrival, self.stages)
        return rate if self.share is None else rate * self.share()

    async def run(self, duration: float, *, elapsed: float = 0.0) -> None:
        """Start sessions on schedule until `duration` ends, then cancel the ones in flight.

        `elapsed`: how far into the run this driver starts (a worker that joined late); the
        stages are followed from there and `duration` still counts from the run's start.
        """
        loop = asyncio.get_running_loop()
        due = loop.time()
        t0 = due - elapsed
        slots = itertools.count()
        try:
            while True:
                rate = self.rate_at(due - t0)
                due += self._gap(rate)
                if due - t0 >= duration:
                    await asyncio.sleep(max(0.0, t0 + duration - loop.time()))
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                if rate <= 0:
                    continue  # nothing arrives at a zero rate: look again a moment later
                self.schedule_lag.append(max(0.0, loop.time() - due))
                n = next(slots)
                if len(self.tasks) >= self.max_sessions:
                    self.dropped += 1
                    continue
                agent, label = self.make_agent(n)
                task = asyncio.create_task(self.run_session(agent, label, f"{agent.id}-s0"))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        finally:
            await _cancel_all(self.tasks)

    def _gap(self, rate: float) -> float:
        if rate <= 0:
            return _CONTROL_PERIOD_S
        if self.arrival.process == "poisson":
            return self.rng.expovariate(rate)
        shape = 1.0 / self.arrival.burstiness  # CV^2 = 1/shape
        return self.rng.gammavariate(shape, 1.0 / (rate * shape))


async def _cancel_all(tasks: Any) -> None:
    pending = [t for t in list(tasks) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
