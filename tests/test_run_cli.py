"""`agentload run` through the real CLI: quickstart, exit codes, results flushed as they happen."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadgen.protocol.failures import FailureKind

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_run_without_arguments_runs_the_quickstart_in_about_a_minute(tmp_path: Path) -> None:
    out = tmp_path / "quickstart"
    t0 = time.monotonic()
    result = subprocess.run(
        [*AGENTLOAD, "run", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert elapsed < 120, f"quickstart took {elapsed:.0f}s"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "agentload.summary/1"
    assert summary["profile"] == "quickstart"
    assert summary["target"]["builtin_sim"] == "fast"
    assert summary["sessions"]["completed"] >= 10
    assert set(summary["state_failures"]) == {k.value for k in FailureKind}
    completed = [s for s in read_jsonl(out / "sessions.jsonl") if s["outcome"] == "completed"]
    assert sum(int(s["steps"]) for s in completed) / len(completed) >= 4  # type: ignore[call-overload]
    assert len(read_jsonl(out / "steps.jsonl")) == summary["requests"]["total"]
    assert "sessions" in result.stdout  # the human summary


def test_unreachable_target_exits_3_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [*AGENTLOAD, "run", "--target", f"http://127.0.0.1:{port}/v1", "--out", str(tmp_path),
         "--duration", "2s", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_profile_name_exits_2_naming_the_builtin_profiles(tmp_path: Path) -> None:
    result = subprocess.run(
        [*AGENTLOAD, "run", "no-such-profile", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "quickstart" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_results_written_before_a_crash_survive_it(tmp_path: Path) -> None:
    out = tmp_path / "crash"
    proc = subprocess.Popen(
        [*AGENTLOAD, "run", "ci-smoke", "--out", str(out), "--duration", "60s", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        steps = out / "steps.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not steps.exists() or steps.stat().st_size < 20_000):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    lines = read_jsonl(steps)  # every line complete and parseable: nothing half-written
    assert len(lines) >= 10
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize(
    ("flags", "timestamps"), [([], "kernel"), (["--no-kernel-timestamps"], "event_loop")]
)
def test_summary_says_which_clock_timed_the_streams(
    tmp_path: Path, flags: list[str], timestamps: str
) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [*AGENTLOAD, "run", "ci-smoke", "--duration", "2s", "--quiet", "--out", str(out), *flags],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["timestamps"] == timestamps
    assert summary["latency"]["itl_s"]["p50"] is not None
