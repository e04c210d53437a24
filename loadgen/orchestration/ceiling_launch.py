"""One `agentload ceiling` end to end: in this process on asyncio, or as a Locust master.

The single-process search never loads gevent or Locust: they are imported only for a swarm.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loadgen.ceiling import CeilingOptions, run_ceiling
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.orchestration.launch_plan import Launch, local_workers, target_of
from loadgen.orchestration.metrics_endpoint import close_metrics, serve_metrics
from loadgen.profile.loader import LoadedProfile
from loadgen.sim import SimServer
from loadgen.sim.config import profile_sim_config
from loadgen.transport import TargetConfig

if TYPE_CHECKING:
    from loadgen.orchestration.environment import SwarmOptions

__all__ = ["CeilingOutcome", "launch_ceiling"]


@dataclass(frozen=True)
class CeilingOutcome:
    """ceiling.json's content, and the signal that interrupted the search (or None)."""

    document: dict[str, Any]
    interrupted_by: int | None = None


def launch_ceiling(
    loaded: LoadedProfile,
    launch: Launch,
    options: CeilingOptions,
    swarm: SwarmOptions | None = None,
) -> CeilingOutcome:
    """Search in this process, or as the master `swarm` describes (with launch.processes)."""
    if swarm is None:
        received: list[int] = []
        document = asyncio.run(_search(loaded, launch, options, received))
        return CeilingOutcome(document, received[0] if received else None)
    return CeilingOutcome(_search_swarm(loaded, launch, options, swarm))


def _with_target(options: CeilingOptions, launch: Launch, target: TargetConfig) -> CeilingOptions:
    url = launch.metrics.target_url(target)
    if url is None:
        return options
    return dataclasses.replace(
        options, windows=dataclasses.replace(options.windows, metrics_url=url)
    )


async def _search(
    loaded: LoadedProfile, launch: Launch, options: CeilingOptions, received: list[int]
) -> dict[str, Any]:
    """Start the built-in simulator when no target is given, then search on this loop.

    Ctrl-C and SIGTERM stop the search (their numbers go into `received`); it then ends as
    any stop does, and ceiling.json keeps every level measured.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def interrupt(sig: int) -> None:
        received.append(sig)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt, sig)
    sim = server = None
    try:
        if launch.metrics.prometheus_port is not None:
            metrics = RunMetrics()
            server = await serve_metrics(metrics, launch.metrics.prometheus_port, "ceiling")
            options = dataclasses.replace(options, metrics=metrics)
        if launch.target_url is not None:
            target = launch.connect(launch.target_url)
        else:
            config = profile_sim_config(loaded.profile.sim)
            sim = SimServer(config, host="127.0.0.1")
            await sim.start()
            target = launch.connect(sim.base_url)
            options = dataclasses.replace(options, target_label={"builtin_sim": config.preset})
        return await run_ceiling(loaded, target, _with_target(options, launch, target))
    finally:
        if server is not None:
            await close_metrics(server, options.progress, "ceiling")
        if sim is not None:
            await sim.stop()


def _search_swarm(
    loaded: LoadedProfile, launch: Launch, options: CeilingOptions, swarm: SwarmOptions
) -> dict[str, Any]:
    """The search as a Locust master: local worker processes (launch.processes) or remote ones."""
    from loadgen.observe.prometheus.merge import MergedMetrics
    from loadgen.orchestration.bridge import process_bridge
    from loadgen.orchestration.ceiling_swarm import run_ceiling_swarm
    from loadgen.orchestration.process_engine import SwarmSettings

    bridge = process_bridge()
    server = merged = None
    try:
        if launch.metrics.prometheus_port is not None:
            merged = MergedMetrics()  # the workers' metrics, summed as they report
            serving = serve_metrics(merged, launch.metrics.prometheus_port, "ceiling")
            server = bridge.run(serving, timeout=10)
        with target_of(launch, loaded, bridge) as (target, label):
            options = _with_target(dataclasses.replace(options, target_label=label), launch, target)
            swarm = dataclasses.replace(swarm, mode="master", metrics=merged)
            if launch.processes > 1:
                swarm = dataclasses.replace(swarm, expect_workers=launch.processes)
            settings = SwarmSettings(
                loaded, target, options.out_dir, model=launch.model,
                processes=swarm.expect_workers, extra=label,
            )  # fmt: skip
            with local_workers(launch, target, swarm) as swarm:
                return run_ceiling_swarm(settings, swarm, options)
    finally:
        if server is not None:
            bridge.run(close_metrics(server, options.progress, "ceiling"), timeout=60)
