"""`agentload ceiling` on a trace profile across processes: levels are the trace's speedups,
each worker replays its part of the sessions from the trace's start at the level's speedup,
and the swarm together replays the whole trace at every level, as one process does."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadgen.observe.result_files import CEILING_FILE
from tests.real_servers import SimProcess
from tests.test_swarm import Processes, child_env, free_port

pytestmark = pytest.mark.slow

AGENTLOAD = [sys.executable, "-m", "loadgen"]
ROOT = Path(__file__).resolve().parents[1]
ROWS = 16
RATE = 8.0  # rows per second as recorded: the trace spans 1.9 s at 1x, 0.9 s at 2x
# Each level: a 0.5 s warm-up, then one 4 s window (--max-window = --window: no extension,
# so no slice rolls out). The trace's time 0 falls 1 s after the level starts, after the
# warm-up, and its last request (at 2.9 s at 1x, 1.9 s at 2x) ends well inside the window:
# every level's requests are the whole trace's. Levels 2x and 4x fit in 10 s.
SEARCH = ["--slo", "ttft_p95 < 5s", "--start", "2", "--warmup", "0.5s", "--window", "4s",
          "--max-window", "4s", "--slices", "4", "--max-duration", "10s", "--quiet"]  # fmt: skip
SATURATED = "load generator saturated"


def _trace_profile(folder: Path) -> Path:
    """A Mooncake-format trace of ROWS one-request sessions of equal size, and a profile
    replaying it on the built-in simulator."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "rows.jsonl").open("w") as out:
        for i in range(ROWS):
            row = {"timestamp": round(1000 * i / RATE), "input_length": 200,
                   "output_length": 8, "hash_ids": [i]}  # fmt: skip
            out.write(json.dumps(row) + "\n")
    profile = folder / "traced.yaml"
    profile.write_text(
        "name: traced\narrival: {mode: trace, file: rows.jsonl, format: mooncake}\n"
        "sim: {preset: fast}\n"
    )
    return profile


def _ceiling(folder: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The search in `folder`; once more if it stopped on a saturated generator (a busy
    machine's stall, as tests/test_ceiling.py reruns it): its levels would be cut short."""
    profile = _trace_profile(folder)
    for attempt in range(2):
        out = folder / f"out{attempt}"
        result = subprocess.run(
            [*AGENTLOAD, "ceiling", str(profile), *SEARCH, "--out", str(out), *flags],
            capture_output=True, text=True, timeout=90, env=child_env(), cwd=folder,
        )  # fmt: skip
        done = out / CEILING_FILE
        if not done.exists() or not json.loads(done.read_text())["stopped_by"].startswith(
            SATURATED
        ):
            break
    return result, out


def _steps(out: Path) -> dict[str, list[str]]:
    """Each worker's replayed session ids, one per request (worker-N: its steps.jsonl)."""
    return {
        path.parent.name: [json.loads(line)["session_id"] for line in path.read_text().splitlines()]
        for path in sorted(out.glob("worker-*/steps.jsonl"))
    }


def _assert_every_level_replays_the_whole_trace(doc: dict[str, Any]) -> None:
    assert doc["load_unit"] == "x trace speed"
    levels = doc["levels"]
    assert levels, doc["stopped_by"]
    assert [lv["requests"] for lv in levels] == [ROWS] * len(levels), (
        [(lv["load"], lv["requests"]) for lv in levels],
        doc["stopped_by"],
    )


@dataclass
class Search:
    result: subprocess.CompletedProcess[str]
    out: Path
    doc: dict[str, Any]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Search:
    """The search with --processes 2 (the master runs the simulator; it reaps its workers)."""
    result, out = _ceiling(tmp_path_factory.mktemp("processes"), "--processes", "2")
    assert result.returncode in (0, 1), result.stderr[-3000:]
    return Search(result, out, json.loads((out / CEILING_FILE).read_text()))


def test_processes_2_searches_speedups_and_every_level_replays_the_whole_trace(
    two_processes: Search,
) -> None:
    doc = two_processes.doc
    _assert_every_level_replays_the_whole_trace(doc)
    assert [lv["load"] for lv in doc["levels"]] == [2, 4], doc["stopped_by"]
    assert "worker" not in doc["stopped_by"], doc["stopped_by"]
    summary = json.loads((two_processes.out / "summary.json").read_text())
    assert summary["workers"]["reported"] == ["worker-0", "worker-1"]
    assert summary["workers"]["lost"] == []


def test_each_worker_replays_its_own_share_of_the_sessions_at_every_level(
    two_processes: Search,
) -> None:
    steps = _steps(two_processes.out)
    assert sorted(steps) == ["worker-0", "worker-1"]
    assert all(steps.values()), steps
    zero, one = (set(ids) for ids in steps.values())
    assert not zero & one, "no session is replayed by both workers"
    levels = len(two_processes.doc["levels"])
    # Every session of the trace once per level, all from one worker: every 2nd session each.
    counts = collections.Counter(sid for ids in steps.values() for sid in ids)
    assert len(counts) == ROWS
    assert set(counts.values()) == {levels}
    assert abs(len(zero) - len(one)) <= 1


def test_one_process_searches_the_same_speedups_with_the_same_requests(
    two_processes: Search, tmp_path: Path
) -> None:
    result, out = _ceiling(tmp_path)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    doc = json.loads((out / CEILING_FILE).read_text())
    _assert_every_level_replays_the_whole_trace(doc)

    def levels(d: dict[str, Any]) -> list[tuple[float, int]]:
        return [(lv["load"], lv["requests"]) for lv in d["levels"]]

    assert levels(doc) == levels(two_processes.doc)


def test_a_master_with_remote_workers_searches_a_traces_speedups(tmp_path: Path) -> None:
    profile = _trace_profile(tmp_path)
    out, port = tmp_path / "out", free_port()
    group = Processes(tmp_path / "logs")
    with SimProcess() as sim:
        try:
            group.start(
                "master",
                [*AGENTLOAD, "ceiling", str(profile), *SEARCH, "--master", "--expect-workers",
                 "2", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                 "--target", sim.base_url, "--out", str(out)],
            )  # fmt: skip
            for i in range(2):
                group.start(
                    f"worker{i}",
                    [*AGENTLOAD, "run", str(profile), "--worker", "--quiet", "--master-host",
                     "127.0.0.1", "--master-port", str(port), "--target", sim.base_url,
                     "--out", str(out)],
                )  # fmt: skip
            assert group.wait("master", timeout=90) in (0, 1), group.output("master")[-3000:]
            for i in range(2):
                group.wait(f"worker{i}", timeout=30)  # they quit with the master
        finally:
            group.close()
    doc = json.loads((out / CEILING_FILE).read_text())
    _assert_every_level_replays_the_whole_trace(doc)
    assert doc["levels"][0]["load"] == 2
    assert "worker" not in doc["stopped_by"], doc["stopped_by"]
    assert sorted(_steps(out)) == ["worker-0", "worker-1"]


def test_neither_help_nor_docs_limit_a_traces_ceiling_to_one_process() -> None:
    help_text = subprocess.run(
        [*AGENTLOAD, "ceiling", "--help"], capture_output=True, text=True, timeout=60,
        env=child_env(),
    ).stdout  # fmt: skip
    assert "mode: trace" in help_text
    assert "--processes" in help_text
    traces = (ROOT / "docs" / "traces.md").read_text()
    assert "one process for now" not in traces
    assert "refused" not in traces.split("**Ceilings.**", 1)[1].split("\n\n", 1)[0]
