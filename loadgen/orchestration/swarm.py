"""Driving Locust as a library: one process, a master with workers, or a worker of a master."""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gevent
from locust.env import Environment
from locust.event import Events
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from loadgen.errors import AgentloadError, TargetUnreachableError
from loadgen.observe import ResultFiles, RunStats, combine_reports
from loadgen.orchestration.process_engine import ProcessEngine, SwarmSettings, process_engine
from loadgen.orchestration.shape import ProfileShape
from loadgen.orchestration.users import user_classes_for
from loadgen.orchestration.web_ui import start_web_ui

__all__ = ["MasterAggregator", "SwarmOptions", "run_swarm"]

log = logging.getLogger("agentload.swarm")


@dataclass(frozen=True)
class SwarmOptions:
    """How the swarm is spread; flag names and defaults follow Locust's."""

    mode: Literal["local", "master", "worker"] = "local"
    web: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 8089
    master_host: str = "127.0.0.1"
    master_port: int = 5557
    master_bind_host: str = "*"
    master_bind_port: int = 5557
    expect_workers: int = 1
    expect_workers_max_wait_s: float = 60.0
    # Called about once a second with the run's statistics so far, the elapsed seconds and
    # the running user count; returning True stops the run (an abort-on-fail gate).
    on_tick: Callable[[RunStats, float, int], bool] | None = None
    tick_interval_s: float = 1.0
    final_report_wait_s: float = 20.0


class MasterAggregator:
    """Merges what each worker reports; keeps the share of workers that vanish mid-run."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.per_worker: dict[str, RunStats] = {}
        self.health: dict[str, dict[str, Any]] = {}
        self.target: dict[str, Any] = {}
        self.final: set[str] = set()
        self.stop_requested_at: float | None = None
        environment.events.worker_report.add_listener(self._on_report)

    def _on_report(self, client_id: str, data: dict[str, Any]) -> None:
        part = data.get("agentload")
        if not part:
            return
        self.per_worker.setdefault(client_id, RunStats()).merge(RunStats.from_dict(part["stats"]))
        self.health[client_id] = part["health"]
        self.target = part.get("target") or self.target
        if part.get("final") and self.stop_requested_at is not None:
            self.final.add(client_id)

    def merged(self) -> RunStats:
        """Every worker's statistics merged (exactly: histograms are mergeable)."""
        total = RunStats()
        for stats in self.per_worker.values():
            total.merge(stats)
        return total

    def lost_workers(self) -> list[str]:
        """Workers that reported and then went missing (killed, crashed, cut off)."""
        runner = self.environment.runner
        clients = runner.clients if isinstance(runner, MasterRunner) else {}
        lost = []
        for client_id in self.per_worker:
            node = clients.get(client_id)
            if (node is None and client_id not in self.final) or (
                node is not None and node.state == STATE_MISSING
            ):
                lost.append(client_id)
        return sorted(lost)

    def live_workers(self) -> list[str]:
        """Workers the master still hears from."""
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner):
            return []
        return [c.id for c in runner.clients.values() if c.state != STATE_MISSING]


def _environment(settings: SwarmSettings, processes: int) -> Environment:
    profile = settings.loaded.profile
    env = Environment(
        user_classes=user_classes_for(profile),
        shape_class=ProfileShape(profile, processes),
        events=Events(),
        host=settings.target.base_url,
        stop_timeout=None,
    )
    env.agentload = settings  # type: ignore[attr-defined]

    def freeze_after_spawn(**_kw: Any) -> None:
        # Long-lived agents are allocated by now; freezing them out of the collector's
        # generations cut p99 timing error 2-3x in the probe.
        gc.collect()
        gc.freeze()

    env.events.spawning_complete.add_listener(freeze_after_spawn)
    return env


def _watch(
    env: Environment, options: SwarmOptions, stats_fn: Callable[[], RunStats]
) -> tuple[gevent.Greenlet | None, list[bool]]:
    """Tick `options.on_tick` while the run goes on; stop the run when it asks to."""
    aborted = [False]
    on_tick = options.on_tick
    if on_tick is None:
        return None, aborted
    t0 = time.perf_counter()

    def loop() -> None:
        while True:
            gevent.sleep(options.tick_interval_s)
            runner = env.runner
            users = runner.user_count if runner is not None else 0
            if on_tick(stats_fn(), time.perf_counter() - t0, users) and runner is not None:
                aborted[0] = True
                if runner.shape_greenlet is not None:
                    runner.shape_greenlet.kill(block=False)
                return

    return gevent.spawn(loop), aborted


def _stop_on_signals(runner: Any) -> list[Any]:
    """Ctrl-C / SIGTERM end the run as its end would: sessions aborted, results written."""

    def stop() -> None:
        shape = runner.shape_greenlet
        if shape is not None:
            shape.kill(block=False)

    return [gevent.signal_handler(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)]


def run_swarm(settings: SwarmSettings, options: SwarmOptions) -> dict[str, Any] | None:
    """Run the profile under Locust; returns summary.json's content (None on a worker)."""
    if options.mode == "worker":
        _run_worker(settings, options)
        return None
    if options.mode == "master":
        return _run_master(settings, options)
    return _run_local(settings, options)


