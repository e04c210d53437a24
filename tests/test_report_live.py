"""Live progress: a rich panel on a terminal, a plain line every N seconds elsewhere, and
nothing with --quiet."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from loadgen.observe import RunStats, StepRecord
from loadgen.report import LiveProgress, snapshot_from_stats


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def snapshot(elapsed: float, tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "elapsed_s": elapsed,
        "active_agents": 200,
        "sessions": {"started": 130, "completed": 120, "failed": 3, "aborted": 1},
        "requests": {"total": 5430, "failed": 12},
        "output_tokens": tokens,
        "ttft_p95_s": 1.234,
        "failures": {"stream_truncated": 3, "cache_miss": 12, "timeout": 0},
        **extra,
    }


def test_without_a_terminal_a_plain_line_every_interval() -> None:
    out = io.StringIO()
    clock = FakeClock()
    progress = LiveProgress(out, interval_s=10.0, clock=clock)
    assert progress.mode == "lines"
    progress.start(60.0)
    for second in range(25):
        progress.update(snapshot(float(second), tokens=second * 1000))
    progress.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 0 s, 10 s and 20 s
    assert lines[2] == (
        "[0:20 / 1:00] agents 200 | sessions 120 done, 3 failed, 1 aborted | "
        "requests 5,430 (12 failed) | output 1,000 tok/s | TTFT p95 1.23 s | "
        "failures: cache_miss 12, stream_truncated 3"
    )
    assert "\x1b[" not in out.getvalue()  # no escape codes in logs


def test_quiet_shows_nothing_even_on_a_terminal() -> None:
    out = Terminal()
    progress = LiveProgress(out, quiet=True)
    assert progress.mode == "quiet"
    progress.start(60.0)
    progress.update(snapshot(5.0, 100))
    progress.stop()
    assert out.getvalue() == ""


def test_on_a_terminal_a_live_panel_is_drawn_and_redrawn() -> None:
    out = Terminal()
    progress = LiveProgress(out, title="agentload run · ci-smoke", clock=FakeClock())
    assert progress.mode == "live"
    progress.start(60.0)
    progress.update(snapshot(12.0, 0))
    progress.update(snapshot(13.0, 2500))
    progress.stop()
    text = out.getvalue()
    assert "agentload run · ci-smoke" in text
    assert "2,500 tok/s" in text
    assert "\x1b[" in text  # drawn with terminal control codes


def test_the_panel_shows_time_agents_sessions_tokens_ttft_and_failures() -> None:
    clock = FakeClock()
    progress = LiveProgress(io.StringIO(), clock=clock)
    progress.start(60.0)
    progress.update(snapshot(32.0, 10_000))
    progress.update(snapshot(42.0, 60_000))
    screen = io.StringIO()
    Console(file=screen, width=110, color_system=None).print(progress.renderable())
    text = screen.getvalue()
    for needle in (
        "0:42 / 1:00",
        "(0:18 left)",
        "200 active",
        "120 done, 3 failed, 1 aborted",
        "5,430 (12 failed)",
        "5,000 tok/s",
        "1.23 s",
        "cache_miss 12, stream_truncated 3",
    ):
        assert needle in text, text


def test_no_failures_and_no_rate_yet_read_plainly() -> None:
    progress = LiveProgress(io.StringIO(), clock=FakeClock())
    progress.start(30.0)
    progress.update({"elapsed_s": 1.0, "failures": {}, "ttft_p95_s": 0.0421})
    line = progress.line()
    assert "output - |" in line
    assert "TTFT p95 42 ms" in line
    assert line.endswith("failures: none")


def test_the_clock_gives_the_elapsed_time_when_snapshots_do_not() -> None:
    clock = FakeClock()
    progress = LiveProgress(io.StringIO(), clock=clock)
    progress.start(3600.0)
    clock.now += 3725
    progress.update({"output_tokens": 0})
    assert progress.line().startswith("[1:02:05 / 1:00:00]")


def test_snapshot_from_a_runs_statistics() -> None:
    stats = RunStats()
    stats.session_started("coding")
    stats.add_step(
        StepRecord("s", "coding", 0, "turn", "chat", 0.0, 0.5, ttft_s=0.25, completion_tokens=40)
    )
    stats.add_step(
        StepRecord("s", "coding", 1, "turn", "chat", 0.0, 0.1, ok=False, failures=["timeout"])
    )
    snap = snapshot_from_stats(stats, elapsed_s=3.0, active_agents=4)
    assert snap["elapsed_s"] == 3.0
    assert snap["active_agents"] == 4
    assert snap["sessions"]["started"] == 1
    assert snap["requests"] == {"total": 2, "failed": 1}
    assert snap["output_tokens"] == 40
    assert snap["ttft_p95_s"] == 0.25
    assert snap["failures"] == {"timeout": 1}
