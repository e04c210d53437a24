"""`agentload ceiling` as a Locust master: the search's levels carried by worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadgen.report.html.ceiling import CEILING_FILE
from tests.test_ceiling import SLO, _analytical, _profile
from tests.test_swarm import child_env

pytestmark = pytest.mark.slow

# test_ceiling.py's profile on its analytical sim: 8 slots x 48 tokens every 10 ms step
# hold 800 output tokens/s at 8 agents; past that, requests queue for a slot and TTFT jumps.
SIM = {"preset": "fast", **_analytical(10, 8)}
ANALYTICAL_TOKENS_PER_S = 800.0


def _ceiling(tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    profile = _profile(tmp_path, SIM)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "ceiling", str(profile), "--slo", SLO,
         "--warmup", "1s", "--window", "2.5s", "--quiet", "--out", str(out), *flags],
        capture_output=True, text=True, timeout=300, env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    return result, out


def test_processes_2_finds_the_analytical_ceiling_with_two_workers_carrying_the_load(
    tmp_path: Path,
) -> None:
    result, out = _ceiling(tmp_path, "--processes", "2", "--start", "4", "--resolution", "0.25")
    assert result.returncode == 0, result.stderr[-3000:]
    doc: dict[str, Any] = json.loads((out / CEILING_FILE).read_text())
    ceiling = doc["ceiling"]
    assert ceiling is not None, doc["stopped_by"]
    tokens = ceiling["output_tokens_per_s"]
    assert abs(tokens - ANALYTICAL_TOKENS_PER_S) <= 0.15 * ANALYTICAL_TOKENS_PER_S, ceiling
    # A level past the ceiling broke on the SLO, judged on the workers' merged slices.
    assert any(not lv["passed"] and lv["load"] > ceiling["load"] for lv in doc["levels"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"]["reported"] == ["worker-0", "worker-1"]
    assert summary["workers"]["lost"] == []
    # Each worker carried its share: both wrote steps, and together every one the master counted.
    steps = {i: (out / f"worker-{i}" / "steps.jsonl").read_text().splitlines() for i in (0, 1)}
    assert all(steps.values()), {i: len(s) for i, s in steps.items()}
    for i, lines in steps.items():  # agents unique across workers
        assert all(json.loads(line)["session_id"].startswith(f"w{i}-") for line in lines)
    assert summary["requests"]["total"] == sum(len(s) for s in steps.values())
    assert not (out / "steps.jsonl").exists()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_worker_lost_mid_search_ends_it_naming_the_worker_and_keeps_the_levels_measured(
    tmp_path: Path,
) -> None:
    profile = _profile(tmp_path, SIM)
    out = tmp_path / "out"
    search = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "ceiling", str(profile), "--slo", SLO,
         "--warmup", "1s", "--window", "2.5s", "--processes", "2", "--start", "2",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    try:
        assert search.stderr is not None
        # Per-level progress: kill a worker once two levels are in (it has reported by then).
        levels = 0
        for line in search.stderr:
            levels += line.startswith("level ")
            if levels == 2:
                break
        workers = _children(search.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        stdout, stderr = search.communicate(timeout=120)
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    doc = json.loads((out / CEILING_FILE).read_text())
    assert "was lost mid-level" in doc["stopped_by"], (doc["stopped_by"], stderr[-2000:])
    assert len(doc["levels"]) >= 2, "the levels measured before the loss are kept"
    assert "stopped by: worker " in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["workers"]["lost"]) == 1


def test_processes_2_open_loop_search_splits_the_session_rate(tmp_path: Path) -> None:
    # The workers load the closed-loop profile as written; the master's --by makes it open.
    result, out = _ceiling(tmp_path, "--processes", "2", "--by", "session-rate", "--start", "4",
                           "--resolution", "0.5")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / CEILING_FILE).read_text())
    assert doc["load_unit"] == "sessions/s"
    # About 8 sessions/s fill the 8 slots (as in one process); Poisson bursts queue before.
    assert 1 <= doc["ceiling"]["load"] < 16, [(lv["load"], lv["passed"]) for lv in doc["levels"]]
    assert any(not lv["passed"] for lv in doc["levels"])
