"""Ceiling search against the analytical simulator, whose output-token ceiling is known."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from loadgen.ceiling import (
    CeilingOptions,
    SearchSettings,
    build_slos,
    format_ceiling,
    run_ceiling,
)
from loadgen.ceiling.measure import GeneratorLimits, Windows
from loadgen.cli.main import main
from loadgen.observe import (
    CPU_SATURATED_PERCENT,
    LOOP_LAG_SATURATED_S,
    SCHEDULE_LAG_SATURATED_S,
)
from loadgen.profile.loader import load_profile
from loadgen.report.html.ceiling import CEILING_FILE, ceiling_section, parse_ceiling
from loadgen.transport import TargetConfig
from tests.conftest import StartSim

# Output tokens dominate: tiny prompts, a forced 48-token reply, no think time. Each agent
# keeps one request in flight, so up to max_num_seqs agents never queue; beyond that,
# requests wait for a slot and TTFT jumps by a fraction of a whole request.
PROFILE = """
name: ceiling-test
duration: 10s
seed: 7
time_scale: 0.001
force_output_length: always
arrival: {mode: closed, agents: 1}
agents:
  - kind: support
    params: {system_prompt_tokens: 16, turns: 2, steps_per_turn: 1, user_tokens: 8,
             output_tokens: 48, think_time_s: 0}
