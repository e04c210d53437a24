"""Which load to try next: grow geometrically until an SLO breaks, then bisect to a resolution."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LevelResult", "Search", "SearchSettings"]


@dataclass(frozen=True)
class SearchSettings:
    """Where the search starts, how fast it grows and how finely it settles."""

    start: float = 1.0
    growth: float = 2.0
    resolution: float = 0.1  # stop bisecting once bad - good <= resolution * good
    integer: bool = True  # closed loop: whole agents, and a 1-agent resolution floor
    max_load: float = 100_000.0


@dataclass
class LevelResult:
    """What one load level measured in its steady window, and whether it held every SLO."""

    load: float
    figures: dict[str, Any]
    passed: bool
    broken: list[str] = field(default_factory=list)  # one line per SLO that failed
    stop: str | None = None  # a reason that ends the search at this level


class Search:
    """The state of an adaptive search; `next_load()` is None once it has settled."""

    def __init__(self, settings: SearchSettings) -> None:
        if settings.start <= 0 or settings.growth <= 1:
            raise ValueError("start must be > 0 and growth > 1")
        self.settings = settings
        self.good: float | None = None
        self.bad: float | None = None
        self._next: float | None = self._round(settings.start)

    def _round(self, load: float) -> float:
        return float(max(1, round(load))) if self.settings.integer else load

    def next_load(self) -> float | None:
        """The next load to measure, or None when the ceiling is bracketed finely enough."""
        return self._next

    def record(self, load: float, passed: bool) -> None:
        """Take one level's verdict and choose the next load."""
        s = self.settings
        if passed:
            self.good = max(self.good or 0.0, load)
        else:
            self.bad = load if self.bad is None else min(self.bad, load)
        if self.bad is None:  # still growing
            grown = self._round(load * s.growth)
            self._next = grown if grown <= s.max_load and grown > load else None
            return
        low = self.good or 0.0
        if self.good is None and s.integer and self.bad <= 1:
            self._next = None  # even one agent breaks an SLO
            return
        step = max(s.resolution * low, 1.0 if s.integer else 0.0)
        if self.bad - low <= step or (not s.integer and low == 0 and self.bad < s.start / 64):
            self._next = None
            return
        mid = self._round((low + self.bad) / 2) if low else self._round(self.bad / s.growth)
        if s.integer:
            mid = float(min(max(mid, math.floor(low) + 1), math.ceil(self.bad) - 1))
        self._next = mid if low < mid < self.bad else None
