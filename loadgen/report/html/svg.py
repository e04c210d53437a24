"""A small SVG plotting kit for the HTML report, each chart a self-contained <svg> string.

Line, grouped-bar, horizontal-bar and stacked-column charts; no scripts, no network. Line
and bar charts also draw thresholds: labelled dashed reference lines (SLOs, gates).

Every drawn data mark carries class="mark" so a test can tell a drawn chart from an empty one;
a threshold is a <g class="threshold"> (not a mark: it is no data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from loadgen.report.html.svg_frame import (
    PALETTE,
    Axis,
    Frame,
    LegendEntry,
    Threshold,
    plain_number,
)

__all__ = [
    "PALETTE",
    "Axis",
    "Bars",
    "Series",
    "Threshold",
    "bar_chart",
    "hbar_chart",
    "line_chart",
    "plain_number",
    "stacked_columns",
]


@dataclass(frozen=True)
class Series:
    """A named line: (x, y) points in x order; None-free."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str | None = None
    dashed: bool = False


@dataclass(frozen=True)
class Bars:
    """A named group member of a bar chart: one value per category (None: no bar)."""

    name: str
    values: Sequence[float | None]
    color: str | None = None


def _colors(names: Sequence[str | None]) -> list[str]:
    return [c or PALETTE[i % len(PALETTE)] for i, c in enumerate(names)]


def _y_range(
    values: Sequence[float], axis: Axis, thresholds: Sequence[Threshold] = ()
) -> tuple[float, float]:
    finite = [v for v in (*values, *(t.value for t in thresholds)) if math.isfinite(v)]
    low = axis.low if axis.low is not None else min([0.0, *finite])
    high = axis.high if axis.high is not None else max(finite, default=1.0)
    return low, high if high > low else low + 1.0


def line_chart(
    name: str,
    title: str,
    series: Sequence[Series],
    x: Axis,
    y: Axis,
    *,
    width: int = 640,
    height: int = 300,
    markers: bool = False,
    thresholds: Sequence[Threshold] = (),
) -> str:
    """Lines (optionally with point markers) on numeric axes, and any `thresholds`."""
    colors = _colors([s.color for s in series])
    xs = [p[0] for s in series for p in s.points]
    x_range = (
        x.low if x.low is not None else min(xs, default=0.0),
        x.high if x.high is not None else max(xs, default=1.0),
    )
    frame = Frame(
        title,
        x,
        y,
        x_range,
        _y_range([p[1] for s in series for p in s.points], y, thresholds),
        [LegendEntry(s.name, c, s.dashed) for s, c in zip(series, colors, strict=True)],
        width=width,
        height=height,
    )
    parts = frame.open(name)
    for s, color in zip(series, colors, strict=True):
        if not s.points:
            continue
        coords = [(frame.sx(px), frame.sy(py)) for px, py in s.points]
        path = "M" + " L".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(
            f'<path class="mark" d="{path}" fill="none" stroke="{color}" stroke-width="2" '
            f'stroke-linejoin="round"{dash}><title>{escape(s.name)}</title></path>'
        )
        if (markers and not s.dashed) or len(coords) == 1:
            parts += [
                f'<circle class="mark" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{color}"/>'
                for cx, cy in coords
            ]
    parts += frame.thresholds(thresholds)
    parts.append("</svg>")
    return "".join(parts)


def _fit(label: str, px: float) -> str:
    room = max(int(px / 6.6), 3)
    return label if len(label) <= room else label[: room - 1] + "…"


