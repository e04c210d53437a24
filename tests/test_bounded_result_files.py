"""A record file that cannot be written stops, the run goes on measuring, the summary says so."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from loadgen.observe import ResultFiles, SessionOutcome, SessionRecord, StepRecord
from loadgen.sim import SimServer
from tests.cli_runs import agentload_run, write_profile

DISK_FULL = "[Errno 28] No space left on device"

needs_dev_full = pytest.mark.skipif(
    not os.path.exists("/dev/full"), reason="needs /dev/full (every write fails with ENOSPC)"
)


def _step(step: int) -> StepRecord:
    return StepRecord(
        "s1", "coder", step, "turn", "chat", 1_700_000_000.0, e2e_s=0.5, itl_s=[0.01, 0.03]
    )


def _session(n: int) -> SessionRecord:
    return SessionRecord(f"s{n}", "coder", 0.0, 3.5, 4, SessionOutcome.COMPLETED)


def _lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@needs_dev_full
def test_a_full_disk_stops_the_steps_file_without_raising_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "steps.jsonl").symlink_to("/dev/full")
    with ResultFiles(tmp_path) as files:
        assert files.incomplete is None
        for n in range(3):
            files.write_step(_step(n))  # the first fails; none raises
            files.write_session(_session(n))
        assert files.incomplete == f"steps.jsonl: {DISK_FULL} after 0 records"
        assert [line["session_id"] for line in _lines(files.sessions_path)] == ["s0", "s1", "s2"]


@needs_dev_full
def test_both_files_failing_are_both_named(tmp_path: Path) -> None:
    (tmp_path / "steps.jsonl").symlink_to("/dev/full")
    (tmp_path / "sessions.jsonl").symlink_to("/dev/full")
    with ResultFiles(tmp_path) as files:
        files.write_step(_step(0))
        files.write_session(_session(0))
        assert files.incomplete == (
            f"steps.jsonl: {DISK_FULL} after 0 records; sessions.jsonl: {DISK_FULL} after 0 records"
        )


def test_a_file_that_fills_up_mid_line_keeps_whole_lines_and_counts_them(tmp_path: Path) -> None:
    # RLIMIT_FSIZE is a real size limit without root: the write that crosses it is cut short
    # and the next fails (EFBIG), as on a disk that fills up mid-line. In a child process, so
    # that the limit binds nothing else.
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from loadgen.observe import ResultFiles, StepRecord
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        files = ResultFiles({str(tmp_path)!r})
        for step in range(50):
            files.write_step(StepRecord("s1", "coder", step, "turn", "chat", 0.0, e2e_s=0.5))
        print(files.incomplete)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = _lines(tmp_path / "steps.jsonl")  # every line whole: the torn one was cut off
    assert 0 < len(lines) < 50
    assert [line["step"] for line in lines] == list(range(len(lines)))
    assert (
        done.stdout.strip() == f"steps.jsonl: [Errno 27] File too large after {len(lines)} records"
    )


PROFILE = {
    "name": "full-disk",
    "seed": 3,
    "time_scale": 0.01,
    "force_output_length": "always",
    "arrival": {"mode": "closed", "agents": 4},
    "agents": [
        {
            "kind": "support",
            "params": {"output_tokens": {"uniform": [8, 16]}, "system_prompt_tokens": 100},
        }
    ],
}


@needs_dev_full
async def test_a_run_whose_disk_is_full_goes_on_measuring_and_flags_the_summary(
    tmp_path: Path, sim: SimServer
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "steps.jsonl").symlink_to("/dev/full")
    profile = write_profile(tmp_path / "full-disk.yaml", PROFILE)
    run = await agentload_run(profile, out, "--duration", "2s", target=sim.base_url)
    summary = run.summary
    # Sessions went on: nothing failed because of the disk, and every step was counted.
    assert summary["requests"]["ok"] > 10
    assert summary["requests"]["failed"] == 0
    assert summary["sessions"]["completed"] > 0
    assert summary["sessions"]["failed"] == 0
    assert summary["results_incomplete"] == f"steps.jsonl: {DISK_FULL} after 0 records"
    # The printed summary says so too: a reader of the terminal is not told a full story.
    said = " ".join((run.stdout + run.stderr).split())
    assert f"WARNING: results incomplete: steps.jsonl: {DISK_FULL} after 0 records" in said
    # The other file kept every record.
    sessions = _lines(out / "sessions.jsonl")
    assert len(sessions) >= summary["sessions"]["completed"]


async def test_a_run_that_wrote_everything_has_no_flag(tmp_path: Path, sim: SimServer) -> None:
    profile = write_profile(tmp_path / "ok.yaml", PROFILE)
    out = tmp_path / "run"
    summary = (await agentload_run(profile, out, "--duration", "1s", target=sim.base_url)).summary
    assert summary["requests"]["ok"] > 0
    assert "results_incomplete" not in summary
