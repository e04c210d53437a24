"""The engine of one Locust process: created lazily (after fork) and shared by its users."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent.event
import gevent.lock
from locust.env import Environment
from locust.runners import LocalRunner

from loadgen.agents.agent import stable_seed
from loadgen.observe import RunStats
from loadgen.observe.live_observation import LiveObservation, ObservationSettings
from loadgen.observe.prometheus.merge import SampleTracker
from loadgen.observe.records import SessionOutcome, SessionRecord, StepRecord
from loadgen.orchestration.bridge import LoopBridge, native_socket_factory, process_bridge
from loadgen.orchestration.locust_stats import SESSION, STEP, steps_only_in_total
from loadgen.orchestration.shape import ProfileShape
from loadgen.profile.loader import LoadedProfile
from loadgen.runtime.engine import Engine, StatsSink
from loadgen.runtime.load import OpenLoop
from loadgen.runtime.replay import TraceReplay
from loadgen.transport import TargetConfig

__all__ = ["LocustReporter", "ProcessEngine", "StepFailure", "SwarmSettings", "process_engine"]

_DIGITS = re.compile(r"\d+")
_FAILURE_CHARS = 160
_CLOCK_MARGIN_S = 0.1  # how early an arrival driver's end may fall on time.monotonic()


class StepFailure(Exception):
    """A failed step or session as Locust's Failures tab lists it: its kind and why.

    Locust shows repr(exception) and groups rows by it; a plain RuntimeError showed only
    "RuntimeError('http_error')". Numbers are masked so that messages differing only in a
    token count or an id stay one row (the exact messages are in summary.json).
    """

    def __init__(self, kind: str, message: str | None) -> None:
        why = _DIGITS.sub("N", message or "")[:_FAILURE_CHARS]
        super().__init__(f"{kind}: {why}" if why else kind)

    def __repr__(self) -> str:
        return str(self)


_CREATE_LOCK = gevent.lock.Semaphore()


@dataclass
class SwarmSettings:
    """What every process of a swarm needs to know; attached to the Locust Environment."""

    loaded: LoadedProfile
    target: TargetConfig
    out_dir: Path
    model: str | None = None
    processes: int = 1  # worker processes sharing the load (open-loop rate is split)
    extra: dict[str, Any] = field(default_factory=dict)
    observe: ObservationSettings = field(default_factory=ObservationSettings)  # live metrics
    metrics_tracker: SampleTracker | None = None  # worker: metric samples for the master
    # Worker: when the master's run began (time.monotonic() here), so that one joining late
    # follows the profile's stages at the run's time, not from its own start.
    run_started: float | None = None


class LocustReporter:
    """A RecordSink on the loop thread that reports steps and sessions to Locust's stats.

    Locust's events must fire on the gevent hub, so each record crosses over through the
    bridge; request type and name say what it was (STEP / SESSION, agent and step kind).
    Locust's total ("Aggregated", the Charts, a worker's total for its master) is made to
    count the steps only: a session's time is not an LLM call's (see locust_stats).
    """

    # Each hand-off wakes the hub thread (a context switch and a GIL transfer); records cross
    # in batches, at most one hand-off per FLUSH_S (Locust's statistics are per second).
    FLUSH_S = 0.1

    def __init__(self, bridge: LoopBridge, environment: Environment) -> None:
        self.bridge = bridge
        self.environment = environment
        self._batch: list[dict[str, Any]] = []
        # The stats the runner uses by now (a worker's are set when its runner is made).
        steps_only_in_total(environment.stats)

    def _report(self, kwargs: dict[str, Any]) -> None:
        if not self._batch:
            self.bridge.loop.call_later(self.FLUSH_S, self.flush)
        self._batch.append(kwargs)

    def flush(self) -> None:
        """Hand what is batched to the hub now (loop thread only)."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        fire = self.environment.events.request.fire

        def deliver() -> None:
            for kwargs in batch:
                fire(**kwargs)

        self.bridge.to_hub(deliver)

    def session_started(self, agent: str) -> None:
        """Nothing to report until the session ends."""

    def step(self, record: StepRecord) -> None:
        """One step as one Locust request."""
        exception = None
        if not record.ok:
            kind = next(iter(record.failures), "failed")
            exception = StepFailure(kind, record.reasons.get(kind) or record.error)
        kwargs = {
            "request_type": STEP,
            "name": f"{record.agent} {record.kind}",
            "response_time": record.e2e_s * 1000.0,
            "response_length": record.completion_tokens or 0,
            "exception": exception,
            "context": {},
        }
        self._report(kwargs)

    def session(self, record: SessionRecord) -> None:
        """One session as one Locust request; only target-caused failures count as errors."""
        if record.outcome == SessionOutcome.ABORTED:
            return  # stopped by the client: not a server failure, not a latency sample
        exception = None
        if record.outcome == SessionOutcome.FAILED:
            exception = StepFailure("session failed", record.error)
        kwargs = {
            "request_type": SESSION,
            "name": record.agent,
            "response_time": record.duration_s * 1000.0,
            "response_length": record.steps,
            "exception": exception,
            "context": {},
        }
        self._report(kwargs)

    def recovery(self, kind: str, agent: str) -> None:
        """Counted in RunStats; Locust has no place for it."""

    def tool_call(self, agent: str, tool: str, outcome: str, latency_s: float | None) -> None:
        """Counted in RunStats; Locust has no place for it."""


