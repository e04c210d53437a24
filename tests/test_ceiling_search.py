"""Ceiling search logic without a target: level choice, SLO parsing, knee and verdict."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from loadgen.ceiling import LevelResult, Search, SearchSettings, build_slos, ceiling_document
from loadgen.ceiling.figures import level_figures
from loadgen.ceiling.measure import GeneratorLimits, lag_tail
from loadgen.ceiling.result import format_ceiling, knee
from loadgen.ceiling.run import _goodput_fell
from loadgen.ceiling.slos import WindowSink, goodput_caps
from loadgen.ceiling.steadiness import (
    Drift,
    Slice,
    drift,
    extension_reasons,
    merge_slices,
    window_span,
)
from loadgen.errors import UsageError
from loadgen.observe import GeneratorHealth, LatencyHistogram, RunStats
from loadgen.observe.goodput import GoodputRule
from loadgen.observe.records import SessionOutcome, SessionRecord, StepRecord
from loadgen.report.html.ceiling import ceiling_section, parse_ceiling


def _search(capacity: float, settings: SearchSettings) -> list[float]:
    search, tried = Search(settings), []
    while (load := search.next_load()) is not None:
        tried.append(load)
        search.record(load, load <= capacity)
    return tried


def test_grows_geometrically_then_bisects_to_one_agent() -> None:
    tried = _search(13, SearchSettings(start=1, resolution=0.05))
    assert tried[:5] == [1, 2, 4, 8, 16]
    assert tried[5:] == [12, 14, 13]


def test_a_failing_start_shrinks_until_a_level_holds() -> None:
    assert _search(2, SearchSettings(start=16, resolution=0.5)) == [16, 8, 4, 2, 3]
    assert _search(0, SearchSettings(start=4)) == [4, 2, 1]


def test_rates_bisect_to_the_resolution() -> None:
    tried = _search(3.3, SearchSettings(start=0.5, integer=False, resolution=0.1))
    assert tried[:4] == [0.5, 1.0, 2.0, 4.0]
    assert 3.0 <= max(t for t in tried if t <= 3.3) <= 3.3


def test_slos_come_from_flags_and_the_profile_each_once() -> None:
    slos = build_slos(["ttft_p95 < 2s"], {"ttft_p95": 2.0, "session_success": 0.99}, [])
    assert [g.text for g in slos] == ["ttft_p95 < 2s", "session_success_rate >= 0.99"]
    assert goodput_caps(slos, {}) == {"ttft_p95": 2.0}
    with pytest.raises(UsageError, match="5%"):
        build_slos(["ttft_p95 < 5%"], {}, [])
    with pytest.raises(UsageError, match="at least one SLO"):
        build_slos([], {}, [])


def _level(load: float, tokens: float, passed: bool, **more: Any) -> LevelResult:
    figures = {
        "load": load,
        "output_tokens_per_s": tokens,
        "sessions_per_min": load,
        "goodput_tokens_per_s": tokens,
        "requests": 100,
        "state_failures": {},
        **more,
    }
    return LevelResult(load, figures, passed, [] if passed else [f"ttft_p95 broke at {load}"])


def test_document_names_ceiling_knee_and_first_failure_in_the_report_shape() -> None:
    levels = [
        _level(1, 100, True),
        _level(2, 200, True),
        _level(4, 390, True),
        _level(
            8,
            400,
            False,
            state_failures={"cache_miss": 9, "timeout": 1},
            server={"saturated_first": "kv_cache"},
        ),
        _level(6, 400, True),
    ]
    assert knee(levels) == 4
    doc = ceiling_document(levels, "agents", "settled")
    assert doc["ceiling"]["load"] == 6
    assert doc["failed_first"] == {
        "load": 8,
        "slo": ["ttft_p95 broke at 8"],
        "state_failure": "cache_miss",
        "server_resource": "kv_cache",
    }
    drawn = parse_ceiling(doc)
    assert drawn.ceiling_load == 6
    assert [lv.load for lv in drawn.levels] == [1, 2, 4, 6, 8]


def test_a_pass_above_a_failure_is_not_the_ceiling() -> None:
    doc = ceiling_document([_level(4, 1, False), _level(8, 1, True)], "agents", "noise")
    assert doc["ceiling"] is None


def _slice(requests: int, e2e_s: float, tokens: int = 48, duration_s: float = 1.0) -> Slice:
    stats = RunStats()
    for i in range(requests):
        # A small spread, as a steady server shows: ±2% around e2e_s.
        spread = e2e_s * (0.98 + 0.04 * i / max(requests - 1, 1))
        stats.add_step(
            StepRecord(session_id=f"s{i}", agent="a", step=0, kind="turn", api="chat",
                       started_unix=0.0, e2e_s=spread, ttft_s=0.01, completion_tokens=tokens)
        )  # fmt: skip
    return Slice(stats, duration_s)


def test_steady_halves_are_not_drift() -> None:
    trend = drift([_slice(50, 0.5), _slice(52, 0.5), _slice(49, 0.51), _slice(51, 0.5)])
    assert trend.steady
    assert trend.throughput == pytest.approx(0.0, abs=0.02)


def test_a_climbing_median_latency_is_a_queue_growing() -> None:
    trend = drift([_slice(50, 0.5), _slice(50, 0.6), _slice(50, 0.8), _slice(50, 1.0)])
    assert trend.latency_rising
    assert not trend.latency_falling
    assert trend.e2e_p50 == pytest.approx(0.6, abs=0.05)  # medians about 0.51 s, 0.82 s


def test_throughput_drift_within_counting_noise_is_not_drift() -> None:
    # 12 requests a half: 2/sqrt(12) = 58% is what counting noise alone can do.
    noisy = drift([_slice(8, 0.5), _slice(8, 0.5), _slice(4, 0.5), _slice(8, 0.5)])
    assert noisy.throughput == pytest.approx(-0.25, abs=0.01)
    assert not noisy.throughput_drifting
    # 400 requests a half: the same 25% fall is real.
    real = drift([_slice(400, 0.5), _slice(400, 0.5), _slice(200, 0.5), _slice(400, 0.5)])
    assert real.throughput_drifting


def test_too_few_requests_make_no_drift_call() -> None:
    assert drift([_slice(3, 0.5), _slice(3, 5.0)]) == Drift(None, None, None)


def test_the_window_rolls_at_its_base_length_and_grows_to_cover_sessions() -> None:
    assert window_span(6, 4, 0.5, typical_session_s=0.4) == 4  # rolls: the latest 4 slices
    assert window_span(6, 4, 0.5, typical_session_s=0.9) == 6  # 3 x 0.9 s needs 6 slices
    assert window_span(5, 4, 0.5, typical_session_s=10.0) == 5  # all there is, so far
    assert window_span(5, 4, 0.5, typical_session_s=None) == 5  # no session ended yet


def _reasons(held: bool, trend: Drift, **more: Any) -> set[str]:
    args: dict[str, Any] = {"unmeasured": [], "window_s": 10.0, "typical_session_s": 1.0}
    return set(extension_reasons(held=held, trend=trend, **{**args, **more}))


def test_a_held_level_is_extended_only_when_more_time_could_break_it() -> None:
    steady = Drift(0.0, 0.0, 0.15)
    rising = Drift(0.0, 0.5, 0.15, latency_rising=True)
    drifting = Drift(0.3, 0.0, 0.15, throughput_drifting=True)
    assert _reasons(True, steady) == set()
    assert _reasons(True, rising) == {"latency_rising"}
    assert _reasons(True, drifting) == {"throughput_drifting"}
    assert _reasons(True, steady, window_s=2.0) == {"sessions_uncovered"}
    assert _reasons(True, steady, typical_session_s=None) == {"sessions_uncovered"}


def test_a_broken_level_is_extended_only_while_settling_or_unmeasured() -> None:
    rising = Drift(0.0, 0.5, 0.15, latency_rising=True)
    falling = Drift(0.0, -0.5, 0.15, latency_falling=True)
    assert _reasons(False, rising, window_s=1.0) == set()  # worse with time: judge it now
    assert _reasons(False, falling) == {"latency_falling"}
    assert _reasons(False, rising, unmeasured=["session_p90 < 10m"]) == {"unmeasured"}


def _lags(n: int, late: int, late_s: float = 0.08) -> LatencyHistogram:
    lags = LatencyHistogram()
    lags.record_many([0.001] * (n - late) + [late_s] * late)
    return lags


def test_one_stall_in_a_short_period_is_not_a_saturated_generator() -> None:
    limits = GeneratorLimits()  # event-loop lag saturates above 50 ms
    # 40 probes (2 s at 20 Hz): their p99 is the single worst, one stall of a busy machine.
    assert limits.reasons({}, loop_lag=_lags(40, 2)) == []
    assert limits.reasons({}, loop_lag=_lags(40, 3)) == [
        "event-loop lag 80 ms or more in 3 of 40 probes (saturated above 50 ms)"
    ]
    # With enough samples the bar is the p99 itself: 1,200 probes (60 s) need 13 late ones.
    assert limits.reasons({}, loop_lag=_lags(1200, 12)) == []
    assert limits.reasons({}, loop_lag=_lags(1200, 13)) == [
        "event-loop lag p99 80 ms (saturated above 50 ms)"
    ]
    assert lag_tail(_lags(2, 2)) is None  # too few samples to call
    # Without samples (a swarm's merged report) the report's p99 is judged as it stands.
    assert limits.reasons({"schedule_lag_p99_s": 0.2}) == [
        "schedule lag p99 200 ms (saturated above 100 ms)"
    ]


async def test_a_real_stall_of_the_loop_is_not_saturation_until_it_recurs() -> None:
    limits = GeneratorLimits(loop_lag_s=0.1)

    async def probe(stalls: int) -> tuple[GeneratorHealth, list[str]]:
        health = GeneratorHealth()
        async with health:
            await asyncio.sleep(0.3)
            for _ in range(stalls):
                time.sleep(0.6)  # noqa: ASYNC251  # the loop stalls, as on a busy machine
                await asyncio.sleep(0.2)
        return health, limits.reasons(health.report(), loop_lag=health.loop_lag)

    once, said = await probe(1)
    assert once.report()["saturated"] is True  # the probe's own p99 is that one stall
    assert said == []
    _, said = await probe(3)
    assert len(said) == 1
    assert said[0].startswith("event-loop lag")


def _session(
    session_id: str, started_unix: float, duration_s: float, completion_tokens: int = 0
) -> SessionRecord:
    return SessionRecord(
        session_id=session_id,
        agent="a",
        started_unix=started_unix,
        duration_s=duration_s,
        steps=2,
        outcome=SessionOutcome.COMPLETED,
        completion_tokens=completion_tokens,
    )


def test_the_window_judges_only_the_sessions_begun_at_its_level() -> None:
    sink = WindowSink(GoodputRule({"session_p90": 2.0}))
    sink.begin(since_unix=100.0)
    sink.open_slice()
    # Begun at the level before, slow from its queue: throughput here, judged by no SLO.
    sink.session(_session("earlier", started_unix=99.0, duration_s=5.0))
    sink.session(_session("quick", started_unix=100.5, duration_s=1.0))
    sink.session(_session("slow", started_unix=101.0, duration_s=3.0))  # over the 2 s bound
    piece = sink.close_slice(0.0, 1.0)
    assert piece.stats.sessions.completed == 3  # sessions/min counts every one that ended
    assert piece.begun.sessions.completed == 2
    assert piece.begun.session_s.max == 3.0  # session SLOs see the two begun here
    assert (piece.judged_sessions, piece.goodput_sessions) == (2, 1)
    # Merged windows keep them apart too.
    assert merge_slices([piece, piece]).begun.sessions.completed == 4


def test_goodput_tokens_are_the_tokens_of_the_judged_sessions_within_their_slos() -> None:
    sink = WindowSink(GoodputRule({"session_p90": 2.0}))
    sink.begin(since_unix=100.0)
    sink.open_slice()
    sink.session(_session("earlier", 99.0, 5.0, completion_tokens=1000))  # judged by none
    sink.session(_session("quick", 100.5, 1.0, completion_tokens=100))
    sink.session(_session("slow", 101.0, 3.0, completion_tokens=300))  # over the 2 s bound
    piece = sink.close_slice(0.0, 1.0)
    assert (piece.judged_tokens, piece.goodput_tokens) == (400, 100)
    doubled = merge_slices([piece, piece])
    assert (doubled.judged_tokens, doubled.goodput_tokens) == (800, 200)
    # Half the judged sessions met their SLOs, but a quarter of their tokens: throughput
    # counts tokens, so goodput tokens/s is a quarter of it, not half.
    figures = level_figures(
        8,
        {"throughput": {"output_tokens_per_s": 1000.0},
         "goodput": {"ratio": 0.5, "sessions": 1, "token_ratio": 0.25}},
        piece,
        generator={},
        server=None,
    )  # fmt: skip
    assert figures["goodput"] == 0.5
    assert figures["goodput_tokens_per_s"] == 250.0


def test_a_levels_cache_hit_ratio_is_its_windows_cached_share_of_prompt_tokens() -> None:
    sink = WindowSink(GoodputRule({}))
    sink.begin(since_unix=100.0)
    sink.open_slice()
    piece = sink.close_slice(0.0, 1.0)
    summary = {"tokens": {"prompt": 8000, "cached": 6000}, "throughput": {}}
    figures = level_figures(8, summary, piece, generator={}, server=None)
    assert figures["cache_hit_ratio"] == 0.75
    assert level_figures(8, {}, piece, generator={}, server=None)["cache_hit_ratio"] is None


def test_a_level_whose_goodput_fell_below_80_percent_of_a_held_lower_one_breaks() -> None:
    levels = [_level(4, 400, True), _level(8, 800, True), _level(12, 900, False)]
    assert _goodput_fell(_level(16, 700, True), levels) is None  # 700 >= 0.8 x 800
    assert _goodput_fell(_level(16, 600, True), levels) == (
        "goodput fell to 600 tokens/s from 800 at a lower load"
    )
    # Only lower levels count, and only those that held (not the broken 12 at 900).
    assert _goodput_fell(_level(6, 300, True), levels) == (
        "goodput fell to 300 tokens/s from 400 at a lower load"
    )
    unjudged = _level(16, 700, True, goodput_tokens_per_s=None)  # no session judged yet
    assert _goodput_fell(unjudged, levels) is None


def test_a_few_late_probes_of_a_generator_using_little_cpu_are_not_saturation() -> None:
    limits = GeneratorLimits()  # CPU saturates at its default bar, loop lag above 50 ms
    # 3 of 152 probes late with the generator at 8% of a core: the machine was busy with
    # something else for a moment; the generator was keeping up.
    assert limits.reasons({"cpu_percent": 8.0}, loop_lag=_lags(152, 3)) == []
    # A broad tail (over 5% of probes) is saturation even at low CPU...
    assert limits.reasons({"cpu_percent": 8.0}, loop_lag=_lags(152, 9)) == [
        "event-loop lag 80 ms or more in 8 of 152 probes (saturated above 50 ms)"
    ]
    # ... and a busy generator's 3 late probes still count, as before.
    assert limits.reasons({"cpu_percent": 80.0}, loop_lag=_lags(152, 3)) == [
        "event-loop lag 80 ms or more in 3 of 152 probes (saturated above 50 ms)"
    ]


def test_a_flat_pair_followed_by_growth_is_not_the_knee() -> None:
    # Throughput stalls once between 1 and 2 agents, then keeps rising to 5x: no knee at 1.
    levels = [
        _level(1, 318, True),
        _level(2, 330, True),
        _level(4, 800, True),
        _level(8, 1602, True),
    ]
    assert knee(levels) is None
    assert knee([*levels, _level(16, 1650, True)]) == 8


def test_a_search_where_nothing_broke_says_no_slo_broke_rather_than_ceiling() -> None:
    table = dict.fromkeys(
        ("ttft_p95_s", "itl_p99_s", "e2e_p95_s", "session_success_rate", "goodput", "error_rate"),
        None,
    )
    doc = ceiling_document(
        [
            _level(2, 200, True, **table),
            _level(4, 390, True, **table),
            _level(8, 700, True, **table),
        ],
        "agents",
        "max load reached",
    )
    printed = format_ceiling(doc)
    assert "ceiling: not reached: no SLO broke up to 8 agents" in printed
    assert "\\nceiling: 8 agents" not in printed
    verdict = ceiling_section(parse_ceiling(doc)).note
    assert "Ceiling not reached: no SLO broke up to 8 agents." in verdict
