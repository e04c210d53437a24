"""The terminal table of a comparison, and its JUnit testcases."""

from __future__ import annotations

import math

from loadgen.gates.gates import format_value
from loadgen.report.compare import Comparison, MetricChange
from loadgen.report.junit import JUnitCase

__all__ = ["comparison_cases", "format_comparison"]

_HEADER = ("metric", "baseline", "new", "change", "CI", "p", "verdict")


def _percent(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "from 0"
    return f"{value * 100:+.1f}%"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _row(change: MetricChange) -> tuple[str, ...]:
    ci = "n/a"
    if change.ci_low is not None and change.ci_high is not None:
        ci = f"[{_percent(change.ci_low)}, {_percent(change.ci_high)}]"
    verdict = change.verdict.upper() if change.verdict == "regression" else change.verdict
    return (
        change.metric,
        format_value(change.baseline, change.unit),
        format_value(change.new, change.unit),
        _percent(change.change),
        ci,
        _p(change.p_value),
        verdict,
    )


def format_comparison(comparison: Comparison) -> str:
    """A readable table with a one-line verdict at the end."""
    header = (*_HEADER[:4], f"{comparison.confidence * 100:g}% CI", *_HEADER[5:])
    rows = [header, *(_row(c) for c in comparison.changes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    # Names and verdicts read left-aligned; numbers line up on the right.
    left = {0, 6}

    def line(row: tuple[str, ...]) -> str:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    out = [
        f"agentload compare: {comparison.baseline} (baseline) -> {comparison.new} (new)",
        f"samples from {comparison.source}; a regression is worse by more than "
        f"{comparison.max_regression * 100:g}% with the {comparison.confidence * 100:g}% "
        "interval entirely on the worse side (latencies: and by more than the generator's "
        f"timing noise, {comparison.noise_floor_s * 1000:.3g} ms)",
        "",
        line(header),
        *(line(r) for r in rows[1:]),
        "",
    ]
    regressions = comparison.regressions
    if regressions:
        listed = ", ".join(f"{c.metric} {_percent(c.change)}" for c in regressions)
        out.append(f"result: REGRESSION in {len(regressions)} metric(s): {listed}")
    else:
        out.append("result: no regression")
    return "\n".join(out)


def comparison_cases(comparison: Comparison) -> list[JUnitCase]:
    """One JUnit testcase per compared metric, failed when it regressed."""
    cases = []
    for change in comparison.changes:
        metric, base, new, delta, ci, p, verdict = _row(change)
        message = f"{metric}: {base} -> {new} ({delta}, CI {ci}, p {p}): {verdict.lower()}"
        cases.append(
            JUnitCase(
                name=metric,
                classname="agentload.compare",
                passed=change.verdict != "regression",
                message=message,
            )
        )
    return cases
