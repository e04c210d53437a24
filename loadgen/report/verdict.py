"""The end of a gated run: judge the gates, store the verdicts, write JUnit and the report."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loadgen.gates.gates import Gate, GateResult, evaluate_gates, gates_to_summary
from loadgen.report.html import write_report_of
from loadgen.report.junit import write_junit
from loadgen.report.results import RunResults, save_summary

__all__ = ["RunVerdict", "format_gate_results", "judge_run"]


@dataclass(frozen=True)
class RunVerdict:
    """What the gates said about a finished run, and the exit code that follows."""

    results: list[GateResult]
    exit_code: int  # 0: every gate passed (or there were none); 1: a gate failed

    @property
    def passed(self) -> bool:
        """True when every gate passed."""
        return self.exit_code == 0


def format_gate_results(results: Sequence[GateResult]) -> str:
    """One line per gate: "gate PASS  ttft_p95 < 2s: ttft_p95 = 1.2 s, < 2 s"."""
    return "\n".join(
        f"gate {'PASS' if r.passed else 'FAIL'}  {r.gate.text}: {r.reason}" for r in results
    )


def judge_run(
    out_dir: str | os.PathLike[str],
    summary: Mapping[str, Any],
    gates: Sequence[Gate],
    *,
    junit: str | os.PathLike[str] | None = None,
    html: str | os.PathLike[str] | None = None,
    aborted: tuple[GateResult, float] | None = None,
) -> RunVerdict:
    """Judge `gates` on the run's final summary and record the outcome.

    The verdicts go into OUT_DIR/summary.json under "gates" (rewritten atomically), into
    JUnit XML when `junit` is given, and into the HTML report when `html` is given. A run
    stopped by an abort-on-fail gate (`aborted`: the monitor's result and the elapsed
    seconds) counts that gate as failed even if the final figure recovered.
    """
    results = evaluate_gates(summary, gates)
    if aborted is not None:
        fired, elapsed = aborted
        reason = f"stopped the run at {elapsed:.0f} s: {fired.reason}"
        results = [
            replace(r, passed=False, reason=reason) if r.gate == fired.gate else r for r in results
        ]
    judged = {**summary, "gates": gates_to_summary(results)} if gates else dict(summary)
    if gates:
        save_summary(out_dir, judged)
    if junit is not None:
        write_junit(junit, results, str(judged.get("profile", "run")), summary=judged)
    if html is not None:
        write_report_of(RunResults(Path(out_dir), judged), html)
    return RunVerdict(results, 0 if all(r.passed for r in results) else 1)
