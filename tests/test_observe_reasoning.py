"""Reasoning in the run's figures: step records to summary.json, the printed summary, gates
and SLOs on the time to first answer token, goodput, Prometheus, and merging across workers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.agents.agent import StepPlan
from loadgen.gates import evaluate_gates, parse_gate, read_metric
from loadgen.observe import RunStats, SessionOutcome, SessionRecord, StepRecord, format_summary
from loadgen.observe.goodput import GoodputRule
from loadgen.observe.prometheus.merge import MergedMetrics, SampleTracker
from loadgen.observe.prometheus.metrics import TTFT_BUCKETS, RunMetrics
from loadgen.profile.loader import profile_from_mapping
from loadgen.protocol import Reply, Usage
from loadgen.runtime.session_records import step_record

PROFILE = "p"


def step(agent: str = "thinker", **fields: Any) -> StepRecord:
    data: dict[str, Any] = {
        "session_id": "s0",
        "agent": agent,
        "step": 0,
        "kind": "turn",
        "api": "chat",
        "started_unix": 0.0,
        "e2e_s": 3.0,
        "ttft_s": 0.1,
        "ttfat_s": 2.1,
        "itl_s": [0.01] * 10,
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "reasoning_tokens": 200,
        "context_tokens": 1000,
    }
    return StepRecord(**{**data, **fields})


def feed(stats: RunStats, steps: list[StepRecord], sessions: int = 2) -> RunStats:
    for i in range(sessions):
        stats.session_started(steps[0].agent if steps else "thinker")
        stats.add_session(SessionRecord(f"s{i}", "thinker", 0.0, 5.0, 1, SessionOutcome.COMPLETED))
    for record in steps:
        stats.add_step(record)
    return stats


def summarize(stats: RunStats, duration_s: float = 10.0) -> dict[str, Any]:
    return stats.summary(
        target={"url": "http://sim/v1", "model": "m"},
        profile=PROFILE,
        duration_s=duration_s,
        generator={"saturated": False, "reasons": []},
    )


def thinking_run() -> RunStats:
    """Four reasoning steps (TTFT 0.1 s, TTFAT 2.1..2.4 s), a plain agent's step, a failure."""
    steps = [step(ttfat_s=2.1 + i / 10) for i in range(4)]
    steps.append(
        step("plain", ttft_s=0.2, ttfat_s=0.2, completion_tokens=100, reasoning_tokens=None)
    )
    steps.append(
        step(ok=False, failures=["timeout"], ttft_s=None, ttfat_s=None, completion_tokens=None,
             reasoning_tokens=40)
    )  # fmt: skip
    return feed(RunStats(), steps)


# -- records ----------------------------------------------------------------------------------


def test_step_records_carry_ttfat_and_reasoning_tokens_from_the_reply() -> None:
    reply = Reply(api="chat", t_sent_ns=0, t_first_token_ns=100_000_000,
                  t_first_answer_ns=900_000_000, t_end_ns=1_500_000_000, finish_reason="stop",
                  usage=Usage(10, 30, None, 20), reasoning_tokens=20)  # fmt: skip
    plan = StepPlan(kind="turn", api="chat", body=[], max_tokens=64, forced_min_tokens=None,
                    context_tokens=10)  # fmt: skip
    record = step_record(plan, reply, "thinker", "s0", 0, [], 0, 0.0)
    assert record.ttft_s == pytest.approx(0.1)
    assert record.ttfat_s == pytest.approx(0.9)
    assert record.reasoning_tokens == 20
    line = orjson.loads(orjson.dumps(record.to_json()))
    assert line["ttfat_s"] == pytest.approx(0.9)
    assert line["reasoning_tokens"] == 20


# -- summary.json -----------------------------------------------------------------------------


