"""The frame every chart shares: scales, nice ticks, grid, axis labels, title and legend."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Axis", "Frame", "LegendEntry", "Threshold", "nice_ticks", "plain_number"]

# Tableau 10: distinct, colour-blind tolerant, and legible on white.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_CHAR_PX = 6.6  # average glyph width of the 12px sans-serif used for labels
_INSET = 12  # title and legend start this far from the chart's left edge
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"


def plain_number(value: float) -> str:
    """A compact tick label: 950, 1.2k, 3.4M, 0.25."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Axis:
    """An axis: its label, tick formatter, optional fixed ticks and bounds."""

    label: str
    format: Callable[[float], str] = plain_number
    ticks: Sequence[tuple[float, str]] | None = None  # explicit (value, label) ticks
    low: float | None = None  # default: 0 for counts and latencies, or the data's minimum
    high: float | None = None


@dataclass(frozen=True)
class LegendEntry:
    """One legend item: a name and its colour (dashed for reference lines)."""

    name: str
    color: str
    dashed: bool = False


@dataclass(frozen=True)
class Threshold:
    """A labelled horizontal reference line at y = `value`: an SLO, a gate's bound.

    Charts given thresholds stretch their y axis to include every one, so a line above all
    the data is still drawn, not clamped to the frame's edge.
    """

    value: float
    label: str
    color: str = "#3e4c59"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2, 2.5 or 5 × 10^k apart) covering [low, high]."""
    if not high > low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    # From the round value at or below `low` to the one at or above `high`, so the axis
    # starts and ends on a labelled tick.
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


class Frame:
    """Pixel scales and the drawn frame of one chart; marks are added by the chart functions."""

    def __init__(
        self,
        title: str,
        x: Axis,
        y: Axis,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        legend: Sequence[LegendEntry] = (),
        *,
        width: int = 640,
        height: int = 320,
        categories: Sequence[str] | None = None,
        always_legend: bool = False,
    ) -> None:
        self.title, self.x, self.y, self.width, self.height = title, x, y, width, height
        self.categories = categories
        low, high = y_range
        self.y_ticks = (
            list(y.ticks) if y.ticks else [(v, y.format(v)) for v in nice_ticks(low, high)]
        )
        self.y_low = min(low, self.y_ticks[0][0]) if not y.ticks else low
        self.y_high = max(high, self.y_ticks[-1][0]) if not y.ticks else high
        if categories is None:
            xl, xh = x_range
            values = nice_ticks(xl, xh, 6) if not x.ticks else []
            self.x_ticks = list(x.ticks) if x.ticks else [(v, x.format(v)) for v in values]
            self.x_low, self.x_high = xl, xh if xh > xl else xl + 1
            self.x_ticks = [t for t in self.x_ticks if self.x_low <= t[0] <= self.x_high]
        widest = max((len(label) for _, label in self.y_ticks), default=1)
        self.left = int(34 + widest * _CHAR_PX)
        self.right = 18
        # One line needs no legend (the title names it) unless its colour stands for a kind.
        self.legend = list(legend) if len(legend) > 1 or always_legend else []
        self._legend_rows = self._layout_legend()
        self.top = 40 + 18 * len(self._legend_rows)
        self.bottom = 48

    @property
    def plot_width(self) -> float:
        """Width of the plotting area, pixels."""
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        """Height of the plotting area, pixels."""
        return self.height - self.top - self.bottom

    def sx(self, value: float) -> float:
        """Pixel x of a data x value."""
        return self.left + (value - self.x_low) / (self.x_high - self.x_low) * self.plot_width

    def sy(self, value: float) -> float:
        """Pixel y of a data y value (clamped to the plotting area)."""
        span = self.y_high - self.y_low or 1.0
        clamped = min(max(value, self.y_low), self.y_high)
        return self.top + (1 - (clamped - self.y_low) / span) * self.plot_height

    def _layout_legend(self) -> list[list[tuple[LegendEntry, float]]]:
        rows: list[list[tuple[LegendEntry, float]]] = []
        x = float(_INSET)
        for entry in self.legend:
            size = 28 + len(entry.name) * _CHAR_PX
            if not rows or x + size > self.width - self.right:
                rows.append([])
                x = float(_INSET)
            rows[-1].append((entry, x))
            x += size + 10
        return rows

    def open(self, name: str) -> list[str]:
        """The SVG's opening, title, legend, grid, ticks and axis labels."""
        w, h = self.width, self.height
        parts = [
            f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            f'font-family="{escape(_FONT)}" font-size="12">',
            f"<title>{escape(self.title)}</title>",
            f'<text x="{_INSET}" y="22" font-size="14" font-weight="600" '
            f'fill="#1f2933">{escape(self.title)}</text>',
        ]
        for row_index, row in enumerate(self._legend_rows):
            row_y = 40 + 18 * row_index
            for entry, x in row:
                dash = ' stroke-dasharray="5 3"' if entry.dashed else ""
                parts.append(
                    f'<line x1="{x:.1f}" y1="{row_y - 4}" x2="{x + 20:.1f}" y2="{row_y - 4}" '
                    f'stroke="{entry.color}" stroke-width="3"{dash}/><text x="{x + 25:.1f}" '
                    f'y="{row_y}" fill="#3e4c59">{escape(entry.name)}</text>'
                )
        bottom = self.top + self.plot_height
        for value, label in self.y_ticks:
            y = self.sy(value)
            parts.append(
                f'<line x1="{self.left}" y1="{y:.1f}" x2="{w - self.right}" y2="{y:.1f}" '
                f'stroke="#e4e7eb"/><text x="{self.left - 6}" y="{y + 4:.1f}" '
                f'text-anchor="end" fill="#52606d">{escape(label)}</text>'
            )
        if self.categories is None:
            for value, label in self.x_ticks:
                x = self.sx(value)
                parts.append(
                    f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" '
                    f'stroke="#9aa5b1"/><text x="{x:.1f}" y="{bottom + 18}" '
                    f'text-anchor="middle" fill="#52606d">{escape(label)}</text>'
                )
        parts.append(
            f'<line x1="{self.left}" y1="{bottom}" x2="{w - self.right}" y2="{bottom}" '
            f'stroke="#9aa5b1"/>'
        )
        if self.x.label:
            parts.append(
                f'<text x="{self.left + self.plot_width / 2:.1f}" y="{h - 8}" '
                f'text-anchor="middle" fill="#3e4c59">{escape(self.x.label)}</text>'
            )
        if self.y.label:
            cy = self.top + self.plot_height / 2
            parts.append(
                f'<text transform="translate(14 {cy:.1f}) rotate(-90)" text-anchor="middle" '
                f'fill="#3e4c59">{escape(self.y.label)}</text>'
            )
        return parts

    def thresholds(self, thresholds: Sequence[Threshold]) -> list[str]:
        """Dashed lines across the plot, each labelled at its right end (over the data)."""
        parts: list[str] = []
        right = self.width - self.right
        below = -math.inf  # the lowest label drawn so far: the next one goes under it
        for t in sorted(thresholds, key=lambda t: -t.value):  # top to bottom
            y = self.sy(t.value)
            # Above the line, unless that would cross the frame's top (the legend's row).
            label_y = max(y - 5 if y - self.top >= 14 else y + 14, below + 13)
            below = label_y
            parts.append(
                f'<g class="threshold" data-value="{t.value!r}"><title>{escape(t.label)}</title>'
                f'<line x1="{self.left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
                f'stroke="{t.color}" stroke-width="1.5" stroke-dasharray="7 4"/>'
                f'<text x="{right - 4}" y="{label_y:.1f}" text-anchor="end" fill="{t.color}" '
                f'stroke="#fff" stroke-width="3" paint-order="stroke" font-size="11">'
                f"{escape(t.label)}</text></g>"
            )
        return parts
