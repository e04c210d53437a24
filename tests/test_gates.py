"""Gates on crafted summaries: every operator, every unit, the metric registry, parse errors,
missing values, the summary's "gates" list and the abort-on-fail monitor."""

from __future__ import annotations

import math
from typing import Any

import pytest

from loadgen.errors import UsageError
from loadgen.gates import METRICS, GateMonitor, evaluate_gates, gates_to_summary, parse_gate
from loadgen.gates.gates import parse_gates
from loadgen.gates.metrics import metric_names_text, read_metric
from loadgen.observe import RunStats, SessionRecord, StepRecord
from loadgen.protocol.failures import FailureKind


def crafted_summary(ttft_s: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)) -> dict[str, Any]:
    """A summary built the real way (RunStats), from a few hand-made records."""
    stats = RunStats()
    for i, ttft in enumerate(ttft_s):
        stats.session_started("coding")
        stats.add_step(
            StepRecord(
                session_id=f"s{i}", agent="coding", step=0, kind="turn", api="chat",
                started_unix=1_700_000_000.0 + i, e2e_s=ttft + 0.5, ttft_s=ttft,
                ttfat_s=ttft + 0.2, itl_s=[0.01, 0.02, 0.03], prompt_tokens=1000,
                completion_tokens=100, reasoning_tokens=20,
                cached_tokens=600, context_tokens=1000, tool_calls=1,
            )
        )  # fmt: skip
        outcome = "failed" if i == 0 else "completed"
        stats.add_session(
            SessionRecord(f"s{i}", "coding", 1_700_000_000.0 + i, 1.0 + i, 1, outcome)
        )
    stats.add_step(
        StepRecord("s0", "coding", 1, "turn", "chat", 1_700_000_000.5, 0.2, ok=False,
                   failures=["stream_truncated"])
    )  # fmt: skip
    stats.recovery("stream_truncated", "coding")
    generator = {"cpu_percent": 12.0, "schedule_lag_p99_s": 0.002, "loop_lag_p99_s": 0.004,
                 "saturated": False, "reasons": []}  # fmt: skip
    return stats.summary(
        target={"url": "http://sim/v1", "model": "m"}, profile="crafted", duration_s=10.0,
        generator=generator,
    )  # fmt: skip


def judge(expr: str, summary: dict[str, Any] | None = None) -> bool:
    (result,) = evaluate_gates(summary or crafted_summary(), [parse_gate(expr)])
    return result.passed


# -- operators and units ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "below", "equal", "above"),
    [
        ("<", True, False, False),
        ("<=", True, True, False),
        (">", False, False, True),
        (">=", False, True, True),
        ("==", False, True, False),
        ("!=", True, False, True),
    ],
)
def test_every_operator_compares_the_value_with_the_threshold_as_written(
    op: str, below: bool, equal: bool, above: bool
) -> None:
    summary = crafted_summary()  # requests.total is 5
    assert judge(f"requests.total {op} 6", summary) is below
    assert judge(f"requests.total {op} 5", summary) is equal
    assert judge(f"requests.total {op} 4", summary) is above


@pytest.mark.parametrize(
    ("expr", "threshold"),
    [
        ("ttft_p95 < 2s", 2.0),
        ("itl_p99 <= 100ms", 0.1),
        ("e2e_p99 < 1.5m", 90.0),
        ("session_p50 < 30", 30.0),  # a plain number on a time is seconds
        ("error_rate < 1%", 0.01),
        ("session_success_rate >= 0.99", 0.99),
        ("session_success_rate >= 99.5%", 0.995),
        ("output_tokens_per_s > 5000", 5000.0),
        ("state_failures.context_truncated == 0", 0.0),
        ("ttft_p50<250ms", 0.25),
        ("ttft_p50 < 2.5e-1 s", 0.25),
    ],
)
def test_thresholds_are_converted_to_the_metric_base_unit(expr: str, threshold: float) -> None:
    gate = parse_gate(expr)
    assert math.isclose(gate.threshold, threshold)
    assert gate.text == " ".join(expr.split())
    assert not gate.abort_on_fail


