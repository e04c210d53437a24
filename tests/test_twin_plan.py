"""`agentload plan`: one replica's ceiling on a twin, the replicas N agents need, verified."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadgen.cli.main import main
from loadgen.orchestration.plan import costs, format_plan, replicas_needed, verified_fleet
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


def _fleet_run(replicas: int, held: bool) -> dict[str, Any]:
    """A verification run's record, as _verify writes it."""
    verdict = {
        "gate": "ttft_p95 < 2s",
        "value": 1.0 if held else 3.0,
        "verdict": "pass" if held else "fail",
        "reason": "ttft_p95 = 3 s, needs < 2 s",
    }
    return {"replicas": replicas, "agents": 40, "router": "least-loaded", "held": held,
            "gates": [verdict], "output_tokens_per_s": 100.0 * replicas,
            "sessions_per_min": 2.0 * replicas, "session_success_rate": 1.0}  # fmt: skip


def _holding_from(fewest: int) -> tuple[list[int], Callable[[int], dict[str, Any]]]:
    """A fleet of `fewest` replicas or more holds; and the fleets tried, in order."""
    tried: list[int] = []

    def verify(replicas: int) -> dict[str, Any]:
        tried.append(replicas)
        return _fleet_run(replicas, replicas >= fewest)

    return tried, verify


def test_a_sized_fleet_that_holds_is_checked_one_replica_fewer() -> None:
    tried, verify = _holding_from(4)
    replicas, checks = verified_fleet(4, 2, verify)
    assert (replicas, tried) == (4, [4, 3])
    assert [c["held"] for c in checks] == [True, False]


def test_a_sized_fleet_that_breaks_grows_until_one_holds() -> None:
    # The coding-agent plan of docs/twin.md: 4 sized, 4 broke, 5 held.
    tried, verify = _holding_from(5)
    replicas, checks = verified_fleet(4, 2, verify)
    assert (replicas, tried) == (5, [4, 5])
    doc = {
        "agents": 40, "router": "prefix-load", "sized_replicas": 4, "replicas": replicas,
        "verification": checks, "gpu_hour_cost": None, "gpus_per_replica": 1,
        "per_replica": {"agents": 10, "reached": True, "output_tokens_per_s": 400.0,
                        "sessions_per_min": 8.0, "goodput": None,
                        "first_to_run_out": {"slo": None}},
        "answer": {"replicas": 5, "holds": True, "cost": {"fleet_per_hour": None}},
    }  # fmt: skip
    text = format_plan(doc)
    assert "replicas needed: 4 = ceil(40 agents / 10 per replica)" in text
    assert "4 broke in the fleet run: 5 is the fewest that held" in text
    assert text.endswith("plan: 5 replicas hold the SLOs, 4 do not; the sizing named 4: "
                         "the router's imbalance or lost affinity costs 1 more")  # fmt: skip


def test_growing_stops_at_the_limit_and_answers_the_sized_fleet_broken() -> None:
    tried, verify = _holding_from(99)
    replicas, checks = verified_fleet(4, 2, verify)
    assert (replicas, tried) == (4, [4, 5, 6])
    assert not any(c["held"] for c in checks)
    tried, verify = _holding_from(99)
    assert verified_fleet(4, 0, verify)[0] == 4
    assert tried == [4]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--twin", "missing.yaml", "--agents", "12"], "missing.yaml: no such file"),
        (["--agents", "0"], "argument --agents: '0' is below 1"),
        (["--agents", "12", "--router", "fastest"], "--router 'fastest': use one of"),
        (["--agents", "12", "--slo", "ttft_p95 <"], "ttft_p95 <"),
        (["--agents", "12", "--max-extra-replicas", "-1"], "--max-extra-replicas: give 0"),
        (["--agents", "12", "--speedup", "0.5"], "--speedup 0.5: give 1 (real time)"),
        (
            ["--agents", "12", "--speedup", "4", "--slo", "output_tokens_per_s > 100"],
            "a rate cannot be judged faster than real time",
        ),
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
