"""What the HTML report plots, gathered in one pass over a run's step records."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loadgen.observe.histogram import LatencyHistogram
from loadgen.report.results import RunResults

__all__ = ["BUCKET_WIDTHS_S", "Group", "ReportData", "Timeline", "gather"]

# Time buckets are the smallest of these that keeps a chart under ~120 columns.
BUCKET_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
_MAX_BUCKETS = 120
_CONTEXT_SESSIONS_KEPT = 400  # sessions whose context growth is remembered (memory bound)
_CONTEXT_SESSIONS_DRAWN = 8


@dataclass
class Group:
    """Requests of one agent or one step kind: counts, latency histograms, tokens."""

    ok: int = 0
    failed: int = 0
    ttft: LatencyHistogram = field(default_factory=LatencyHistogram)
    e2e: LatencyHistogram = field(default_factory=LatencyHistogram)
    ttfat: LatencyHistogram = field(default_factory=LatencyHistogram)  # first answer token
    completion: int = 0  # server-reported completion tokens, failed requests' too
    reasoning: int = 0  # of which reasoning tokens


@dataclass
class _Second:
    ok: int = 0
    failed: int = 0
    tokens: int = 0
    answer: int = 0  # completion tokens less reasoning tokens
    ttft: LatencyHistogram = field(default_factory=LatencyHistogram)
    e2e: LatencyHistogram = field(default_factory=LatencyHistogram)
    ttfat: LatencyHistogram = field(default_factory=LatencyHistogram)
    failures: Counter[str] = field(default_factory=Counter)

    def merge(self, other: _Second) -> None:
        self.ok += other.ok
        self.failed += other.failed
        self.tokens += other.tokens
        self.answer += other.answer
        self.ttft.merge(other.ttft)
        self.e2e.merge(other.e2e)
        self.ttfat.merge(other.ttfat)
        self.failures.update(other.failures)


@dataclass(frozen=True)
class Timeline:
    """Per-bucket figures over the run, by when requests finished (seconds from the start)."""

    bucket_s: float
    starts: list[float]
    covered_s: list[float]  # seconds of each bucket the run actually spans (the last is short)
    buckets: list[_Second]

    def rate(self, pick: str) -> list[tuple[float, float]]:
        """(bucket middle, per-second rate) of "ok", "failed", "tokens" or "answer".

        Buckets covering less than half their width (the run's last moments) are left out:
        a few requests over a fraction of a second would draw a spike that never happened.
        """
        return [
            (start + cover / 2, getattr(b, pick) / cover)
            for start, cover, b in zip(self.starts, self.covered_s, self.buckets, strict=True)
            if cover >= self.bucket_s / 2 or len(self.starts) == 1
        ]

    def latency(self, which: str, q: float) -> list[tuple[float, float]]:
        """(bucket middle, q-th percentile) of "ttft", "ttfat" or "e2e", skipping empty
        buckets."""
        points = []
        for start, cover, b in zip(self.starts, self.covered_s, self.buckets, strict=True):
            value = getattr(b, which).percentile(q)
            if value is not None:
                points.append((start + cover / 2, value))
        return points

    def failures(self) -> dict[str, list[float | None]]:
        """Failure counts per bucket, by kind (kinds that occurred only)."""
        kinds = sorted({k for b in self.buckets for k in b.failures})
        return {k: [float(b.failures.get(k, 0)) for b in self.buckets] for k in kinds}


@dataclass
class ReportData:
    """Everything the report draws besides summary.json itself."""

    timeline: Timeline | None
    by_agent: dict[str, Group]
    by_kind: dict[str, Group]
    context: dict[str, list[tuple[int, int]]]  # a few sessions: (step index, context tokens)
    ceiling: Mapping[str, Any] | None


def _timeline(seconds: Mapping[int, _Second], t0: float, t_end: float) -> Timeline | None:
    if not seconds:
        return None
    span = max(t_end - t0, 1.0)
    width = next((w for w in BUCKET_WIDTHS_S if span / w <= _MAX_BUCKETS), BUCKET_WIDTHS_S[-1])
    base = math.floor(t0)
    count = math.ceil((t_end - base) / width) or 1
    buckets = [_Second() for _ in range(count)]
    for second, data in seconds.items():
        buckets[min(max((second - base) // width, 0), count - 1)].merge(data)
    # Bucket starts are relative to the first request's start, the run's time zero.
    starts = [base - t0 + i * width for i in range(count)]
    covered = [min(width, t_end - t0 - s) - max(0.0, -s) for s in starts]
    keep = [i for i, c in enumerate(covered) if c > 0]
    return Timeline(
        float(width),
        [max(starts[i], 0.0) for i in keep],
        [covered[i] for i in keep],
        [buckets[i] for i in keep],
    )


def _pick_sessions(context: Mapping[str, dict[int, int]], agents: Mapping[str, str]) -> list[str]:
    """The longest sessions, taken in turn from each agent so the mix is represented."""
    by_agent: dict[str, list[str]] = defaultdict(list)
    for sid in sorted(context, key=lambda s: (-len(context[s]), s)):
        by_agent[agents[sid]].append(sid)
    picked: list[str] = []
    while len(picked) < _CONTEXT_SESSIONS_DRAWN and any(by_agent.values()):
        for queue in by_agent.values():
            if queue and len(picked) < _CONTEXT_SESSIONS_DRAWN:
                picked.append(queue.pop(0))
    return picked


def gather(results: RunResults) -> ReportData:
    """Read the step records once and aggregate what the charts need."""
    return gather_steps(results.steps(), ceiling=results.extra_json("ceiling.json"))


def gather_steps(steps: Iterable[Mapping[str, Any]], ceiling: Any = None) -> ReportData:
    """Aggregate step records (steps.jsonl lines) into the report's data."""
    seconds: dict[int, _Second] = defaultdict(_Second)
    by_agent: dict[str, Group] = defaultdict(Group)
    by_kind: dict[str, Group] = defaultdict(Group)
    context: dict[str, dict[int, int]] = {}
    agent_of: dict[str, str] = {}
    t0, t_end = math.inf, -math.inf
    for step in steps:
        start, e2e = step.get("started_unix"), step.get("e2e_s")
        if not isinstance(start, int | float) or not isinstance(e2e, int | float):
            continue
        end = start + e2e
        t0, t_end = min(t0, start), max(t_end, end)
        second = seconds[math.floor(end)]
        ok = bool(step.get("ok"))
        ttft, ttfat = step.get("ttft_s"), step.get("ttfat_s")
        agent, kind = str(step.get("agent", "?")), str(step.get("kind", "?"))
        completion = int(step.get("completion_tokens") or 0)
        reasoning = int(step.get("reasoning_tokens") or 0)
        second.tokens += completion
        second.answer += max(completion - reasoning, 0)
        second.failures.update(str(k) for k in step.get("failures") or ())
        for group in (by_agent[agent], by_kind[kind]):
            group.completion += completion
            group.reasoning += reasoning
        for target in (second, by_agent[agent], by_kind[kind]):
            if ok:
                target.ok += 1
                target.e2e.record(max(e2e, 0.0))
                if isinstance(ttft, int | float):
                    target.ttft.record(max(ttft, 0.0))
                if isinstance(ttfat, int | float):
                    target.ttfat.record(max(ttfat, 0.0))
            else:
                target.failed += 1
        sid = str(step.get("session_id", ""))
        if sid in context or len(context) < _CONTEXT_SESSIONS_KEPT:
            steps_of = context.setdefault(sid, {})
            index = int(step.get("step") or 0)
            # Retries repeat a step index; the largest prompt of the step is what was sent last.
            steps_of[index] = max(steps_of.get(index, 0), int(step.get("context_tokens") or 0))
            agent_of[sid] = agent
    chosen = _pick_sessions(context, agent_of)
    return ReportData(
        timeline=_timeline(seconds, t0, t_end),
        by_agent=dict(sorted(by_agent.items())),
        by_kind=dict(sorted(by_kind.items())),
        context={sid: sorted(context[sid].items()) for sid in chosen},
        ceiling=ceiling if isinstance(ceiling, Mapping) else None,
    )
