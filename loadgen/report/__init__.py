"""Gates, JUnit XML, baseline comparison, the HTML report and live progress of a run."""

from loadgen.report.compare import (
    COMPARE_METRICS,
    DEFAULT_METRICS,
    Comparison,
    MetricChange,
    compare_runs,
    resolve_metrics,
)
from loadgen.report.compare_text import comparison_cases, format_comparison
from loadgen.report.gates import (
    Gate,
    GateMonitor,
    GateResult,
    evaluate_gates,
    gates_to_summary,
    parse_gate,
    parse_gates,
)
from loadgen.report.html import REPORT_FILE, render_report, write_report
from loadgen.report.junit import JUnitCase, write_junit, write_junit_cases
from loadgen.report.live import LiveProgress, snapshot_from_stats
from loadgen.report.metrics import METRICS, Metric, Unit, read_metric
from loadgen.report.results import RunResults, load_results, save_summary
from loadgen.report.verdict import RunVerdict, format_gate_results, judge_run

__all__ = [
    "COMPARE_METRICS",
    "DEFAULT_METRICS",
    "METRICS",
    "REPORT_FILE",
    "Comparison",
    "Gate",
    "GateMonitor",
    "GateResult",
    "JUnitCase",
    "LiveProgress",
    "Metric",
    "MetricChange",
    "RunResults",
    "RunVerdict",
    "Unit",
    "compare_runs",
    "comparison_cases",
    "evaluate_gates",
    "format_comparison",
    "format_gate_results",
    "gates_to_summary",
    "judge_run",
    "load_results",
    "parse_gate",
    "parse_gates",
    "read_metric",
    "render_report",
    "resolve_metrics",
    "save_summary",
    "snapshot_from_stats",
    "write_junit",
    "write_junit_cases",
    "write_report",
]
