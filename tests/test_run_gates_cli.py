"""`agentload run` exit codes with gates: 0 passed, 1 a gate failed, 2 a bad gate; JUnit, HTML."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

AGENTLOAD = [sys.executable, "-m", "loadgen", "run", "ci-smoke", "--quiet"]


def run(tmp_path: Path, *extra: str, duration: str = "6s") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTLOAD, "--duration", duration, "--out", str(tmp_path / "out"), *extra],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_passing_gates_exit_0_and_are_recorded_in_the_summary(tmp_path: Path) -> None:
    result = run(tmp_path, "--gate", "ttft_p95 < 30s", "--gate", "error_rate < 50%")
    assert result.returncode == 0, result.stderr
    gates = json.loads((tmp_path / "out" / "summary.json").read_text())["gates"]
    assert {g["gate"] for g in gates} >= {"ttft_p95 < 30s", "error_rate < 50%"}
    assert all(g["verdict"] == "pass" for g in gates)


def test_a_failing_gate_exits_1_and_writes_junit_and_html(tmp_path: Path) -> None:
    junit, html = tmp_path / "junit.xml", tmp_path / "report.html"
    result = run(
        tmp_path, "--gate", "output_tokens_per_s > 100000000",
        "--junit", str(junit), "--html", str(html),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "gate FAIL  output_tokens_per_s > 100000000" in result.stdout
    cases = ET.parse(junit).getroot().iter("testcase")
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["output_tokens_per_s > 100000000"]
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_an_unknown_gate_metric_exits_2_with_one_line_before_any_load(tmp_path: Path) -> None:
    result = run(tmp_path, "--gate", "ttft_p97 < 2s")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "ttft_p97" in lines[0]
    assert not (tmp_path / "out").exists()


def test_an_abort_on_fail_gate_stops_the_run_early_and_fails_it(tmp_path: Path) -> None:
    result = run(tmp_path, "--gate", "ttft_p95 < 0.1ms abort after 2s", duration="60s")
    assert result.returncode == 1, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["duration_s"] < 30
    (gate,) = [g for g in summary["gates"] if g["gate"].startswith("ttft_p95 < 0.1ms")]
    assert gate["verdict"] == "fail"
    assert "stopped the run" in gate["reason"]
