"""The rolling-window rule: when one level's measurements are steady and long enough to judge.

A level's steady period is measured in equal slices. The window judged is the most recent
slices (at least `slices` of them, more when sessions are long): it rolls forward when the
level is extended, so a transient left over from the level change drops out of it.

Why this rule (and not "every slice must hold"): a p95 over a quarter of the samples is
noisy; one stall of a 2-core machine breaks a slice that the whole window absorbs. So the
SLOs are judged on the whole rolling window, where percentiles have every sample, and the
slices answer a different question: is the level steady? Its earlier half is compared with
its later half. A level is extended (one slice at a time, up to a bound) only when more time
could change its verdict: a level that held while its median latency still climbs (a queue
growing), its throughput still drifts, or its window covers fewer than a few whole sessions;
or a level that broke while its latency still falls (still settling from the level before),
or whose SLOs had no samples yet. A level that held but still climbs at the bound broke:
a load whose queue keeps growing is not one the target holds. Levels far from the ceiling
are clear on the first window and cost nothing extra; only the ones near it are extended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from loadgen.observe import RunStats

__all__ = [
    "DRIFT_TOLERANCE",
    "MIN_DRIFT_SAMPLES",
    "NOISE_SIGMAS",
    "SESSION_COVER",
    "Drift",
    "Slice",
    "drift",
    "extension_reasons",
    "merge_slices",
    "window_span",
]

# Halves whose throughput or median latency differ by less than this are the same level:
# below it, the ceiling's reported throughput moves less than the search's own resolution.
DRIFT_TOLERANCE = 0.15
# A throughput change smaller than this many standard deviations of the counting noise
# (1/sqrt(requests) relative) is not called drift: short windows hold few requests.
NOISE_SIGMAS = 2.0
# Below this many successful requests in a half, noise hides any drift: no call is made.
MIN_DRIFT_SAMPLES = 10
# The judged window should cover this many typical (median) session lengths, so that whole
# sessions, long ones included, end inside it and per-session SLOs have a fair sample.
SESSION_COVER = 3.0


@dataclass
class Slice:
    """One slice of a level's steady period: its records and its goodput sessions."""

    stats: RunStats
    duration_s: float
    start_s: float = 0.0  # since the steady period began
    judged_sessions: int = 0  # ended in this slice, begun at this level
    goodput_sessions: int = 0  # of those, within every SLO
    judged_tokens: int = 0  # answer tokens of the judged sessions
    goodput_tokens: int = 0  # answer tokens of the goodput sessions
    # The sessions that ended in this slice and began at this level: the ones session SLOs
    # judge (`stats` counts every session that ended, for throughput).
    begun: RunStats = field(default_factory=RunStats)


def merge_slices(slices: Sequence[Slice]) -> Slice:
    """One slice holding every record of `slices` (consecutive), as if measured at once."""
    stats, begun = RunStats(), RunStats()
    for s in slices:
        stats.merge(s.stats)
        begun.merge(s.begun)
    return Slice(
        stats=stats,
        duration_s=sum(s.duration_s for s in slices),
        start_s=slices[0].start_s if slices else 0.0,
        judged_sessions=sum(s.judged_sessions for s in slices),
        goodput_sessions=sum(s.goodput_sessions for s in slices),
        judged_tokens=sum(s.judged_tokens for s in slices),
        goodput_tokens=sum(s.goodput_tokens for s in slices),
        begun=begun,
    )


