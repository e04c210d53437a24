"""One `agentload run` end to end: target or built-in simulator, local workers, metrics, swarm.

The command line parses and checks; this is where processes are started and reaped.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from loadgen.orchestration.bridge import process_bridge
from loadgen.orchestration.environment import SwarmOptions
from loadgen.orchestration.launch_plan import Launch, local_workers, target_of
from loadgen.orchestration.metrics_endpoint import final_scrape, live_metrics
from loadgen.orchestration.process_engine import SwarmSettings
from loadgen.orchestration.swarm import run_swarm
from loadgen.profile.loader import LoadedProfile

__all__ = ["Launch", "launch_run"]


def launch_run(
    loaded: LoadedProfile,
    launch: Launch,
    options: SwarmOptions,
    running: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> dict[str, Any] | None:
    """Run the profile's swarm as `options` say; summary.json's content (None on a worker).

    `running` is entered around the swarm's run itself (e.g. a live progress display).
    """
    profile = loaded.profile
    bridge = process_bridge()
    exporter = None
    try:
        with target_of(launch, loaded, bridge) as (target, label):
            observe, exporter, merged = live_metrics(launch.metrics, target, options.mode, bridge)
            settings = SwarmSettings(
                loaded, target, launch.out, model=launch.model,
                processes=options.expect_workers if options.mode == "master" else 1,
                extra=label, observe=observe,
            )  # fmt: skip
            options = dataclasses.replace(options, metrics=merged)
            with local_workers(launch, target, options) as options:
                if launch.progress is not None:
                    where = "the built-in simulator" if label else target.base_url
                    print(f"agentload run: {profile.name} for {profile.total_duration:.0f}s "
                          f"against {where}; results in {launch.out}", file=launch.progress,
                          flush=True)  # fmt: skip
                with running():
                    return run_swarm(settings, options)
    finally:
        if exporter is not None:
            final_scrape(exporter, bridge, launch.progress)
