"""Gates: pass/fail thresholds over summary.json metrics, for CI and for aborting a run early.

A gate is `METRIC OP VALUE[UNIT] [abort [after DURATION]]`, e.g. "ttft_p95 < 2s",
"error_rate < 1%", "state_failures.context_truncated == 0" or "ttft_p99 < 5s abort after 30s".
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.errors import UsageError
from loadgen.gates.metrics import LATENCY_STATS, Metric, Unit, get_metric, running_at_end

__all__ = [
    "OPERATORS",
    "Gate",
    "GateMonitor",
    "GateResult",
    "evaluate_gates",
    "format_value",
    "gates_to_summary",
    "parse_gate",
    "parse_gates",
]

_FORM = 'write it as METRIC OP VALUE [abort [after DURATION]], e.g. "ttft_p95 < 2s"'
_GATE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.]*)\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?:(?P<unit>ms|s|m|%)(?![A-Za-z]))?(?P<rest>.*)$"
)
_ABORT = re.compile(r"^\s*abort(?:\s+after\s+(?P<delay>\S+))?\s*$")
_DELAY = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)?$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _close(a: float, b: float) -> bool:
    # Values in a summary went through float arithmetic (ratios, rates): == means "equal
    # within rounding", so "session_success_rate == 1" holds for 0.9999999999999999.
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": _close,
    "!=": lambda a, b: not _close(a, b),
}


def format_value(value: float | None, unit: Unit) -> str:
    """A metric value in the unit people read it in: ms or s, percent, or a plain number."""
    if value is None:
        return "n/a"
    if unit is Unit.SECONDS:
        if value != 0 and abs(value) < 1.0:
            return f"{value * 1000:.4g} ms"
        return f"{value:.4g} s"
    if unit is Unit.RATIO:
        return f"{value * 100:.4g}%"
    return f"{value:,.0f}" if value == int(value) and abs(value) < 1e15 else f"{value:,.4g}"


@dataclass(frozen=True)
class Gate:
    """A parsed gate: `metric op threshold`, optionally aborting the run when it fails."""

    metric: str
    op: str
    threshold: float  # in the metric's base unit: seconds, a fraction, or a plain number
    text: str  # as the user wrote it
    abort_on_fail: bool = False
    delay_s: float = 0.0  # abort only once the run is this old (k6's delayAbortEval)

    @property
    def unit(self) -> Unit:
        """How the metric and threshold are measured."""
        return get_metric(self.metric).unit

    def holds(self, value: float) -> bool:
        """True when `value` satisfies the gate."""
        return OPERATORS[self.op](value, self.threshold)


@dataclass(frozen=True)
class GateResult:
    """One gate judged against one summary."""

    gate: Gate
    value: float | None  # None: the summary had no value for the metric
    passed: bool
    reason: str  # one line, e.g. "ttft_p95 = 2.4 s, needs < 2 s"


def _threshold(text: str, metric: Metric, number: float, unit: str | None) -> float:
    def bad(problem: str) -> UsageError:
        return UsageError(f"gate {text!r}: {problem}")

    if metric.unit is Unit.SECONDS:
        if unit == "%":
            raise bad(f"{metric.name} is a time; write the threshold in ms, s or m")
        return number * _SECONDS[unit]
    if metric.unit is Unit.RATIO:
        if unit == "%":
            return number / 100.0
        if unit is not None:
            raise bad(f"{metric.name} is a ratio; write the threshold as a fraction or a %")
        if not 0.0 <= number <= 1.0:
            raise bad(f"{metric.name} is a ratio from 0 to 1; write e.g. 0.99 or 99%")
        return number
    if unit is not None:
        raise bad(f"{metric.name} is a plain number ({metric.description}); drop the {unit!r}")
    return number


def _delay(text: str, raw: str | None) -> float:
    if raw is None:
        return 0.0
    match = _DELAY.match(raw)
    if match is None:
        raise UsageError(f"gate {text!r}: abort delay {raw!r} is not a duration; use e.g. 30s")
    return float(match["n"]) * _SECONDS[match["unit"]]


def parse_gate(text: str) -> Gate:
    """Parse one gate expression; a one-line UsageError says what is wrong and how to write it."""
    match = _GATE.match(text)
    if match is None:
        raise UsageError(f"gate {text!r} is not an expression; {_FORM}")
    try:
        metric = get_metric(match["metric"])
    except UsageError as exc:
        raise UsageError(f"gate {text!r}: {exc}") from None
    threshold = _threshold(text, metric, float(match["value"]), match["unit"])
    rest = match["rest"]
    abort = None
    if rest.strip():
        abort = _ABORT.match(rest)
        if abort is None:
            raise UsageError(f"gate {text!r}: unexpected {rest.strip()!r}; {_FORM}")
    return Gate(
        metric=metric.name,
        op=match["op"],
        threshold=threshold,
        text=" ".join(text.split()),
        abort_on_fail=abort is not None,
        delay_s=_delay(text, abort["delay"] if abort else None),
    )


def parse_gates(texts: Iterable[str]) -> list[Gate]:
    """Parse every expression, dropping exact repeats (a profile gate also given on the CLI)."""
    gates: dict[str, Gate] = {}
    for text in texts:
        gate = parse_gate(text)
        gates.setdefault(gate.text, gate)
    return list(gates.values())


# session_<stat> gates when sessions were still running at the end: each lasted at least its
# age, so the figures of finished sessions alone are biased short (a run shorter than the
# long sessions sees only short ones finish). Judged instead: the percentile counting the
# running sessions as censored at their ages (Kaplan-Meier, summary.json
# sessions.running_at_end.session_s); where that lies beyond the longest session seen, it is
# known to exceed that length and nothing more: the gate passes or fails where that settles
# it, and otherwise fails as undecided. max and mean count the running ages as lower bounds.
_SESSION_STATS = {f"session_{stat}": stat for stat in LATENCY_STATS}


def _judge_running(gate: Gate, finished: float | None, running: Mapping[str, Any]) -> GateResult:
    unit, stat = gate.unit, _SESSION_STATS[gate.metric]
    wanted = f"{gate.op} {format_value(gate.threshold, unit)}"
    count = int(running["count"])
    still = (
        f"{count:,} session{'s' if count != 1 else ''} still running at the end, the oldest "
        f"{format_value(running.get('age_max_s'), unit)}"
    )
    alone = f"finished sessions alone: {format_value(finished, unit)}"
    estimates = running.get("session_s") or {}
    value = estimates.get(stat)
    if isinstance(value, int | float):
        shown = f"{gate.metric} = {format_value(value, unit)} counting the {still} ({alone})"
        if gate.holds(value):
            return GateResult(gate, value, True, f"{shown}, {wanted}")
        return GateResult(gate, value, False, f"{shown}, needs {wanted}")
    longest = estimates.get("max")
    if not isinstance(longest, int | float):
        longest = float(running.get("age_max_s") or 0.0)
    beyond = (
        f"{gate.metric} > {format_value(longest, unit)}, the longest session seen: with the "
        f"{still}, fewer than {stat[1:]}% of sessions are estimated to have ended within it "
        f"({alone})"
    )
    if longest >= gate.threshold and gate.op in (">", ">="):
        return GateResult(gate, longest, True, f"{beyond}, {wanted}")
    if longest >= gate.threshold and gate.op in ("<", "<="):
        return GateResult(gate, longest, False, f"{beyond}, needs {wanted}")
    return GateResult(
        gate,
        None,
        False,
        f"{beyond}; whether it is {wanted} this run cannot tell: run longer than the sessions last",
    )


def _judge(summary: Mapping[str, Any], gate: Gate) -> GateResult:
    unit = gate.unit
    value = get_metric(gate.metric).read(summary)
    wanted = f"{gate.op} {format_value(gate.threshold, unit)}"
    running = running_at_end(summary) if gate.metric in _SESSION_STATS else None
    if running is not None and isinstance(running.get("session_s"), Mapping):
        return _judge_running(gate, value, running)
    if value is None or math.isnan(value):
        reason = f"{gate.metric} has no value in this run (no samples), so it cannot be {wanted}"
        return GateResult(gate, None, False, reason)
    shown = f"{gate.metric} = {format_value(value, unit)}"
    if gate.holds(value):
        return GateResult(gate, value, True, f"{shown}, {wanted}")
    return GateResult(gate, value, False, f"{shown}, needs {wanted}")


def evaluate_gates(summary: Mapping[str, Any], gates: Sequence[Gate]) -> list[GateResult]:
    """Judge each gate against `summary`; a metric missing from it fails its gate."""
    return [_judge(summary, gate) for gate in gates]


def gates_to_summary(results: Sequence[GateResult]) -> list[dict[str, Any]]:
    """The summary.json "gates" list: gate, metric, value, threshold, verdict, reason."""
    return [
        {
            "gate": r.gate.text,
            "metric": r.gate.metric,
            "value": r.value,
            "threshold": r.gate.threshold,
            "verdict": "pass" if r.passed else "fail",
            "reason": r.reason,
        }
        for r in results
    ]


class GateMonitor:
    """Watches the abort-on-fail gates while a run goes on, like k6's abortOnFail.

    `live_summary` returns a summary-shaped dict of the run so far (e.g. RunStats.summary()
    with the elapsed time as duration). A gate is only judged once the run is `delay_s` old,
    and a metric with no value yet (no samples) does not abort: only a measured violation does.
    """

    def __init__(
        self, gates: Sequence[Gate], live_summary: Callable[[], Mapping[str, Any]]
    ) -> None:
        self.gates = [g for g in gates if g.abort_on_fail]
        self._live_summary = live_summary

    @property
    def active(self) -> bool:
        """True when at least one gate can abort the run (otherwise check() is a no-op)."""
        return bool(self.gates)

    def check(self, elapsed_s: float) -> GateResult | None:
        """The first abort-on-fail gate failing now, past its delay; None to carry on."""
        due = [g for g in self.gates if elapsed_s >= g.delay_s]
        if not due:
            return None
        for result in evaluate_gates(self._live_summary(), due):
            if not result.passed and result.value is not None:
                return result
        return None
