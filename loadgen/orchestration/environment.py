"""What every way of running a swarm shares: options, the Locust Environment, ticks, signals."""

from __future__ import annotations

import gc
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gevent
from locust.env import Environment
from locust.event import Events

from loadgen.observe import RunStats
from loadgen.observe.prometheus.merge import MergedMetrics
from loadgen.orchestration.process_engine import SwarmSettings
from loadgen.orchestration.shape import ProfileShape
from loadgen.orchestration.users import user_classes_for

__all__ = [
    "SwarmOptions",
    "interruption",
    "run_shape",
    "stop_on_signals",
    "swarm_environment",
    "watch_ticks",
]


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
    expect_workers_max_wait_s: float = math.inf
    # Master: a reason to stop waiting for workers that will never come (local worker
    # processes that exited), or None to go on waiting.
    stop_waiting: Callable[[], str | None] | None = None
    # Called about once a second with the run's statistics so far, the elapsed seconds and
    # the running user count; returning True stops the run (an abort-on-fail gate).
    on_tick: Callable[[RunStats, float, int], bool] | None = None
    tick_interval_s: float = 1.0
    final_report_wait_s: float = 20.0
    # Master: where the workers' metric samples are merged (the caller serves it); workers
    # are asked to keep and ship metrics only when it is set.
    metrics: MergedMetrics | None = None


def _not_spawn_rate_advice(record: logging.LogRecord) -> bool:
    # Locust warns on every start() above 100 users/s, which a profile's ramp calls each
    # second: its users are greenlets doing HTTP, ours are handles to agents on one event
    # loop, where fast spawns cost little (and each start is jittered).
    return not record.getMessage().startswith("Your selected spawn rate is very high")


def swarm_environment(settings: SwarmSettings, processes: int) -> Environment:
    """A Locust Environment running the profile's agents with its stages as the shape."""
    runners_log = logging.getLogger("locust.runners")
    if _not_spawn_rate_advice not in runners_log.filters:
        runners_log.addFilter(_not_spawn_rate_advice)
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


def watch_ticks(
    env: Environment, options: SwarmOptions, stats_fn: Callable[[], RunStats]
) -> gevent.Greenlet | None:
    """Tick `options.on_tick` while the run goes on; stop the run when it asks to."""
    on_tick = options.on_tick
    if on_tick is None:
        return None
    t0 = time.perf_counter()

    def loop() -> None:
        while True:
            gevent.sleep(options.tick_interval_s)
            runner = env.runner
            users = runner.user_count if runner is not None else 0
            if on_tick(stats_fn(), time.perf_counter() - t0, users) and runner is not None:
                if runner.shape_greenlet is not None:
                    runner.shape_greenlet.kill(block=False)
                return

    return gevent.spawn(loop)


def run_shape(runner: Any) -> None:
    """Run the profile's stages as Locust's load shape until they end (or are stopped)."""
    runner.start_shape()
    if runner.shape_greenlet is not None:
        runner.shape_greenlet.join()


def stop_on_signals(runner: Any, received: list[tuple[int, float]] | None = None) -> list[Any]:
    """Ctrl-C / SIGTERM end the run as its end would: sessions aborted, results written.

    `received` collects (signal number, monotonic time) of each: an interrupted run must
    say so (summary.json `interrupted`, exit 128 + the signal), not pass for a whole one.
    """

    def stop(sig: int) -> None:
        if received is not None:
            received.append((sig, time.monotonic()))
        shape = runner.shape_greenlet
        if shape is not None:
            shape.kill(block=False)

    return [gevent.signal_handler(sig, stop, sig) for sig in (signal.SIGINT, signal.SIGTERM)]


def interruption(received: list[tuple[int, float]], t0: float) -> dict[str, Any] | None:
    """summary.json's `interrupted` section for the first signal received, or None."""
    if not received:
        return None
    sig, at = received[0]
    return {"signal": signal.Signals(sig).name, "at_s": round(max(0.0, at - t0), 3)}
