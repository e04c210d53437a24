"""`agentload report DIR`: one self-contained HTML report of a finished run."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

_EXAMPLES = """\
examples:
  agentload report results/nightly                  writes results/nightly/report.html
  agentload report results/nightly --html out.html
  agentload report results/nightly --gate 'ttft_p95 < 2s' --junit junit.xml

The report is a single HTML file (inline CSS and SVG, no scripts, nothing fetched):
summary figures and gate verdicts, throughput and latency over time, latency by agent and
step kind, the session funnel, state failures over time, context growth, and the ceiling
curve when the folder holds a ceiling.json. See docs/ci.md.

exit codes: 0 written (and every --gate passed), 1 a --gate failed, 2 usage error
"""


def register(commands: Any) -> None:
    """Add the `report` subcommand."""
    p = commands.add_parser(
        "report",
        help="write the HTML report of a results folder",
        description="Write a self-contained HTML report (plots as inline SVG) of a run.",
        epilog=_EXAMPLES,
    )
    p.add_argument("dir", metavar="DIR", help="results folder (holding summary.json)")
    p.add_argument("--html", metavar="FILE", help="where to write it (default DIR/report.html)")
    p.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="EXPR",
        help="judge a gate on the finished run, e.g. 'ttft_p95 < 2s' (repeatable)",
    )
    p.add_argument("--junit", metavar="FILE", help="write the --gate verdicts as JUnit XML")
    p.set_defaults(handler=report)


def report(args: argparse.Namespace) -> int:
    """Write the report; 1 when a --gate failed."""
    from loadgen.errors import UsageError
    from loadgen.gates import evaluate_gates, gates_to_summary, parse_gates
    from loadgen.report import format_gate_results, load_results, write_junit
    from loadgen.report.html import write_report_of

    if args.junit and not args.gate:
        raise UsageError("--junit needs at least one --gate to judge")
    gates = parse_gates(args.gate)
    results = load_results(args.dir)
    verdicts = evaluate_gates(results.summary, gates)
    if verdicts:
        # Shown in the report as if the run had judged them itself; summary.json is untouched.
        results.summary["gates"] = gates_to_summary(verdicts)
    out = write_report_of(results, args.html)
    if verdicts:
        print(format_gate_results(verdicts))
    if args.junit:
        suite = str(results.summary.get("profile", "run"))
        write_junit(args.junit, verdicts, suite, summary=results.summary)
    print(f"report: {out}")
    return 0 if all(v.passed for v in verdicts) else 1
