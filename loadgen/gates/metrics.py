"""The named figures gates read from a summary.json document, and how to read each."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loadgen.errors import UsageError
from loadgen.protocol.failures import FailureKind

__all__ = [
    "LATENCY_METRICS",
    "LATENCY_STATS",
    "METRICS",
    "Metric",
    "Unit",
    "get_metric",
    "metric_names_text",
    "read_metric",
    "running_at_end",
    "summary_number",
]

Summary = Mapping[str, Any]

# Gate prefix → the summary's latency field; the stats each quantile object holds.
LATENCY_METRICS = {
    "ttft": "ttft_s",
    "ttfat": "ttfat_s",
    "itl": "itl_s",
    "e2e": "e2e_s",
    "session": "session_s",
}
LATENCY_STATS = ("p50", "p90", "p95", "p99", "max", "mean")


class Unit(StrEnum):
    """What a metric's value is, which decides the units a threshold may be written in."""

    SECONDS = "seconds"  # thresholds in ms, s, m, or plain seconds
    RATIO = "ratio"  # thresholds as a percentage or a plain fraction
    NUMBER = "number"  # counts and rates: plain numbers only


@dataclass(frozen=True)
class Metric:
    """One figure a gate can test: its name, unit, meaning and reader."""

    name: str
    unit: Unit
    description: str
    read: Callable[[Summary], float | None]


def summary_number(summary: Summary, *path: str) -> float | None:
    """The number at `path` in the summary (booleans as 0/1), or None when absent or null."""
    node: Any = summary
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if isinstance(node, bool):
        return 1.0 if node else 0.0
    if isinstance(node, int | float):
        return float(node)
    return None


def running_at_end(summary: Summary) -> Mapping[str, Any] | None:
    """summary.json's `sessions.running_at_end` when some sessions were still running at the
    end (None when none were, or the summary predates it)."""
    sessions = summary.get("sessions")
    node = sessions.get("running_at_end") if isinstance(sessions, Mapping) else None
    if not isinstance(node, Mapping) or not summary_number(node, "count"):
        return None
    return node


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    # A ratio of nothing is unknown, not 0: a gate on it must not pass by accident.
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _at(*path: str) -> Callable[[Summary], float | None]:
    return lambda summary: summary_number(summary, *path)


def _session_success(summary: Summary) -> float | None:
    done = summary_number(summary, "sessions", "completed")
    failed = summary_number(summary, "sessions", "failed")
    return _ratio(done, (done or 0.0) + (failed or 0.0))


def _session_failure(summary: Summary) -> float | None:
    success = _session_success(summary)
    return None if success is None else 1.0 - success


def _error_rate(summary: Summary) -> float | None:
    return _ratio(
        summary_number(summary, "requests", "failed"), summary_number(summary, "requests", "total")
    )


def _cache_hit(summary: Summary) -> float | None:
    return _ratio(
        summary_number(summary, "tokens", "cached"), summary_number(summary, "tokens", "prompt")
    )


def _goodput(summary: Summary) -> float | None:
    # Runs that judge sessions against the profile's SLOs write a bare ratio, or an object
    # with `ratio` or with `sessions` (goodput sessions, over completed + failed as on the
    # Grafana overview); absent in runs that did not judge goodput.
    value = summary.get("goodput")
    if not isinstance(value, Mapping):
        return summary_number(summary, "goodput")
    if (ratio := summary_number(value, "ratio")) is not None:
        return ratio
    done = summary_number(summary, "sessions", "completed") or 0.0
    ended = done + (summary_number(summary, "sessions", "failed") or 0.0)
    return _ratio(summary_number(value, "sessions"), ended)


def _total(field: str) -> Callable[[Summary], float | None]:
    def read(summary: Summary) -> float | None:
        counts = summary.get(field)
        if not isinstance(counts, Mapping):
            return None
        return float(sum(n for n in counts.values() if isinstance(n, int | float)))

    return read


