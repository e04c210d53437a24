"""`agentload ceiling` over a swarm: the master searches, Locust workers carry the load.

The master runs the same search and rolling-window judgement as one process does, through a
`LevelDriver` whose levels and slices are commands to every worker (Locust custom
messages): each worker moves its share of the load and counts its records into slices; the
master merges the workers' slices into one and judges it. Workers are ordinary
`agentload run PROFILE --worker` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import gevent
import gevent.queue
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from loadgen.ceiling.driver import DriverStopped, HealthProbe, level_replay
from loadgen.ceiling.measure import LevelRunner
from loadgen.ceiling.run import (
    INTERRUPTED,
    CeilingOptions,
    Interruption,
    SearchOutcome,
    ceiling_writer,
    search_levels,
    search_unit,
)
from loadgen.ceiling.slos import WindowSink, goodput_caps
from loadgen.ceiling.steadiness import Slice, merge_slices
from loadgen.errors import TargetUnreachableError
from loadgen.observe import LatencyHistogram, ResultFiles, RunStats, combine_reports
from loadgen.observe.goodput import GoodputRule
from loadgen.observe.target_metrics import SocketFactory
from loadgen.orchestration.bridge import LoopBridge, native_socket_factory, process_bridge
from loadgen.orchestration.environment import SwarmOptions, swarm_environment
from loadgen.orchestration.master import MasterAggregator, wait_for_final_reports, wait_for_workers
from loadgen.orchestration.process_engine import ProcessEngine, SwarmSettings, process_engine
from loadgen.runtime.engine import profile_sections
from loadgen.runtime.load import ClosedLoop, OpenLoop
from loadgen.runtime.replay import TraceReplay

__all__ = [
    "CEILING_MESSAGE",
    "CeilingWorker",
    "SwarmDriver",
    "run_ceiling_swarm",
    "split_load",
    "split_trace",
]

CEILING_MESSAGE = "agentload_ceiling"
REPLY_MESSAGE = "agentload_ceiling_reply"
# A command every worker answers within milliseconds; past this, one has stopped answering.
REPLY_TIMEOUT_S = 30.0


def split_load(load: float, workers: list[str], integer: bool) -> dict[str, float]:
    """Each worker's share: whole agents spread as evenly as they go, or an equal rate."""
    if not workers:
        return {}
    if not integer:
        return {w: load / len(workers) for w in workers}
    base, extra = divmod(round(load), len(workers))
    return {w: float(base + (1 if i < extra else 0)) for i, w in enumerate(sorted(workers))}


def split_trace(workers: list[str]) -> dict[str, list[int]]:
    """Each worker's part of a trace, (index, count): the sessions whose position modulo
    count is index, so that the workers answering this level replay every session once."""
    return {w: [i, len(workers)] for i, w in enumerate(sorted(workers))}


# -- a worker's side ------------------------------------------------------------------------


