"""RunStats: counting records, exact merging across workers, and the summary document."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadgen.observe import (
    SUMMARY_SCHEMA,
    LatencyHistogram,
    RunStats,
    SessionOutcome,
    SessionRecord,
    StepRecord,
)
from loadgen.protocol.failures import FailureKind

SCHEMA_DOC = Path(__file__).resolve().parents[1] / "docs" / "summary-schema.md"
AGENTS = ("coder", "researcher")
OUTCOMES = (SessionOutcome.COMPLETED, SessionOutcome.FAILED, SessionOutcome.ABORTED)


def _step(rng: random.Random, session: int, step: int) -> StepRecord:
    ok = rng.random() > 0.1
    return StepRecord(
        session_id=f"s{session}",
        agent=AGENTS[session % 2],
        step=step,
        kind="turn",
        api="chat",
        started_unix=1_700_000_000.0 + step,
        e2e_s=rng.lognormvariate(0, 0.5),
        ttft_s=rng.lognormvariate(-2, 0.5) if ok else None,
        itl_s=[rng.lognormvariate(-4, 0.3) for _ in range(rng.randint(0, 30))] if ok else [],
        prompt_tokens=rng.randint(100, 5_000),
        completion_tokens=rng.randint(1, 400) if ok else None,
        cached_tokens=rng.randint(0, 100),
        context_tokens=rng.randint(100, 5_000),
        ok=ok,
        failures=[] if ok else [rng.choice(list(FailureKind)).value],
        error=None if ok else f"HTTP 500: engine fault {rng.randint(0, 7)}",
        tool_calls=rng.randint(0, 2),
        schedule_lag_s=rng.uniform(-0.01, 0.05),
    )


def _session(rng: random.Random, session: int) -> SessionRecord:
    return SessionRecord(
        session_id=f"s{session}",
        agent=AGENTS[session % 2],
        started_unix=1_700_000_000.0,
        duration_s=rng.uniform(1, 60),
        steps=5,
        outcome=rng.choice(OUTCOMES),
        recoveries={"timeout": 1} if session % 3 == 0 else {},
    )


def _feed(stats: RunStats, seed: int, sessions: int) -> RunStats:
    rng = random.Random(seed)
    for s in range(sessions):
        stats.session_started(AGENTS[s % 2])
        for k in range(5):
            stats.add_step(_step(rng, s, k))
        if s % 3 == 0:
            stats.recovery(FailureKind.TIMEOUT, AGENTS[s % 2])
        stats.add_session(_session(rng, s))
    return stats


def _summary(stats: RunStats, duration_s: float = 60.0) -> dict[str, Any]:
    return stats.summary(
        target={"url": "http://127.0.0.1:8000/v1", "model": "sim"},
        profile="smoke",
        duration_s=duration_s,
        generator={"cpu_percent": 12.0, "saturated": False, "reasons": []},
    )


def test_merge_of_two_workers_equals_stats_built_from_all_records() -> None:
    worker_a = _feed(RunStats(), seed=1, sessions=40)
    worker_b = _feed(RunStats(), seed=2, sessions=30)
    everything = _feed(_feed(RunStats(), seed=1, sessions=40), seed=2, sessions=30)
    merged = RunStats()
    merged.merge(worker_a)
    merged.merge(worker_b)
    assert merged == everything
    for name, expected in _summary(everything)["latency"].items():
        got = _summary(merged)["latency"][name]
        assert {k: got[k] for k in ("p50", "p90", "p95", "p99", "max")} == {
            k: expected[k] for k in ("p50", "p90", "p95", "p99", "max")
        }
        # The mean divides a float sum added up in another order, so only its last bits differ.
        assert got["mean"] == pytest.approx(expected["mean"], rel=1e-12)


def test_dict_roundtrip_through_json_is_lossless() -> None:
    stats = _feed(RunStats(), seed=5, sessions=20)
    again = RunStats.from_dict(orjson.loads(orjson.dumps(stats.to_dict())))
    assert again == stats


def test_failure_reasons_keep_the_first_messages_of_each_kind_with_counts() -> None:
    stats = RunStats()
    for i in range(12):
        stats.add_step(
            StepRecord(
                session_id="s",
                agent="coder",
                step=i,
                kind="turn",
                api="chat",
                started_unix=0.0,
                e2e_s=0.1,
                ok=False,
                failures=["http_error"],
                error=f"HTTP 404: model m{i % 7} does not exist",
            )
        )
    kept = stats.reasons["http_error"]
    assert list(kept) == [f"HTTP 404: model m{i} does not exist" for i in range(5)]
    assert kept["HTTP 404: model m0 does not exist"] == 2  # steps 0 and 7
    summary = _summary(stats)["failure_reasons"]["http_error"]
    assert summary[0] == {"message": "HTTP 404: model m0 does not exist", "count": 2}


def test_from_dict_refuses_another_schema() -> None:
    data = RunStats().to_dict()
    data["schema"] = "something/else"
    with pytest.raises(ValueError, match="schema"):
        RunStats.from_dict(data)


def _documented_fields() -> list[str]:
    """The dotted paths in the first column of the schema doc's field table."""
    text = SCHEMA_DOC.read_text().split("## Fields", 1)[1].split("###", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE)


def _resolve(document: dict[str, Any], path: str, agents: list[str]) -> list[str]:
    """Every concrete path the documented `path` stands for that `document` lacks."""
    concrete = [path]
    for placeholder, values in (("<kind>", [k.value for k in FailureKind]), ("<agent>", agents)):
        concrete = [p.replace(placeholder, v) for p in concrete for v in values] or concrete
    missing = []
    for dotted in concrete:
        node: Any = document
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dotted)
                break
            node = node[part]
    return missing


