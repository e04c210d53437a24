"""Least-squares lines with standard errors, and the fits the twin is made of."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Estimate", "LineFit", "fit_line", "relative_spread"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A fitted value, its standard error (None where it has none) and how it was measured."""

    value: float
    stderr: float | None
    method: str

    def relative_error(self) -> float | None:
        """stderr / |value|; None without a stderr or for a zero value."""
        if self.stderr is None or self.value == 0:
            return None
        return self.stderr / abs(self.value)


@dataclass(frozen=True, slots=True)
class LineFit:
    """y = intercept + slope * x by ordinary least squares over `points` points."""

    intercept: float
    slope: float
    intercept_se: float
    slope_se: float
    points: int

    def predict(self, x: float) -> float:
        """The line's value at `x`."""
        return self.intercept + self.slope * x


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> LineFit:
    """The least-squares line through (xs, ys) and the standard errors of its coefficients.

    ValueError when there are fewer than two points or fewer than two distinct xs (no slope
    can be told). With exactly two points the errors are 0: nothing measures the scatter.
    """
    n = len(xs)
    if n != len(ys):
        raise ValueError(f"{n} xs but {len(ys)} ys")
    if n < 2 or len(set(xs)) < 2:
        raise ValueError("a line needs at least two distinct x values")
    mean_x = math.fsum(xs) / n
    mean_y = math.fsum(ys) / n
    sxx = math.fsum((x - mean_x) ** 2 for x in xs)
    sxy = math.fsum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    residual = math.fsum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    variance = residual / (n - 2) if n > 2 else 0.0
    slope_se = math.sqrt(variance / sxx)
    intercept_se = math.sqrt(variance * (1.0 / n + mean_x**2 / sxx))
    return LineFit(intercept, slope, intercept_se, slope_se, n)


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median of repeated measurements of one thing; 0 for fewer than two."""
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    if middle <= 0:
        return math.inf if max(values) > min(values) else 0.0
    return (max(values) - min(values)) / middle
