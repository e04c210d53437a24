"""The report's reasoning figures, drawn only when the run's model reasoned.

A reasoning model streams its thinking before its answer: TTFT counts the first token of
either, TTFAT (time to first answer token) waits for the answer, and output tokens/s counts
the thinking while answer tokens/s does not. A run whose summary counted no reasoning token
(`tokens.reasoning` 0 or absent) gets none of this: its page is what it was before.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from loadgen.gates.gates import format_value
from loadgen.gates.metrics import Unit
from loadgen.report.html.charts import (
    BLUE,
    GREEN,
    ORANGE,
    Section,
    Thresholds,
    group_bars,
    latency_over_time,
    latency_thresholds,
    percentile_chart,
    time_axis,
)
from loadgen.report.html.svg import Axis, Series, line_chart
from loadgen.report.run_data import Group, ReportData

__all__ = [
    "REASONING_TITLE",
    "group_cells",
    "group_head",
    "reasoning_cards",
    "reasoning_section",
    "reasoning_table",
    "saw_reasoning",
    "with_reasoning",
]

REASONING_TITLE = "Reasoning"

# A headline card: label, value, detail.
Card = tuple[str, str, str]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def saw_reasoning(summary: Mapping[str, Any]) -> bool:
    """True when the run counted at least one reasoning token (summary `tokens.reasoning`)."""
    return (_number((summary.get("tokens") or {}).get("reasoning")) or 0.0) > 0


def _seconds(value: Any) -> str:
    return format_value(_number(value), Unit.SECONDS)


def _ratio(value: Any) -> str:
    return format_value(_number(value), Unit.RATIO)


def _count(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:,.0f}"


def reasoning_cards(summary: Mapping[str, Any]) -> dict[str, list[Card]]:
    """The cards to add after the named headline card ("output tokens/s", "TTFT p95");
    none for a run that did not reason."""
    if not saw_reasoning(summary):
        return {}
    tokens, lat = summary.get("tokens") or {}, summary.get("latency") or {}
    answer_rate = _number((summary.get("throughput") or {}).get("answer_tokens_per_s"))
    ttfat = lat.get("ttfat_s") or {}
    per_session = _number(tokens.get("reasoning_per_session_mean"))
    return {
        "output tokens/s": [
            (
                "answer tokens/s",
                "n/a" if answer_rate is None else f"{answer_rate:,.1f}",
                f"output less reasoning · {_count(tokens.get('answer'))} answer tokens",
            ),
            (
                "reasoning share",
                _ratio(tokens.get("reasoning_share")),
                f"{_count(tokens.get('reasoning'))} reasoning tokens · "
                + ("n/a" if per_session is None else f"{per_session:,.1f}")
                + " per session",
            ),
        ],
        "TTFT p95": [
            (
                "TTFAT p95",
                _seconds(ttfat.get("p95")),
                f"first answer token · p50 {_seconds(ttfat.get('p50'))} · "
                f"p99 {_seconds(ttfat.get('p99'))}",
            )
        ],
    }


def group_head() -> str:
    """The by-agent and by-step-kind tables' extra header cells."""
    return "<th>TTFAT p50</th><th>TTFAT p95</th><th>TTFAT p99</th><th>reasoning tokens</th>"


def group_cells(group: Group) -> str:
    """One group's TTFAT percentiles and reasoning tokens, as group_head's cells."""
    cells = [_seconds(group.ttfat.percentile(q)) for q in (50, 95, 99)]
    cells.append(f"{group.reasoning:,}")
    return "".join(f"<td>{escape(c)}</td>" for c in cells)


def _table_row(name: str, tokens: Mapping[str, Any], latency: Mapping[str, Any]) -> str:
    completion, reasoning = _number(tokens.get("completion")), _number(tokens.get("reasoning"))
    share = _number(tokens.get("reasoning_share"))
    if share is None and completion and reasoning is not None:
        share = reasoning / completion
    ttft, ttfat = latency.get("ttft_s") or {}, latency.get("ttfat_s") or {}
    cells = [
        _count(completion),
        _count(reasoning),
        _ratio(share),
        _seconds(ttft.get("p95")),
        *(_seconds(ttfat.get(k)) for k in ("p50", "p95", "p99")),
    ]
    return f"<tr><td>{escape(name)}</td>{''.join(f'<td>{escape(c)}</td>' for c in cells)}</tr>"


def reasoning_table(summary: Mapping[str, Any]) -> str:
    """Reasoning tokens and TTFT beside TTFAT, for the run and by agent (from summary.json)."""
    if not saw_reasoning(summary):
        return ""
    head = (
        "<tr><th>agent</th><th>output tokens</th><th>reasoning tokens</th>"
        "<th>reasoning share</th><th>TTFT p95</th><th>TTFAT p50</th><th>TTFAT p95</th>"
        "<th>TTFAT p99</th></tr>"
    )
    rows = [_table_row("all", summary.get("tokens") or {}, summary.get("latency") or {})]
    for name, agent in (summary.get("by_agent") or {}).items():
        if isinstance(agent, Mapping):
            rows.append(
                _table_row(str(name), agent.get("tokens") or {}, agent.get("latency") or {})
            )
    return f"<table>{head}{''.join(rows)}</table>"


def _tokens_over_time(data: ReportData) -> list[str]:
    t = data.timeline
    if t is None:
        return []
    series = [
        Series("output tokens/s", t.rate("tokens"), BLUE),
        Series("answer tokens/s", t.rate("answer"), GREEN),
    ]
    return [
        line_chart(
            "answer-tokens-over-time",
            "Output and answer tokens per second",
            series,
            time_axis(t),
            Axis("tokens/s"),
        )
    ]


def reasoning_section(
    summary: Mapping[str, Any], data: ReportData, lines: Thresholds
) -> Section | None:
    """Answer beside output throughput and TTFAT beside TTFT; None for a run without reasoning.

    The TTFAT charts draw the `ttfat_*` SLOs and gates as threshold lines.
    """
    if not saw_reasoning(summary):
        return None
    ttfat_lines = lines.get("ttfat", [])
    charts = _tokens_over_time(data)
    if data.timeline is not None:
        charts.append(
            latency_over_time(
                "ttfat-over-time",
                "Time to first answer token",
                data.timeline,
                "ttfat",
                "TTFAT",
                ttfat_lines,
            )
        )
    optional = (
        percentile_chart(
            "ttft-ttfat-percentiles",
            "TTFT and time to first answer token by percentile",
            (("TTFT", "ttft_s", BLUE), ("TTFAT", "ttfat_s", ORANGE)),
            summary.get("histograms") or {},
            lines,
        ),
        group_bars(
            "ttfat-by-agent", "TTFAT by agent", data.by_agent, "agent", ttfat_lines, "ttfat"
        ),
    )
    charts += [c for c in optional if c]
    note = (
        "The model thinks before it answers. TTFT counts its first token of either kind, "
        "TTFAT (time to first answer token) waits for the answer: the gap is time spent "
        "thinking. Output tokens/s counts the thinking as work, answer tokens/s does not."
    )
    return Section(REASONING_TITLE, note, charts)


def with_reasoning(
    sections: list[Section], summary: Mapping[str, Any], data: ReportData
) -> list[Section]:
    """`sections` with the Reasoning section after the latency ones, when the run reasoned."""
    section = reasoning_section(summary, data, latency_thresholds(summary))
    if section is None:
        return sections
    latency = ("Throughput and latency over time", "Latency distribution")
    at = max((i + 1 for i, sec in enumerate(sections) if sec.title in latency), default=0)
    return [*sections[:at], section, *sections[at:]]