def bar_chart(
    name: str,
    title: str,
    categories: Sequence[str],
    groups: Sequence[Bars],
    y: Axis,
    *,
    x_label: str = "",
    width: int = 640,
    height: int = 300,
    thresholds: Sequence[Threshold] = (),
) -> str:
    """Vertical bars, one group per category and one bar per member of `groups`; `thresholds`."""
    colors = _colors([g.color for g in groups])
    values = [v for g in groups for v in g.values if v is not None]
    frame = Frame(
        title,
        Axis(x_label),
        y,
        (0.0, 1.0),
        _y_range(values, y, thresholds),
        [LegendEntry(g.name, c) for g, c in zip(groups, colors, strict=True)],
        width=width,
        height=height,
        categories=categories,
    )
    parts = frame.open(name)
    slot = frame.plot_width / max(len(categories), 1)
    bar = slot * 0.8 / max(len(groups), 1)
    base = frame.sy(max(frame.y_low, 0.0))
    bottom = frame.top + frame.plot_height
    for i, category in enumerate(categories):
        x0 = frame.left + i * slot + slot * 0.1
        for j, (group, color) in enumerate(zip(groups, colors, strict=True)):
            value = group.values[i]
            if value is None:
                continue
            top = frame.sy(value)
            tip = f"{category} · {group.name}: {y.format(value)}"
            parts.append(
                f'<rect class="mark" x="{x0 + j * bar:.1f}" y="{min(top, base):.1f}" '
                f'width="{max(bar - 2, 1):.1f}" height="{max(abs(base - top), 1):.1f}" '
                f'fill="{color}" rx="1.5"><title>{escape(tip)}</title></rect>'
            )
        parts.append(
            f'<text x="{frame.left + (i + 0.5) * slot:.1f}" y="{bottom + 18}" '
            f'text-anchor="middle" fill="#3e4c59">{escape(_fit(category, slot))}</text>'
        )
    parts += frame.thresholds(thresholds)
    parts.append("</svg>")
    return "".join(parts)


def hbar_chart(
    name: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    colors: Sequence[str],
    *,
    value_format: Axis,
    width: int = 640,
    bar_height: int = 30,
) -> str:
    """Horizontal bars with their values written at the end (a funnel, a breakdown)."""
    label_px = int(max((len(label) for label in labels), default=4) * 7 + 24)
    top, gap = 40, 10
    height = top + len(labels) * (bar_height + gap) + 12
    high = max([*values, 1e-12])
    room = width - label_px - 90
    parts = [
        f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'font-family="system-ui, \'DejaVu Sans\', sans-serif" font-size="12">'
        f"<title>{escape(title)}</title>"
        f'<text x="12" y="22" font-size="14" font-weight="600" fill="#1f2933">'
        f"{escape(title)}</text>"
    ]
    for i, (label, value, color) in enumerate(zip(labels, values, colors, strict=True)):
        y = top + i * (bar_height + gap)
        length = max(room * value / high, 2.0)
        parts.append(
            f'<text x="{label_px - 10}" y="{y + bar_height / 2 + 4:.1f}" text-anchor="end" '
            f'fill="#3e4c59">{escape(label)}</text>'
            f'<rect class="mark" x="{label_px}" y="{y}" width="{length:.1f}" '
            f'height="{bar_height}" fill="{color}" rx="2"><title>{escape(label)}: '
            f"{escape(value_format.format(value))}</title></rect>"
            f'<text x="{label_px + length + 6:.1f}" y="{y + bar_height / 2 + 4:.1f}" '
            f'fill="#1f2933" font-weight="600">{escape(value_format.format(value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def stacked_columns(
    name: str,
    title: str,
    starts: Sequence[float],
    bucket: float,
    stacks: Sequence[Bars],
    x: Axis,
    y: Axis,
    *,
    width: int = 640,
    height: int = 300,
) -> str:
    """Columns over a numeric x (time buckets of width `bucket`), stacked by series."""
    colors = _colors([s.color for s in stacks])
    totals = [sum(s.values[i] or 0.0 for s in stacks) for i in range(len(starts))]
    x_range = (min(starts, default=0.0), max(starts, default=0.0) + bucket)
    frame = Frame(
        title,
        x,
        y,
        x_range,
        _y_range(totals, y),
        [LegendEntry(s.name, c) for s, c in zip(stacks, colors, strict=True)],
        width=width,
        height=height,
        always_legend=True,
    )
    parts = frame.open(name)
    column = max(frame.sx(bucket) - frame.sx(0.0) - 1, 1.0)
    for i, start in enumerate(starts):
        level = 0.0
        for stack, color in zip(stacks, colors, strict=True):
            value = stack.values[i] or 0.0
            if value <= 0:
                continue
            top, bottom = frame.sy(level + value), frame.sy(level)
            parts.append(
                f'<rect class="mark" x="{frame.sx(start) + 0.5:.1f}" y="{top:.1f}" '
                f'width="{column:.1f}" height="{max(bottom - top, 0.5):.1f}" fill="{color}">'
                f"<title>{escape(x.format(start))} {escape(stack.name)}: "
                f"{escape(y.format(value))}</title></rect>"
            )
            level += value
    parts.append("</svg>")
    return "".join(parts)