def test_summary_separates_reasoning_from_the_answer() -> None:
    summary = summarize(thinking_run())
    tokens = summary["tokens"]
    # Reasoning counts over every request (the failed one's 40 too), as the other tokens do.
    assert tokens["completion"] == 4 * 300 + 100
    assert tokens["reasoning"] == 4 * 200 + 40
    assert tokens["answer"] == tokens["completion"] - tokens["reasoning"]
    assert tokens["reasoning_share"] == pytest.approx(840 / 1300)
    assert tokens["reasoning_per_session_mean"] == pytest.approx(840 / 2)
    throughput = summary["throughput"]
    assert throughput["output_tokens_per_s"] == pytest.approx(130.0)
    assert throughput["answer_tokens_per_s"] == pytest.approx(46.0)


def test_ttfat_quantiles_count_successful_answers_only() -> None:
    summary = summarize(thinking_run())
    ttfat = summary["latency"]["ttfat_s"]
    assert summary["histograms"]["ttfat_s"]["count"] == 5  # the failed step is out
    assert ttfat["max"] == pytest.approx(2.4)
    assert ttfat["p50"] == pytest.approx(2.2, rel=0.01)
    assert summary["latency"]["ttft_s"]["max"] == pytest.approx(0.2)


def test_by_agent_splits_ttfat_and_reasoning() -> None:
    by_agent = summarize(thinking_run())["by_agent"]
    assert by_agent["thinker"]["tokens"] == {"completion": 1200, "reasoning": 840}
    assert by_agent["plain"]["tokens"] == {"completion": 100, "reasoning": 0}
    assert by_agent["thinker"]["latency"]["ttfat_s"]["max"] == pytest.approx(2.4)
    assert by_agent["plain"]["latency"]["ttfat_s"]["max"] == pytest.approx(0.2)


def test_a_run_without_reasoning_reports_zero_and_answer_equals_output() -> None:
    summary = summarize(feed(RunStats(), [step(reasoning_tokens=None, ttfat_s=0.1)]))
    assert summary["tokens"]["reasoning"] == 0
    assert summary["tokens"]["reasoning_share"] == 0.0
    assert summary["tokens"]["answer"] == summary["tokens"]["completion"]
    throughput = summary["throughput"]
    assert throughput["answer_tokens_per_s"] == throughput["output_tokens_per_s"]


def test_empty_figures_are_null() -> None:
    summary = summarize(RunStats(), duration_s=0.0)
    assert summary["tokens"]["reasoning_share"] is None
    assert summary["tokens"]["reasoning_per_session_mean"] is None
    assert summary["throughput"]["answer_tokens_per_s"] is None
    assert summary["latency"]["ttfat_s"]["p95"] is None


def test_reasoning_counted_without_usage_never_makes_the_answer_negative() -> None:
    stats = feed(RunStats(), [step(completion_tokens=None, reasoning_tokens=50)])
    assert summarize(stats)["tokens"]["answer"] == 0


# -- merging across workers ---------------------------------------------------------------------


def test_workers_merge_ttfat_and_reasoning_exactly() -> None:
    a_steps = [step(ttfat_s=1.0 + i / 7, reasoning_tokens=i) for i in range(20)]
    b_steps = [step("other", ttfat_s=0.5 + i / 3, reasoning_tokens=2 * i) for i in range(15)]
    a, b = feed(RunStats(), a_steps), feed(RunStats(), b_steps, sessions=3)
    merged = RunStats()
    for worker in (a, b):  # shipped as the master receives them
        merged.merge(RunStats.from_dict(orjson.loads(orjson.dumps(worker.to_dict()))))
    everything = feed(feed(RunStats(), a_steps), b_steps, sessions=3)
    assert merged == everything
    got, expected = summarize(merged), summarize(everything)
    assert got["histograms"]["ttfat_s"] == expected["histograms"]["ttfat_s"]
    assert got["tokens"] == expected["tokens"]
    assert (
        got["by_agent"]["other"]["latency"]["ttfat_s"]["p95"]
        == (expected["by_agent"]["other"]["latency"]["ttfat_s"]["p95"])
    )


