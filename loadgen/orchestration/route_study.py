"""A routing study: one seeded workload against a fleet under each router, run after run.

Each arm is an ordinary `agentload run` (and, with a ceiling, `agentload ceiling`) in its own
process, so what the study compares is what users measure. Simulated arms share one fleet
shape and differ only in the router; the fleet is served from this process, on a thread of
its own, while the run's process loads it. Real arms are router URLs. At a speedup the
simulated fleet's clock runs K times faster and the runs are told their times in wall time
(time_warp.py); what they measure is brought back to modelled time in the study's rows.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from loadgen.errors import AgentloadError
from loadgen.orchestration.time_warp import TimeWarp, engine_clock
from loadgen.sim import sim_server
from loadgen.sim.config import SimConfig

__all__ = ["StudyArm", "StudySettings", "run_study"]


@dataclass(frozen=True)
class StudyArm:
    """One column of the study: a simulated router, or a real router's URL."""

    name: str
    router: str | None = None  # simulated: the fleet's router
    url: str | None = None  # real: where to send the load


@dataclass(frozen=True)
class StudySettings:
    """The workload and how each arm is measured."""

    profile: str
    out_dir: Path
    run_flags: tuple[str, ...] = ()  # passed to every `agentload run` (duration, seed, ...)
    ceiling_flags: tuple[str, ...] | None = None  # None: no ceiling search
    sim: SimConfig | None = None  # the fleet simulated arms run on (router replaced per arm)
    progress: TextIO | None = sys.stderr
    # Simulated arms only: the fleet's clock runs this much faster than real time. The
    # profile, run_flags and ceiling_flags are in modelled time and converted for the runs.
    speedup: float = 1.0

    @property
    def warp(self) -> TimeWarp:
        """Modelled against wall time for this study's runs."""
        return TimeWarp(self.speedup)


@contextmanager
def serving(config: SimConfig) -> Iterator[str]:
    """The simulated fleet served on a thread of this process; its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="route-study-sim", daemon=True)
    thread.start()
    sim = sim_server(config, host="127.0.0.1")
    try:
        asyncio.run_coroutine_threadsafe(sim.start(), loop).result(timeout=60)
        yield sim.base_url
    finally:
        try:
            asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(timeout=60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()


def _agentload(args: Sequence[str], progress: TextIO | None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", *args], capture_output=True, text=True, check=False
    )
    if result.returncode not in (0, 1):  # 1: a gate failed, or no ceiling: still measured
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise AgentloadError(f"`agentload {' '.join(args[:2])}` exited {result.returncode}: {last}")
    if progress is not None and result.returncode == 1:
        print(f"  (exit 1: {args[0]} judged a gate or found no ceiling)", file=progress)


def _measure(arm: StudyArm, url: str, settings: StudySettings, profile: str) -> dict[str, Any]:
    """One arm's run (and ceiling) of `profile`: the study's own, in wall time."""
    out = settings.out_dir / arm.name
    progress = settings.progress
    if progress is not None:
        print(f"agentload route-study: {arm.name}: running {settings.profile}", file=progress,
              flush=True)  # fmt: skip
    warp = settings.warp
    run_flags = warp.wall_flags(settings.run_flags, ("--duration",))
    _agentload(["run", profile, "--target", url, "--quiet", "--out", str(out / "run"),
                *run_flags], progress)  # fmt: skip
    result: dict[str, Any] = {
        "name": arm.name,
        "router": arm.router,
        "url": arm.url,
        "summary": json.loads((out / "run" / "summary.json").read_text()),
    }
    if settings.ceiling_flags is not None:
        if progress is not None:
            print(f"agentload route-study: {arm.name}: searching the ceiling", file=progress,
                  flush=True)  # fmt: skip
        ceiling_flags = warp.ceiling_flags(settings.ceiling_flags)
        _agentload(["ceiling", profile, "--target", url, "--quiet",
                    "--out", str(out / "ceiling"), *ceiling_flags], progress)  # fmt: skip
        result["ceiling"] = json.loads((out / "ceiling" / "ceiling.json").read_text())
    if warp.active:  # a fresh fleet per arm: its clock counts this arm's runs alone
        result["lost_share"] = engine_clock(url).lost_share
    return result


def run_study(arms: Sequence[StudyArm], settings: StudySettings) -> list[dict[str, Any]]:
    """Measure every arm in turn; each one's summary (and ceiling), in order."""
    profile = settings.warp.run_profile(settings.profile, settings.out_dir)
    results = []
    for arm in arms:
        if arm.url is not None:
            results.append(_measure(arm, arm.url, settings, profile))
            continue
        assert settings.sim is not None, "simulated arms need the fleet"
        assert arm.router is not None, "a simulated arm names its router"
        config = settings.sim.model_copy(update={"router": arm.router})
        with serving(config) as url:  # a fresh fleet per arm: nothing cached carries over
            results.append(_measure(arm, url, settings, profile))
    return results