def test_time_gates_pass_and_fail_on_the_summary_latencies() -> None:
    summary = crafted_summary()  # TTFT 0.1..0.4 s: p50 0.2 s, max 0.4 s
    assert judge("ttft_p50 < 250ms", summary)
    assert not judge("ttft_p50 < 150ms", summary)
    assert judge("ttft_max <= 0.4s", summary)
    assert not judge("ttft_max < 0.4s", summary)
    assert judge("itl_p99 < 31ms", summary)


def test_ratio_gates_read_percentages_and_fractions_alike() -> None:
    summary = crafted_summary()  # 3 of 4 sessions completed, 1 of 5 requests failed
    assert read_metric(summary, "session_success_rate") == pytest.approx(0.75)
    assert read_metric(summary, "session_failure_rate") == pytest.approx(0.25)
    assert read_metric(summary, "error_rate") == pytest.approx(0.2)
    assert read_metric(summary, "cache_hit_ratio") == pytest.approx(0.6)
    assert judge("session_success_rate >= 75%", summary)
    assert not judge("session_success_rate >= 0.76", summary)
    assert judge("error_rate <= 20%", summary)
    assert not judge("error_rate < 1%", summary)


def test_equality_tolerates_float_rounding() -> None:
    summary = crafted_summary()
    summary["throughput"]["requests_per_s"] = 0.1 + 0.2  # 0.30000000000000004
    assert judge("requests_per_s == 0.3", summary)
    assert not judge("requests_per_s != 0.3", summary)
    assert not judge("requests_per_s == 0.3001", summary)


def test_state_failure_and_recovery_gates_count_by_kind() -> None:
    summary = crafted_summary()
    assert not judge("state_failures.stream_truncated == 0", summary)
    assert judge("state_failures.context_truncated == 0", summary)
    assert judge("recoveries.stream_truncated >= 1", summary)
    assert judge("state_failures.total == 1", summary)
    assert judge("generator.saturated == 0", summary)


# -- the metric registry ------------------------------------------------------------------------


def test_every_registered_metric_reads_a_value_from_a_real_summary() -> None:
    summary = crafted_summary()
    missing = [name for name in METRICS if read_metric(summary, name) is None]
    assert missing == ["goodput_ratio"]  # only runs that judge goodput write it
    summary["goodput"] = {"ratio": 0.9}
    assert read_metric(summary, "goodput_ratio") == 0.9
    summary["goodput"] = 0.8
    assert read_metric(summary, "goodput_ratio") == 0.8
    summary["goodput"] = {"sessions": 2}  # of 3 completed + 1 failed
    assert read_metric(summary, "goodput_ratio") == 0.5


def test_the_registry_covers_every_latency_statistic_and_failure_kind() -> None:
    for prefix in ("ttft", "itl", "e2e", "session"):
        for stat in ("p50", "p90", "p95", "p99", "max", "mean"):
            assert f"{prefix}_{stat}" in METRICS
    for kind in FailureKind:
        assert f"state_failures.{kind}" in METRICS
        assert f"recoveries.{kind}" in METRICS
    for name in ("requests_per_s", "output_tokens_per_s", "sessions_per_min", "cache_hit_ratio"):
        assert name in METRICS


def test_unknown_metrics_are_refused_in_one_line_listing_the_valid_ones() -> None:
    with pytest.raises(UsageError) as caught:
        parse_gate("ttft_p59 < 1s")
    message = str(caught.value)
    assert "\n" not in message
    assert "unknown metric 'ttft_p59'" in message
    assert "did you mean ttft_p99" in message
    assert metric_names_text() in message
    assert caught.value.exit_code == 2


