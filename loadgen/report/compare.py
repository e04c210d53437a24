"""Baseline comparison: did the new run get slower or flakier, beyond a tolerance and beyond noise?

A metric regresses only when its change is worse than `max_regression` *and* statistically
clear: the confidence interval of the change lies entirely on the worse side of zero.
Latency percentiles are bootstrapped from the per-request (per-session) samples, counting
requests that a server hiccup moved together as the fewer independent samples they are;
rates and failure proportions use count statistics. Repeated runs of one configuration therefore
compare clean, while a real slowdown beyond the tolerance is flagged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from loadgen.errors import UsageError
from loadgen.gates.metrics import Unit, summary_number
from loadgen.report.compare_inputs import (
    FAMILIES,
    Side,
    proportion_inputs,
    rate_inputs,
    rate_value,
    read_side,
)
from loadgen.report.results import RunResults
from loadgen.report.statistics import (
    Estimate,
    design_effect,
    percentile_change,
    proportion_change,
    quantile,
    rate_change,
)

__all__ = [
    "COMPARE_METRICS",
    "DEFAULT_METRICS",
    "CompareMetric",
    "Comparison",
    "MetricChange",
    "compare_runs",
    "noise_floor_s",
    "resolve_metrics",
]

Verdict = Literal["regression", "improvement", "unchanged", "no data"]

# An asyncio client cannot resolve latency differences finer than this.
MIN_NOISE_FLOOR_S = 0.001


@dataclass(frozen=True)
class CompareMetric:
    """A comparable figure: a latency percentile, a throughput rate or a failure proportion."""

    name: str
    kind: Literal["percentile", "rate", "proportion"]
    unit: Unit
    higher_is_worse: bool
    family: str = ""  # percentile: ttft | ttfat | itl | e2e | session
    q: float = 0.0


def _registry() -> dict[str, CompareMetric]:
    found = [
        CompareMetric(f"{fam}_{stat}", "percentile", Unit.SECONDS, True, fam, float(stat[1:]))
        for fam in FAMILIES
        for stat in ("p50", "p90", "p95", "p99")
    ]
    found += [
        CompareMetric(name, "rate", Unit.NUMBER, False)
        for name in (
            "requests_per_s",
            "output_tokens_per_s",
            "answer_tokens_per_s",
            "sessions_per_min",
        )
    ]
    found += [
        CompareMetric(name, "proportion", Unit.RATIO, True)
        for name in ("error_rate", "session_failure_rate")
    ]
    return {m.name: m for m in found}


COMPARE_METRICS = _registry()
DEFAULT_METRICS = (
    "ttft_p50",
    "ttft_p95",
    "itl_p50",
    "itl_p95",
    "e2e_p50",
    "e2e_p95",
    "session_p50",
    "session_p95",
    "output_tokens_per_s",
    "requests_per_s",
    "sessions_per_min",
    "error_rate",
    "session_failure_rate",
)
# Added to the defaults when either run saw reasoning tokens: for other models the time to
# first answer token is TTFT and answer tokens are output tokens, rows that say nothing new.
REASONING_METRICS = ("ttfat_p50", "ttfat_p95", "answer_tokens_per_s")


def resolve_metrics(names: Iterable[str]) -> list[CompareMetric]:
    """The named metrics (comma lists allowed); a one-line UsageError for unknown names."""
    picked: dict[str, CompareMetric] = {}
    for name in (n.strip() for raw in names for n in raw.split(",")):
        if name not in COMPARE_METRICS:
            raise UsageError(
                f"--metric {name!r} cannot be compared; choose from {', '.join(COMPARE_METRICS)}"
            )
        picked.setdefault(name, COMPARE_METRICS[name])
    return list(picked.values())


@dataclass(frozen=True)
class MetricChange:
    """One metric of the two runs, its relative change, interval, p-value and verdict."""

    metric: str
    unit: Unit
    baseline: float | None
    new: float | None
    change: float | None  # new / baseline - 1
    ci_low: float | None  # the change's confidence interval
    ci_high: float | None
    p_value: float | None  # rank test (latencies), z-test (rates, proportions)
    samples: tuple[int, int]  # what each side's estimate rests on
    verdict: Verdict


@dataclass(frozen=True)
class Comparison:
    """Every compared metric of NEW against BASELINE, and the rules they were judged by."""

    baseline: str
    new: str
    max_regression: float
    confidence: float
    noise_floor_s: float  # latency differences at most this large never count
    source: str  # where latency samples came from
    changes: list[MetricChange]

    @property
    def regressions(self) -> list[MetricChange]:
        """The metrics that regressed."""
        return [c for c in self.changes if c.verdict == "regression"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (for --json)."""
        data = asdict(self)
        data["schema"] = "agentload.compare/1"
        data["regressed"] = bool(self.regressions)
        for change in data["changes"]:
            change["unit"] = str(change["unit"])
            change["samples"] = list(change["samples"])
            for key in ("change", "ci_low", "ci_high"):
                if isinstance(change[key], float) and math.isinf(change[key]):
                    change[key] = None  # JSON has no infinity; "from zero" reads as null
        return data


