"""A run whose every recent request failed: stop measuring a target that is not answering."""

from __future__ import annotations

from collections import deque

__all__ = ["FailureStorm"]

# Fewer failures than this in the window say too little (a handful of cold-start errors).
_MIN_FAILURES = 20


class FailureStorm:
    """Watches cumulative request counts; fires when `window_s` went by with failures only.

    Fed the run's running totals every tick, it keeps what it needs to look `window_s`
    back (one entry per tick), so memory stays bounded however long the run.
    """

    def __init__(self, window_s: float, min_failures: int = _MIN_FAILURES) -> None:
        self.window_s = window_s
        self.min_failures = min_failures
        self._ticks: deque[tuple[float, int, int]] = deque()

    def check(self, elapsed_s: float, ok: int, failed: int) -> str | None:
        """Why the run should stop now (every request of the last window failed), or None."""
        if self.window_s <= 0:
            return None
        ticks = self._ticks
        ticks.append((elapsed_s, ok, failed))
        while len(ticks) > 1 and ticks[1][0] <= elapsed_s - self.window_s:
            ticks.popleft()
        since, ok_then, failed_then = ticks[0]
        if elapsed_s - since < self.window_s:
            return None
        new_failed = failed - failed_then
        if ok == ok_then and new_failed >= self.min_failures:
            return (
                f"failure storm: all {new_failed:,} requests of the last "
                f"{elapsed_s - since:.0f} s failed"
            )
        return None