"""
# The searches' bracket: a ceiling is found to within this share of its load.
SEARCH_RESOLUTION = 0.25
SLO = "ttft_p95 < 200ms"


def _profile(tmp_path: Path, sim: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "ceiling-test.yaml"
    path.write_text(PROFILE + (f"sim: {json.dumps(sim)}\n" if sim else ""))
    return path


# The search's own verdict that the latencies it measured were the generator's (a machine
# busy with other work), not the target's: the one reading a test takes again, once.
SATURATED = "load generator saturated"


async def _search(
    start_sim: StartSim,
    tmp_path: Path,
    name: str,
    *,
    sim: dict[str, Any],
    profile: str = PROFILE,
    slos: tuple[str, ...] = (SLO,),
    resolution: float = SEARCH_RESOLUTION,
) -> dict[str, Any]:
    """A search as it came, or, when it stopped on a saturated generator, a second one: every
    other reading stands. A rerun is recorded in the document as `rerun_after`."""
    doc = await _search_once(start_sim, tmp_path, name, sim, profile, slos, resolution)
    if doc["stopped_by"].startswith(SATURATED):
        again = await _search_once(
            start_sim, tmp_path, f"{name}-rerun", sim, profile, slos, resolution
        )
        return {**again, "rerun_after": doc["stopped_by"]}
    return doc


async def _search_once(
    start_sim: StartSim,
    tmp_path: Path,
    name: str,
    sim: dict[str, Any],
    profile: str,
    slos: tuple[str, ...],
    resolution: float,
) -> dict[str, Any]:
    server = await start_sim(**sim)
    out = tmp_path / name
    out.mkdir()
    path = tmp_path / f"{name}.yaml"
    path.write_text(profile)
    options = CeilingOptions(
        out_dir=out,
        slos=build_slos(list(slos), {}, []),
        search=SearchSettings(start=4, resolution=resolution),
        windows=Windows(
            warmup_s=1.0,
            window_s=2.5,
            metrics_url=server.base_url.removesuffix("/v1") + "/metrics",
            scrape_interval_s=0.25,
        ),
        max_duration_s=90,
        progress=None,
    )
    doc = await run_ceiling(
        load_profile(str(path)), TargetConfig.from_url(server.base_url), options
    )
    assert json.loads((out / CEILING_FILE).read_text()) == doc
    return doc


def _verdicts(doc: dict[str, Any]) -> list[Any]:
    """Each level in the order measured: what an assertion on a search prints when it fails."""
    levels = [(lv["load"], lv["output_tokens_per_s"], lv["broken"], lv["generator"])
              for lv in doc["levels"]]  # fmt: skip
    return [doc["stopped_by"], doc.get("rerun_after"), *levels]


def _analytical(decode_step_ms: float, max_num_seqs: int, **more: Any) -> dict[str, Any]:
    perf = {"kind": "analytical", "decode_step_ms": decode_step_ms}
    return {"perf": perf, "max_num_seqs": max_num_seqs, **more}


async def test_ceiling_matches_the_analytical_capacity(start_sim: StartSim, tmp_path: Path) -> None:
    analytical = 8 / 0.010  # max_num_seqs / decode step: 800 output tokens/s
    doc = await _search(start_sim, tmp_path, "a", sim=_analytical(10, 8))
    runs = _verdicts(doc)
    assert doc["ceiling"]["output_tokens_per_s"] == pytest.approx(analytical, rel=0.15), runs
    assert doc["ceiling"]["load"] in (8, 9, 10), runs
    # Beyond max_num_seqs requests queue: the TTFT SLO and the server's queue go first.
    assert doc["failed_first"]["slo"][0].startswith("ttft_p95")
    assert doc["failed_first"]["server_resource"] == "queue"
    assert doc["stopped_by"].startswith("settled")
    assert doc["knee"] is not None
    assert 4 <= doc["knee"] <= 10


# One 140-token reply per session: a request holds its slot for 1.4 s. Up to max_num_seqs
# agents never wait for a slot (TTFT is about one 10 ms step); past it the queued requests
# wait for slots to free, and whether the p95 waits one step or hundreds of ms depends on
# how the slots' finishing times happen to be spread. With 10 slots one extra agent is 10%
# of the requests waiting, more than the 5% a p95 may hide, each for longer than the SLO's
# 100 ms allows however the slots are spread: the SLO breaks at 11 agents and holds at 10,
# one search step apart, run after run.
REPEAT_PROFILE = PROFILE.replace("turns: 2,", "turns: 1,").replace(
    "output_tokens: 48", "output_tokens: 140"
)
# Held at every level: measured and judged in each window, never the one that breaks.
HELD_SLOS = ("itl_p99 < 250ms", "e2e_p95 < 30s", "session_success_rate >= 0.99")


async def test_the_same_sim_seed_and_profile_find_the_ceiling_again_within_10_percent(
    start_sim: StartSim, tmp_path: Path
) -> None:
    analytical = 10 / 0.010  # 1,000 output tokens/s: a third analytical setting
    slos = ("ttft_p95 < 100ms", *HELD_SLOS)
    # Two searches, compared as they came: only one that stopped on a saturated generator is
    # rerun, so no rerun can hide a reading of the target that did not repeat.
    docs = [
        await _search(start_sim, tmp_path, name, sim=_analytical(10, 10),
                      profile=REPEAT_PROFILE, slos=slos, resolution=0.10)
        for name in ("first", "second")
    ]  # fmt: skip
    runs = [_verdicts(doc) for doc in docs]
    loads = sorted(doc["ceiling"]["load"] for doc in docs)
    assert loads[1] - loads[0] <= 0.10 * loads[0], runs
    tokens = [doc["ceiling"]["output_tokens_per_s"] for doc in docs]
    assert tokens[1] == pytest.approx(tokens[0], rel=0.10), runs
    for doc in docs:
        assert doc["ceiling"]["output_tokens_per_s"] == pytest.approx(analytical, rel=0.15), runs
        assert doc["failed_first"]["slo"][0].startswith("ttft_p95"), runs
        for level in doc["levels"]:
            assert not any(b.startswith(HELD_SLOS) for b in level["broken"]), runs
            measured = (level["itl_p99_s"], level["e2e_p95_s"], level["session_success_rate"])
            assert None not in measured, runs


async def test_session_time_and_goodput_slos_find_the_second_analytical_setting(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # 12 slots of 20 ms steps: 600 output tokens/s. A session (two 48-token replies) takes
    # about 1.96 s while every request has a slot; past 12 agents requests wait for one, and
    # sessions lengthen with the load (16 agents: 16/12 of that). Only session SLOs judge.
    slos = ("session_p90 < 2.4s", "goodput_ratio >= 0.9")
    doc = await _search(start_sim, tmp_path, "c", sim=_analytical(20, 12), slos=slos)
    runs = _verdicts(doc)
    ceiling = doc["ceiling"]
    assert ceiling is not None, runs
    assert ceiling["output_tokens_per_s"] == pytest.approx(12 / 0.020, rel=0.15), runs
    assert 12 <= ceiling["load"] <= 14, runs
    held = next(lv for lv in doc["levels"] if lv["load"] == ceiling["load"])
    assert held["session_p90_s"] < 2.4
    assert held["goodput"] >= 0.9
    # Every session generates the same 96 tokens: the tokens of the sessions within the SLOs
    # are the same share of throughput as the sessions are of those judged.
    for level in doc["levels"]:
        assert level["goodput"] is not None, runs
        # Each session's second request resends its first: part of every window is cached.
        assert 0 < level["cache_hit_ratio"] < 1, runs
        expected = level["output_tokens_per_s"] * level["goodput"]
        assert level["goodput_tokens_per_s"] == pytest.approx(expected, rel=0.01), runs
    above = [lv for lv in doc["levels"] if lv["load"] > ceiling["load"]]
    # A session over the 2.4 s bound is not goodput: every level past the ceiling broke it.
    assert above, runs
    assert all(any(b.startswith("goodput_ratio") for b in lv["broken"]) for lv in above), runs
    assert all(lv["goodput_tokens_per_s"] < lv["output_tokens_per_s"] for lv in above), runs
    highest = max(above, key=lambda lv: lv["load"])
    assert any(b.startswith("session_p90") for b in highest["broken"]), runs
    assert any(s.startswith("goodput_ratio") for s in doc["failed_first"]["slo"])


# Each session's first prompt is 300 words of its own (no prefix shared with other sessions):
# its second turn finds that prompt in the KV cache only if no other sequence evicted it
# while the turn waited for room, so cache misses rise once the cache is what runs out.
KV_PROFILE = PROFILE.replace("user_tokens: 8", "user_tokens: 300")


async def test_a_small_kv_cache_is_named_as_what_broke_first(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # 200 blocks of 16 tokens hold about five of these sessions, far fewer than 64 slots.
    sim = _analytical(10, 64, num_kv_blocks=200, max_model_len=1024)
    doc = await _search(start_sim, tmp_path, "kv", sim=sim, profile=KV_PROFILE)
    runs = _verdicts(doc)
    failed = doc["failed_first"]
    assert failed["server_resource"] in ("kv_cache", "preemptions"), runs
    assert failed["state_failure"] == "cache_miss", [lv["state_failures"] for lv in doc["levels"]]
    assert doc["ceiling"]["load"] < 8  # well below the 64 batch slots
    # The printed table and the HTML report say it too.
    assert "  first state failure to rise: cache_miss" in format_ceiling(doc).splitlines()
    note = ceiling_section(parse_ceiling(doc)).note
    assert f"server resource saturated first: {failed['server_resource']}" in note
    assert "first state failure to rise: cache_miss" in note


@dataclass
class CliSearch:
    """What one `agentload ceiling` run left: its exit code, what it printed, its results."""

    code: int
    printed: str
    out: Path
    doc: dict[str, Any]


def _ceiling_cli(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> CliSearch:
    """`agentload ceiling ARGV --out OUT`, run once more if it stopped on a saturated
    generator (as `_search`); the rerun writes to OUT-rerun and records `rerun_after`."""
    code = main([*argv, "--out", str(out)])
    run = CliSearch(
        code, capsys.readouterr().out, out, json.loads((out / CEILING_FILE).read_text())
    )
    if not run.doc["stopped_by"].startswith(SATURATED):
        return run
    again = out.with_name(out.name + "-rerun")
    code = main([*argv, "--out", str(again)])
    doc = json.loads((again / CEILING_FILE).read_text())
    return CliSearch(code, capsys.readouterr().out, again,
                     {**doc, "rerun_after": run.doc["stopped_by"]})  # fmt: skip


def test_cli_finds_a_ceiling_and_writes_what_the_report_draws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = _profile(tmp_path, {"preset": "fast", **_analytical(10, 4)})
    argv = ["ceiling", str(profile), "--slo", SLO, "--start", "4", "--resolution", "0.5",
            "--warmup", "0.5s", "--window", "1.5s", "--quiet"]  # fmt: skip
    run = _ceiling_cli(argv, tmp_path / "cli", capsys)
    doc, runs = run.doc, _verdicts(run.doc)
    assert run.code == 0, runs
    # 4 slots: 4 agents hold; 8 queue, then 6 (half-way, the 0.5 resolution) queue too.
    mark = doc["ceiling"]
    assert mark["load"] == 4, runs
    # Every reply is 48 tokens, a session two of them: sessions/min follows the tokens.
    assert mark["sessions_per_min"] == pytest.approx(
        mark["output_tokens_per_s"] * 60 / 96, rel=0.15
    )
    lines = run.printed.splitlines()
    # The table: a header, then one row per level in load order, each with its verdict.
    header = next(
        i for i, line in enumerate(lines) if line.split()[:3] == ["agents", "out", "tok/s"]
    )
    rows = lines[header + 1 : header + 1 + len(doc["levels"])]
    assert [float(row.split()[0]) for row in rows] == sorted(lv["load"] for lv in doc["levels"])
    for row, level in zip(rows, sorted(doc["levels"], key=lambda lv: lv["load"]), strict=True):
        assert row.split()[1] == f"{level['output_tokens_per_s']:.0f}", row
        assert ("held" in row) == level["passed"], row
        assert ("BROKE: ttft_p95" in row) == (not level["passed"]), row
    assert (
        f"ceiling: 4 agents, {mark['output_tokens_per_s']:.0f} output tokens/s, "
        f"{mark['sessions_per_min']:.1f} sessions/min"
    ) in lines
    assert doc["knee"] in (4, 6), runs  # 4 slots: throughput flat from 4 agents on
    assert f"knee: {doc['knee']:g} agents (throughput stops growing with load)" in lines
    failed = doc["failed_first"]
    assert failed["load"] == 6, runs
    assert f"failed first at 6 agents: {'; '.join(failed['slo'])}" in lines
    assert failed["slo"][0].startswith("ttft_p95")
    assert "stopped by: settled: the ceiling is bracketed to the search's resolution" in lines

    drawn = parse_ceiling(doc)
    assert drawn.ceiling_load == 4
    assert drawn.load_unit == "agents"
    assert main(["report", str(run.out)]) == 0
    html = (run.out / "report.html").read_text()
    chart = re.search(r'<svg[^>]*data-chart="ceiling-throughput".*?</svg>', html, re.DOTALL)
    assert chart is not None
    # Throughput at every level measured (a marker each), and the ceiling as a line.
    assert "<title>output tokens/s</title>" in chart[0]
    assert "<title>ceiling at 4 agents</title>" in chart[0]
    assert chart[0].count("<circle") == len({lv["load"] for lv in doc["levels"]})
    note = re.search(r'<h2>Ceiling search</h2><p class="note">(.*?)</p>', html)
    assert note is not None
    said = unescape(note[1])
    assert "Ceiling: 4 agents." in said
    assert f"Knee: {doc['knee']:g} agents" in said
    assert f"Failed first at 6 agents: {failed['slo'][0]}" in said
    assert "Stopped by: settled" in said


def test_cli_exit_codes_for_a_bad_slo_and_an_unreachable_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = str(_profile(tmp_path))
    assert main(["ceiling", profile, "--slo", "ttft_p95 < 5%", "--out", str(tmp_path)]) == 2
    assert "ttft_p95" in capsys.readouterr().err
    unreachable = ["--target", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "x")]
    assert main(["ceiling", profile, "--slo", SLO, *unreachable]) == 3
    assert "cannot reach" in capsys.readouterr().err


# Short windows for the tests of what stops a search: a few seconds each, bounded by
# max_duration_s whatever the machine does.
QUICK = Windows(warmup_s=0.5, window_s=1.0)


async def _quick_search(
    start_sim: StartSim,
    tmp_path: Path,
    *,
    sim: dict[str, Any],
    profile: str = PROFILE,
    slo: str = SLO,
    search: SearchSettings | None = None,
    windows: Windows = QUICK,
    max_duration_s: float = 30.0,
    limits: GeneratorLimits | None = None,
) -> dict[str, Any]:
    server = await start_sim(**sim)
    path = tmp_path / "profile.yaml"
    path.write_text(profile)
    options = CeilingOptions(
        out_dir=tmp_path / "out",
        slos=build_slos([slo], {}, []),
        search=search or SearchSettings(start=4),
        windows=windows,
        max_duration_s=max_duration_s,
        progress=None,
        generator=limits or GeneratorLimits(),
    )
    (tmp_path / "out").mkdir()
    return await run_ceiling(
        load_profile(str(path)), TargetConfig.from_url(server.base_url), options
    )


async def test_an_error_storm_ends_the_search_at_its_first_level(
    start_sim: StartSim, tmp_path: Path
) -> None:
    doc = await _quick_search(
        start_sim,
        tmp_path,
        sim={**_analytical(10, 8), "faults": {"http_5xx": 0.9}},
        search=SearchSettings(start=16),
    )
    assert doc["stopped_by"].startswith("error storm")
    assert len(doc["levels"]) == 1
    assert doc["levels"][0]["stop"] == doc["stopped_by"]
    assert doc["levels"][0]["error_rate"] > 0.5
    assert doc["ceiling"] is None
    # The storm shows in the first slice: the level is not measured to the end of its window.
    assert len(doc["levels"][0]["slices"]) < QUICK.slices


def test_each_generator_bar_given_on_the_command_line_ends_the_search_naming_it(
    tmp_path: Path,
) -> None:
    # A 1 ms think time between turns gives every session a schedule to be late against.
    path = tmp_path / "thinking.yaml"
    sim = {"preset": "fast", **_analytical(10, 8)}
    path.write_text(
        PROFILE.replace("think_time_s: 0", "think_time_s: 1") + f"sim: {json.dumps(sim)}\n"
    )
    out = tmp_path / "out"
    quick = ["--start", "4", "--warmup", "0.5s", "--window", "1s", "--max-duration", "30s"]
    argv = ["ceiling", str(path), "--slo", SLO, *quick, "--quiet", "--out", str(out)]
    # Bars of zero: any CPU use, any lag at all is past them, so each is exercised without a
    # slow machine (and with the defaults none of them is reached at 4 agents).
    bars = ["--generator-max-cpu", "0", "--generator-max-loop-lag", "0s",
            "--generator-max-schedule-lag", "0s"]  # fmt: skip
    assert main([*argv, *bars]) == 1

    doc = json.loads((out / CEILING_FILE).read_text())
    stop = doc["stopped_by"]
    assert stop.startswith("load generator saturated at load 4")
    assert "CPU at" in stop
    assert "event-loop lag" in stop
    assert "schedule lag" in stop
    assert len(doc["levels"]) == 1
    generator = doc["levels"][0]["generator"]
    assert generator["saturated"] is True
    assert generator["schedule_lag_p99_s"] > 0


def test_cli_generator_limits_default_to_the_documented_saturation_points() -> None:
    from loadgen.cli.ceiling_command import _generator_limits
    from loadgen.cli.main import build_parser

    args = build_parser().parse_args(["ceiling", "--generator-max-schedule-lag", "250ms"])
    limits = _generator_limits(args)
    assert limits == GeneratorLimits(schedule_lag_s=0.25)
    assert limits.cpu_percent == CPU_SATURATED_PERCENT == 90
    assert limits.loop_lag_s == LOOP_LAG_SATURATED_S == 0.05
    assert GeneratorLimits().schedule_lag_s == SCHEDULE_LAG_SATURATED_S == 0.1


def test_cli_rejects_a_negative_generator_cpu_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ceiling", str(_profile(tmp_path)), "--generator-max-cpu", "-5", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--generator-max-cpu -5 is a percentage of one core" in capsys.readouterr().err


async def test_a_level_whose_queue_keeps_growing_is_extended_then_breaks_as_not_steady(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # 16 sessions/s offered to a server that completes about 8: requests queue ever longer,
    # yet a lax TTFT SLO holds over any one window. Only the steadiness rule can break it.
    open_loop = PROFILE.replace("{mode: closed, agents: 1}", "{mode: open, rate: 1}")
    windows = Windows(warmup_s=0.5, window_s=1.0, max_window_s=2.0)
    doc = await _quick_search(
        start_sim,
        tmp_path,
        sim=_analytical(10, 8),
        profile=open_loop,
        slo="ttft_p95 < 60s",
        search=SearchSettings(start=16, integer=False),
        windows=windows,
        max_duration_s=3.4,  # room for this one level extended to its bound, not for another
    )
    level = doc["levels"][0]
    assert level["load"] == 16
    assert level["drift"]["e2e_p50"] > 0.15
    assert any(r.startswith("e2e p50 rising") for r in level["extended_for"])
    assert level["measured_s"] > windows.window_s
    assert not level["passed"]
    assert level["broken"] == [b for b in level["broken"] if b.startswith("not steady")]
    # The rolling window is the latest slices; every slice is recorded with its figures.
    slices = level["slices"]
    assert len(slices) > windows.slices
    assert [s["in_window"] for s in slices][-windows.slices :] == [True] * windows.slices
    assert all(s["e2e_p50_s"] is not None for s in slices)


def _cli(tmp_path: Path, sim: dict[str, Any], *flags: str) -> list[str]:
    profile = _profile(tmp_path, {"preset": "fast", **sim})
    return ["ceiling", str(profile), "--warmup", "0.5s", "--window", "1s", "--quiet", *flags]


def test_cli_open_loop_search_finds_a_ceiling_in_sessions_per_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _cli(tmp_path, _analytical(10, 8), "--by", "session-rate", "--start", "2",
                "--resolution", "0.5", "--slo", SLO)  # fmt: skip
    run = _ceiling_cli(argv, tmp_path / "open", capsys)
    doc, runs = run.doc, _verdicts(run.doc)
    assert run.code == 0, runs
    assert doc["load_unit"] == "sessions/s"
    # About 8 sessions/s fill the 8 slots; Poisson bursts queue requests before that.
    assert 1 <= doc["ceiling"]["load"] < 16, runs
    assert f"ceiling: {doc['ceiling']['load']:g} sessions/s" in run.printed
    # Settled: the ceiling is bracketed by a level that held and one just above it that broke.
    assert doc["stopped_by"].startswith("settled"), runs
    broke = [lv["load"] for lv in doc["levels"] if not lv["passed"]]
    assert broke, runs
    assert doc["ceiling"]["load"] < min(broke) <= 1.5 * doc["ceiling"]["load"], runs


def test_cli_max_duration_ends_the_search_before_a_level_would_pass_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default `fast` server holds far more than a few agents: only the cap stops it.
    argv = _cli(tmp_path, {}, "--slo", "ttft_p95 < 10s", "--start", "1", "--max-duration", "4s")
    run = _ceiling_cli(argv, tmp_path / "capped", capsys)
    doc = run.doc
    assert run.code == 0, _verdicts(doc)
    assert doc["stopped_by"] == "max duration: another level would pass 4s"
    assert doc["ceiling"]["load"] == max(lv["load"] for lv in doc["levels"])
    # Levels are only started when warm-up and window fit, and extensions are cut to fit.
    assert doc["duration_s"] < 4 + 1.5
    assert "stopped by: max duration" in run.printed


def test_cli_exits_1_when_no_level_holds_every_slo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every first token takes at least one 10 ms decode step: a 1 ms TTFT never holds.
    argv = _cli(tmp_path, _analytical(10, 8), "--slo", "ttft_p95 < 1ms", "--start", "1")
    run = _ceiling_cli(argv, tmp_path / "none", capsys)
    assert run.code == 1
    assert "ceiling: none found" in run.printed
    assert "stopped by: no level held every SLO" in run.printed


def test_cli_a_session_slo_no_window_can_measure_says_which_flags_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two 48-token replies at 100 ms a token: a session takes about 10 s, and a level at most
    # 0.5 s of warm-up and a 2 s window (twice --window): no session can end in it.
    argv = _cli(tmp_path, _analytical(100, 8), "--slo", "session_p90 < 60s", "--start", "1")
    run = _ceiling_cli(argv, tmp_path / "long", capsys)
    assert run.code == 1, _verdicts(run.doc)
    [level] = run.doc["levels"]
    [broken] = level["broken"]
    assert broken.startswith("session_p90 has no value"), broken
    assert "no session begun at this level ended" in broken
    assert "need a longer --warmup and --max-window" in broken
    assert "need a longer --warmup and --max-window" in run.printed


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--window", "0s"], "--window"),
        (["--start", "0"], "--start"),
        (["--growth", "1"], "--growth"),
        (["--resolution", "1.5"], "--resolution"),
        (["--slices", "1"], "--slices"),
        (["--window", "2s", "--max-window", "1s"], "--max-window"),
        (["--max-duration", "1s"], "--max-duration"),
        (["--processes", "0"], "--processes"),
        (["--processes", "-2"], "--processes"),
        (["--master", "--processes", "2"], "--master cannot be combined with --processes"),
        (["--processes", "2", "--master-bind-port", "6000"], "--master-bind-port"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_cli_bad_flag_exits_2_with_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    argv = ["ceiling", str(_profile(tmp_path)), "--slo", SLO, "--out", str(tmp_path), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert named in err


def test_cli_unparseable_duration_exits_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ceiling", str(_profile(tmp_path)), "--window", "soon"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "--window" in err