class CeilingWorker:
    """A worker's share of a ceiling search: its agents or arrivals, and its slice counter."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.runner: WorkerRunner | None = None
        self._commands: gevent.queue.Queue[dict[str, Any]] = gevent.queue.Queue()
        self.sink: WindowSink | None = None
        self.pool: ClosedLoop | None = None
        self._arrivals: asyncio.Task[None] | None = None
        self._open_loop: OpenLoop | TraceReplay | None = None
        self._cpu_mark = time.process_time()

    def on_message(self, environment: Environment, msg: Any, **_kw: Any) -> None:
        """CEILING_MESSAGE's handler: registered before the worker connects (a master that
        has all its workers sends its first command at once; CI saw a worker drop it as an
        unknown message and the search fail), queued until `attach`."""
        self._commands.put(msg.data)

    def attach(self, runner: WorkerRunner) -> None:
        """Answer the commands through `runner`, in order, from one greenlet (the message
        loop never waits on them)."""
        self.runner = runner
        self._server = gevent.spawn(self._serve)

    def _serve(self) -> None:
        while True:
            command = self._commands.get()
            try:
                reply = self._handle(command)
            except Exception as exc:  # the master ends the search with this reason
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            reply["id"] = command["id"]
            assert self.runner is not None  # served only once attached
            self.runner.send_message(REPLY_MESSAGE, reply)

    def _handle(self, command: dict[str, Any]) -> dict[str, Any]:
        engine = process_engine(self.env)
        op = command["op"]
        if op == "level":
            engine.bridge.run(self._level(engine, command), timeout=REPLY_TIMEOUT_S)
            return {}
        if op == "open":
            engine.bridge.run(self._open(), timeout=REPLY_TIMEOUT_S)
            return {}
        if op == "close":
            result: dict[str, Any] = engine.bridge.run(
                self._close(command["start_s"], command["duration_s"]), timeout=REPLY_TIMEOUT_S
            )
            return result
        if op == "stop":
            engine.bridge.run(self.stop(), timeout=REPLY_TIMEOUT_S)
            return {}
        raise ValueError(f"unknown ceiling command {op!r}")

    async def _level(self, engine: ProcessEngine, command: dict[str, Any]) -> None:
        core = engine.engine
        assert core.make_agent is not None
        profile = core.profile
        if self.sink is None:
            self.sink = WindowSink(GoodputRule(command["caps"]))
            core.add_sink(self.sink)
            self.pool = ClosedLoop(
                profile.arrival, [], engine.make_agent, core.run_session,
                profile.time_scale, engine.seed,
            )  # fmt: skip
            self.pool.start_jitter_s = float(command["jitter_s"])
            engine.other_agents = self.in_flight  # the master's live metrics count them
        assert self.pool is not None
        assert self.runner is not None  # commands are served only once attached
        self.sink.begin(float(command["since_unix"]))
        if command["closed"]:
            share = float(command["shares"].get(self.runner.client_id, 0.0))
            self.pool.resize(round(share), at_once=True)
            return
        await self._stop_arrivals()
        if command.get("trace"):
            part = command["parts"].get(self.runner.client_id)
            if part is not None:
                # This worker's sessions of the trace, from its start at the level's speedup
                # (as one process replays it): the swarm together replays the whole trace.
                index, count = int(part[0]), int(part[1])
                replay = level_replay(core, float(command["speedup"]), lambda: (index, count))
                self._open_loop = replay
                self._arrivals = asyncio.create_task(replay.run(float(command["duration_s"])))
            return
        share = float(command["shares"].get(self.runner.client_id, 0.0))
        if share > 0:
            # The worker's profile may be closed-loop: the master's --by decides.
            arrival = profile.arrival.model_copy(update={"mode": "open", "rate": share})
            driver = OpenLoop(arrival, [], engine.make_agent, core.run_session, engine.seed)
            self._open_loop = driver
            self._arrivals = asyncio.create_task(driver.run(float(command["duration_s"])))

    def in_flight(self) -> int:
        """Agents running (closed loop) or sessions in flight (open loop); read on the loop."""
        pool = 0 if self.pool is None else self.pool.active
        return pool + (0 if self._open_loop is None else len(self._open_loop.tasks))

    async def _open(self) -> None:
        assert self.sink is not None
        self.sink.open_slice()
        self._cpu_mark = time.process_time()

    async def _close(self, start_s: float, duration_s: float) -> dict[str, Any]:
        # Closing and reopening in one step on the loop: no record falls between slices.
        assert self.sink is not None
        piece = self.sink.close_slice(start_s, duration_s)
        self.sink.open_slice()
        now = time.process_time()
        cpu_s, self._cpu_mark = now - self._cpu_mark, now
        return {
            "stats": piece.stats.to_dict(),
            "judged": piece.judged_sessions,
            "goodput": piece.goodput_sessions,
            "judged_tokens": piece.judged_tokens,
            "goodput_tokens": piece.goodput_tokens,
            "begun": piece.begun.to_dict(),
            "sessions": self.sink.level_sessions.to_dict(),
            "cpu_s": cpu_s,
        }

    async def stop(self) -> None:
        """Retire every agent and stop arrivals (sessions in flight end as aborted)."""
        if self.pool is not None:
            await self.pool.stop()
        await self._stop_arrivals()

    async def _stop_arrivals(self) -> None:
        task, self._arrivals = self._arrivals, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- the master's side ----------------------------------------------------------------------


class _SwarmHealth:
    """The busiest worker's CPU over the steady period; schedule lag from the slices."""

    def __init__(self, schedule_lag: LatencyHistogram) -> None:
        self.schedule_lag = schedule_lag
        self.cpu_s: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._wall = 0.0

    async def __aenter__(self) -> _SwarmHealth:
        self._t0 = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._wall = time.perf_counter() - self._t0

    def report(self) -> dict[str, Any]:
        wall = self._wall or (time.perf_counter() - self._t0)
        busiest = max(self.cpu_s.values(), default=None)
        return {
            "cpu_percent": None if busiest is None or wall <= 0 else 100.0 * busiest / wall,
            "loop_lag_p99_s": None,  # each worker's loop lag is in its own summary
            "schedule_lag_p99_s": self.schedule_lag.percentile(99),
        }


