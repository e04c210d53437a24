"""When a load generator counts as saturated: its CPU, and lags judged on their tail.

Shared by the ceiling search (a saturated level stops it) and calibration (a saturated probe
refuses the fit): both need "one stall of a busy machine is not saturation".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loadgen.observe.generator_health import (
    CPU_SATURATED_PERCENT,
    LOOP_LAG_SATURATED_S,
    SCHEDULE_LAG_SATURATED_S,
)
from loadgen.observe.histogram import LatencyHistogram

__all__ = ["IDLE_LATE_SHARE", "MIN_LATE_SAMPLES", "GeneratorLimits", "lag_tail"]


# A lag bar is crossed when more than 1% of the samples, and at least this many of them, are
# above it. Over a short steady period a p99 is the single worst sample, and one stall of a
# busy machine (a GC pause, a noisy neighbour) is not a generator that cannot keep up.
MIN_LATE_SAMPLES = 3


# With the generator's CPU below half its bar, lag counts only when this share of samples
# is late (see GeneratorLimits.reasons).
IDLE_LATE_SHARE = 0.05


def lag_tail(lags: LatencyHistogram, share: float = 0.01) -> tuple[float, int] | None:
    """The lag reached by the slowest `share` of samples (1%: the p99; at least
    MIN_LATE_SAMPLES of them), and how many samples that is; None when there are fewer."""
    n = lags.count
    if n < MIN_LATE_SAMPLES:
        return None
    # The quantile's nearest rank, counted down from the slowest sample.
    late = max(n - math.ceil((1 - share) * n) + 1, MIN_LATE_SAMPLES)
    value = lags.percentile(100.0 * (n - late + 0.5) / n)  # the late-th slowest sample
    return (value or 0.0), late


@dataclass(frozen=True)
class GeneratorLimits:
    """What counts as a saturated load generator (defaults: `loadgen.observe`'s)."""

    cpu_percent: float = CPU_SATURATED_PERCENT
    loop_lag_s: float = LOOP_LAG_SATURATED_S
    schedule_lag_s: float = SCHEDULE_LAG_SATURATED_S

    def reasons(
        self,
        report: dict[str, Any],
        *,
        loop_lag: LatencyHistogram | None = None,
        schedule_lag: LatencyHistogram | None = None,
    ) -> list[str]:
        """Why the generator counts as saturated under these limits.

        A lag is judged on its histogram when one is given (by `lag_tail`: a single stall
        is not saturation), else on the report's p99.
        """
        out = []
        cpu = report.get("cpu_percent")
        if cpu is not None and cpu >= self.cpu_percent:
            out.append(f"CPU at {cpu:.0f}% of one core (saturated at {self.cpu_percent:g}%)")
        # A generator using little of its core that still lags is on a machine busy with
        # something else: a few late samples then say that, not that the generator cannot
        # keep up. It takes a broad tail (IDLE_LATE_SHARE of samples) to call it saturated.
        idle = cpu is not None and cpu < self.cpu_percent / 2
        for what, unit, lags, p99, bar in (
            ("event-loop lag", "probes", loop_lag, report.get("loop_lag_p99_s"), self.loop_lag_s),
            ("schedule lag", "steps", schedule_lag, report.get("schedule_lag_p99_s"),
             self.schedule_lag_s),
        ):  # fmt: skip
            reason = _lag_reason(what, unit, lags, p99, bar)
            if reason is not None and idle and lags is not None:
                reason = _lag_reason(what, unit, lags, p99, bar, share=IDLE_LATE_SHARE)
            if reason is not None:
                out.append(reason)
        return out


def _lag_reason(
    what: str,
    unit: str,
    lags: LatencyHistogram | None,
    p99: float | None,
    bar_s: float,
    share: float = 0.01,
) -> str | None:
    """Why this lag is past its bar, or None: on its samples when given (the slowest
    `share` of them), else on its p99."""
    among = None
    if lags is not None:
        if (tail := lag_tail(lags, share)) is None:
            return None
        p99, late = tail
        n = lags.count
        if late != n - math.ceil(0.99 * n) + 1:  # not the p99 itself: say how many were late
            among = f"or more in {late} of {n} {unit}"
    if p99 is None or p99 <= bar_s:
        return None
    lag_ms = p99 * 1000
    ms = f"{lag_ms:.0f} ms" if lag_ms >= 10 else f"{lag_ms:.2g} ms"  # sub-ms: a bar of 0
    told = f"{what} p99 {ms}" if among is None else f"{what} {ms} {among}"
    return f"{told} (saturated above {bar_s * 1000:g} ms)"
