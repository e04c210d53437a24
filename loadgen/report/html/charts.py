"""The report's charts: each turns summary.json or the gathered records into inline SVG."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.gates.gates import format_value
from loadgen.gates.metrics import LATENCY_METRICS, LATENCY_STATS, Unit
from loadgen.observe.histogram import LatencyHistogram
from loadgen.report.html.svg import (
    Axis,
    Bars,
    Series,
    Threshold,
    bar_chart,
    hbar_chart,
    line_chart,
    stacked_columns,
)
from loadgen.report.run_data import Group, ReportData, Timeline

__all__ = [
    "BLUE",
    "GREEN",
    "ORANGE",
    "RED",
    "Section",
    "Thresholds",
    "group_bars",
    "latency_over_time",
    "latency_thresholds",
    "percentile_chart",
    "record_sections",
    "seconds_format",
    "time_axis",
]

GREEN, RED, _GREY, BLUE, ORANGE = "#59a14f", "#e15759", "#9aa5b1", "#4e79a7", "#f28e2b"
# Failures read as alarms: warm colours first.
_FAILURE_COLORS = ("#e15759", "#f28e2b", "#b07aa1", "#9c755f", "#edc948", "#ff9da7", "#76b7b2")
_QUANTILES = (("p50", 50.0, BLUE), ("p95", 95.0, ORANGE), ("p99", 99.0, RED))
# Threshold lines: the profile's SLOs in slate, gates by their verdict.
_SLO_COLOR, _GATE_PASSED, _GATE_FAILED = "#3e4c59", "#1e7b17", "#c0262d"
_ABORT_CLAUSE = re.compile(r"\s+abort\b.*$")

# Latency thresholds by metric family ("ttft", "itl", "e2e", "session"): what a chart draws.
Thresholds = Mapping[str, list[Threshold]]
_FAMILY_OF = {field: family for family, field in LATENCY_METRICS.items()}  # "ttft_s": "ttft"


@dataclass(frozen=True)
class Section:
    """A titled group of charts with a sentence saying how to read them."""

    title: str
    note: str
    charts: list[str]


def seconds_format(largest: float | None) -> Callable[[float], str]:
    """A tick formatter in ms when every value is below a second, else in s."""
    if largest is not None and largest < 1.0:
        return lambda v: f"{v * 1000:.3g} ms"
    return lambda v: f"{v:.3g} s"


def _latency_family(metric: str) -> str | None:
    """The family of a latency metric ("ttft" of "ttft_p95"); None for any other metric."""
    family, _, stat = metric.partition("_")
    return family if family in LATENCY_METRICS and stat in LATENCY_STATS else None


def latency_thresholds(summary: Mapping[str, Any]) -> dict[str, list[Threshold]]:
    """The profile's latency SLOs (summary "slos") and latency gates (summary "gates") as
    threshold lines, by metric family: "SLO ttft_p95 5 s", "gate ttft_p95 < 2s"."""
    found: dict[str, list[Threshold]] = {}
    slos = summary.get("slos")
    for name, value in slos.items() if isinstance(slos, Mapping) else ():
        family = _latency_family(str(name))
        if family and isinstance(value, int | float) and math.isfinite(value):
            label = f"SLO {name} {format_value(value, Unit.SECONDS)}"
            found.setdefault(family, []).append(Threshold(float(value), label, _SLO_COLOR))
    gates = summary.get("gates")
    for gate in gates if isinstance(gates, list) else ():
        if not isinstance(gate, Mapping):
            continue
        family = _latency_family(str(gate.get("metric")))
        bound = gate.get("threshold")
        if family and isinstance(bound, int | float) and math.isfinite(bound):
            # As written, less an abort clause: the line says what is judged, not what it stops.
            text = _ABORT_CLAUSE.sub("", str(gate.get("gate") or gate.get("metric"))).strip()
            color = _GATE_PASSED if gate.get("verdict") == "pass" else _GATE_FAILED
            found.setdefault(family, []).append(Threshold(float(bound), f"gate {text}", color))
    return found


def _latency_axis(label: str, values: Iterable[float], thresholds: Sequence[Threshold]) -> Axis:
    """A latency axis, in ms or s as the largest of `values` and `thresholds` asks."""
    return Axis(label, seconds_format(max([*values, *(t.value for t in thresholds)], default=None)))


# Tick spacings a clock reads naturally: seconds, then minutes, then hours.
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def time_axis(t: Timeline) -> Axis:
    """Time since the start, ticked every round number of seconds, minutes or hours."""
    span = t.starts[-1] + t.covered_s[-1]
    step = next((s for s in _TIME_STEPS if span / s <= 7), _TIME_STEPS[-1])

    def label(v: float) -> str:
        if span < 120:
            return f"{v:.0f}s"
        if span < 3 * 3600:
            return f"{int(v // 60)}:{int(v % 60):02d}"
        return f"{int(v // 3600)}:{int(v % 3600 // 60):02d}h"

    ticks = [(i * step, label(i * step)) for i in range(int(span // step) + 1)]
    return Axis(f"time since start ({t.bucket_s:g} s buckets)", label, ticks, 0.0, span)


def _values(series: list[Series]) -> list[float]:
    return [p[1] for s in series for p in s.points]


def latency_over_time(
    name: str, title: str, t: Timeline, which: str, label: str, lines: Sequence[Threshold]
) -> str:
    """Percentiles of latency `which` ("ttft", "ttfat", "e2e") per bucket, with `lines`."""
    quantiles = _QUANTILES[:2] if which == "e2e" else _QUANTILES
    series = [Series(n, t.latency(which, q), c) for n, q, c in quantiles]
    y = _latency_axis(label, _values(series), lines)
    return line_chart(name, title, series, time_axis(t), y, thresholds=lines)


def _over_time(t: Timeline, lines: Thresholds) -> Section:
    x = time_axis(t)
    tokens = Series("output tokens/s", t.rate("tokens"), BLUE)
    requests = [Series("ok", t.rate("ok"), GREEN), Series("failed", t.rate("failed"), RED)]
    return Section(
        "Throughput and latency over time",
        "Requests are placed in the bucket in which they finished. A throughput plateau while "
        "latency climbs is the target's ceiling.",
        [
            line_chart(
                "tokens-over-time", "Output tokens per second", [tokens], x, Axis("tokens/s")
            ),
            line_chart(
                "requests-over-time", "Requests per second", requests, x, Axis("requests/s")
            ),
            latency_over_time(
                "ttft-over-time", "Time to first token", t, "ttft", "TTFT", lines.get("ttft", [])
            ),
            latency_over_time(
                "e2e-over-time",
                "End-to-end request latency",
                t,
                "e2e",
                "latency",
                lines.get("e2e", []),
            ),
        ],
    )


_NINES = ((0.0, "0%"), (math.log10(2), "50%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"))


def _percentile_series(name: str, raw: Any, color: str) -> Series | None:
    if not isinstance(raw, Mapping) or not raw.get("count"):
        return None
    hist = LatencyHistogram.from_dict(raw)
    # The x axis counts "nines" (-log10 of the fraction above), so the tail gets room; it
    # stops where the sample runs out of resolution (1/n) or at 99.9%.
    reach = min(3.0, math.log10(max(hist.count, 2)))
    points = []
    for i in range(61):
        nines = reach * i / 60
        value = hist.percentile(min(100.0 * (1 - 10**-nines), 100.0))
        if value is not None:
            points.append((nines, value))
    return Series(name, points, color)


def percentile_chart(
    name: str,
    title: str,
    parts: Sequence[tuple[str, str, str]],
    histograms: Mapping[str, Any],
    lines: Thresholds,
) -> str | None:
    """Each (label, histogram key, colour) of `parts` by percentile, with the thresholds of
    each drawn metric ("ttft_s" draws the ttft_* SLOs and gates); None when none has data."""
    series = [
        s for label, key, c in parts if (s := _percentile_series(label, histograms.get(key), c))
    ]
    if not series:
        return None
    keys = {label: key for label, key, _ in parts}
    reach = max(s.points[-1][0] for s in series)
    ticks = [t for t in _NINES if t[0] <= reach + 1e-9]
    x = Axis("percentile", ticks=ticks, low=0.0, high=reach)
    drawn = [t for s in series for t in lines.get(_FAMILY_OF[keys[s.name]], [])]
    y = _latency_axis("latency", _values(series), drawn)
    return line_chart(name, title, series, x, y, thresholds=drawn)


def _distribution(summary: Mapping[str, Any], lines: Thresholds) -> list[str]:
    hists = summary.get("histograms") or {}
    charts = [
        percentile_chart(
            "ttft-itl-percentiles",
            "TTFT and inter-token latency by percentile",
            (("TTFT", "ttft_s", BLUE), ("ITL", "itl_s", ORANGE)),
            hists,
            lines,
        ),
        percentile_chart(
            "e2e-percentiles",
            "End-to-end request latency by percentile",
            (("end-to-end", "e2e_s", GREEN),),
            hists,
            lines,
        ),
    ]
    return [c for c in charts if c]


def group_bars(
    name: str,
    title: str,
    groups: Mapping[str, Group],
    x_label: str,
    lines: Sequence[Threshold],
    which: str = "ttft",
) -> str | None:
    """p50/p95/p99 of latency `which` ("ttft" or "ttfat") of each group that measured it."""
    labels = [label for label, g in groups.items() if getattr(g, which).count]
    if not labels:
        return None
    bars = [
        Bars(n, [getattr(groups[label], which).percentile(q) for label in labels], c)
        for n, q, c in _QUANTILES
    ]
    values = [v for b in bars for v in b.values if v is not None]
    y = _latency_axis(which.upper(), values, lines)
    return bar_chart(name, title, labels, bars, y, x_label=x_label, thresholds=lines)


def _funnel(summary: Mapping[str, Any]) -> str | None:
    s = summary.get("sessions") or {}
    rows = [
        ("started", BLUE),
        ("completed", GREEN),
        ("failed", RED),
        ("aborted", _GREY),
        ("recovered", ORANGE),
    ]
    if not s.get("started"):
        return None
    return hbar_chart(
        "session-funnel",
        "Session funnel",
        [label for label, _ in rows],
        [float(s.get(label) or 0) for label, _ in rows],
        [color for _, color in rows],
        value_format=Axis("", lambda v: f"{v:,.0f}"),
    )


# Session ids as the runtime makes them: w<worker>-<agent>-<slot>-s<session>[.<sub-agent>...]
_SESSION_ID = re.compile(r"^w(\d+)-(.+)-(\d+)-s(\d+)((?:\.\d+)*)$")


def session_label(session_id: str) -> str:
    """A session id as a reader names it: 'coding 0, session 9' (worker and sub-agent if any)."""
    match = _SESSION_ID.match(session_id)
    if match is None:
        return session_id
    worker, agent, slot, session, subs = match.groups()
    label = f"{agent} {slot}, session {session}"
    if subs:
        label += f", sub-agent {subs[1:]}"
    if worker != "0":
        label += f" (worker {worker})"
    return label


def _context(context: Mapping[str, list[tuple[int, int]]]) -> str | None:
    series = [
        Series(session_label(sid), [(float(i), float(t)) for i, t in steps])
        for sid, steps in context.items()
        if steps
    ]
    if not series:
        return None
    x = Axis("step of the session", lambda v: f"{v:g}", low=0.0)
    return line_chart(
        "context-growth",
        "Context growth per session (sampled)",
        series,
        x,
        Axis("prompt tokens"),
        markers=True,
        height=340,
    )


def _failures(t: Timeline | None) -> str | None:
    kinds = t.failures() if t else {}
    if t is None or not kinds:
        return None
    x = time_axis(t)
    stacks = [
        Bars(kind, values, _FAILURE_COLORS[i % len(_FAILURE_COLORS)])
        for i, (kind, values) in enumerate(kinds.items())
    ]
    top = max(sum(v or 0.0 for v in column) for column in zip(*kinds.values(), strict=True))
    # Counts are whole: a few failures get one tick each rather than ticks at 0.2, 0.4...
    ticks = [(float(i), str(i)) for i in range(int(top) + 1)] if top <= 5 else None
    y = Axis("failures per bucket", lambda v: f"{v:g}", ticks, 0.0, top if ticks else None)
    return stacked_columns(
        "failures-over-time",
        "State failures over time, by kind",
        t.starts,
        t.bucket_s,
        stacks,
        x,
        y,
    )


def record_sections(summary: Mapping[str, Any], data: ReportData) -> list[Section]:
    """Every section drawn from summary.json and the step records (empty ones left out).

    Latency charts draw the summary's latency SLOs and gates as threshold lines.
    """
    lines = latency_thresholds(summary)
    sections = []
    if data.timeline is not None:
        sections.append(_over_time(data.timeline, lines))
    if dist := _distribution(summary, lines):
        sections.append(
            Section(
                "Latency distribution",
                "Every request of the run, by percentile; the axis stretches the tail.",
                dist,
            )
        )
    ttft_lines = lines.get("ttft", [])
    by = [
        c
        for c in (
            group_bars("ttft-by-agent", "TTFT by agent", data.by_agent, "agent", ttft_lines),
            group_bars(
                "ttft-by-step-kind", "TTFT by step kind", data.by_kind, "step kind", ttft_lines
            ),
        )
        if c
    ]
    if by:
        sections.append(Section("Latency by agent and step kind", "", by))
    sessions = [c for c in (_funnel(summary), _context(data.context)) if c]
    if sessions:
        sections.append(
            Section(
                "Sessions",
                "Recovered sessions absorbed at least one failure; they overlap the others. "
                "Context growth follows the longest sessions of each agent.",
                sessions,
            )
        )
    if failures := _failures(data.timeline):
        sections.append(Section("State failures", "", [failures]))
    return sections
