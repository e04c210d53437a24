"""Ceiling search logic without a target: level choice, SLO parsing, knee and verdict."""

from __future__ import annotations

from typing import Any

import pytest

from loadgen.ceiling import LevelResult, Search, SearchSettings, build_slos, ceiling_document
from loadgen.ceiling.result import knee
from loadgen.ceiling.slos import goodput_caps
from loadgen.errors import UsageError
from loadgen.report.ceiling import parse_ceiling


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
