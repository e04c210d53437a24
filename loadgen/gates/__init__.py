"""Gates and the metric catalogue they read: verdicts on a summary, below ceiling and report."""

from loadgen.gates.gates import (
    Gate,
    GateMonitor,
    GateResult,
    evaluate_gates,
    format_value,
    gates_to_summary,
    parse_gate,
    parse_gates,
)
from loadgen.gates.metrics import METRICS, Metric, Unit, read_metric

__all__ = [
    "METRICS",
    "Gate",
    "GateMonitor",
    "GateResult",
    "Metric",
    "Unit",
    "evaluate_gates",
    "format_value",
    "gates_to_summary",
    "parse_gate",
    "parse_gates",
    "read_metric",
]