def test_a_worker_of_an_older_version_merges_as_one_without_reasoning() -> None:
    data = feed(RunStats(), [step()]).to_dict()
    del data["tokens"]["reasoning"]
    del data["histograms"]["ttfat_s"]
    for agent in data["agents"].values():
        del agent["ttfat_s"], agent["reasoning_tokens"]
    old = RunStats.from_dict(data)
    assert old.reasoning_tokens == 0
    assert old.ttfat_s.count == 0
    assert old.agents["thinker"].ttfat_s.count == 0


# -- the printed summary ------------------------------------------------------------------------


def test_printed_summary_shows_ttfat_and_reasoning_when_the_run_saw_reasoning() -> None:
    lines = format_summary(summarize(thinking_run())).splitlines()
    ttft = next(i for i, line in enumerate(lines) if line.startswith("TTFT "))
    assert lines[ttft + 1].startswith("TTFAT           p50 2.2")
    assert lines[ttft + 1].endswith("(first answer token)")
    reasoning = next(line for line in lines if line.startswith("reasoning "))
    assert reasoning == (
        "reasoning       840 tokens, 64.6% of output, 420 per session; 46.0 answer tok/s"
    )


def test_printed_summary_of_a_run_without_reasoning_is_unchanged() -> None:
    stats = feed(RunStats(), [step(reasoning_tokens=None, ttfat_s=0.1)])
    text = format_summary(summarize(stats))
    assert "TTFAT" not in text
    assert "reasoning" not in text
    assert "answer tok/s" not in text


def test_printed_summary_reads_a_summary_written_before_ttfat() -> None:
    summary = summarize(feed(RunStats(), [step(reasoning_tokens=None)]))
    del summary["latency"]["ttfat_s"], summary["throughput"]["answer_tokens_per_s"]
    for key in ("reasoning", "answer", "reasoning_share", "reasoning_per_session_mean"):
        del summary["tokens"][key]
    assert "TTFAT" not in format_summary(summary)


# -- gates and SLOs -----------------------------------------------------------------------------


def test_a_ttfat_gate_fails_a_run_whose_ttft_gate_passes() -> None:
    summary = summarize(thinking_run())
    ttft, ttfat = evaluate_gates(
        summary, [parse_gate("ttft_p95 < 1s"), parse_gate("ttfat_p95 < 2s")]
    )
    assert ttft.passed
    assert not ttfat.passed
    assert ttfat.value == pytest.approx(2.4, rel=0.01)
    assert ttfat.reason.startswith("ttfat_p95 = 2.39")
    assert ttfat.reason.endswith("needs < 2 s")


def test_reasoning_metrics_are_gates() -> None:
    summary = summarize(thinking_run())
    assert read_metric(summary, "reasoning_tokens") == 840
    assert read_metric(summary, "reasoning_share") == pytest.approx(840 / 1300)
    assert read_metric(summary, "answer_tokens_per_s") == pytest.approx(46.0)
    for stat in ("p50", "p90", "p95", "p99", "max", "mean"):
        assert read_metric(summary, f"ttfat_{stat}") is not None
    (share,) = evaluate_gates(summary, [parse_gate("reasoning_share < 50%")])
    assert not share.passed
    (rate,) = evaluate_gates(summary, [parse_gate("answer_tokens_per_s > 40")])
    assert rate.passed


def test_a_profile_takes_a_ttfat_slo(tmp_path: Any) -> None:
    data = {"arrival": {"mode": "closed", "agents": 1}, "agents": [{"kind": "coding"}],
            "slos": {"ttfat_p95": "5s", "ttft_p95": "500ms"}}  # fmt: skip
    loaded = profile_from_mapping(data, "test.yaml", tmp_path)
    assert loaded.profile.slos == {"ttfat_p95": 5.0, "ttft_p95": 0.5}


