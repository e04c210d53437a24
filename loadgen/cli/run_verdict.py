"""What `agentload run` watches while it runs and what it says when it ends.

Imported inside `run()` only: it pulls in the report package, and `agentload run` patches
gevent before any heavy import (entry.py).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loadgen.errors import TargetUnreachableError
from loadgen.gates import Gate, GateMonitor, GateResult
from loadgen.observe import RunStats, format_summary
from loadgen.observe.failure_storm import FailureStorm
from loadgen.report import (
    LiveProgress,
    format_gate_results,
    judge_run,
    save_summary,
    snapshot_from_stats,
)

__all__ = ["RunWatch", "finish_run", "run_failure"]


class RunWatch:
    """Each tick of a running swarm: live progress, abort-on-fail gates, a failure storm."""

    def __init__(
        self, profile: str, gates: list[Gate], storm_window_s: float, *, quiet: bool
    ) -> None:
        self.live = LiveProgress(sys.stderr, title=f"agentload run · {profile}", quiet=quiet)
        self.aborted: tuple[GateResult, float] | None = None  # the gate that stopped the run
        self.stormed: str | None = None  # why a failure storm stopped it
        self._storm = FailureStorm(storm_window_s)
        self._latest: dict[str, Any] = {}
        self._monitor = GateMonitor(
            gates,
            lambda: self._latest["stats"].summary(
                target={}, profile=profile, duration_s=self._latest["elapsed"], generator={}
            ),
        )

    @contextlib.contextmanager
    def running(self, total_s: float) -> Iterator[None]:
        """Live progress shown while the swarm runs (planned to last `total_s` seconds)."""
        self.live.start(total_s)
        try:
            yield
        finally:
            self.live.stop()

    def on_tick(self, stats: RunStats, elapsed: float, users: int) -> bool:
        """Show the run so far; True when it must stop now."""
        self._latest.update(stats=stats, elapsed=elapsed)
        self.live.update(snapshot_from_stats(stats, elapsed, users))
        fired = self._monitor.check(elapsed) if self._monitor.active else None
        if fired is not None:
            self.aborted = (fired, elapsed)
            return True
        why = self._storm.check(elapsed, stats.requests_ok, stats.requests_failed)
        if why is not None:
            self.stormed = f"{why}, stopped at {elapsed:.0f} s"
            return True
        return False


def run_failure(summary: dict[str, Any], stormed: str | None) -> str | None:
    """Why a finished run failed whatever its gates say: a storm stopped it, or nothing worked."""
    reasons = summary.get("failure_reasons") or {}
    counts = summary.get("state_failures") or {}
    kinds = sorted((k for k in reasons if reasons[k]), key=lambda k: -counts.get(k, 0))
    because = f" (most frequent: {kinds[0]}: {reasons[kinds[0]][0]['message']})" if kinds else ""
    if stormed:
        return stormed + because
    requests = summary["requests"]
    if requests["ok"] == 0:
        return f"every one of {requests['total']:,} requests failed{because}"
    return None


def finish_run(
    args: argparse.Namespace,
    out: Path,
    summary: dict[str, Any],
    gates: list[Gate],
    watch: RunWatch,
) -> int:
    """Print the summary and the gates' verdicts, write the reports; the exit code."""
    if summary["requests"]["total"] == 0:
        print(format_summary(summary))
        raise TargetUnreachableError("the run measured no request at all")
    failed = run_failure(summary, watch.stormed)
    if failed is not None:
        # Said in summary.json too: a report or a CI job reading it must not see a pass.
        summary["run_failed"] = failed
        save_summary(out, summary)
    print(format_summary(summary))
    verdict = judge_run(
        out, summary, gates, junit=args.junit, html=args.html, aborted=watch.aborted
    )
    if verdict.results:
        print(format_gate_results(verdict.results))
    print(f"results: {out}")
    if failed is not None:
        print(f"agentload run: FAILED: {failed}", file=sys.stderr)
        return 1
    if (interrupted := summary.get("interrupted")) is not None:
        # As a shell reports a command a signal ended: 130 for Ctrl-C, 143 for SIGTERM. The
        # results are whole up to the stop; a CI job must not read the run as a pass.
        number = int(signal.Signals[interrupted["signal"]])
        print(f"agentload run: interrupted by {interrupted['signal']} after "
              f"{interrupted['at_s']:.0f} s; results kept in {out}", file=sys.stderr)  # fmt: skip
        return 128 + number
    return verdict.exit_code
