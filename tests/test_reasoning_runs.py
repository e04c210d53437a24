"""Reasoning models end to end: agents asking the simulator to think, measured as it thinks.

The analytical simulator generates one token per sequence per step of a known length and
reasons exactly as long as its settings say (spread 0), so what the client measures can be
checked against arithmetic: the reasoning it counted, the time from the first token to the
first answer token, and the ceiling the thinking costs.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.ceiling import CeilingOptions, SearchSettings, build_slos, run_ceiling
from loadgen.ceiling.measure import Windows
from loadgen.profile.loader import LoadedProfile, load_profile
from loadgen.report.html.ceiling import ceiling_section, parse_ceiling
from loadgen.traces import Trace, TraceRequest, TraceSession
from loadgen.traces.formats.agentload import write_agentload
from loadgen.transport import TargetConfig
from tests.cli_runs import ROOT, agentload_run, write_profile
from tests.conftest import StartSim
from tests.test_ceiling import _verdicts
from tests.test_sim_fleet_runs import sim_metrics, summed

pytestmark = pytest.mark.slow

AGENTLOAD = [sys.executable, "-m", "loadgen"]
STEP_S = 0.020
THINKING = {"minimal": 8, "low": 16, "medium": 32, "high": 48}


def agents(effort: Any, **params: Any) -> dict[str, Any]:
    """Support agents (no tools needed) that think at `effort` before each answer."""
    return {
        "name": "reasoning-test",
        "seed": 5,
        "time_scale": 0.01,
        "arrival": {"mode": "closed", "agents": 8},
        "agents": [
            {
                "kind": "support",
                "reasoning_effort": effort,
                "params": {"system_prompt_tokens": 64, "turns": 3, "user_tokens": 16,
                           "think_time_s": 0, **params},
            }
        ],
    }  # fmt: skip


def analytical(decode_step_s: float, max_num_seqs: int, **more: Any) -> dict[str, Any]:
    """An exact engine: every step decode_step_s, answers of exactly 40 tokens, no tools."""
    return {
        "perf": {"kind": "analytical", "decode_step_ms": decode_step_s * 1000},
        "max_num_seqs": max_num_seqs,
        "output_tokens_median": 40,
        "output_tokens_sigma": 0.0,
        "tool_call_probability": 0.0,
        **more,
    }


def steps(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


# -- what is counted and timed -------------------------------------------------------------------


def bounded_trace(path: Path, sessions: int = 12, requests: int = 3) -> Path:
    """Sessions of `requests` requests, 0.2 s apart at the start, each 120 tokens of output
    (thinking included, as traces count it): a run that ends when its last request does,
    with nothing in flight to cut."""
    trace = Trace(
        [
            TraceSession(
                f"s{i}",
                [TraceRequest(at_s=0.2 * i, input_tokens=200 + 50 * k, output_tokens=120,
                              gap_s=None if k == 0 else 0.05)
                 for k in range(requests)],
            )
            for i in range(sessions)
        ],
        block_size=64,
    )  # fmt: skip
    with path.open("w") as out:
        write_agentload(trace, out)
    return path


@pytest.fixture
async def replayed(start_sim: StartSim, tmp_path: Path) -> tuple[dict[str, Any], Path, float]:
    """A bounded trace replayed against a simulator whose model thinks 48 tokens before every
    answer (its default effort, high) on 20 ms steps: summary, out, and the simulator's own
    count of the reasoning tokens of the requests it finished."""
    reasoning = {"tokens": THINKING, "spread": 0.0, "default_effort": "high"}
    server = await start_sim(**analytical(STEP_S, 16, reasoning=reasoning))
    out = tmp_path / "out"
    trace = bounded_trace(tmp_path / "trace.jsonl")
    proc = await asyncio.create_subprocess_exec(
        *AGENTLOAD, "replay", str(trace), "--target", server.base_url, "--quiet", "--out",
        str(out), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(180):
        _stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    metrics = await sim_metrics(server)
    finished = summed(metrics, "agentload_sim_reasoning_tokens_total", outcome="finished")
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary, out, finished


async def test_the_reasoning_counted_is_the_simulators_own_count(
    replayed: tuple[dict[str, Any], Path, float],
) -> None:
    summary, out, simulator_count = replayed
    assert summary["requests"] == {"total": 36, "ok": 36, "failed": 0}
    # The simulator also counts agentload's start-up probes, which think at its default effort
    # as far as their output limits let them: the first request (3 tokens) and replay's probe
    # of the target's tokens per prompt token (1). Every other reasoning token, the run counted.
    probes = 3 + 1
    assert summary["tokens"]["reasoning"] == simulator_count - probes == 36 * THINKING["high"]
    assert {s["reasoning_tokens"] for s in steps(out)} == {THINKING["high"]}
    assert summary["tokens"]["answer"] == summary["tokens"]["completion"] - 36 * THINKING["high"]


async def test_the_first_answer_token_comes_one_step_per_reasoning_token_after_the_first(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # Agents at two efforts (16 or 48 tokens of thinking) on 20 ms steps.
    reasoning = {"tokens": THINKING, "spread": 0.0}
    server = await start_sim(**analytical(STEP_S, 16, reasoning=reasoning))
    profile = write_profile(tmp_path / "p.yaml", agents({"low": 0.5, "high": 0.5}))
    out = tmp_path / "out"
    await agentload_run(profile, out, "--duration", "10s", target=server.base_url)
    gaps = []
    for step in steps(out):
        expected = step["reasoning_tokens"] * STEP_S
        gaps.append((step["ttfat_s"] - step["ttft_s"], expected))
    assert len(gaps) > 30, gaps
    assert {want for _gap, want in gaps} == {16 * STEP_S, 48 * STEP_S}
    # The issue's bound, per request: within 5% or one step of the simulator's arithmetic.
    within = [abs(gap - want) <= max(0.05 * want, STEP_S) for gap, want in gaps]
    # On a 2-core machine shared with the rest of the suite a stall can stretch a few steps of
    # one request; nineteen in twenty must hold it, and the median error be within 2%.
    assert sum(within) >= 0.95 * len(within), [
        g for g, ok in zip(gaps, within, strict=True) if not ok
    ]
    assert statistics.median(abs(gap / want - 1) for gap, want in gaps) < 0.02, gaps


# -- what thinking costs: the ceiling at a TTFAT SLO ---------------------------------------------

# 8 slots of 10 ms steps, answers of 40 tokens, agents that never pause: up to 8 agents each
# keep a slot and wait for nothing; beyond that a request waits for a slot. A request holds
# one for S = (R + 40) steps, so with N agents it waits about (N - 8) / 8 * S, and its first
# answer token comes that wait plus R steps after it was sent. At `TTFAT_SLO` the most agents
# are N* = 8 + 8 (SLO - R step) / S: low (R = 20, S = 0.6 s): 58.7; high (R = 160, S = 2 s): 17.6.
# (At a 2.5 s SLO the searches found 34 and 10 against 38.7 and 11.6: a p95 over a few
# seconds sits ~0.2 s above the mean wait, which costs a larger share of a lower ceiling.)
SLOTS, DECODE_S, ANSWER, TTFAT_SLO = 8, 0.010, 40, 4.0
CEILING_THINKING = {"minimal": 8, "low": 20, "medium": 80, "high": 160}
CEILING_PROFILE = """
name: reasoning-ceiling
duration: 10s
seed: 7
time_scale: 0.001
arrival: {mode: closed, agents: 1}
agents:
  - kind: support
    reasoning_effort: EFFORT
    params: {system_prompt_tokens: 16, turns: 2, steps_per_turn: 1, user_tokens: 8,
             output_tokens: 40, think_time_s: 0}
