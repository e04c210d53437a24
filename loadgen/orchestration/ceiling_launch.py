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
from loadgen.ceiling.run import Interruption
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.orchestration.launch_plan import Launch, local_workers, target_of
from loadgen.orchestration.metrics_endpoint import close_metrics, serve_metrics
from loadgen.profile.loader import LoadedProfile
from loadgen.sim import sim_server
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
    """Search in this process, or as the master `swarm` describes (with launch.processes).

    Ctrl-C and SIGTERM stop the search either way; it then ends as any stop does, and
    ceiling.json (rewritten after every level) keeps every level measured.
    """
    interruption = Interruption()
    if swarm is None:
        document = asyncio.run(_search(loaded, launch, options, interruption))
    else:
        document = _search_swarm(loaded, launch, options, swarm, interruption)
    return CeilingOutcome(document, interruption.signal)


def _with_target(options: CeilingOptions, launch: Launch, target: TargetConfig) -> CeilingOptions:
    url = launch.metrics.target_url(target)
    if url is None:
        return options
    return dataclasses.replace(
        options, windows=dataclasses.replace(options.windows, metrics_url=url)
    )


async def _search(
    loaded: LoadedProfile, launch: Launch, options: CeilingOptions, interruption: Interruption
) -> dict[str, Any]:
    """Start the built-in simulator when no target is given, then search on this loop.

    Ctrl-C and SIGTERM (into `interruption`) cancel this task: the search ends as it would.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interruption, sig)
    sim = server = None
    try:
        with interruption.stopping(task.cancel):
            if launch.metrics.prometheus_port is not None:
                metrics = RunMetrics()
                server = await serve_metrics(metrics, launch.metrics.prometheus_port, "ceiling")
                options = dataclasses.replace(options, metrics=metrics)
            if launch.target_url is not None:
                target = launch.connect(launch.target_url)
            else:
                config = profile_sim_config(loaded.profile.sim)
                sim = sim_server(config, host="127.0.0.1")
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
    loaded: LoadedProfile,
    launch: Launch,
    options: CeilingOptions,
    swarm: SwarmOptions,
    interruption: Interruption,
) -> dict[str, Any]:
    """The search as a Locust master: local worker processes (launch.processes) or remote ones.

    Ctrl-C and SIGTERM (into `interruption`) are handled on the hub from start to end: they
    stop the wait for workers or the search, and the workers are told to quit and reaped.
    """
    import gevent

    from loadgen.observe.prometheus.merge import MergedMetrics
    from loadgen.orchestration.bridge import process_bridge
    from loadgen.orchestration.ceiling_swarm import run_ceiling_swarm
    from loadgen.orchestration.process_engine import SwarmSettings

    handlers = [gevent.signal_handler(sig, interruption, sig)
                for sig in (signal.SIGINT, signal.SIGTERM)]  # fmt: skip
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
                return run_ceiling_swarm(settings, swarm, options, interruption)
    finally:
        if server is not None:
            bridge.run(close_metrics(server, options.progress, "ceiling"), timeout=60)
        for handler in handlers:
            handler.cancel()
