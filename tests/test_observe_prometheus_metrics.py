"""agentload_* metrics from records: what each record counts, goodput, bounded labels, buckets."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.observe.goodput import GoodputRule
from loadgen.observe.prometheus.histogram import HistogramFamily
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.sink import MAX_LABEL_VALUES, OTHER_LABEL, MetricsSink
from loadgen.observe.records import SessionRecord, StepRecord, ToolOutcome

PROFILE = "p"


def step(**fields: Any) -> StepRecord:
    data: dict[str, Any] = {
        "session_id": "coding-0-s0",
        "agent": "coding",
        "step": 0,
        "kind": "turn",
        "api": "chat",
        "started_unix": 0.0,
        "e2e_s": 0.5,
        "ttft_s": 0.1,
        "itl_s": [0.01, 0.02],
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cached_tokens": 64,
        "context_tokens": 120,
    }
    return StepRecord(**{**data, **fields})


def session(**fields: Any) -> SessionRecord:
    data: dict[str, Any] = {
        "session_id": "coding-0-s0",
        "agent": "coding",
        "started_unix": 0.0,
        "duration_s": 3.0,
        "steps": 4,
        "outcome": "completed",
    }
    return SessionRecord(**{**data, **fields})


def value(metrics: RunMetrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, {"profile": PROFILE, **labels})
    return 0.0 if got is None else got


@pytest.fixture
def metrics() -> RunMetrics:
    return RunMetrics()


@pytest.fixture
def sink(metrics: RunMetrics) -> MetricsSink:
    return metrics.sink(PROFILE, {"ttft_p95": 1.0, "ttft_p50": 0.5, "e2e_p99": 5.0})


def test_successful_step_counts_one_ok_request_with_its_latencies_and_tokens(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.step(step())

    labels = {"agent": "coding", "step_kind": "turn"}
    assert value(metrics, "agentload_requests_total", outcome="ok", **labels) == 1
    assert value(metrics, "agentload_ttft_seconds_count", **labels) == 1
    assert value(metrics, "agentload_ttft_seconds_sum", **labels) == 0.1
    assert value(metrics, "agentload_request_duration_seconds_count", **labels) == 1
    assert value(metrics, "agentload_prompt_tokens_total", **labels) == 100
    assert value(metrics, "agentload_completion_tokens_total", **labels) == 20
    assert value(metrics, "agentload_cached_tokens_total", **labels) == 64
    assert value(metrics, "agentload_context_tokens_count", **labels) == 1


def test_every_inter_token_gap_is_observed(metrics: RunMetrics, sink: MetricsSink) -> None:
    gaps = [0.001 * i for i in range(1, 301)]

    sink.step(step(itl_s=gaps))

    labels = {"agent": "coding", "step_kind": "turn"}
    assert value(metrics, "agentload_itl_seconds_count", **labels) == 300
    assert value(metrics, "agentload_itl_seconds_sum", **labels) == pytest.approx(sum(gaps))


def test_failed_step_counts_an_error_of_the_kind_that_failed_it_and_no_latency(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.step(step(ok=False, failures=["cache_miss", "stream_truncated"], ttft_s=None))

    labels = {"agent": "coding", "step_kind": "turn"}
    assert value(metrics, "agentload_requests_total", outcome="failed", **labels) == 1
    errors = {"agent": "coding", "kind": "stream_truncated"}
    assert value(metrics, "agentload_request_errors_total", **errors) == 1
    assert value(metrics, "agentload_request_errors_total", **{**errors, "kind": "cache_miss"}) == 0
    assert value(metrics, "agentload_request_duration_seconds_count", **labels) == 0
    assert value(metrics, "agentload_itl_seconds_count", **labels) == 0


def test_usable_failure_counts_as_state_failure_without_failing_the_request(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.step(step(failures=["cache_miss"]))

    assert value(metrics, "agentload_state_failures_total", agent="coding", kind="cache_miss") == 1
    ok = {"agent": "coding", "step_kind": "turn", "outcome": "ok"}
    assert value(metrics, "agentload_requests_total", **ok) == 1


def test_first_record_of_an_agent_starts_its_counters_at_zero(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.session_started("research")

    # Present at 0 before the first event, so rate() sees the first increment.
    labels = {"profile": PROFILE, "agent": "research"}
    reg = metrics.registry
    assert (
        reg.get_sample_value("agentload_state_failures_total", {**labels, "kind": "timeout"}) == 0
    )
    assert reg.get_sample_value("agentload_sessions_total", {**labels, "outcome": "failed"}) == 0
    compactions = {**labels, "step_kind": "compaction", "outcome": "ok"}
    assert reg.get_sample_value("agentload_requests_total", compactions) == 0


def test_sessions_active_rises_on_start_and_falls_on_end(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.session_started("coding")
    sink.session_started("coding")
    assert value(metrics, "agentload_sessions_active", agent="coding") == 2

    sink.session(session())
    assert value(metrics, "agentload_sessions_active", agent="coding") == 1


def test_ended_session_is_counted_by_outcome_with_its_duration_and_steps(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.session(session(outcome="failed", duration_s=7.0, steps=9))

    labels = {"agent": "coding", "outcome": "failed"}
    assert value(metrics, "agentload_sessions_total", **labels) == 1
    assert value(metrics, "agentload_session_duration_seconds_sum", **labels) == 7.0
    assert value(metrics, "agentload_session_steps_sum", **labels) == 9


def test_completed_session_whose_steps_met_every_cap_is_goodput(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.step(step(ttft_s=0.9, e2e_s=4.0))

    sink.session(session())

    assert value(metrics, "agentload_goodput_sessions_total", agent="coding") == 1


def test_session_with_one_step_over_the_ttft_cap_is_not_goodput(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.step(step(ttft_s=0.2))
    sink.step(step(ttft_s=1.5))

    sink.session(session())

    assert value(metrics, "agentload_goodput_sessions_total", agent="coding") == 0


def test_subagent_step_over_a_cap_spoils_its_parent_session_only(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.step(step(session_id="coding-0-s0.2", kind="subagent", e2e_s=9.0))

    sink.session(session(session_id="coding-0-s0"))
    sink.session(session(session_id="coding-0-s1"))

    assert value(metrics, "agentload_goodput_sessions_total", agent="coding") == 1


def test_failed_session_is_never_goodput(metrics: RunMetrics, sink: MetricsSink) -> None:
    sink.session(session(outcome="failed"))

    assert value(metrics, "agentload_goodput_sessions_total", agent="coding") == 0


def test_recoveries_and_tool_calls_are_counted_by_kind_and_tool(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.recovery("http_error", "coding")
    sink.tool_call("coding", "run_shell", ToolOutcome.ERROR, 2.0)
    sink.tool_call("coding", "run_shell", ToolOutcome.OK, 1.0)

    assert value(metrics, "agentload_recoveries_total", agent="coding", kind="http_error") == 1
    tool = {"agent": "coding", "tool": "run_shell"}
    assert value(metrics, "agentload_tool_calls_total", outcome="error", **tool) == 1
    assert value(metrics, "agentload_tool_calls_total", outcome="ok", **tool) == 1
    assert value(metrics, "agentload_tool_latency_seconds_sum", **tool) == 3.0


def test_a_tool_call_cut_off_with_its_session_counts_as_aborted_without_a_latency(
    metrics: RunMetrics, sink: MetricsSink
) -> None:
    sink.tool_call("coding", "run_shell", ToolOutcome.ABORTED, None)

    tool = {"agent": "coding", "tool": "run_shell"}
    assert value(metrics, "agentload_tool_calls_total", outcome="aborted", **tool) == 1
    assert value(metrics, "agentload_tool_latency_seconds_count", **tool) == 0


def test_label_values_past_the_cap_read_as_other(metrics: RunMetrics, sink: MetricsSink) -> None:
    for i in range(MAX_LABEL_VALUES + 5):
        sink.tool_call("coding", f"tool_{i}", ToolOutcome.OK, 0.1)

    tools = {
        s.labels["tool"]
        for family in metrics.registry.collect()
        if family.name == "agentload_tool_calls"
        for s in family.samples
    }
    assert len(tools) == MAX_LABEL_VALUES + 1
    other = {"agent": "coding", "tool": OTHER_LABEL, "outcome": "ok"}
    assert value(metrics, "agentload_tool_calls_total", **other) == 5


def test_no_series_is_labelled_by_session(metrics: RunMetrics, sink: MetricsSink) -> None:
    sink.session_started("coding")
    sink.step(step(failures=["cache_miss"]))
    sink.tool_call("coding", "read_file", ToolOutcome.OK, 0.1)
    sink.recovery("http_error", "coding")
    sink.session(session())
    metrics.set_target(PROFILE, "http://gpu:8000/v1", "llama")

    text = generate_latest(metrics.registry).decode()
    names = {k for f in text_string_to_metric_families(text) for s in f.samples for k in s.labels}
    allowed = {"profile", "agent", "step_kind", "outcome", "kind", "tool", "le", "url", "model"}
    assert names <= allowed


def test_target_info_names_url_and_model(metrics: RunMetrics) -> None:
    metrics.set_target(PROFILE, "http://gpu:8000/v1", "llama")

    labels = {"url": "http://gpu:8000/v1", "model": "llama"}
    assert value(metrics, "agentload_target_info", **labels) == 1


# -- goodput rule ---------------------------------------------------------------------------


def test_goodput_rule_caps_each_metric_at_its_loosest_slo() -> None:
    rule = GoodputRule({"ttft_p50": 0.5, "ttft_p99": 2.0, "session_p90": 60.0})

    assert rule.ttft_s == 2.0
    assert rule.session_s == 60.0
    assert rule.e2e_s is None


def test_goodput_rule_ignores_session_success_and_itl() -> None:
    rule = GoodputRule({"session_success": 0.99, "itl_p99": 0.1})

    assert (rule.ttft_s, rule.e2e_s, rule.session_s) == (None, None, None)
    assert rule.session_met(session(duration_s=1e6), every_step_met=True)


def test_goodput_rule_refuses_a_session_over_its_duration_cap() -> None:
    rule = GoodputRule({"session_p90": 10.0})

    assert not rule.session_met(session(duration_s=11.0), every_step_met=True)


# -- histogram family -----------------------------------------------------------------------


def test_value_equal_to_a_bound_counts_in_that_bound_bucket() -> None:
    family = HistogramFamily("h_seconds", "doc", ["a"], [0.1, 0.2])
    family.labels("x").observe_many([0.1, 0.15, 0.2, 0.3])

    registry = CollectorRegistry()
    registry.register(family)
    buckets = {
        le: registry.get_sample_value("h_seconds_bucket", {"a": "x", "le": le})
        for le in ("0.1", "0.2", "+Inf")
    }
    assert buckets == {"0.1": 1, "0.2": 3, "+Inf": 4}
    assert registry.get_sample_value("h_seconds_count", {"a": "x"}) == 4


def test_histogram_family_refuses_unsorted_buckets() -> None:
    with pytest.raises(ValueError, match="increasing"):
        HistogramFamily("h", "doc", [], [1.0, 0.5])


def test_histogram_family_refuses_a_wrong_number_of_labels() -> None:
    family = HistogramFamily("h", "doc", ["a", "b"], [1.0])

    with pytest.raises(ValueError, match="takes labels"):
        family.labels("x")


def test_registry_refuses_a_second_run_metrics_in_it() -> None:
    registry = CollectorRegistry()
    RunMetrics(registry)

    with pytest.raises(ValueError, match="Duplicated"):
        RunMetrics(registry)
