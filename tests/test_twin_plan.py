"""`agentload plan`: one replica's ceiling on a twin, the replicas N agents need, verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.cli.main import main
from loadgen.orchestration.plan import costs, replicas_needed
from tests.test_ceiling import PROFILE as CEILING_PROFILE
from tests.test_ceiling import SLO

ROOT = Path(__file__).resolve().parents[1]
AGENTLOAD = [sys.executable, "-m", "loadgen"]

# A twin written by hand: a 10 ms decode step and 4 sequences per replica, so one replica
# serves 4 agents' requests at once; a fifth waits for a whole 48-token reply (~480 ms).
TWIN = """\
preset: fast
perf: {kind: analytical, decode_step_ms: 10, prefill_tokens_per_s: 100000}
max_num_seqs: 4
"""
# tests/test_ceiling.py's workload (tiny prompts, a forced 48-token reply, no think time)
# and SLO, under a name of its own.
PROFILE = CEILING_PROFILE.replace("name: ceiling-test", "name: plan-test")
AGENTS = 12


def _files(tmp_path: Path) -> tuple[Path, Path]:
    twin, profile = tmp_path / "twin.yaml", tmp_path / "plan-test.yaml"
    twin.write_text(TWIN)
    profile.write_text(PROFILE)
    return twin, profile


def test_replicas_needed_rounds_up() -> None:
    assert replicas_needed(12, 4) == 3
    assert replicas_needed(12, 5) == 3
    assert replicas_needed(13, 4) == 4
    assert replicas_needed(3, 4) == 1
    assert replicas_needed(12, 4.0000000001) == 3  # a float ceiling's last digit is no replica


def test_costs_are_the_fleet_price_over_its_throughput() -> None:
    # $2.50 x 2 GPUs x 3 replicas = $15/h; 1000 tokens/s = 3.6M tokens/h; 600 sessions/h.
    cost = costs(2.5, 2, 3, 1000.0, 10.0)
    assert cost["fleet_per_hour"] == pytest.approx(15.0)
    assert cost["per_million_output_tokens"] == pytest.approx(15.0 / 3.6)
    assert cost["per_session"] == pytest.approx(15.0 / 600)
    assert costs(None, 1, 3, 1000.0, 10.0)["per_session"] is None
    assert costs(2.5, 1, 3, 0.0, 0.0)["per_million_output_tokens"] is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--twin", "missing.yaml", "--agents", "12"], "missing.yaml: no such file"),
        (["--agents", "0"], "argument --agents: '0' is below 1"),
        (["--agents", "12", "--router", "fastest"], "--router 'fastest': use one of"),
        (["--agents", "12", "--slo", "ttft_p95 <"], "ttft_p95 <"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    message: str,
) -> None:
    twin, profile = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["plan", str(profile), "--slo", SLO, *flags]
    if "--twin" not in flags:
        args += ["--twin", str(twin)]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("results*")), "nothing runs after a usage error"


@pytest.mark.slow
def test_the_plan_names_replicas_that_hold_and_one_fewer_does_not(tmp_path: Path) -> None:
    twin, profile = _files(tmp_path)
    out = tmp_path / "plan"
    result = subprocess.run(
        [*AGENTLOAD, "plan", str(profile), "--twin", str(twin), "--slo", SLO,
         "--agents", str(AGENTS), "--gpu-hour-cost", "2.5", "--gpus-per-replica", "2",
         "--warmup", "0.5s", "--window", "1.5s", "--resolution", "0.25",
         "--max-duration", "60s", "--verify-duration", "4s", "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads((out / "plan.json").read_text())
    per = doc["per_replica"]
    # 4 sequences a replica: 4 agents never queue; 6 queue a whole reply behind the batch.
    # (5 agents sit on the SLO's edge: their sessions' gaps leave a slot free at times.)
    assert per["agents"] in (4, 5), per
    assert per["reached"]
    assert per["first_to_run_out"]["server_resource"] == "queue"
    assert doc["replicas"] == 3 == replicas_needed(AGENTS, per["agents"])
    at_r, below = doc["verification"]
    assert (at_r["replicas"], below["replicas"]) == (3, 2)
    assert at_r["held"], at_r  # the must-show: R holds the SLO in the fleet run ...
    assert not below["held"], below  # ... and R - 1 does not
    answer = doc["answer"]
    assert answer["confirmed"]
    assert (answer["replicas"], answer["gpus"]) == (3, 6)
    # 12 agents, each streaming 100 tokens/s when it never queues: about 1200 tokens/s less
    # the gaps between requests.
    assert 800 < answer["output_tokens_per_s"] < 1250
    fleet_per_hour = 2.5 * 2 * 3
    assert answer["cost"]["fleet_per_hour"] == pytest.approx(fleet_per_hour)
    assert answer["cost"]["per_million_output_tokens"] == pytest.approx(
        fleet_per_hour / (answer["output_tokens_per_s"] * 3600) * 1e6
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"per replica: {per['agents']:g} agents")
    assert any(line.startswith("replicas needed: 3 = ceil(12 agents") for line in lines)
    assert any("SLOs held" in line for line in lines)
    assert any("BROKE: ttft_p95" in line for line in lines)
    assert "plan: 3 replicas hold the SLOs, 2 do not" in lines
    for part in ("ceiling-1-replica/ceiling.json", "verify-3-replicas/summary.json",
                 "verify-2-replicas/summary.json"):  # fmt: skip
        assert (out / part).is_file()
