"""Closed-loop agents start over a ramp, never all at once, whatever --duration says: the
stages a run follows, the ceiling's agent pool, and `agentload run` itself (its
sessions.jsonl and steps.jsonl)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadgen.profile.schema import Arrival
from loadgen.runtime.load import ClosedLoop, level_at, staged, start_ramp_s

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def run(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTLOAD, "run", *args, "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- closed-loop agents start over a ramp, whatever --duration says --------------------------


def test_a_closed_loop_without_stages_ramps_up_over_a_share_of_the_run() -> None:
    arrival = Arrival(mode="closed", agents=50)

    assert start_ramp_s(50, 10) == 2.5  # 10 agents a second, at most a quarter of the run
    assert start_ramp_s(50, 600) == 5.0
    stages = staged(arrival, [], 10)
    assert [level_at(t, arrival, stages) for t in (0, 1, 2.5, 9)] == [0, 20, 50, 50]
    assert staged(Arrival(mode="open", rate=2), [], 10) == []  # arrivals spread themselves


async def test_the_closed_loop_pool_starts_its_agents_over_the_ramp() -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    starts: list[float] = []

    class Idle:
        id = "a"

        def idle_time(self) -> float:
            return 3600.0

    async def session(_agent: object, _label: str, _sid: str) -> None:
        starts.append(loop.time() - t0)

    pool = ClosedLoop(Arrival(mode="closed", agents=20), [], lambda _: (Idle(), "x"),  # type: ignore[arg-type,return-value]
                      session, time_scale=1.0, seed=0)  # fmt: skip
    pool.start_jitter_s = 0.0  # the ramp alone
    await pool.run(4.0)  # a 1 s ramp (a quarter of 4 s)

    assert len(starts) == 20
    assert max(starts) - min(starts) >= 0.5


@pytest.mark.slow
def test_agents_given_duration_and_count_on_the_command_line_start_spread(
    tmp_path: Path,
) -> None:
    """Before: --duration dropped the profile's stages and all 50 agents started within 55 ms."""
    out = tmp_path / "run"
    done = run("quickstart", "--agents", "50", "--duration", "10s", out=out)
    assert done.returncode == 0, done.stderr

    first = sorted(s["started_unix"] for s in records(out / "sessions.jsonl")
                   if s["session_id"].endswith("-s0"))  # fmt: skip
    assert len(first) == 50
    # A 2.5 s ramp (50 agents at 10 a second, at most a quarter of 10 s), spawned by Locust
    # a second's worth at a time.
    assert first[-1] - first[0] >= 1.5
    crowd = max(sum(1 for t in first if s <= t < s + 0.1) for s in first)
    assert crowd <= 25, f"{crowd} of 50 agents started within 100 ms"
    firsts: dict[str, float] = {}
    for step in records(out / "steps.jsonl"):
        sid = step["session_id"]
        firsts[sid] = min(firsts.get(sid, step["started_unix"]), step["started_unix"])
    first_steps = sorted(t for sid, t in firsts.items() if sid.endswith("-s0"))
    assert first_steps[-1] - first_steps[0] >= 1.5  # the first requests, spread too