# -- parse errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("ttft_p95 << 2s", "is not an expression"),
        ("ttft_p95", "is not an expression"),
        ("< 2s", "is not an expression"),
        ("ttft_p95 < 2 seconds", "unexpected 'seconds'"),
        ("ttft_p95 < 5%", "is a time; write the threshold in ms, s or m"),
        ("error_rate < 2s", "is a ratio; write the threshold as a fraction or a %"),
        ("session_success_rate >= 99", "ratio from 0 to 1; write e.g. 0.99 or 99%"),
        ("tool_calls > 5ms", "is a plain number"),
        ("ttft_p95 < 2s abort after soon", "abort delay 'soon' is not a duration"),
        ("ttft_p95 < 2s stop", "unexpected 'stop'"),
    ],
)
def test_malformed_gates_are_one_line_usage_errors(expr: str, needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_gate(expr)
    assert needle in str(caught.value)
    assert repr(expr) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_abort_on_fail_with_and_without_a_delay() -> None:
    assert parse_gate("ttft_p95 < 2s abort").abort_on_fail
    assert parse_gate("ttft_p95 < 2s abort").delay_s == 0
    gate = parse_gate("ttft_p95 < 2s abort after 30s")
    assert (gate.abort_on_fail, gate.delay_s, gate.threshold) == (True, 30.0, 2.0)
    assert parse_gate("error_rate < 1% abort after 2m").delay_s == 120.0
    assert parse_gate("requests.failed < 10 abort after 500ms").delay_s == 0.5


def test_parse_gates_drops_a_profile_gate_repeated_on_the_command_line() -> None:
    gates = parse_gates(["ttft_p95 < 2s", "error_rate < 1%", "ttft_p95  <  2s"])
    assert [g.text for g in gates] == ["ttft_p95 < 2s", "error_rate < 1%"]


# -- missing values, the summary list ---------------------------------------------------------


def test_a_metric_without_samples_fails_its_gate_with_a_reason() -> None:
    empty = RunStats().summary(target={}, profile="empty", duration_s=5.0, generator={})
    (ttft, success) = evaluate_gates(
        empty, [parse_gate("ttft_p95 < 2s"), parse_gate("session_success_rate >= 0.99")]
    )
    assert not ttft.passed
    assert ttft.value is None
    assert "ttft_p95 has no value in this run" in ttft.reason
    assert not success.passed  # 0 of 0 sessions is not a success rate of 100%


def test_gates_to_summary_lists_gate_metric_value_threshold_and_verdict() -> None:
    summary = crafted_summary()
    results = evaluate_gates(summary, parse_gates(["ttft_p95 < 2s", "error_rate < 1%"]))
    listed = gates_to_summary(results)
    assert listed[0] == {
        "gate": "ttft_p95 < 2s",
        "metric": "ttft_p95",
        "value": summary["latency"]["ttft_s"]["p95"],
        "threshold": 2.0,
        "verdict": "pass",
        "reason": results[0].reason,
    }
    assert listed[1]["verdict"] == "fail"
    assert listed[1]["reason"] == "error_rate = 20%, needs < 1%"


# -- the abort-on-fail monitor --------------------------------------------------------------------


def test_monitor_aborts_only_on_abort_gates_past_their_delay() -> None:
    summary = crafted_summary()  # TTFT p50 0.2 s
    calls = []

    def live() -> dict[str, Any]:
        calls.append(1)
        return summary

    gates = parse_gates(
        ["ttft_p50 < 100ms", "ttft_p50 < 150ms abort after 30s", "error_rate < 50% abort"]
    )
    monitor = GateMonitor(gates, live)
    assert monitor.active
    assert monitor.check(10.0) is None  # the failing abort gate is not due yet
    fired = monitor.check(30.0)
    assert fired is not None
    assert fired.gate.text == "ttft_p50 < 150ms abort after 30s"
    assert fired.value == pytest.approx(0.2, rel=0.01)
    assert len(calls) == 2


def test_monitor_never_aborts_for_a_metric_that_has_no_samples_yet() -> None:
    empty = RunStats().summary(target={}, profile="p", duration_s=1.0, generator={})
    monitor = GateMonitor(parse_gates(["ttft_p95 < 1ms abort"]), lambda: empty)
    assert monitor.check(100.0) is None


def test_monitor_without_abort_gates_is_inactive_and_reads_nothing() -> None:
    def live() -> dict[str, Any]:
        raise AssertionError("no live summary needed")

    monitor = GateMonitor(parse_gates(["ttft_p95 < 1ms"]), live)
    assert not monitor.active
    assert monitor.check(1e6) is None