class ProcessEngine:
    """Bridge + engine + the share of statistics not yet sent to the master."""

    def __init__(self, environment: Environment, settings: SwarmSettings, worker: int) -> None:
        self.environment = environment
        self.settings = settings
        self.worker = worker
        self.bridge = process_bridge()
        out = settings.out_dir if worker < 0 else settings.out_dir / f"worker-{worker}"
        self.delta = StatsSink(RunStats())  # what the next report to the master carries
        self.reporter = LocustReporter(self.bridge, environment)
        # Locust prints and sends its final statistics after test_stop: hand over the batch.
        environment.events.test_stop.add_listener(lambda **_kw: self.flush_reporter())
        self.engine = Engine(
            settings.loaded,
            settings.target,
            out,
            model=settings.model,
            extra_sinks=[self.delta, self.reporter],
            socket_factory=native_socket_factory,
        )
        self.bridge.run(self.engine.start(), timeout=120)
        # When the run ends: its stop (the shape's end, Ctrl-C, a gate's abort), or the end an
        # arrival driver keeps itself. Sessions cancelled from then on were still running at
        # the end (summary.json sessions.running_at_end); a ramp-down's come before it.
        self._stopping = False
        self._arrivals_end = math.inf  # time.monotonic() at which the arrival driver ends
        environment.events.test_start.add_listener(lambda **_kw: self._run_begins())
        environment.events.test_stopping.add_listener(lambda **_kw: self._run_stops())
        if self.engine.runner is not None:
            self.engine.runner.run_ending = self.run_ending
        if worker >= 0 and self.engine.make_agent is not None:
            # Agents are seeded by their slot; without a seed of its own, every worker's slot
            # 0 would be the same agent, sending the same prompts at the same moments.
            self.engine.make_agent.seed = self.seed
        # Agents this process runs outside Locust's users (a ceiling search's pool).
        self.other_agents: Callable[[], int] = lambda: 0
        self.live = LiveObservation(settings.observe)
        profile, runner = settings.loaded.profile, environment.runner

        def users() -> int:
            return (runner.user_count if runner is not None else 0) + self.other_agents()

        sink = self.bridge.run(
            self.live.start(
                profile=profile.name,
                slos=profile.slos,
                target_url=settings.target.base_url,
                model=self.engine.model,
                users=users,
                target_session=self.engine.transport.session,
                socket_factory=native_socket_factory,
            ),
            timeout=30,
        )
        if sink is not None:
            self.engine.add_sink(sink)
        self.started = time.perf_counter()
        self._slots = itertools.count()
        self._arrivals: gevent.event.AsyncResult | None = None

    def _run_begins(self) -> None:
        self._stopping, self._arrivals_end = False, math.inf

    def _run_stops(self) -> None:
        self._stopping = True  # before the users' and the arrivals' cancellation, which follow

    def run_ending(self) -> bool:
        """True once this process's part of the run is ending (read on the loop thread)."""
        # The driver's own end, in its loop's clock (uvloop's, in whole ms): a margin.
        return self._stopping or time.monotonic() >= self._arrivals_end - _CLOCK_MARGIN_S

    @property
    def seed(self) -> int:
        """The profile's seed, made this worker's own (the same in one process)."""
        base = self.settings.loaded.profile.seed
        return base if self.worker < 0 else stable_seed(base, "worker", self.worker)

    def new_agent(self, mix_index: int) -> tuple[Any, str]:
        """A fresh long-lived agent of the given mix entry, unique across workers."""
        return self.make_agent(next(self._slots), mix_index)

    def make_agent(self, slot: int, mix_index: int | None = None) -> tuple[Any, str]:
        """The agent of `slot`, its id unique across workers (sessions and affinity use it)."""
        assert self.engine.make_agent is not None
        agent, label = self.engine.make_agent(slot, mix_index)
        agent.id = f"w{max(self.worker, 0)}-{agent.id}"
        return agent, label

    def arrivals(self) -> gevent.event.AsyncResult:
        """This process's open-loop arrivals, started on the first call; set when they end.

        One driver per process, however many arrival users Locust moves here or away: a
        rebalance (a worker joined or left) that stopped a user's own driver would abort its
        sessions in flight, and a new one would replay the same seeded arrivals and agents.
        Its part of the rate follows `settings.processes`; the run's stop cancels it, and a
        test started after that (Locust's web UI can start another) gets a driver of its own.
        """
        if self._arrivals is not None and not self._arrivals.ready():
            return self._arrivals
        settings = self.settings
        profile = settings.loaded.profile

        def share() -> float:
            # Read on the loop thread while the hub may replace it: one int, read whole.
            return 1.0 / max(1, settings.processes)

        def part() -> tuple[int, int]:
            return max(self.worker, 0), max(1, settings.processes)

        driver: OpenLoop | TraceReplay
        if profile.arrival.mode == "trace":
            driver = self.engine.replay(share=part)
        else:
            driver = OpenLoop(
                profile.arrival, profile.stages, self.make_agent, self.engine.run_session,
                self.seed, share=share,
            )  # fmt: skip
        started = settings.run_started
        elapsed = 0.0 if started is None else max(0.0, time.monotonic() - started)
        self._arrivals_end = time.monotonic() - elapsed + profile.total_duration
        self._arrivals, cancel = self.bridge.submit(
            driver.run(profile.total_duration, elapsed=elapsed)
        )
        self.environment.events.test_stopping.add_listener(lambda **_kw: cancel())
        shape = self.environment.shape_class
        if isinstance(shape, ProfileShape) and isinstance(self.environment.runner, LocalRunner):
            arrivals = self._arrivals
            shape.finished = arrivals.ready  # the whole trace is this process's: its end ends it
        return self._arrivals

    def flush_reporter(self) -> None:
        """Deliver the records batched for Locust's statistics now (from a greenlet)."""

        async def flush() -> None:
            self.reporter.flush()

        self.bridge.run(flush(), timeout=10)  # the batch is delivered before this returns

    def take_delta(self) -> dict[str, Any]:
        """Swap out the statistics gathered since the last call (for report_to_master)."""

        async def swap() -> dict[str, Any]:
            # Let sessions that were just cancelled write their records first.
            await _settle()
            stats, self.delta.stats = self.delta.stats, RunStats()
            part = {"stats": stats.to_dict(), "health": self.engine.health.report()}
            tracker = self.settings.metrics_tracker
            if tracker is not None:
                # Read here, on the loop that writes the metrics: whole records only.
                part["metrics"] = tracker.changes()
            return part

        result: dict[str, Any] = self.bridge.run(swap(), timeout=30)
        return result

    def idle(self) -> bool:
        """True when no session is running on the loop."""
        return not self.bridge._tasks

    def stop_observing(self) -> dict[str, Any] | None:
        """Final samples of the live metrics; returns the summary's "server" section, if any."""
        self.bridge.run(self.live.stop(), timeout=30)
        return self.live.server_report()

    def finish(self, timeout: float = 15.0) -> None:
        """Wait for cancelled sessions to end, then stop the engine (transport, files, probes)."""
        self.bridge.wait_idle(timeout)
        self.bridge.run(self.live.stop(), timeout=30)
        self.bridge.run(self.engine.stop(), timeout=30)


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    cancelling = [t for t in asyncio.all_tasks() if t is not current and t.cancelling()]
    if cancelling:
        await asyncio.wait(cancelling, timeout=2.0)


def process_engine(environment: Environment) -> ProcessEngine:
    """This process's engine, created on first use (after fork) and then shared."""
    existing: ProcessEngine | None = getattr(environment, "agentload_engine", None)
    if existing is not None:
        return existing
    with _CREATE_LOCK:
        existing = getattr(environment, "agentload_engine", None)
        if existing is None:
            settings: SwarmSettings = environment.agentload  # type: ignore[attr-defined]
            runner = environment.runner
            worker = getattr(runner, "worker_index", -1) if _is_worker(environment) else -1
            existing = ProcessEngine(environment, settings, worker)
            environment.agentload_engine = existing  # type: ignore[attr-defined]
    return existing


def _is_worker(environment: Environment) -> bool:
    from locust.runners import WorkerRunner

    return isinstance(environment.runner, WorkerRunner)