def _verdict(
    metric: CompareMetric, est: Estimate | None, tolerance: float, within_noise: bool
) -> Verdict:
    if est is None:
        return "no data"
    if within_noise:
        return "unchanged"
    sign = 1.0 if metric.higher_is_worse else -1.0
    worse, low, high = sign * est.change, sign * est.low, sign * est.high
    clear_worse, clear_better = min(low, high) > 0, max(low, high) < 0
    if worse > tolerance and clear_worse:
        return "regression"
    if -worse > tolerance and clear_better:
        return "improvement"
    return "unchanged"


def _estimate(
    metric: CompareMetric, base: Side, new: Side, confidence: float, resamples: int, seed: int
) -> tuple[tuple[float | None, float | None], tuple[int, int], Estimate | None]:
    """(baseline, new) values, (baseline, new) sample sizes, and the change estimate."""
    rng = random.Random(f"{seed}:{metric.name}")  # str seeds are stable across processes
    if metric.kind == "percentile":
        a, b = base.samples[metric.family], new.samples[metric.family]
        if not (a and b):
            return (None, None), (len(a), len(b)), None
        qa, qb = quantile(a, metric.q), quantile(b, metric.q)
        effects = (
            design_effect(base.in_time_order.get(metric.family, ()), qa),
            design_effect(new.in_time_order.get(metric.family, ()), qb),
        )
        est = percentile_change(
            a, b, metric.q, confidence=confidence, resamples=resamples, rng=rng, effects=effects
        )
        return (qa, qb), (len(a), len(b)), est
    if metric.kind == "rate":
        shown = (rate_value(base.run, metric.name), rate_value(new.run, metric.name))
        ra = rate_inputs(base.run, metric.name, base.token_sq)
        rb = rate_inputs(new.run, metric.name, new.token_sq)
        counts = (int(ra[0]) if ra else 0, int(rb[0]) if rb else 0)
        return shown, counts, rate_change(*ra, *rb, confidence=confidence) if ra and rb else None
    ha, na = proportion_inputs(base.run, metric.name)
    hb, nb = proportion_inputs(new.run, metric.name)
    shown = (ha / na if na else None, hb / nb if nb else None)
    return shown, (na, nb), proportion_change(ha, na, hb, nb, confidence=confidence)


def compare_runs(
    baseline: RunResults,
    new: RunResults,
    metrics: Sequence[CompareMetric] | None = None,
    *,
    max_regression: float = 0.10,
    confidence: float = 0.99,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare `new` with `baseline` metric by metric (default: DEFAULT_METRICS)."""
    defaults = list(DEFAULT_METRICS)
    if any((run.summary.get("tokens") or {}).get("reasoning") for run in (baseline, new)):
        defaults[2:2] = REASONING_METRICS[:2]  # beside TTFT
        defaults.insert(defaults.index("output_tokens_per_s") + 1, REASONING_METRICS[2])
    picked = list(metrics) if metrics else resolve_metrics(defaults)
    floor = noise_floor_s(baseline, new)
    # Both sides from the same source, or ITL would compare per-request means with gaps.
    from_records = baseline.has_records and new.has_records
    base, other = read_side(baseline, from_records), read_side(new, from_records)
    changes = []
    for metric in picked:
        shown, counts, est = _estimate(metric, base, other, confidence, resamples, seed)
        a, b = shown
        # A latency can only move by more than the client's own timing noise to count.
        within_noise = (
            metric.unit is Unit.SECONDS and a is not None and b is not None and abs(b - a) <= floor
        )
        changes.append(
            MetricChange(
                metric=metric.name,
                unit=metric.unit,
                baseline=shown[0],
                new=shown[1],
                change=est.change if est else None,
                ci_low=est.low if est else None,
                ci_high=est.high if est else None,
                p_value=est.p_value if est else None,
                samples=counts,
                verdict=_verdict(metric, est, max_regression, within_noise),
            )
        )
    source = "steps.jsonl / sessions.jsonl" if from_records else "summary.json histograms"
    return Comparison(
        str(baseline.path), str(new.path), max_regression, confidence, floor, source, changes
    )


def noise_floor_s(*runs: RunResults) -> float:
    """The smallest latency difference attributed to the target, not to the load generator.

    A token's timestamp can be late by as much as the generator's event-loop lag, so two
    runs' latencies differing by less than the larger loop-lag p99 (at least 1 ms) are
    within the measurement's own noise, however many samples agree.
    """
    lags = [summary_number(r.summary, "generator", "loop_lag_p99_s") or 0.0 for r in runs]
    return max([MIN_NOISE_FLOOR_S, *lags])