"""


def prepared(out: Path, profile: str) -> LoadedProfile:
    """`profile` written beside the search's (new) results folder, and loaded."""
    out.mkdir()
    return load_profile(str(write_profile(out.with_suffix(".yaml"), yaml.safe_load(profile))))


async def search(
    start_sim: StartSim, out: Path, sim: dict[str, Any], profile: str, slos: tuple[str, ...]
) -> dict[str, Any]:
    """A ceiling search whose levels warm up for a few service times: a queue that grows to
    (N - 8) / 8 requests ahead of each one takes that long to form (with test_ceiling's 1 s
    warm-up the search saw it still growing and called the level not steady)."""
    server = await start_sim(**sim)
    loaded = prepared(out, profile)
    options = CeilingOptions(
        out_dir=out,
        slos=build_slos(list(slos), {}, []),
        search=SearchSettings(start=4, resolution=0.1),
        windows=Windows(warmup_s=5.0, window_s=4.0),
        max_duration_s=240,
        progress=None,
    )
    return await run_ceiling(loaded, TargetConfig.from_url(server.base_url), options)


def mark_titles(chart: str) -> list[str]:
    """The series a report chart draws, by their titles."""
    return re.findall(r'<path class="mark"[^>]*><title>([^<]+)</title>', chart)


def predicted_agents(thinking: int) -> float:
    service_s = (thinking + ANSWER) * DECODE_S
    return SLOTS + SLOTS * (TTFAT_SLO - thinking * DECODE_S) / service_s