def test_goodput_caps_each_step_at_the_loosest_ttfat_slo() -> None:
    rule = GoodputRule({"ttfat_p50": 1.0, "ttfat_p95": 2.5, "ttft_p95": 0.5})
    assert rule.ttfat_s == 2.5
    assert rule.ttft_s == 0.5
    assert rule.step_met(step(ttft_s=0.1, ttfat_s=2.4))
    assert not rule.step_met(step(ttft_s=0.1, ttfat_s=2.6))
    # A step that streamed no answer token (cut while reasoning) is judged by its other caps.
    assert rule.step_met(step(ttft_s=0.1, ttfat_s=None))
    # TTFT's cap does not reach TTFAT: a fast first thinking token is all TTFT asks.
    assert GoodputRule({"ttft_p95": 0.5}).step_met(step(ttft_s=0.1, ttfat_s=30.0))


# -- Prometheus ---------------------------------------------------------------------------------


def exposed(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sink_steps(metrics: RunMetrics, steps: list[StepRecord]) -> None:
    sink = metrics.sink(PROFILE, {"ttfat_p95": 2.2})
    for record in steps:
        sink.step(record)


def test_prometheus_exposes_ttfat_and_reasoning_tokens_beside_ttft() -> None:
    metrics = RunMetrics()
    sink_steps(metrics, [step(ttfat_s=2.1), step(ttfat_s=2.3), step(ok=False, ttfat_s=None)])
    labels = {"profile": PROFILE, "agent": "thinker", "step_kind": "turn"}
    get = metrics.registry.get_sample_value
    assert get("agentload_ttfat_seconds_count", labels) == 2
    assert get("agentload_ttfat_seconds_sum", labels) == pytest.approx(4.4)
    assert get("agentload_ttfat_seconds_bucket", {**labels, "le": "2.0"}) == 0
    assert get("agentload_ttfat_seconds_bucket", {**labels, "le": "3.0"}) == 2
    assert get("agentload_ttft_seconds_count", labels) == 2
    assert get("agentload_reasoning_tokens_total", labels) == 600  # the failed step's too
    assert get("agentload_completion_tokens_total", labels) == 900


def families_of(metrics: RunMetrics) -> dict[str, Any]:
    return {f.name: f for f in metrics.registry.collect()}


def test_ttfat_has_ttfts_labels_and_buckets_and_reasoning_completions_labels() -> None:
    metrics = RunMetrics()
    families = families_of(metrics)
    assert metrics.ttfat.labelnames == metrics.ttft.labelnames
    assert metrics.ttfat.bucket_labels == metrics.ttft.bucket_labels
    assert len(metrics.ttfat.bucket_labels) == len(TTFT_BUCKETS) + 1
    sink_steps(metrics, [step()])
    labels = {
        name: [set(s.labels) for s in families_of(metrics)[name].samples]
        for name in ("agentload_reasoning_tokens", "agentload_completion_tokens")
    }
    assert labels["agentload_reasoning_tokens"] == labels["agentload_completion_tokens"]
    assert families["agentload_reasoning_tokens"].type == "counter"


def test_workers_ttfat_and_reasoning_series_merge_into_the_masters_endpoint() -> None:
    a_steps = [step(ttfat_s=1.0 + i / 5, reasoning_tokens=10 + i) for i in range(8)]
    b_steps = [step("other", ttfat_s=0.3 * i, reasoning_tokens=i) for i in range(6)]
    a, b, whole = RunMetrics(), RunMetrics(), RunMetrics()
    sink_steps(a, a_steps)
    sink_steps(b, b_steps)
    sink_steps(whole, a_steps + b_steps)
    merged = MergedMetrics()
    merged.update("a", SampleTracker(a).changes())
    merged.update("b", SampleTracker(b).changes())
    got = {k: v for k, v in exposed(merged).items() if "ttfat" in k[0] or "reasoning" in k[0]}
    want = {
        k: v for k, v in exposed(whole.registry).items() if "ttfat" in k[0] or "reasoning" in k[0]
    }
    assert got.keys() == want.keys()
    assert got == pytest.approx(want)
    assert any(name == "agentload_reasoning_tokens_total" for name, _ in got)