def test_summary_has_every_documented_field() -> None:
    summary = _summary(_feed(RunStats(), seed=9, sessions=10))
    fields = _documented_fields()
    summary["generator"] = {
        "cpu_percent": 1.0,
        "schedule_lag_p99_s": 0.0,
        "loop_lag_p99_s": 0.0,
        "saturated": False,
        "reasons": [],
    }
    assert len(fields) > 40
    missing = [m for f in fields for m in _resolve(summary, f, list(AGENTS))]
    assert not missing


def test_every_summary_field_is_documented() -> None:
    summary = _summary(_feed(RunStats(), seed=9, sessions=10))
    documented = {f.split(".")[0] for f in _documented_fields()}
    assert set(summary) <= documented


def test_summary_lists_every_failure_kind_with_zeros_included() -> None:
    summary = _summary(RunStats())
    every_kind = {kind.value for kind in FailureKind}
    assert set(summary["state_failures"]) == every_kind
    assert set(summary["recoveries"]) == every_kind
    assert all(n == 0 for n in summary["state_failures"].values())


def test_summary_of_an_empty_run_uses_null_for_missing_figures() -> None:
    summary = _summary(RunStats(), duration_s=0.0)
    assert summary["schema"] == SUMMARY_SCHEMA
    assert summary["latency"]["ttft_s"]["p99"] is None
    assert summary["throughput"]["requests_per_s"] is None
    orjson.dumps(summary)


def test_throughput_divides_by_duration() -> None:
    stats = RunStats()
    rng = random.Random(0)
    for s in range(6):
        stats.session_started("coder")
        stats.add_session(SessionRecord(f"s{s}", "coder", 0.0, 10.0, 1, SessionOutcome.COMPLETED))
    for k in range(30):
        step = _step(rng, 0, k)
        step.ok, step.failures, step.completion_tokens = True, [], 100
        stats.add_step(step)
    throughput = _summary(stats, duration_s=30.0)["throughput"]
    assert throughput == {
        "requests_per_s": pytest.approx(1.0),
        "output_tokens_per_s": pytest.approx(100.0),
        "answer_tokens_per_s": pytest.approx(100.0),  # no reasoning: all of it
        "sessions_per_min": pytest.approx(12.0),
    }


def test_failed_steps_count_failures_but_stay_out_of_latency() -> None:
    stats = RunStats()
    failed = StepRecord(
        "s1",
        "coder",
        0,
        "turn",
        "chat",
        0.0,
        e2e_s=30.0,
        ok=False,
        failures=["timeout", "stream_truncated"],
    )
    stats.add_step(failed)
    summary = _summary(stats)
    assert summary["requests"] == {"total": 1, "ok": 0, "failed": 1}
    assert summary["state_failures"]["timeout"] == 1
    assert summary["state_failures"]["stream_truncated"] == 1
    assert summary["latency"]["e2e_s"]["max"] is None
    assert summary["by_agent"]["coder"]["state_failures"] == {
        "stream_truncated": 1,
        "timeout": 1,
    }


def test_every_itl_gap_feeds_the_itl_histogram() -> None:
    stats = RunStats()
    gaps = [0.01, 0.02, 0.03, 0.5]
    stats.add_step(StepRecord("s1", "coder", 0, "turn", "chat", 0.0, e2e_s=1.0, itl_s=gaps))
    expected = LatencyHistogram()
    expected.record_many(gaps)
    assert stats.itl_s == expected


def test_sessions_are_counted_by_outcome_per_agent() -> None:
    stats = RunStats()
    for outcome in (*OUTCOMES, SessionOutcome.COMPLETED):
        stats.session_started("coder")
        stats.add_session(SessionRecord("s", "coder", 0.0, 5.0, 2, outcome, recoveries={"x": 1}))
    expected = {"started": 4, "completed": 2, "failed": 1, "aborted": 1, "recovered": 4}
    summary = _summary(stats)
    for sessions in (summary["sessions"], summary["by_agent"]["coder"]["sessions"]):
        # The aborted one was not cut off by the run's end (not flagged running_at_end).
        running = sessions.pop("running_at_end")
        assert sessions == expected
        assert running["count"] == 0
    assert summary["latency"]["session_s"]["max"] == 5.0


def test_recoveries_are_counted_by_kind_and_agent() -> None:
    stats = RunStats()
    stats.recovery("cache_miss", "coder")
    stats.recovery(FailureKind.CACHE_MISS, "researcher")
    summary = _summary(stats)
    assert summary["recoveries"]["cache_miss"] == 2
    assert summary["by_agent"]["coder"]["recoveries"] == {"cache_miss": 1}


def test_unknown_failure_kind_is_rejected() -> None:
    step = StepRecord("s", "coder", 0, "turn", "chat", 0.0, e2e_s=1.0, failures=["oops"])
    with pytest.raises(ValueError, match="unknown failure kind 'oops'"):
        RunStats().add_step(step)


def test_unknown_session_outcome_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown session outcome"):
        RunStats().add_session(SessionRecord("s", "coder", 0.0, 1.0, 1, "vanished"))


def test_summary_histograms_rebuild_the_run_histograms() -> None:
    stats = _feed(RunStats(), seed=4, sessions=10)
    shipped = _summary(stats)["histograms"]
    assert LatencyHistogram.from_dict(shipped["ttft_s"]) == stats.ttft_s
    assert set(shipped) == {"ttft_s", "ttfat_s", "itl_s", "e2e_s", "session_s"}