def _build() -> dict[str, Metric]:
    found: list[Metric] = []
    for prefix, field in LATENCY_METRICS.items():
        for stat in LATENCY_STATS:
            what = f"{prefix.upper() if prefix != 'session' else 'session duration'} {stat}"
            found.append(
                Metric(f"{prefix}_{stat}", Unit.SECONDS, what, _at("latency", field, stat))
            )
    for name, meaning in (
        ("requests_per_s", "requests finished per second"),
        ("output_tokens_per_s", "completion tokens per second"),
        ("answer_tokens_per_s", "completion tokens less reasoning, per second"),
        ("sessions_per_min", "sessions completed per minute"),
    ):
        found.append(Metric(name, Unit.NUMBER, meaning, _at("throughput", name)))
    found += [
        Metric(
            "reasoning_share",
            Unit.RATIO,
            "reasoning tokens / completion tokens",
            _at("tokens", "reasoning_share"),
        ),
        Metric(
            "reasoning_tokens", Unit.NUMBER, "reasoning tokens, summed", _at("tokens", "reasoning")
        ),
    ]
    found += [
        Metric(
            "session_success_rate",
            Unit.RATIO,
            "completed / (completed + failed) sessions",
            _session_success,
        ),
        Metric("session_failure_rate", Unit.RATIO, "1 - session_success_rate", _session_failure),
        Metric("error_rate", Unit.RATIO, "failed requests / all requests", _error_rate),
        Metric("cache_hit_ratio", Unit.RATIO, "cached prompt tokens / prompt tokens", _cache_hit),
        Metric("goodput_ratio", Unit.RATIO, "sessions within the SLOs, when reported", _goodput),
    ]
    for field, keys in (
        ("requests", ("total", "ok", "failed")),
        ("sessions", ("started", "completed", "failed", "aborted", "recovered")),
    ):
        for key in keys:
            found.append(Metric(f"{field}.{key}", Unit.NUMBER, f"{key} {field}", _at(field, key)))
    found.append(
        Metric(
            "sessions.running_at_end",
            Unit.NUMBER,
            "sessions still running when the run ended",
            _at("sessions", "running_at_end", "count"),
        )
    )
    for field, meaning in (("state_failures", "failures"), ("recoveries", "recoveries")):
        found.append(Metric(f"{field}.total", Unit.NUMBER, f"all {meaning}", _total(field)))
        for kind in FailureKind:
            found.append(
                Metric(f"{field}.{kind}", Unit.NUMBER, f"{kind} {meaning}", _at(field, kind))
            )
    for name, unit, meaning, field in (
        ("generator.saturated", Unit.NUMBER, "1 when the generator saturated", "saturated"),
        ("generator.cpu_percent", Unit.NUMBER, "generator CPU, % of one core", "cpu_percent"),
        ("generator.schedule_lag_p99", Unit.SECONDS, "p99 step lateness", "schedule_lag_p99_s"),
        ("generator.loop_lag_p99", Unit.SECONDS, "p99 event-loop lag", "loop_lag_p99_s"),
    ):
        found.append(Metric(name, unit, meaning, _at("generator", field)))
    for stat in ("p50", "p90", "p99", "max", "mean"):
        found.append(
            Metric(
                f"context_tokens_{stat}",
                Unit.NUMBER,
                f"prompt size {stat}",
                _at("context_tokens", stat),
            )
        )
    found += [
        Metric("tool_calls", Unit.NUMBER, "tool calls the model made", _at("tool_calls")),
        Metric("duration_s", Unit.SECONDS, "measured run length", _at("duration_s")),
    ]
    return {metric.name: metric for metric in found}


METRICS: dict[str, Metric] = _build()


def metric_names_text() -> str:
    """Every metric name, families folded: "ttft_{p50,p90,...}, ..., state_failures.{...}"."""
    groups: dict[str, list[str]] = {}
    for name in METRICS:
        head, sep, tail = name.rpartition(".")
        if not sep:
            head, sep, tail = name.rpartition("_")
            if tail not in LATENCY_STATS:
                head, sep, tail = name, "", ""
        groups.setdefault(head + sep, []).append(tail)
    return ", ".join(
        key + (f"{{{','.join(tails)}}}" if tails != [""] else "") for key, tails in groups.items()
    )


def get_metric(name: str) -> Metric:
    """The metric called `name`; a one-line UsageError listing the valid names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METRICS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UsageError(
            f"unknown metric {name!r}; {hint}valid metrics: {metric_names_text()}"
        ) from None


def read_metric(summary: Summary, name: str) -> float | None:
    """The value of metric `name` in `summary`, or None when the summary lacks it."""
    return get_metric(name).read(summary)
