"""Where a run or a ceiling search goes and how it is spread, decided by the command line.

Light on imports: a single-process ceiling uses it without loading gevent or Locust.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from loadgen.errors import ConfigError
from loadgen.orchestration.local_workers import (
    free_port,
    local_workers_exited,
    reap_workers,
    start_local_workers,
)
from loadgen.orchestration.metrics_endpoint import MetricsSettings
from loadgen.profile.loader import LoadedProfile
from loadgen.sim import sim_server
from loadgen.sim.config import profile_sim_config
from loadgen.transport import TargetConfig

if TYPE_CHECKING:
    from loadgen.orchestration.bridge import LoopBridge
    from loadgen.orchestration.environment import SwarmOptions

__all__ = ["Launch", "local_workers", "target_of"]


@dataclass(frozen=True)
class Launch:
    """Where a run goes and how it is spread: what the command line decided, without argparse."""

    out: Path
    # The target's settings (key, headers, TLS, timeouts) at a URL: the given one, or the
    # built-in simulator's once it is up.
    connect: Callable[[str], TargetConfig]
    target_url: str | None = None  # None: the profile's built-in simulator, in this process
    model: str | None = None
    processes: int = 1  # local worker processes (Locust workers of this process as master)
    # A local worker's command line for (master port, target URL); its environment.
    worker_argv: Callable[[int, str], list[str]] | None = None
    worker_env: Mapping[str, str] | None = None
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    progress: TextIO | None = sys.stderr  # None: quiet


@contextlib.contextmanager
def target_of(
    launch: Launch, loaded: LoadedProfile, bridge: LoopBridge
) -> Iterator[tuple[TargetConfig, dict[str, Any]]]:
    """The target, and the summary's label for it; the built-in simulator while it is needed."""
    if launch.target_url is not None:
        yield launch.connect(launch.target_url), {}
        return
    config = profile_sim_config(loaded.profile.sim)
    sim = sim_server(config, host="127.0.0.1")  # on the bridge's loop, in this process
    bridge.run(sim.start(), timeout=60)
    try:
        yield launch.connect(sim.base_url), {"builtin_sim": config.preset}
    finally:
        bridge.run(sim.stop(), timeout=30)


@contextlib.contextmanager
def local_workers(
    launch: Launch, target: TargetConfig, options: SwarmOptions
) -> Iterator[SwarmOptions]:
    """Start --processes workers for a master on a free local port; reap them afterwards."""
    if launch.processes <= 1:
        yield options
        return
    if launch.worker_argv is None:
        raise ConfigError("Launch.worker_argv is needed to start local worker processes")
    port = free_port()
    argv = launch.worker_argv(port, target.base_url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers = start_local_workers(argv, launch.processes, launch.worker_env)
        # A worker that dies before connecting would leave the master waiting forever.
        yield dataclasses.replace(
            options, master_bind_host="127.0.0.1", master_bind_port=port,
            stop_waiting=local_workers_exited(workers),
        )  # fmt: skip
    finally:
        reap_workers(workers)
