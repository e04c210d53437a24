"""The summary.json document: what a finished run measured, in schema agentload.summary/1."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loadgen.observe.histogram import LatencyHistogram, censored_percentile
from loadgen.observe.replicas import replica_sections
from loadgen.observe.server_replicas import server_replica_sections

if TYPE_CHECKING:
    # Only for annotations: run_stats imports this module to implement RunStats.summary().
    from loadgen.observe.run_stats import AgentStats, RunStats

__all__ = [
    "LATENCY_HISTOGRAMS",
    "SUMMARY_SCHEMA",
    "add_server_section",
    "build_summary",
    "running_at_end",
]

SUMMARY_SCHEMA = "agentload.summary/1"
# The latency histograms a summary reports and also ships whole, for exact later merging.
LATENCY_HISTOGRAMS = ("ttft_s", "ttfat_s", "itl_s", "e2e_s", "session_s")


def _per(total: float, duration_s: float, scale: float = 1.0) -> float | None:
    return total / duration_s * scale if duration_s > 0 else None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _answer_tokens(stats: RunStats) -> int:
    # Reasoning tokens are output tokens: the answer is what is left of the completion. A
    # reply whose reasoning was counted from its deltas while its usage said nothing must not
    # make the answer negative.
    return max(stats.completion_tokens - stats.reasoning_tokens, 0)


def _tokens(stats: RunStats) -> dict[str, Any]:
    """summary.json's `tokens`: what the server reported, reasoning apart from the answer."""
    return {
        "prompt": stats.prompt_tokens,
        "completion": stats.completion_tokens,
        "cached": stats.cached_tokens,
        "reasoning": stats.reasoning_tokens,
        "answer": _answer_tokens(stats),
        "reasoning_share": _ratio(stats.reasoning_tokens, stats.completion_tokens),
        "reasoning_per_session_mean": _ratio(stats.reasoning_tokens, stats.sessions.started),
    }


def _context(hist: LatencyHistogram) -> dict[str, float | None]:
    return {
        "p50": hist.percentile(50),
        "p90": hist.percentile(90),
        "p99": hist.percentile(99),
        "max": hist.max,
        "mean": hist.mean,
    }


def running_at_end(ended: LatencyHistogram, running: LatencyHistogram) -> dict[str, Any]:
    """summary.json's `sessions.running_at_end`: the sessions the run's end cut off, by age.

    `ended`: completed sessions' durations; `running`: the ages of those still running at the
    end. `session_s` is the duration quantiles counting each running session as lasting at
    least its age: Kaplan-Meier percentiles (None beyond the longest duration or age seen),
    the longest seen as max, and the mean over durations and ages (both lower bounds).
    """
    finished_p90 = ended.percentile(90)
    both = ended.copy()
    both.merge(running)
    return {
        "count": running.count,
        "age_p50_s": running.percentile(50),
        "age_p90_s": running.percentile(90),
        "age_max_s": running.max,
        "older_than_finished_p90": None
        if finished_p90 is None
        else running.count_above(finished_p90),
        "session_s": {
            **{f"p{q}": censored_percentile(ended, running, q) for q in (50, 90, 95, 99)},
            "max": both.max,
            "mean": both.mean,
        },
    }


def _agent_summary(stats: AgentStats) -> dict[str, Any]:
    return {
        "requests": {
            "total": stats.requests_ok + stats.requests_failed,
            "ok": stats.requests_ok,
            "failed": stats.requests_failed,
        },
        "sessions": {
            **stats.sessions.to_dict(),
            "running_at_end": running_at_end(stats.session_s, stats.running_at_end_s),
        },
        "latency": {
            "ttft_s": stats.ttft_s.quantiles_dict(),
            "ttfat_s": stats.ttfat_s.quantiles_dict(),
            "e2e_s": stats.e2e_s.quantiles_dict(),
            "session_s": stats.session_s.quantiles_dict(),
        },
        "tokens": {"completion": stats.completion_tokens, "reasoning": stats.reasoning_tokens},
        "state_failures": dict(sorted(stats.failures.items())),
        "recoveries": dict(sorted(stats.recoveries.items())),
    }


def _prefix_cache(stats: RunStats) -> dict[str, Any]:
    """Whether the target showed prefix caching at all: said once, never a miss per step."""
    if stats.cache_hits:
        state = "reported"
    elif stats.cache_reported:
        state = "off"  # the field is there, always 0: caching is off (or nothing repeats)
    else:
        state = "not reported"
    return {"state": state, "steps_reporting": stats.cache_reported, "steps_hit": stats.cache_hits}


def build_summary(
    stats: RunStats,
    *,
    target: Mapping[str, Any],
    profile: str,
    duration_s: float,
    generator: Mapping[str, Any],
) -> dict[str, Any]:
    """The summary.json document of `stats` for a run of `duration_s` seconds."""
    return {
        "schema": SUMMARY_SCHEMA,
        "target": dict(target),
        "profile": profile,
        "duration_s": duration_s,
        "requests": {
            "total": stats.requests_total,
            "ok": stats.requests_ok,
            "failed": stats.requests_failed,
        },
        "sessions": {
            **stats.sessions.to_dict(),
            "running_at_end": running_at_end(stats.session_s, stats.running_at_end_s),
        },
        "tokens": _tokens(stats),
        "throughput": {
            "requests_per_s": _per(stats.requests_total, duration_s),
            "output_tokens_per_s": _per(stats.completion_tokens, duration_s),
            "answer_tokens_per_s": _per(_answer_tokens(stats), duration_s),
            "sessions_per_min": _per(stats.sessions.completed, duration_s, 60.0),
        },
        "latency": {name: stats.histogram(name).quantiles_dict() for name in LATENCY_HISTOGRAMS},
        "state_failures": dict(stats.failures),
        "failure_reasons": {
            kind: [
                {"message": message, "count": n}
                for message, n in sorted(counts.items(), key=lambda item: -item[1])
            ]
            for kind, counts in sorted(stats.reasons.items())
        },
        "recoveries": dict(stats.recoveries),
        "prefix_cache": _prefix_cache(stats),
        "tool_calls": stats.tool_calls,
        "context_tokens": _context(stats.context_tokens),
        "by_agent": {name: _agent_summary(a) for name, a in sorted(stats.agents.items())},
        # A fleet's replicas (several targets, or replicas a response header named).
        **replica_sections(stats.replicas, target.get("replicas") or {}, duration_s),
        "generator": dict(generator),
        "histograms": {name: stats.histogram(name).to_dict() for name in LATENCY_HISTOGRAMS},
    }


def add_server_section(summary: dict[str, Any], server: Mapping[str, Any]) -> None:
    """Put the target's sampled metrics (TargetMetricsSampler.report()) into `summary` as
    "server"; when no step named a replica (no header, one --target) but the server's metrics
    did, the top-level `by_replica` and `replica_imbalance` come from them too."""
    summary["server"] = dict(server)
    if "by_replica" not in summary:
        duration_s = summary.get("duration_s")
        duration = float(duration_s) if isinstance(duration_s, int | float) else 0.0
        summary.update(server_replica_sections(server, duration))
