"""Gates against real summaries: a short `agentload run` against the built-in simulator (with
a few injected stream cuts), judged as written, stored in summary.json, written as JUnit and
through `agentload report --gate`. (An abort-on-fail gate stopping a live run:
tests/test_run_gates_cli.py.)"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from loadgen.gates import evaluate_gates, gates_to_summary, parse_gates, read_metric
from loadgen.report import format_gate_results, judge_run, load_results, write_junit
from loadgen.sim import PRESETS, SimConfig, SimServer
from tests.cli_runs import agentload_run, write_profile

AGENTLOAD = [sys.executable, "-m", "loadgen"]
PROFILE: dict[str, Any] = {
    "name": "gates-small",
    "seed": 5,
    "time_scale": 0.01,
    "arrival": {"mode": "closed", "agents": 8},
    "agents": [
        {"kind": "support", "params": {"output_tokens": {"uniform": [16, 48]}}},
        {"kind": "coding", "params": {"turns": 1, "system_prompt_tokens": 1000}},
    ],
}


async def run_against_sim(out: Path, seconds: float) -> dict[str, Any]:
    """`agentload run` PROFILE against a fresh simulator that cuts 5% of streams."""
    data = PRESETS["fast"].model_dump()
    data["faults"] = {**data["faults"], "stream_cut": 0.05}
    sim = SimServer(SimConfig.model_validate(data))
    await sim.start()
    try:
        profile = write_profile(out.with_suffix(".yaml"), PROFILE)
        run = await agentload_run(profile, out, "--duration", f"{seconds:g}s", target=sim.base_url)
        return run.summary
    finally:
        await sim.stop()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gates") / "run"
    summary = asyncio.run(run_against_sim(out, 4.0))
    assert summary["requests"]["ok"] > 20
    return out


PASSING = [
    "ttft_p95 < 2s",
    "itl_p99 <= 500ms",
    "e2e_p50 < 1m",
    "requests.total > 20",
    "error_rate < 50%",
    "output_tokens_per_s > 10",
    "cache_hit_ratio > 0",
    "state_failures.context_overflow == 0",
    "state_failures.stream_truncated > 0",
    "recoveries.stream_truncated >= 1",
]
FAILING = [
    "ttft_p50 < 1ms",
    "output_tokens_per_s > 1e9",
    "state_failures.stream_truncated == 0",
    "session_success_rate > 100%",
    "requests.total < 10",
]


def test_gates_pass_and_fail_as_written_on_a_real_summary(run_dir: Path) -> None:
    summary = load_results(run_dir).summary
    results = evaluate_gates(summary, parse_gates(PASSING + FAILING))
    verdicts = {r.gate.text: r.passed for r in results}
    assert [g for g in PASSING if not verdicts[g]] == []
    assert [g for g in FAILING if verdicts[g]] == []
    # The value a gate judged is the summary's own figure.
    ttft = next(r for r in results if r.gate.text == "ttft_p95 < 2s")
    assert ttft.value == summary["latency"]["ttft_s"]["p95"]
    cut = next(r for r in results if r.gate.metric == "state_failures.stream_truncated")
    assert cut.value == summary["state_failures"]["stream_truncated"] > 0
    assert read_metric(summary, "requests_per_s") == summary["throughput"]["requests_per_s"]


def test_gate_verdicts_go_into_the_summary_and_junit(run_dir: Path, tmp_path: Path) -> None:
    summary = load_results(run_dir).summary
    results = evaluate_gates(summary, parse_gates(["ttft_p95 < 2s", "ttft_p50 < 1ms"]))
    listed = gates_to_summary(results)
    assert [g["verdict"] for g in listed] == ["pass", "fail"]
    assert listed[0]["value"] == summary["latency"]["ttft_s"]["p95"]
    path = write_junit(tmp_path / "junit.xml", results, "gates-small", summary=summary)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert suite.attrib["failures"] == "1"
    props = {p.attrib["name"]: p.attrib["value"] for p in suite.iter("property")}
    assert props["profile"] == "gates-small"


def test_report_command_judges_gates_and_exits_by_the_verdict(
    run_dir: Path, tmp_path: Path
) -> None:
    def report(*gates: str) -> subprocess.CompletedProcess[str]:
        args = [a for g in gates for a in ("--gate", g)]
        return subprocess.run(
            [*AGENTLOAD, "report", str(run_dir), "--html", str(tmp_path / "r.html"), *args,
             "--junit", str(tmp_path / "junit.xml")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    passed = report(*PASSING)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.count("gate PASS") == len(PASSING)
    failed = report("ttft_p95 < 2s", "ttft_p50 < 1ms")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "gate FAIL  ttft_p50 < 1ms: ttft_p50 = " in failed.stdout
    assert "FAIL" in (tmp_path / "r.html").read_text()
    bad = report("ttft_p95 < 2 parsecs")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def test_judge_run_stores_verdicts_and_writes_junit_and_the_report(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "judged"
    shutil.copytree(run_dir, out)
    summary = load_results(out).summary
    steps_before = (out / "steps.jsonl").read_bytes()
    gates = parse_gates(["ttft_p95 < 2s", "requests.total > 20"])
    verdict = judge_run(out, summary, gates, junit=tmp_path / "j.xml", html=tmp_path / "r.html")
    assert verdict.exit_code == 0
    stored = load_results(out).summary
    assert [g["verdict"] for g in stored["gates"]] == ["pass", "pass"]
    assert stored["requests"] == summary["requests"]
    assert (out / "steps.jsonl").read_bytes() == steps_before  # records untouched
    assert "All 2 gates passed" in (tmp_path / "r.html").read_text()
    assert ET.parse(tmp_path / "j.xml").getroot().attrib["failures"] == "0"
    assert format_gate_results(verdict.results).startswith("gate PASS  ttft_p95 < 2s: ")


def test_a_gate_that_stopped_the_run_stays_failed_in_the_verdict(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "aborted"
    shutil.copytree(run_dir, out)
    summary = load_results(out).summary
    gates = parse_gates(["ttft_p95 < 2s abort", "requests.total > 20"])
    live = evaluate_gates({**summary, "latency": {"ttft_s": {"p95": 9.0}}}, gates[:1])[0]
    verdict = judge_run(out, summary, gates, aborted=(live, 31.4))
    assert verdict.exit_code == 1
    first = load_results(out).summary["gates"][0]
    assert first["verdict"] == "fail"
    assert first["reason"] == "stopped the run at 31 s: ttft_p95 = 9 s, needs < 2 s"
    assert judge_run(out, summary, []).exit_code == 0  # no gates: nothing to fail