async def test_thinking_harder_lowers_the_ceiling_as_the_arithmetic_predicts(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = analytical(DECODE_S, SLOTS, reasoning={"tokens": CEILING_THINKING, "spread": 0.0})
    docs = {}
    for effort in ("low", "high"):
        profile = CEILING_PROFILE.replace("EFFORT", effort)
        slos = (f"ttfat_p95 < {TTFAT_SLO}s",)
        docs[effort] = await search(start_sim, tmp_path / effort, sim, profile, slos)
    for effort, doc in docs.items():
        runs = _verdicts(doc)
        ceiling = doc["ceiling"]
        assert ceiling is not None, runs
        want = predicted_agents(CEILING_THINKING[effort])
        assert ceiling["load"] == pytest.approx(want, rel=0.15), (effort, want, runs)
        assert doc["failed_first"]["slo"][0].startswith("ttfat_p95"), runs
        # At the ceiling every slot is busy: 800 output tokens/s, of which the answers' share.
        share = ANSWER / (ANSWER + CEILING_THINKING[effort])
        assert ceiling["answer_tokens_per_s"] == pytest.approx(
            ceiling["output_tokens_per_s"] * share, rel=0.10
        ), runs
    assert docs["high"]["ceiling"]["load"] < docs["low"]["ceiling"]["load"]
    # The report of each search draws answer tokens/s and TTFAT p95 by level, and says the
    # ceiling in agents and in answer tokens/s.
    for doc in docs.values():
        section = ceiling_section(parse_ceiling(doc))
        throughput, latency = section.charts[:2]
        assert "answer tokens/s" in mark_titles(throughput)
        assert "TTFAT p95" in mark_titles(latency)
        answer = f"{doc['ceiling']['answer_tokens_per_s']:,.0f} answer tokens/s"
        assert f"Ceiling: {doc['ceiling']['load']:g} agents. At the ceiling: {answer}" in (
            section.note
        )


# -- gates -----------------------------------------------------------------------------------------


async def test_a_ttfat_gate_fails_a_run_whose_ttft_gate_passes(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # 48 tokens of thinking on 20 ms steps: the first token comes at once, the first answer
    # token about 0.96 s later.
    reasoning = {"tokens": THINKING, "spread": 0.0}
    server = await start_sim(**analytical(STEP_S, 16, reasoning=reasoning))
    profile = write_profile(tmp_path / "p.yaml", agents("high"))
    run = await agentload_run(
        profile, tmp_path / "out", "--duration", "5s", "--gate", "ttft_p95 < 500ms",
        "--gate", "ttfat_p95 < 500ms", target=server.base_url, codes=(1,),
    )  # fmt: skip
    verdicts = {gate["metric"]: gate["verdict"] for gate in run.summary["gates"]}
    assert verdicts == {"ttft_p95": "pass", "ttfat_p95": "fail"}, run.summary["gates"]
    assert run.summary["latency"]["ttfat_s"]["p95"] > 0.9


# -- compare ---------------------------------------------------------------------------------------


async def test_compare_puts_ttfat_and_answer_tokens_beside_ttft_when_a_run_reasoned(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # The same agents thinking 16 then 48 tokens a step on 20 ms steps: the first answer
    # token comes 0.64 s later, and a third fewer of the output tokens are answers.
    reasoning = {"tokens": THINKING, "spread": 0.0}
    server = await start_sim(**analytical(STEP_S, 16, reasoning=reasoning))
    for effort in ("low", "high"):
        profile = write_profile(tmp_path / f"{effort}.yaml", agents(effort))
        await agentload_run(profile, tmp_path / effort, "--duration", "6s", target=server.base_url)
    proc = await asyncio.create_subprocess_exec(
        *AGENTLOAD, "compare", str(tmp_path / "low"), str(tmp_path / "high"), "--json",
        str(tmp_path / "compare.json"), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _stderr = await proc.communicate()
    assert proc.returncode == 1, stdout.decode()  # a regression: the high-effort run is slower
    changes = json.loads((tmp_path / "compare.json").read_text())["changes"]
    rows = {row["metric"]: row for row in changes}
    assert list(rows)[:4] == ["ttft_p50", "ttft_p95", "ttfat_p50", "ttfat_p95"]
    assert rows["ttfat_p50"]["verdict"] == "regression"
    added = rows["ttfat_p50"]["new"] - rows["ttfat_p50"]["baseline"]
    assert added == pytest.approx((48 - 16) * STEP_S, abs=2 * STEP_S), rows["ttfat_p50"]
    assert rows["answer_tokens_per_s"]["new"] < rows["answer_tokens_per_s"]["baseline"]
