"""Least-squares lines with standard errors, and the fits the twin is made of."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Estimate", "LineFit", "QuadraticFit", "fit_line", "fit_quadratic", "relative_spread"]


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


@dataclass(frozen=True, slots=True)
class QuadraticFit:
    """y = c0 + c1 * x + c2 * x^2 by ordinary least squares, with standard errors."""

    coefficients: tuple[float, float, float]
    stderrs: tuple[float, float, float]
    points: int

    def predict(self, x: float) -> float:
        """The curve's value at `x`."""
        c0, c1, c2 = self.coefficients
        return c0 + c1 * x + c2 * x * x


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """x with matrix @ x = rhs (Gaussian elimination, partial pivoting); ValueError if singular."""
    n = len(rhs)
    a = [[*row, b] for row, b in zip(matrix, rhs, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            raise ValueError("singular system")
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                a[r] = [v - factor * w for v, w in zip(a[r], a[col], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def fit_quadratic(xs: Sequence[float], ys: Sequence[float]) -> QuadraticFit:
    """The least-squares parabola through (xs, ys) and its coefficients' standard errors.

    ValueError with fewer than three distinct xs. x is scaled to its largest value inside,
    so that prompt lengths in the thousands keep the normal equations well conditioned.
    """
    n = len(xs)
    if n != len(ys):
        raise ValueError(f"{n} xs but {len(ys)} ys")
    if len(set(xs)) < 3:
        raise ValueError("a parabola needs at least three distinct x values")
    scale = max(abs(x) for x in xs) or 1.0
    us = [x / scale for x in xs]
    powers = [[1.0, u, u * u] for u in us]
    normal = [[math.fsum(p[i] * p[j] for p in powers) for j in range(3)] for i in range(3)]
    rhs = [math.fsum(p[i] * y for p, y in zip(powers, ys, strict=True)) for i in range(3)]
    c = _solve(normal, rhs)
    residual = math.fsum(
        (y - c[0] - c[1] * u - c[2] * u * u) ** 2 for u, y in zip(us, ys, strict=True)
    )
    variance = residual / (n - 3) if n > 3 else 0.0
    inverse = [_solve(normal, [1.0 if i == j else 0.0 for i in range(3)]) for j in range(3)]
    se = [math.sqrt(max(variance * inverse[i][i], 0.0)) for i in range(3)]
    unscale = (1.0, 1.0 / scale, 1.0 / scale**2)
    return QuadraticFit(
        (c[0] * unscale[0], c[1] * unscale[1], c[2] * unscale[2]),
        (se[0] * unscale[0], se[1] * unscale[1], se[2] * unscale[2]),
        n,
    )


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median of repeated measurements of one thing; 0 for fewer than two."""
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    if middle <= 0:
        return math.inf if max(values) > min(values) else 0.0
    return (max(values) - min(values)) / middle
