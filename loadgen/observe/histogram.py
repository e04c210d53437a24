"""A mergeable log-linear histogram for latencies (seconds) and token counts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["LOW_VALUE", "SUB_BUCKETS", "LatencyHistogram", "censored_percentile"]

# Linear sub-buckets per power of two. A power of two keeps the index arithmetic exact in
# floating point; 128 bounds the relative error of a reported value at 1/256 (0.39%).
SUB_BUCKETS = 128
# Values below this (1 µs, or a token count of 0) share one bucket: log buckets cannot
# reach zero, and nothing measured here is meaningful below a microsecond.
LOW_VALUE = 1e-6

_SCALE = 2 * SUB_BUCKETS
# Module-level aliases: record() is on the hot path and global lookups beat attribute ones.
_frexp = math.frexp
_floor = math.floor


class LatencyHistogram:
    """Counts of non-negative values in log-linear buckets, plus exact count, sum, min and max.

    A value v = m·2^e (0.5 ≤ m < 1) goes to bucket e·SUB_BUCKETS + ⌊m·2·SUB_BUCKETS⌋, so
    bucket indices grow with the value and two histograms merge by adding counts.
    """

    __slots__ = ("_buckets", "_count", "_low", "_max", "_min", "_sum")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self._low = 0  # values below LOW_VALUE
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def record(self, value: float) -> None:
        """Add one value (seconds, or a count); raises ValueError for negative, NaN or inf."""
        if value < LOW_VALUE:
            if value < 0:
                raise ValueError(f"cannot record {value!r}: histogram values must be ≥ 0")
            self._low += 1
        else:
            mantissa, exponent = _frexp(value)
            try:
                index = exponent * SUB_BUCKETS + _floor(mantissa * _SCALE)
            except (ValueError, OverflowError):
                raise ValueError(
                    f"cannot record {value!r}: histogram values must be finite"
                ) from None
            buckets = self._buckets
            buckets[index] = buckets.get(index, 0) + 1
        self._count += 1
        self._sum += value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def record_many(self, values: Iterable[float]) -> None:
        """Add every value of `values`."""
        record = self.record
        for value in values:
            record(value)

    def merge(self, other: LatencyHistogram) -> None:
        """Add `other`'s values to this histogram, exactly as if they had been recorded here."""
        buckets = self._buckets
        for index, n in other._buckets.items():
            buckets[index] = buckets.get(index, 0) + n
        self._low += other._low
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> LatencyHistogram:
        """An independent histogram with the same contents."""
        twin = LatencyHistogram()
        twin.merge(self)
        return twin

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return self._count

    @property
    def sum(self) -> float:
        """The sum of the recorded values."""
        return self._sum

    @property
    def min(self) -> float | None:
        """The smallest recorded value (exact), or None when empty."""
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        """The largest recorded value (exact), or None when empty."""
        return self._max if self._count else None

    @property
    def mean(self) -> float | None:
        """The exact mean, or None when empty."""
        return self._sum / self._count if self._count else None

    def percentile(self, q: float) -> float | None:
        """The nearest-rank q-th percentile (0 ≤ q ≤ 100) within 0.4%, or None when empty.

        The sample of rank ⌈q·n/100⌉ lies in some bucket; its midpoint is returned, clamped
        to the exact [min, max]. Values in the low bucket are reported as min.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {q!r}")
        if not self._count:
            return None
        rank = min(max(math.ceil(q * self._count / 100), 1), self._count)
        seen = self._low
        if seen >= rank:
            return self._min
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return self._point(index)
        return self._max  # unreachable while counts are consistent

    def count_above(self, value: float) -> int:
        """How many recorded values exceed `value`, to the percentiles' precision: a value
        counts when its bucket's reported point (as percentile() reports it) does."""
        if not self._count or value >= self._max:
            return 0
        if value < self._min:
            return self._count
        above = sum(n for index, n in self._buckets.items() if self._point(index) > value)
        return above + (self._low if self._min > value else 0)

    def _point(self, index: int) -> float:
        """The value a bucket's samples are reported as: its midpoint, within [min, max]."""
        exponent, sub = divmod(index - SUB_BUCKETS, SUB_BUCKETS)
        middle = math.ldexp((SUB_BUCKETS + sub + 0.5) / _SCALE, exponent)
        return min(max(middle, self._min), self._max)

    def quantiles_dict(self) -> dict[str, float | None]:
        """{"p50", "p90", "p95", "p99", "max", "mean"}; every value None when empty."""
        return {
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "max": self.max,
            "mean": self.mean,
        }

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-able form: totals plus only the non-empty buckets."""
        return {
            "sub_buckets": SUB_BUCKETS,
            "count": self._count,
            "sum": self._sum,
            "min": self.min,
            "max": self.max,
            "low": self._low,
            "buckets": {str(index): n for index, n in sorted(self._buckets.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """Rebuild a histogram from `to_dict()` output; raises ValueError if inconsistent."""
        if data.get("sub_buckets") != SUB_BUCKETS:
            raise ValueError(
                f"histogram has {data.get('sub_buckets')!r} sub-buckets per power of two, "
                f"this version reads only {SUB_BUCKETS}"
            )
        hist = cls()
        hist._buckets = {int(index): int(n) for index, n in data["buckets"].items() if n}
        hist._low = int(data["low"])
        hist._count = int(data["count"])
        hist._sum = float(data["sum"])
        if hist._count:
            hist._min = float(data["min"])
            hist._max = float(data["max"])
        if hist._low + sum(hist._buckets.values()) != hist._count:
            raise ValueError("histogram bucket counts do not add up to its count")
        return hist

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        # Float addition is not associative, so merged sums may differ in the last bits.
        return (
            self._buckets == other._buckets
            and self._low == other._low
            and self._count == other._count
            and (self._min, self._max) == (other._min, other._max)
            and math.isclose(self._sum, other._sum, rel_tol=1e-9, abs_tol=1e-12)
        )

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self._count}, p50={self.percentile(50)})"


def censored_percentile(
    ended: LatencyHistogram, running: LatencyHistogram, q: float
) -> float | None:
    """The q-th percentile of durations of which `ended` were seen whole and `running` only
    up to an age (right-censored: each lasted at least that long): Kaplan-Meier's estimate.

    Walking up the buckets, each bucket's ended samples remove their share of the survivors
    still at risk (those not yet ended nor censored; ties: ended first, as usual); the
    percentile is the first bucket where the estimated fraction ended reaches q%. None when it
    never does within what was seen: the percentile then lies beyond the longest duration or
    age observed. With nothing running this is ended.percentile(q).
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q!r}")
    if not running.count:
        return ended.percentile(q)
    at_risk = ended.count + running.count
    surviving = 1.0
    wanted = q / 100.0 - 1e-12  # products of fractions: leave room for rounding
    rows = [(None, ended._low, running._low)] + [
        (index, ended._buckets.get(index, 0), running._buckets.get(index, 0))
        for index in sorted(ended._buckets.keys() | running._buckets.keys())
    ]
    for index, done, censored in rows:
        if done:
            surviving *= 1.0 - done / at_risk
            if 1.0 - surviving >= wanted:
                return ended._min if index is None else ended._point(index)
        at_risk -= done + censored
    return None
