"""Live progress while a run goes on: a compact rich panel on a terminal, plain lines elsewhere.

A snapshot is a plain dict (every key optional)::

    {"elapsed_s": 42.0, "active_agents": 200,
     "sessions": {"started": 130, "completed": 120, "failed": 3, "aborted": 0},
     "requests": {"total": 5430, "failed": 12},
     "output_tokens": 1_234_567,          # cumulative; the rate is computed over ~10 s
     "ttft_p95_s": 1.23,
     "failures": {"cache_miss": 12, "stream_truncated": 3}}

`snapshot_from_stats()` builds one from a run's RunStats.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from loadgen.observe.run_stats import RunStats

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live

__all__ = ["LiveProgress", "snapshot_from_stats"]

_RATE_WINDOW_S = 10.0  # the tokens/s shown is over about this much recent time


def snapshot_from_stats(stats: RunStats, elapsed_s: float, active_agents: int) -> dict[str, Any]:
    """A progress snapshot of `stats` (cheap: no histogram is copied)."""
    s = stats.sessions
    return {
        "elapsed_s": elapsed_s,
        "active_agents": active_agents,
        "sessions": {
            "started": s.started,
            "completed": s.completed,
            "failed": s.failed,
            "aborted": s.aborted,
        },
        "requests": {"total": stats.requests_total, "failed": stats.requests_failed},
        "output_tokens": stats.completion_tokens,
        "ttft_p95_s": stats.ttft_s.percentile(95),
        "failures": {k: n for k, n in stats.failures.items() if n},
    }


def _clock_text(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _latency(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


class LiveProgress:
    """Shows a run's progress on `stream` while it goes on.

    A live panel when `stream` is a terminal, else a plain line every `interval_s` seconds,
    and nothing at all when `quiet`.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        title: str = "agentload run",
        quiet: bool = False,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.title = title
        self.interval_s = interval_s
        self._clock = clock
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = "quiet" if quiet else ("live" if is_tty else "lines")
        self.total_s = 0.0
        self._t0 = 0.0
        self._last_line = -1e18
        self._snapshot: dict[str, Any] = {}
        self._window: deque[tuple[float, float]] = deque()
        self._live: Live | None = None

    def start(self, total_s: float) -> None:
        """Begin showing progress of a run planned to last `total_s` seconds."""
        self.total_s = total_s
        self._t0 = self._clock()
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, force_terminal=True)
            # No refresh thread: every update() redraws, so nothing runs between updates
            # (and no thread meets gevent's patched threading under Locust).
            self._live = Live(self.renderable(), console=console, auto_refresh=False)
            self._live.start()

    @property
    def elapsed_s(self) -> float:
        """Seconds since start() (or the latest snapshot's own elapsed_s)."""
        given = self._snapshot.get("elapsed_s")
        return float(given) if isinstance(given, int | float) else self._clock() - self._t0

    def tokens_per_s(self) -> float | None:
        """Output tokens per second over the last ~10 s of snapshots."""
        if len(self._window) < 2:
            return None
        (t_first, n_first), (t_last, n_last) = self._window[0], self._window[-1]
        return (n_last - n_first) / (t_last - t_first) if t_last > t_first else None

    def update(self, snapshot: Mapping[str, Any]) -> None:
        """Take the latest snapshot and redraw (or print a line when one is due)."""
        if self.mode == "quiet":
            return
        self._snapshot = dict(snapshot)
        now = self.elapsed_s
        tokens = snapshot.get("output_tokens")
        if isinstance(tokens, int | float):
            self._window.append((now, float(tokens)))
            while len(self._window) > 2 and now - self._window[1][0] >= _RATE_WINDOW_S:
                self._window.popleft()
        if self._live is not None:
            self._live.update(self.renderable(), refresh=True)
        elif now - self._last_line >= self.interval_s:
            self._last_line = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def stop(self) -> None:
        """Stop showing progress (the live panel stays on screen as it last was)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _parts(self) -> dict[str, str]:
        snap = self._snapshot
        sessions = snap.get("sessions") or {}
        requests = snap.get("requests") or {}
        failures = {k: n for k, n in (snap.get("failures") or {}).items() if n}
        rate = self.tokens_per_s()
        elapsed = self.elapsed_s
        return {
            "time": f"{_clock_text(elapsed)} / {_clock_text(self.total_s)}",
            "remaining": _clock_text(max(self.total_s - elapsed, 0.0)),
            "agents": f"{snap.get('active_agents', '-')}",
            "sessions": f"{sessions.get('completed', 0):,} done, {sessions.get('failed', 0):,} "
            f"failed, {sessions.get('aborted', 0):,} aborted",
            "requests": f"{requests.get('total', 0):,} ({requests.get('failed', 0):,} failed)",
            "tokens": "-" if rate is None else f"{rate:,.0f} tok/s",
            "ttft": _latency(snap.get("ttft_p95_s")),
            "failures": ", ".join(f"{k} {n:,}" for k, n in sorted(failures.items())) or "none",
        }

    def line(self) -> str:
        """One plain progress line (the non-terminal form)."""
        p = self._parts()
        return (
            f"[{p['time']}] agents {p['agents']} | sessions {p['sessions']} | "
            f"requests {p['requests']} | output {p['tokens']} | TTFT p95 {p['ttft']} | "
            f"failures: {p['failures']}"
        )

    def renderable(self) -> RenderableType:
        """The live panel: a progress bar and the run's figures so far."""
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        p = self._parts()
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        bar = ProgressBar(
            total=max(self.total_s, 1e-9), completed=min(self.elapsed_s, self.total_s), width=40
        )
        time_row = Table.grid(padding=(0, 2))
        time_row.add_row(bar, f"{p['time']}  ({p['remaining']} left)")
        grid.add_row("elapsed", time_row)
        grid.add_row("agents", f"{p['agents']} active")
        grid.add_row("sessions", p["sessions"])
        grid.add_row("requests", p["requests"])
        grid.add_row("output", p["tokens"])
        grid.add_row("TTFT p95", p["ttft"])
        style = "green" if p["failures"] == "none" else "bold red"
        grid.add_row("failures", Text(p["failures"], style=style))
        return Panel(grid, title=self.title, title_align="left", expand=False)
