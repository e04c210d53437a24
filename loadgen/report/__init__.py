"""JUnit XML, baseline comparison, the HTML report and live progress of a run."""

from loadgen.report.compare import (
    COMPARE_METRICS,
    DEFAULT_METRICS,
    Comparison,
    MetricChange,
    compare_runs,
    resolve_metrics,
)
from loadgen.report.compare_text import comparison_cases, format_comparison
from loadgen.report.html import REPORT_FILE, render_report, write_report
from loadgen.report.junit import JUnitCase, write_junit, write_junit_cases
from loadgen.report.live import LiveProgress, snapshot_from_stats
from loadgen.report.results import RunResults, load_results, save_summary
from loadgen.report.verdict import RunVerdict, format_gate_results, judge_run

__all__ = [
    "COMPARE_METRICS",
    "DEFAULT_METRICS",
    "REPORT_FILE",
    "Comparison",
    "JUnitCase",
    "LiveProgress",
    "MetricChange",
    "RunResults",
    "RunVerdict",
    "compare_runs",
    "comparison_cases",
    "format_comparison",
    "format_gate_results",
    "judge_run",
    "load_results",
    "render_report",
    "resolve_metrics",
    "save_summary",
    "snapshot_from_stats",
    "write_junit",
    "write_junit_cases",
    "write_report",
]
