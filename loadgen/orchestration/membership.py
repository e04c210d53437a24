"""Who shares a running swarm's load: the workers there at the start, and those that join or go.

Locust moves agents (closed loop) when workers come and go, given rebalancing; the open-loop
session rate is agentload's own to split, so the master keeps telling every worker how many
live workers share it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from loadgen.observe.prometheus.merge import SampleTracker
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.orchestration.process_engine import SwarmSettings
from loadgen.orchestration.shape import ProfileShape

__all__ = [
    "PROCESSES_MESSAGE",
    "ListeningWorker",
    "RebalancingMaster",
    "SwarmMembership",
    "create_master",
    "create_worker",
    "follow_membership",
]

# master -> worker: {"processes": live workers, "metrics": ship metric samples,
# "elapsed_s": seconds into the run (absent from a ceiling search's master)}
PROCESSES_MESSAGE = "agentload_processes"


# -- the master's side ----------------------------------------------------------------------


class RebalancingMaster(MasterRunner):
    """Locust's master as `locust --master --enable-rebalancing` runs it.

    A worker that connects mid-run gets its share of the agents at once, not at the next
    change of the user count (there is none during a hold), and a lost worker's agents move
    to the others. Library mode has no parsed options to turn it on with, and setting them
    would change what the web UI and every spawn message carry.
    """

    def rebalancing_enabled(self) -> bool:
        """Always: a swarm's workers may come and go (compose `--scale`, rolling restarts)."""
        return True


def create_master(env: Environment, bind_host: str, bind_port: int) -> MasterRunner:
    """The environment's master runner, with rebalancing on."""
    # Locust's own constructor path: it also hands the runner to the load shape.
    return env._create_runner(
        RebalancingMaster, master_bind_host=bind_host, master_bind_port=bind_port
    )


class SwarmMembership:
    """Keeps every worker told how many live workers share the run, and how far in it is.

    Each open-loop worker runs 1/N of the session rate, N the workers live now, and the
    profile's shape asks for one arrival user per live worker. A worker that joins late is
    told before Locust's first spawn message to it (both go down the same socket, in order);
    the others within `poll_s` of a join, a leave or a loss.
    """

    def __init__(
        self, runner: MasterRunner, shape: ProfileShape, *, metrics: bool, poll_s: float = 0.5
    ) -> None:
        self.runner = runner
        self.shape = shape
        self.metrics = metrics
        self.poll_s = poll_s
        self.workers = 0  # the count the workers were last told
        self._t0: float | None = None  # set while the run goes on
        self._watcher: gevent.Greenlet | None = None
        runner.environment.events.worker_connect.add_listener(self._on_connect)

    def start(self, workers: int) -> None:
        """Tell the workers connected now (before the run's first spawn); then follow changes."""
        self._t0 = time.monotonic()
        self._tell(workers)
        self._watcher = gevent.spawn(self._watch)

    def stop(self) -> None:
        """Stop following: the run is over (workers reconnect as Locust stops them)."""
        self._t0 = None
        if self._watcher is not None:
            self._watcher.kill(block=False)

    def live(self) -> set[str]:
        """The workers the master still hears from."""
        return {c.id for c in self.runner.clients.values() if c.state != STATE_MISSING}

    def _message(self, workers: int) -> dict[str, Any]:
        elapsed = 0.0 if self._t0 is None else time.monotonic() - self._t0
        return {"processes": workers, "metrics": self.metrics, "elapsed_s": elapsed}

    def _tell(self, workers: int) -> None:
        self.workers = workers
        self.shape.processes = workers
        self.runner.send_message(PROCESSES_MESSAGE, self._message(workers))

    def _on_connect(self, client_id: str, **_kw: Any) -> None:
        if self._t0 is None:
            return  # before the run (its start tells every worker) or after it
        # Locust adds the worker to its clients after this event, then dispatches to it.
        workers = len(self.live() | {client_id})
        self.runner.send_message(PROCESSES_MESSAGE, self._message(workers), client_id=client_id)
        self._tell(workers)

    def _watch(self) -> None:
        # Locust fires no event when a worker quits or goes missing; a poll sees both.
        while True:
            gevent.sleep(self.poll_s)
            workers = len(self.live())
            if workers and workers != self.workers:
                self._tell(workers)


# -- a worker's side ------------------------------------------------------------------------


class ListeningWorker(WorkerRunner):
    """Locust's worker with agentload's message handlers in place before it connects.

    A master answers a connection with its ack and, mid-run, at once with the live worker
    count and a spawn: handlers registered after the constructor returns (it connects) can
    be too late, and Locust drops a message it has no handler for.
    """

    def __init__(
        self,
        environment: Environment,
        master_host: str,
        master_port: int,
        handlers: Mapping[str, Callable[..., None]],
    ) -> None:
        self._early_handlers = dict(handlers)
        super().__init__(environment, master_host, master_port)

    def connect_to_master(self) -> None:
        """Register the handlers, then connect (Locust retries by calling this again)."""
        for msg_type, handler in self._early_handlers.items():
            if msg_type not in self.custom_messages:
                self.register_message(msg_type, handler)
        # Locust waits for the master's ack without a word: said here, a worker pointed at
        # a master that is not there does not look hung.
        print(
            f"agentload: worker waiting for its master at {self.master_host}:{self.master_port}",
            file=sys.stderr,
            flush=True,
        )
        super().connect_to_master()
        print("agentload: worker connected to its master", file=sys.stderr, flush=True)


def create_worker(
    env: Environment, master_host: str, master_port: int, handlers: Mapping[str, Any]
) -> WorkerRunner:
    """The environment's worker runner, listening with `handlers` from its first message."""
    return env._create_runner(
        ListeningWorker, master_host=master_host, master_port=master_port, handlers=handlers
    )


def follow_membership(settings: SwarmSettings) -> Callable[..., None]:
    """A worker's handler of PROCESSES_MESSAGE: its share, the run's clock, metrics to ship."""

    def on_processes(environment: Environment, msg: Any, **_kw: Any) -> None:
        # Sent at the start, to a worker that joins late, and whenever the live count
        # changes: this worker runs 1/N of an open-loop rate.
        data = msg.data
        settings.processes = int(data["processes"])
        if "elapsed_s" in data and settings.run_started is None:
            settings.run_started = time.monotonic() - float(data["elapsed_s"])
        if data.get("metrics") and settings.metrics_tracker is None:
            # The master serves the swarm's metrics: keep them here (on this worker's own
            # --prometheus-port too, if it has one) and ship them with every report. One
            # tracker for the run: a new one would send every sample again.
            metrics = settings.observe.metrics
            if metrics is None:
                metrics = RunMetrics()
                settings.observe = dataclasses.replace(settings.observe, metrics=metrics)
            settings.metrics_tracker = SampleTracker(metrics)

    return on_processes