@dataclass(frozen=True)
class Drift:
    """How the later half of a rolling window differs from its earlier half."""

    throughput: float | None  # relative change of output tokens/s; None: too few samples
    e2e_p50: float | None  # relative change of the median request latency
    noise: float | None  # the throughput change the tolerance and counting noise allow
    throughput_drifting: bool = False
    latency_rising: bool = False
    latency_falling: bool = False

    @property
    def steady(self) -> bool:
        """True when neither throughput nor latency moved beyond the tolerance."""
        return not (self.throughput_drifting or self.latency_rising or self.latency_falling)

    def to_dict(self) -> dict[str, float | bool | None]:
        """The `drift` figures of a level in ceiling.json."""
        return {
            "output_tokens_per_s": _round(self.throughput),
            "e2e_p50": _round(self.e2e_p50),
            "allowed": _round(self.noise),
            "steady": self.steady,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _rate(s: Slice) -> float:
    # Output tokens when the target reports usage; successful requests otherwise.
    work = s.stats.completion_tokens or s.stats.requests_ok
    return work / s.duration_s if s.duration_s > 0 else 0.0


def drift(slices: Sequence[Slice], tolerance: float = DRIFT_TOLERANCE) -> Drift:
    """Compare the earlier and later halves of `slices` (a middle odd slice is left out)."""
    half = len(slices) // 2
    if half == 0:
        return Drift(None, None, None)
    early, late = merge_slices(slices[:half]), merge_slices(slices[-half:])
    n = min(early.stats.requests_ok, late.stats.requests_ok)
    if n < MIN_DRIFT_SAMPLES:
        return Drift(None, None, None)
    noise = max(tolerance, NOISE_SIGMAS / math.sqrt(n))
    before, after = _rate(early), _rate(late)
    change = (after - before) / before if before > 0 else None
    e_hist, l_hist = early.stats.e2e_s, late.stats.e2e_s
    # Both halves hold successful requests (n > 0), so every percentile has a value.
    e25, e50, e75 = (e_hist.percentile(q) or 0.0 for q in (25, 50, 75))
    l50 = l_hist.percentile(50) or 0.0
    # Latency moved when the later median left the earlier half's middle 50% as well as the
    # tolerance: the quartiles keep wide latency spreads from reading as drift, the tolerance
    # keeps near-constant latencies (a fraction of a ms apart) from doing so.
    rising = l50 > (1 + tolerance) * e50 and l50 > e75
    falling = l50 * (1 + tolerance) < e50 and l50 < e25
    return Drift(
        throughput=change,
        e2e_p50=(l50 - e50) / e50 if e50 > 0 else None,
        noise=noise,
        throughput_drifting=change is not None and abs(change) > noise,
        latency_rising=rising,
        latency_falling=falling,
    )


def window_span(
    measured: int,
    base: int,
    slice_s: float,
    typical_session_s: float | None,
    session_cover: float = SESSION_COVER,
) -> int:
    """How many of the latest `measured` slices the rolling window holds.

    At least `base`; enough to cover `session_cover` typical sessions when their length is
    known; everything measured while no session has completed at this level yet (they are
    longer than the level so far, so the window should grow, not roll).
    """
    if typical_session_s is None:
        return measured
    wanted = math.ceil(session_cover * typical_session_s / slice_s - 1e-9)
    return min(measured, max(base, wanted))


def extension_reasons(
    *,
    held: bool,
    unmeasured: Sequence[str],
    trend: Drift,
    window_s: float,
    typical_session_s: float | None,
    session_cover: float = SESSION_COVER,
) -> dict[str, str]:
    """Why one more slice could change this level's verdict, by kind; empty: judge it now.

    `held`: every SLO held on the rolling window; `unmeasured`: the SLOs that had no samples.
    Kinds: latency_rising, throughput_drifting, sessions_uncovered (held levels);
    latency_falling, unmeasured (broken levels).
    """
    reasons = {}
    if held:
        if trend.latency_rising:
            reasons["latency_rising"] = f"e2e p50 rising {trend.e2e_p50:+.0%} across the window"
        if trend.throughput_drifting and trend.throughput is not None:
            reasons["throughput_drifting"] = f"throughput drifting {trend.throughput:+.0%}"
        if typical_session_s is None:
            reasons["sessions_uncovered"] = "no session has completed at this level yet"
        elif window_s < session_cover * typical_session_s * (1 - 1e-9):
            reasons["sessions_uncovered"] = (
                f"window {window_s:.3g}s covers {window_s / typical_session_s:.1f} typical "
                f"sessions of {typical_session_s:.3g}s (wants {session_cover:g})"
            )
    else:
        if trend.latency_falling:
            reasons["latency_falling"] = (
                f"e2e p50 falling {trend.e2e_p50:+.0%} across the window: still settling"
            )
        if unmeasured:
            reasons["unmeasured"] = "no samples yet for " + ", ".join(unmeasured)
    return reasons
