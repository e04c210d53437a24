"""The statistics behind `agentload compare`, each giving a CI of the relative change.

Percentile bootstrap and rank test for latencies (counting the samples a run's time order
shows to move together once), compound Poisson for rates, log risk ratio for failure
proportions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "Estimate",
    "design_effect",
    "mann_whitney_p",
    "percentile_change",
    "proportion_change",
    "quantile",
    "rate_change",
    "z_for",
]

# The rank test sorts both samples; beyond this many values per side its p-value is already
# as small as it gets, so a fixed-seed subsample keeps it fast on long runs.
RANK_TEST_MAX_SAMPLES = 20_000


@dataclass(frozen=True)
class Estimate:
    """A relative change (new / baseline - 1) with its confidence interval and p-value."""

    change: float
    low: float
    high: float
    p_value: float | None


def z_for(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (2.576 for 0.99)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def quantile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q ≤ 100) of a sorted, non-empty sample."""
    n = len(ordered)
    rank = min(max(math.ceil(q * n / 100), 1), n)
    return ordered[rank - 1]


def design_effect(in_time_order: Sequence[float], threshold: float) -> float:
    """How many times the variance of a percentile at `threshold` exceeds the i.i.d. one (≥ 1).

    Requests in flight together share the server's moment: one GC pause or preemption burst
    delays all of them, so a run's samples beyond a percentile come in clumps, and n of them
    carry the evidence of n / effect independent ones. A sample percentile's variance is
    that of the fraction of samples at or below it; the batch-means estimate of that
    fraction's long-run variance over the run's time order, against the i.i.d. p(1-p), is
    the effect. Too few samples to batch (< 16) count as independent.
    """
    n = len(in_time_order)
    if n < 16:
        return 1.0
    size = math.isqrt(n)  # √n batches of √n samples: both grow, as batch means need
    batches = n // size
    below = [1.0 if v <= threshold else 0.0 for v in in_time_order[: batches * size]]
    p = sum(below) / len(below)
    if p in (0.0, 1.0):
        return 1.0
    means = [sum(below[i * size : (i + 1) * size]) / size for i in range(batches)]
    spread = sum((m - p) ** 2 for m in means) / (batches - 1)
    return max(1.0, size * spread / (p * (1.0 - p)))


def percentile_change(
    base: Sequence[float],
    new: Sequence[float],
    q: float,
    *,
    confidence: float,
    resamples: int,
    rng: random.Random,
    effects: tuple[float, float] = (1.0, 1.0),
) -> Estimate:
    """Bootstrap CI of the relative change of the q-th percentile; samples sorted, non-empty.

    A bootstrap resample's k-th order statistic is the sample's value at rank ⌈n·U⌉ where
    U ~ Beta(k, n-k+1) (the k-th of n uniforms), so each resample costs O(1) rather than n
    draws and a sort: exactly the percentile bootstrap, at any sample size. With `effects`
    (each side's `design_effect`) the uniforms number n / effect: the interval is as wide as
    the independent evidence warrants, and still drawn from the sample's own values.
    """
    b0, n0 = quantile(base, q), quantile(new, q)
    ratios = sorted(
        _resampled(new, q, effects[1], rng) / max(_resampled(base, q, effects[0], rng), 1e-12) - 1.0
        for _ in range(resamples)
    )
    tail = (1.0 - confidence) / 2
    low = ratios[int(tail * (resamples - 1))]
    high = ratios[math.ceil((1.0 - tail) * (resamples - 1))]
    # The bootstrap's own p-value would duplicate the CI; the rank test adds a second view.
    return Estimate(n0 / max(b0, 1e-12) - 1.0, low, high, mann_whitney_p(base, new, rng))


def _resampled(ordered: Sequence[float], q: float, effect: float, rng: random.Random) -> float:
    n = len(ordered)
    independent = max(n / effect, 1.0)
    k = min(max(math.ceil(q * independent / 100), 1), independent)
    u = rng.betavariate(k, independent - k + 1)
    return ordered[min(max(math.ceil(n * u), 1), n) - 1]


def mann_whitney_p(a: Sequence[float], b: Sequence[float], rng: random.Random) -> float | None:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tie-corrected)."""
    if len(a) > RANK_TEST_MAX_SAMPLES:
        a = rng.sample(list(a), RANK_TEST_MAX_SAMPLES)
    if len(b) > RANK_TEST_MAX_SAMPLES:
        b = rng.sample(list(b), RANK_TEST_MAX_SAMPLES)
    n1, n2 = len(a), len(b)
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        return None
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    rank_sum_a = 0.0
    ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        mid_rank = (i + j) / 2 + 1  # ranks are 1-based; tied values share the average
        rank_sum_a += mid_rank * sum(1 for _, side in pooled[i : j + 1] if side == 0)
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    u = rank_sum_a - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0  # every value equal: no evidence of any shift
    diff = u - mean
    # Continuity correction: U moves in steps of 1, the normal curve does not.
    z = (abs(diff) - 0.5) / math.sqrt(var) if abs(diff) >= 0.5 else 0.0
    return _two_sided_p(z)


def rate_change(
    base_total: float,
    base_sq: float,
    base_s: float,
    new_total: float,
    new_sq: float,
    new_s: float,
    *,
    confidence: float,
) -> Estimate | None:
    """CI of the relative change of a rate (total / seconds), events taken as compound Poisson.

    Each run's total is a sum of per-event amounts c (1 per request, tokens per request),
    whose variance under Poisson arrivals is Σc² (`*_sq`). A closed loop is steadier than
    Poisson, so the interval is conservative: it errs toward "no clear change".
    """
    if min(base_total, new_total, base_s, new_s) <= 0:
        return None
    log_ratio = math.log((new_total / new_s) / (base_total / base_s))
    se = math.sqrt(base_sq / base_total**2 + new_sq / new_total**2)
    z = z_for(confidence)
    return Estimate(
        math.exp(log_ratio) - 1.0,
        math.exp(log_ratio - z * se) - 1.0,
        math.exp(log_ratio + z * se) - 1.0,
        _two_sided_p(log_ratio / se) if se > 0 else None,
    )


def proportion_change(
    base_hits: int, base_n: int, new_hits: int, new_n: int, *, confidence: float
) -> Estimate | None:
    """CI of the relative change of a proportion, and a two-proportion z-test p-value.

    The interval is Katz's log risk ratio with 0.5 added to each count, so that zero
    failures on either side still give an interval.
    """
    if base_n <= 0 or new_n <= 0:
        return None
    p0, p1 = base_hits / base_n, new_hits / new_n
    # From zero failures to some is an unbounded relative change; zero to zero is none.
    change = p1 / p0 - 1.0 if p0 > 0 else (math.inf if p1 > 0 else 0.0)
    a, b = base_hits + 0.5, new_hits + 0.5
    log_rr = math.log((b / (new_n + 1)) / (a / (base_n + 1)))
    se = math.sqrt(max(1 / a - 1 / (base_n + 1) + 1 / b - 1 / (new_n + 1), 0.0))
    z = z_for(confidence)
    pooled = (base_hits + new_hits) / (base_n + new_n)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / base_n + 1 / new_n))
    p_value = _two_sided_p((p1 - p0) / spread) if spread > 0 else 1.0
    return Estimate(
        change, math.exp(log_rr - z * se) - 1.0, math.exp(log_rr + z * se) - 1.0, p_value
    )
