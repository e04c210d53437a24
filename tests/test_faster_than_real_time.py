"""Faster than real time: the simulator's clock at a speedup, and plans run on it.

The simulator at `speedup: K` lasts 1/K of every modelled duration; a plan at `--speedup K`
tells its runs wall time and reports modelled time, and says whether the twin kept up.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loadgen.errors import UsageError
from loadgen.gates.gates import parse_gate
from loadgen.orchestration.plan import format_plan, pace_at_speedup
from loadgen.orchestration.time_warp import TimeWarp, engine_clock, pace_check, pace_lines
from loadgen.profile.loader import load_profile, profile_from_mapping
from loadgen.protocol.failures import FailureKind
from loadgen.sim import SimServer
from tests.test_sim_engine import analytical, stream_chat
from tests.test_twin_plan import AGENTS, SLO, _files, _fleet_run

ROOT = Path(__file__).resolve().parents[1]
StartSim = Callable[..., Awaitable[SimServer]]


# -- the simulator's clock --------------------------------------------------------------------


async def test_a_simulator_at_speedup_k_steps_k_times_faster(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(**analytical(50, 4), speedup=10)  # a 50 ms step lasts 5 ms

    reply = await stream_chat(http, server, "hello", 40)

    gaps = [b - a for a, b in zip(reply.token_times, reply.token_times[1:], strict=False)]
    assert 0.001 < statistics.median(gaps) < 0.025  # 5 ms; real time would be 50 ms


async def test_request_overhead_lasts_one_kth_at_speedup_k(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(
        perf={"kind": "analytical", "decode_step_ms": 10, "request_overhead_ms": 2000},
        speedup=10,
    )

    reply = await stream_chat(http, server, "hello", 4)

    assert 0.04 < reply.ttft < 1.0  # 200 ms; real time would be over 2 s


async def test_the_engine_clock_counts_busy_time_and_none_lost_when_it_keeps_up(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(**analytical(50, 4), speedup=10)

    await stream_chat(http, server, "hello", 20)
    clock = await asyncio.to_thread(engine_clock, server.base_url)  # blocking: off the loop

    assert 0.05 < clock.busy_s < 0.5  # 20 steps of 5 ms
    assert clock.lost_s < clock.busy_s


async def test_the_engine_clock_counts_lost_time_when_the_speedup_outruns_the_machine(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    # A 1 ms step at 1000x lasts 1 us: Python spends far longer per token than that, so
    # 2000 tokens fall behind by more than the 50 ms the engine makes up for.
    server = await start_sim(**analytical(1, 4), speedup=1000)

    await stream_chat(http, server, "hello", 2000)
    clock = await asyncio.to_thread(engine_clock, server.base_url)  # blocking: off the loop

    assert clock.lost_s > clock.busy_s
    assert clock.lost_share > 1


# -- what a run at a speedup is told, and what it measured ----------------------------------


def test_a_latency_slo_is_judged_k_times_tighter_on_the_wall_clock() -> None:
    wall = TimeWarp(4).wall_gate("ttft_p95 < 2s")

    assert parse_gate(wall).threshold == pytest.approx(0.5)


@pytest.mark.parametrize("text", ["ttft_p95 < 2s", "itl_p99 < 250ms", "e2e_max <= 90s"])
def test_a_gate_comes_back_as_it_was_written(text: str) -> None:
    warp = TimeWarp(8)

    assert warp.modelled_gate(warp.wall_gate(text)) == text


@pytest.mark.parametrize(
    ("text", "threshold"),
    [("error_rate < 1%", 0.01), ("session_success_rate >= 0.99", 0.99),
     ("state_failures.total == 0", 0.0)],
)  # fmt: skip
def test_ratio_and_count_gates_are_the_same_on_either_clock(text: str, threshold: float) -> None:
    assert parse_gate(TimeWarp(4).wall_gate(text)).threshold == pytest.approx(threshold)


def test_an_abort_delay_is_wall_time_too() -> None:
    wall = parse_gate(TimeWarp(4).wall_gate("ttft_p99 < 5s abort after 30s"))

    assert (wall.threshold, wall.abort_on_fail, wall.delay_s) == (1.25, True, 7.5)


def test_a_rate_slo_is_refused_at_a_speedup_and_taken_in_real_time() -> None:
    with pytest.raises(UsageError, match="a rate cannot be judged faster than real time"):
        TimeWarp(4).check_gates(["output_tokens_per_s > 100"])

    TimeWarp(1).check_gates(["output_tokens_per_s > 100"])


def test_times_in_a_reason_come_back_in_modelled_time() -> None:
    reason = "ttft_p95 = 611.3 ms, needs < 500 ms (window: slices 1-8, 0.0-15.0s; broke in slice 4)"

    assert TimeWarp(4).modelled_text(reason) == (
        "ttft_p95 = 2.445 s, needs < 2 s (window: slices 1-8, 0.0-60.0s; broke in slice 4)"
    )


def test_rates_in_a_reason_come_back_per_modelled_time() -> None:
    reason = "goodput fell to 1744 tokens/s from 3224 at a lower load; 32.0 sessions/min"

    assert TimeWarp(4).modelled_text(reason) == (
        "goodput fell to 436 tokens/s from 806 at a lower load; 8.0 sessions/min"
    )


def test_a_gate_result_comes_back_in_modelled_time() -> None:
    result = {"gate": "ttft_p95 < 500ms", "value": 0.4, "verdict": "pass",
              "reason": "ttft_p95 = 400 ms, < 500 ms"}  # fmt: skip

    back = TimeWarp(4).modelled_gate_result(result)

    assert back == {"gate": "ttft_p95 < 2s", "value": 1.6, "verdict": "pass",
                    "reason": "ttft_p95 = 1.6 s, < 2 s"}  # fmt: skip


def test_the_profile_a_run_loads_is_in_wall_time(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: warped\nduration: 10m\ntime_scale: 0.5\n"
        "arrival: {mode: closed, agents: 4}\n"
        "stages: [{kind: ramp, duration: 40s, target: 8}, {kind: hold, duration: 2m}]\n"
        "agents: [{kind: support}]\n"
        "reactions: {rate_limited: {action: retry, backoff: 2s, max_backoff: 20s}}\n"
        "slos: {ttft_p95: 2s, session_success: 0.99}\n"
        "gates: ['itl_p99 < 200ms']\n"
    )
    loaded = load_profile(str(path))

    data = TimeWarp(4).profile(loaded)
    warped = profile_from_mapping(data, "warped", tmp_path).profile

    assert warped.time_scale == pytest.approx(0.125)
    assert warped.duration == pytest.approx(150)
    assert [(s.duration, s.target) for s in warped.stages] == [(10, 8), (30, None)]
    limited = warped.reactions[FailureKind.RATE_LIMITED]
    assert (limited.backoff, limited.max_backoff) == (0.5, 5)
    assert warped.slos == {"ttft_p95": 0.5, "session_success": 0.99}
    assert warped.gates == ["itl_p99 < 50ms"]


def test_a_searchs_windows_are_its_defaults_in_modelled_time_given_in_wall_time() -> None:
    flags = TimeWarp(4).ceiling_flags(["--start", "32", "--max-duration", "1500", "--slo", SLO])
    given = dict(zip(flags[::2], flags[1::2], strict=True))

    assert given["--start"] == "32"  # agents are agents on either clock
    assert float(given["--max-duration"]) == 375
    assert float(given["--warmup"]) == 7.5  # the search's own 30 s and 60 s, modelled
    assert float(given["--window"]) == 15
    assert float(given["--generator-max-schedule-lag"]) > 0
    assert parse_gate(given["--slo"]).threshold == pytest.approx(parse_gate(SLO).threshold / 4)
    assert TimeWarp(1).ceiling_flags(["--start", "32"]) == ["--start", "32"]


def test_an_open_loop_rate_is_k_times_higher_on_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: open\narrival: {mode: open, rate: 2}\n"
        "stages: [{kind: ramp, duration: 60s, target: 5}]\nagents: [{kind: support}]\n"
    )

    data = TimeWarp(4).profile(load_profile(str(path)))
    warped = profile_from_mapping(data, "open", tmp_path).profile

    assert warped.arrival.rate == 8
    assert [(s.duration, s.target) for s in warped.stages] == [(15, 20)]


# -- a plan at a speedup ----------------------------------------------------------------------


def _clocked_run(replicas: int, lost_share: float, saturated: bool = False) -> dict[str, Any]:
    run = _fleet_run(replicas, held=True)
    run["engine_clock"] = {"busy_s": 10.0, "lost_s": 10.0 * lost_share, "lost_share": lost_share}
    run["generator_saturated"] = saturated
    return run


def _plan_doc(clock: dict[str, Any]) -> dict[str, Any]:
    return {
        "agents": 40, "router": "prefix-load", "replicas": 4, "speedup": 8.0,
        "verification": [_fleet_run(4, True)], "gpu_hour_cost": None, "gpus_per_replica": 1,
        "per_replica": {"agents": 10, "reached": True, "output_tokens_per_s": 400.0,
                        "sessions_per_min": 8.0, "goodput": None,
                        "first_to_run_out": {"slo": None}},
        "answer": {"replicas": 4, "holds": True, "cost": {"fleet_per_hour": None}},
        "engine_clock": clock,
    }  # fmt: skip


def test_a_twin_that_kept_its_pace_in_every_run_is_reported_so() -> None:
    ceiling = {"engine_clock": {"busy_s": 50.0, "lost_s": 0.0, "lost_share": 0.0}}
    clock = pace_at_speedup(ceiling, [_clocked_run(4, 0.01), _clocked_run(3, 0.0)])

    assert clock["kept_up"]
    assert "kept its pace (lost 1.0% of its busy time at worst" in format_plan(_plan_doc(clock))


def test_a_twin_that_fell_behind_in_one_run_tells_to_plan_slower() -> None:
    ceiling = {"engine_clock": {"busy_s": 50.0, "lost_s": 0.0, "lost_share": 0.0}}
    clock = pace_at_speedup(ceiling, [_clocked_run(4, 0.05), _clocked_run(3, 0.0)])
    text = format_plan(_plan_doc(clock))

    assert not clock["kept_up"]
    assert "FELL BEHIND its modelled pace (lost 5.0%" in text
    assert "plan again with a lower --speedup" in text


def test_a_saturated_load_generator_fails_the_pace_check_too() -> None:
    clock = pace_at_speedup({}, [_clocked_run(4, 0.0, saturated=True)])

    assert not clock["kept_up"]
    assert "the load generator saturated in the run of 4 replica(s)" in format_plan(
        _plan_doc(clock)
    )


def test_a_study_whose_fleet_fell_behind_in_one_arm_tells_to_study_slower() -> None:
    # A route study's rows: one arm lost 3% of its busy time, one was not clocked.
    clock = pace_check([0.001, 0.03, None])
    lines = pace_lines(clock, 4.0, "fleet", "study")

    assert not clock["kept_up"]
    assert clock["lost_share_max"] == 0.03
    assert lines[0].startswith("clock: the fleet ran 4x faster than real time and FELL BEHIND")
    assert lines[-1].endswith("study again with a lower --speedup")


def test_a_study_arm_whose_load_generator_saturated_fails_the_pace_check_by_name() -> None:
    clock = pace_check([0.0, 0.0], ["prefix-load"])
    lines = pace_lines(clock, 4.0, "fleet", "study")

    assert not clock["kept_up"]
    assert "clock: the load generator saturated in the run of prefix-load" in lines


@pytest.mark.slow
def test_a_plan_at_speedup_4_answers_as_in_real_time_in_modelled_time(tmp_path: Path) -> None:
    # tests/test_twin_plan.py's plan (3 replicas hold 12 agents, 2 do not), every time given
    # 4x longer than there and served 4x faster: the same answer, told in modelled time.
    twin, profile = _files(tmp_path)
    out = tmp_path / "plan"
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "plan", str(profile), "--twin", str(twin),
         "--slo", SLO, "--agents", str(AGENTS), "--warmup", "2s", "--window", "6s",
         "--resolution", "0.25", "--max-duration", "240s", "--verify-duration", "16s",
         "--speedup", "4", "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, Any] = json.loads((out / "plan.json").read_text())
    assert doc["speedup"] == 4
    assert doc["slos"] == [SLO]
    per = doc["per_replica"]
    assert per["agents"] in (4, 5), per
    assert doc["replicas"] == 3
    at_r, below = doc["verification"]
    assert at_r["held"], at_r
    assert not below["held"], below
    # Modelled time: 16 s runs, and the tokens/s of 12 agents at 100 tokens/s each, as in
    # real time (tests/test_twin_plan.py), though the plan took a fraction of that.
    assert at_r["duration_s"] == pytest.approx(16, rel=0.25)
    assert 800 < doc["answer"]["output_tokens_per_s"] < 1250
    ran = json.loads((out / "verify-3-replicas" / "summary.json").read_text())["duration_s"]
    assert ran == pytest.approx(4, rel=0.25)  # on the wall clock: a quarter of it
    assert doc["engine_clock"]["lost_share_max"] >= 0
    assert any(
        line.startswith("clock: the twin ran 4x faster") for line in result.stdout.splitlines()
    )
    warped = load_profile(str(out / "profile-at-speedup-4.yaml")).profile
    assert warped.time_scale == pytest.approx(0.001 / 4)