class SwarmDriver:
    """A LevelDriver whose load runs on Locust workers; runs on the master's loop thread."""

    def __init__(
        self,
        runner: MasterRunner,
        bridge: LoopBridge,
        *,
        closed: bool,
        trace: bool = False,
        profile_name: str,
        caps: dict[str, float],
        jitter_s: float,
        target_label: Callable[[], dict[str, Any]],
    ) -> None:
        self.runner = runner
        self.bridge = bridge
        self.closed = closed
        self.trace = trace  # levels are speedups of a trace every worker replays a part of
        self.profile_name = profile_name
        self.target_session: aiohttp.ClientSession | None = None
        self.socket_factory: SocketFactory | None = native_socket_factory
        self._caps = caps
        self._jitter_s = jitter_s
        self._target_label = target_label
        self._ids = itertools.count()
        self._pending: dict[int, tuple[set[str], dict[str, dict[str, Any]], Any]] = {}
        self._sessions = LatencyHistogram()
        self._health: _SwarmHealth | None = None
        self._open = False
        runner.register_message(REPLY_MESSAGE, self._on_reply)
        self.names: Callable[[str], str] = lambda client_id: client_id
        self._watcher = gevent.spawn(self._watch_workers)

    def _watch_workers(self) -> None:
        """On the hub: a worker that goes missing mid-command fails it at once, by name."""
        while True:
            gevent.sleep(0.5)
            clients = self.runner.clients
            for expected, replies, future in list(self._pending.values()):
                gone = sorted(
                    self.names(w) for w in expected - set(replies)
                    if (node := clients.get(w)) is None or node.state == STATE_MISSING
                )  # fmt: skip
                if gone:
                    lost = DriverStopped(
                        f"worker {', '.join(gone)} was lost mid-level: the levels measured "
                        "so far stand"
                    )
                    future.get_loop().call_soon_threadsafe(_fail, future, lost)

    def close(self) -> None:
        """Stop watching the workers (on the hub)."""
        self._watcher.kill(block=False)

    def target_label(self) -> dict[str, Any]:
        """As the workers report it."""
        return self._target_label()

    def _on_reply(self, environment: Environment, msg: Any, **_kw: Any) -> None:
        """On the hub: collect one worker's answer; wake the loop once all have answered."""
        pending = self._pending.get(msg.data.get("id"))
        if pending is None:
            return
        expected, replies, future = pending
        replies[msg.node_id] = msg.data
        if expected <= set(replies):
            self.bridge.loop.call_soon_threadsafe(_succeed, future, replies)

    async def _ask(
        self, op: str, data: Callable[[list[str]], dict[str, Any]] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Send a command to every live worker and wait for all their answers."""
        key = next(self._ids)
        future = asyncio.get_running_loop().create_future()

        def send() -> None:  # on the hub: Locust's runner is the hub's
            workers = sorted(c.id for c in self.runner.clients.values()
                             if c.state != STATE_MISSING)  # fmt: skip
            if not workers:
                gone = DriverStopped("every worker is gone: the levels measured so far stand")
                future.get_loop().call_soon_threadsafe(_fail, future, gone)
                return
            self._pending[key] = (set(workers), {}, future)
            body = {"op": op, "id": key, **(data(workers) if data else {})}
            self.runner.send_message(CEILING_MESSAGE, body)

        self.bridge.to_hub(send)
        try:
            replies: dict[str, dict[str, Any]] = await asyncio.wait_for(future, REPLY_TIMEOUT_S)
        except TimeoutError:
            pending = self._pending.get(key)
            silent = sorted(self.names(w) for w in pending[0] - set(pending[1])) if pending else []
            raise DriverStopped(
                f"worker {', '.join(silent) or '?'} stopped answering: the levels measured "
                "so far stand"
            ) from None
        finally:
            self._pending.pop(key, None)
        errors = [f"{w}: {r['error']}" for w, r in replies.items() if "error" in r]
        if errors:
            raise DriverStopped("a worker failed: " + "; ".join(errors))
        return replies

    async def start_level(self, load: float, since_unix: float, duration_s: float) -> None:
        """Every worker moves to its share of `load` (a trace's speedup: its part of the
        trace's sessions, replayed from the trace's start at that speedup)."""
        self._sessions = LatencyHistogram()
        self._open = False

        def data(workers: list[str]) -> dict[str, Any]:
            return {
                "shares": split_load(load, workers, self.closed),
                "closed": self.closed,
                "trace": self.trace,
                "parts": split_trace(workers) if self.trace else {},
                "speedup": load,
                "since_unix": since_unix,
                "duration_s": duration_s,
                "caps": self._caps,
                "jitter_s": self._jitter_s,
            }

        await self._ask("level", data)

    async def open_slice(self) -> None:
        """Workers reopen a slice as they close one; only the first needs its own command."""
        if not self._open:
            await self._ask("open")
            self._open = True

    async def close_slice(self, start_s: float, duration_s: float) -> Slice:
        """Every worker's slice, merged into one."""
        span = {"start_s": start_s, "duration_s": duration_s}
        replies = await self._ask("close", lambda _workers: span)
        pieces = []
        sessions = LatencyHistogram()
        for worker, reply in replies.items():
            pieces.append(
                Slice(
                    stats=RunStats.from_dict(reply["stats"]),
                    duration_s=duration_s,
                    start_s=start_s,
                    judged_sessions=int(reply["judged"]),
                    goodput_sessions=int(reply["goodput"]),
                    judged_tokens=int(reply["judged_tokens"]),
                    goodput_tokens=int(reply["goodput_tokens"]),
                    begun=RunStats.from_dict(reply["begun"]),
                )
            )
            sessions.merge(LatencyHistogram.from_dict(reply["sessions"]))
            if self._health is not None:
                spent = self._health.cpu_s
                spent[worker] = spent.get(worker, 0.0) + float(reply["cpu_s"])
        self._sessions = sessions
        merged = merge_slices(pieces)
        merged.duration_s, merged.start_s = duration_s, start_s  # concurrent, not consecutive
        return merged

    def typical_session_s(self) -> float | None:
        """The median of every worker's completed sessions since the level began."""
        return self._sessions.percentile(50)

    def health(self, schedule_lag: LatencyHistogram) -> HealthProbe:
        """The workers' CPU (from their slices) and the merged schedule lag."""
        self._health = _SwarmHealth(schedule_lag)
        return self._health

    async def stop(self) -> None:
        """Every worker retires its agents and stops arrivals."""
        self._open = False
        with contextlib.suppress(DriverStopped):  # a worker that is gone runs nothing
            await self._ask("stop")


def _succeed(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # a timed-out wait has cancelled it
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def run_ceiling_swarm(
    settings: SwarmSettings,
    options: SwarmOptions,
    ceiling: CeilingOptions,
    interruption: Interruption | None = None,
) -> dict[str, Any]:
    """Search from a Locust master; returns (and writes) ceiling.json, plus summary.json.

    ceiling.json is rewritten after every level. A signal into `interruption` (its handlers
    are the caller's) stops the wait for workers, or the search as any stop does.
    """
    interruption = interruption or Interruption()
    profile = settings.loaded.profile
    env = swarm_environment(settings, options.expect_workers)
    runner = env.create_master_runner(options.master_bind_host, options.master_bind_port)
    assert isinstance(runner, MasterRunner)
    aggregator = MasterAggregator(env, options.metrics)
    unit = search_unit(profile)

    def target_label() -> dict[str, Any]:
        return {**aggregator.target, **settings.extra} or {"url": settings.target.base_url}

    write = ceiling_writer(unit, ceiling, profile=profile.name, target=target_label)
    try:
        workers = wait_for_workers(runner, _until_interrupted(options, interruption))
    except TargetUnreachableError:
        if interruption.signal is None:
            raise
        # Interrupted before every worker connected (the runner has quit): nothing measured.
        return write(SearchOutcome([], INTERRUPTED, 0.0))
    files = ResultFiles(settings.out_dir, records=False)  # workers write their own
    served = options.metrics is not None
    runner.send_message("agentload_processes", {"processes": workers, "metrics": served})
    bridge = process_bridge()
    driver = SwarmDriver(
        runner,
        bridge,
        closed=profile.arrival.mode == "closed",
        trace=profile.arrival.mode == "trace",
        profile_name=profile.name,
        caps=goodput_caps(ceiling.slos, profile.slos),
        jitter_s=min(1.0, ceiling.windows.warmup_s / 2),
        target_label=target_label,
    )
    driver.names = lambda client_id: aggregator.names.get(client_id, client_id)
    levels = LevelRunner(driver, ceiling.slos, ceiling.windows, ceiling.generator)
    try:
        result, cancel = bridge.submit(search_levels(levels, ceiling, unit, write))
        with interruption.stopping(cancel):
            try:
                outcome: SearchOutcome = result.get()
            except BaseException:  # this greenlet killed: the search goes with it
                cancel()
                raise
        aggregator.stop_requested_at = time.monotonic()
        wait_for_final_reports(aggregator, options.final_report_wait_s)
    finally:
        driver.close()
        runner.quit()
    summary = aggregator.merged().summary(
        target=driver.target_label(),
        profile=profile.name,
        duration_s=outcome.duration_s,
        generator=combine_reports(aggregator.health.values()),
    )
    summary.update(profile_sections(settings.loaded))
    summary["workers"] = aggregator.workers_section(options.expect_workers)
    files.write_summary(summary)
    files.close()
    return write(outcome)


def _until_interrupted(options: SwarmOptions, interruption: Interruption) -> SwarmOptions:
    """`options` whose wait for workers also ends at a signal."""
    before = options.stop_waiting

    def reason() -> str | None:
        if (sig := interruption.signal) is not None:
            return f"interrupted by {signal.Signals(sig).name} before every worker connected"
        return before() if before is not None else None

    return dataclasses.replace(options, stop_waiting=reason)
