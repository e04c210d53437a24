"""Driving Locust as a library: one process, a master with workers, or a worker of a master."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import gevent
from locust.rpc import Message

from loadgen.observe import RunStats
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.text import IncrementalExposition
from loadgen.observe.summary import add_server_section
from loadgen.orchestration.ceiling_swarm import CEILING_MESSAGE, CeilingWorker
from loadgen.orchestration.environment import (
    SwarmOptions,
    interruption,
    run_shape,
    stop_on_signals,
    swarm_environment,
    watch_ticks,
)
from loadgen.orchestration.master import MasterAggregator, run_master
from loadgen.orchestration.membership import PROCESSES_MESSAGE, create_worker, follow_membership
from loadgen.orchestration.process_engine import ProcessEngine, SwarmSettings, process_engine
from loadgen.orchestration.web_ui import start_web_ui

__all__ = ["MasterAggregator", "SwarmOptions", "run_swarm"]


def run_swarm(settings: SwarmSettings, options: SwarmOptions) -> dict[str, Any] | None:
    """Run the profile under Locust; returns summary.json's content (None on a worker)."""
    if options.mode == "worker":
        _run_worker(settings, options)
        return None
    if options.mode == "master":
        return run_master(settings, options)
    return _run_local(settings, options)


def _run_local(settings: SwarmSettings, options: SwarmOptions) -> dict[str, Any]:
    env = swarm_environment(settings, 1)
    runner = env.create_local_runner()
    engine = process_engine(env)  # start now, so an unreachable target fails before the run

    def stats_so_far() -> RunStats:
        # The loop thread writes the statistics; a copy made there is whole, where reading
        # them from the hub could meet a dict mid-update.
        async def copy() -> RunStats:
            snapshot = RunStats()
            snapshot.merge(engine.engine.stats)
            return snapshot

        result: RunStats = engine.bridge.run(copy(), timeout=10)
        return result

    if options.web:
        text = _metrics_text(engine, settings.observe.metrics)
        start_web_ui(env, options.web_host, options.web_port, stats_so_far, text)
    watcher = watch_ticks(env, options, stats_so_far)
    t0 = time.perf_counter()
    signals: list[tuple[int, float]] = []
    started = time.monotonic()
    handlers = stop_on_signals(runner, signals)
    try:
        run_shape(runner)
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
        add_server_section(summary, server)
    if (interrupted := interruption(signals, started)) is not None:
        summary["interrupted"] = interrupted
    engine.engine.write_summary(summary)
    engine.finish()
    if env.web_ui is not None:
        env.web_ui.stop()
    runner.quit()
    return summary


def _metrics_text(engine: ProcessEngine, metrics: RunMetrics | None) -> Callable[[], bytes] | None:
    """The web UI's /metrics, rendered on the loop thread that writes the metrics."""
    if metrics is None:
        return None
    exposition = IncrementalExposition(metrics)

    async def render() -> bytes:
        return exposition.render()

    def text() -> bytes:
        body: bytes = engine.bridge.run(render(), timeout=10)
        return body

    return text


def _run_worker(settings: SwarmSettings, options: SwarmOptions) -> None:
    env = swarm_environment(settings, 1)
    # Told how many workers share the run, and whether to ship metrics, from the first
    # message on: a worker joining mid-run hears it right after the master's ack.
    # A ceiling master's level commands are heard from the first message on, too.
    ceiling = CeilingWorker(env)
    messages = {PROCESSES_MESSAGE: follow_membership(settings), CEILING_MESSAGE: ceiling.on_message}
    runner = create_worker(env, options.master_host, options.master_port, messages)
    ceiling.attach(runner)

    leaving = [False]

    def on_report(client_id: str, data: dict[str, Any]) -> None:
        engine: ProcessEngine | None = getattr(env, "agentload_engine", None)
        if engine is None:
            return
        part = engine.take_delta()
        part["worker"] = f"worker-{engine.worker}"  # its results folder, for the summary
        part["target"] = engine.engine.target_label()
        part["final"] = runner.user_count == 0 and engine.idle()
        part["leaving"] = leaving[0]
        data["agentload"] = part

    def leave() -> None:
        # Stopped on purpose (Ctrl-C, SIGTERM: a scale-down, a rolling restart): end the
        # sessions as aborted, hand the master everything measured, then say goodbye, so
        # the master counts this worker as gone, not lost, and keeps its whole share.
        leaving[0] = True
        runner.stop()
        engine: ProcessEngine | None = getattr(env, "agentload_engine", None)
        if engine is not None:
            engine.bridge.run(ceiling.stop(), timeout=30)
            engine.bridge.wait_idle(10.0)
        # Locust's own report and goodbye, sent now rather than at the next 3 s tick and at
        # exit, which a SIGTERM'd worker would not live to see.
        runner._send_stats()
        runner.client.send(Message("quit", None, runner.client_id))
        runner.greenlet.kill(block=False)

    env.events.report_to_master.add_listener(on_report)
    handlers = [gevent.signal_handler(sig, lambda: gevent.spawn(leave))
                for sig in (signal.SIGINT, signal.SIGTERM)]  # fmt: skip
    try:
        runner.greenlet.join()
    finally:
        for handler in handlers:
            handler.cancel()
    engine: ProcessEngine | None = getattr(env, "agentload_engine", None)
    if engine is not None:
        engine.bridge.run(ceiling.stop(), timeout=30)
        engine.finish()