def _run_local(settings: SwarmSettings, options: SwarmOptions) -> dict[str, Any]:
    env = _environment(settings, 1)
    runner = env.create_local_runner()
    engine = process_engine(env)  # start now, so an unreachable target fails before the run
    if options.web:
        registry = settings.observe.metrics.registry if settings.observe.metrics else None
        start_web_ui(env, options.web_host, options.web_port, lambda: engine.engine.stats, registry)
    watcher, _aborted = _watch(env, options, lambda: engine.engine.stats)
    t0 = time.perf_counter()
    handlers = _stop_on_signals(runner)
    try:
        runner.start_shape()
        if runner.shape_greenlet is not None:
            runner.shape_greenlet.join()
        runner.stop()
    finally:
        for handler in handlers:
            handler.cancel()
        if watcher is not None:
            watcher.kill()
    duration = time.perf_counter() - t0
    engine.bridge.wait_idle(15.0)
    server = engine.stop_observing()
    summary = engine.engine.summary(duration, **settings.extra)
    if server is not None:
        summary["server"] = server
    engine.engine.write_summary(summary)
    engine.finish()
    if env.web_ui is not None:
        env.web_ui.stop()
    runner.quit()
    return summary


def _run_worker(settings: SwarmSettings, options: SwarmOptions) -> None:
    env = _environment(settings, 1)
    runner = env.create_worker_runner(options.master_host, options.master_port)
    assert isinstance(runner, WorkerRunner)

    def on_processes(environment: Environment, msg: Any, **_kw: Any) -> None:
        settings.processes = int(msg.data["processes"])  # this worker runs 1/N of a rate

    runner.register_message("agentload_processes", on_processes)

    def on_report(client_id: str, data: dict[str, Any]) -> None:
        engine: ProcessEngine | None = getattr(env, "agentload_engine", None)
        if engine is None:
            return
        part = engine.take_delta()
        part["target"] = engine.engine.target_label()
        part["final"] = runner.user_count == 0 and engine.idle()
        data["agentload"] = part

    env.events.report_to_master.add_listener(on_report)
    runner.greenlet.join()
    engine: ProcessEngine | None = getattr(env, "agentload_engine", None)
    if engine is not None:
        engine.finish()


def _run_master(settings: SwarmSettings, options: SwarmOptions) -> dict[str, Any]:
    profile = settings.loaded.profile
    env = _environment(settings, options.expect_workers)
    runner = env.create_master_runner(options.master_bind_host, options.master_bind_port)
    assert isinstance(runner, MasterRunner)
    aggregator = MasterAggregator(env)
    files = ResultFiles(settings.out_dir)
    if options.web:
        start_web_ui(env, options.web_host, options.web_port, aggregator.merged)
    deadline = time.monotonic() + options.expect_workers_max_wait_s
    while len(runner.clients.ready) < options.expect_workers:
        if time.monotonic() > deadline:
            runner.quit()
            raise TargetUnreachableError(
                f"only {len(runner.clients.ready)} of {options.expect_workers} workers connected "
                f"within {options.expect_workers_max_wait_s:.0f}s; start workers with "
                f"--worker --master-host HOST --master-port {options.master_bind_port}"
            )
        gevent.sleep(0.2)
    # Open loop: one arrival user per worker, each at 1/N of the rate. Sent before the first
    # spawn message on the same socket, so every worker knows N before it starts.
    workers = len(runner.clients.ready)
    assert isinstance(env.shape_class, ProfileShape)
    env.shape_class.processes = workers
    runner.send_message("agentload_processes", {"processes": workers})
    watcher, _aborted = _watch(env, options, aggregator.merged)
    t0 = time.perf_counter()
    handlers = _stop_on_signals(runner)
    try:
        runner.start_shape()
        if runner.shape_greenlet is not None:
            runner.shape_greenlet.join()
        aggregator.stop_requested_at = time.monotonic()
        runner.stop()
        duration = time.perf_counter() - t0
        # Workers report every few seconds; wait for each live one's report after the stop.
        wait_until = time.monotonic() + options.final_report_wait_s
        while time.monotonic() < wait_until:
            if set(aggregator.live_workers()) <= aggregator.final:
                break
            gevent.sleep(0.2)
    finally:
        for handler in handlers:
            handler.cancel()
        if watcher is not None:
            watcher.kill()
    stats = aggregator.merged()
    summary = stats.summary(
        target={**aggregator.target, **settings.extra},
        profile=profile.name,
        duration_s=duration,
        generator=combine_reports(aggregator.health.values()),
    )
    summary["workers"] = {
        "expected": options.expect_workers,
        "reported": sorted(aggregator.per_worker),
        "lost": aggregator.lost_workers(),
    }
    files.write_summary(summary)
    files.close()
    if env.web_ui is not None:
        env.web_ui.stop()
    runner.quit()
    if not aggregator.per_worker:
        raise AgentloadError("no worker reported any measurement")
    return summary
