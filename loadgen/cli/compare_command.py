"""`agentload compare BASELINE NEW`: flag regressions beyond a tolerance and beyond noise."""

from __future__ import annotations

import argparse
import re
from typing import Any

__all__ = ["parse_fraction", "register"]

_EXAMPLES = """\
examples:
  agentload compare baseline/ results/                   the default metrics, 10% tolerance
  agentload compare baseline/summary.json results/ --max-regression 5%
  agentload compare base/ new/ --metric ttft_p99 --metric output_tokens_per_s
  agentload compare base/ new/ --junit compare.xml --json compare.json

A metric regresses when it is worse by more than --max-regression AND its 99% confidence
interval (bootstrap of per-request samples for latencies, count statistics for rates and
failure proportions) lies entirely on the worse side; latency changes within the load
generator's own timing noise (its event-loop lag p99) never count. See docs/ci.md.

exit codes: 0 no regression, 1 a metric regressed, 2 usage error (e.g. a missing folder)
"""

_FRACTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_fraction(text: str) -> float:
    """A tolerance written as "10%" or "0.1"."""
    match = _FRACTION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid tolerance {text!r}: write e.g. 10% or 0.1")
    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not match.group(2) and value > 1:
        raise argparse.ArgumentTypeError(f"tolerance {text} is above 1: write it as {text}%")
    return value


def register(commands: Any) -> None:
    """Add the `compare` subcommand."""
    p = commands.add_parser(
        "compare",
        help="compare a run with a baseline; exit 1 on a regression",
        description="Compare two runs metric by metric (latency percentiles, throughput, "
        "failure rates) and flag regressions that exceed a tolerance and the noise.",
        epilog=_EXAMPLES,
    )
    p.add_argument("baseline", metavar="BASELINE", help="baseline results folder or summary.json")
    p.add_argument("new", metavar="NEW", help="new results folder or summary.json")
    p.add_argument(
        "--max-regression",
        type=parse_fraction,
        default=0.10,
        metavar="PCT",
        help="worse by more than this is a regression when statistically clear (default 10%%)",
    )
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="compare only these (repeatable or comma-separated; default: TTFT, ITL, e2e and "
        "session p50/p95, throughput, error rates)",
    )
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML, one testcase per metric")
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    p.set_defaults(handler=compare)


def compare(args: argparse.Namespace) -> int:
    """Print the comparison table; 1 when any metric regressed."""
    from pathlib import Path

    import orjson

    from loadgen.errors import UsageError
    from loadgen.report import (
        compare_runs,
        comparison_cases,
        format_comparison,
        load_results,
        resolve_metrics,
    )
    from loadgen.report.junit import write_junit_cases

    metrics = resolve_metrics(args.metric) if args.metric else None
    baseline, new = load_results(args.baseline), load_results(args.new)
    comparison = compare_runs(baseline, new, metrics, max_regression=args.max_regression)
    print(format_comparison(comparison))
    if args.junit:
        write_junit_cases(args.junit, comparison_cases(comparison), "compare")
    if args.json:
        try:
            Path(args.json).write_bytes(
                orjson.dumps(comparison.to_dict(), option=orjson.OPT_INDENT_2)
            )
        except OSError as exc:
            raise UsageError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    return 1 if comparison.regressions else 0
