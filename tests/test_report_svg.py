"""The SVG plotting kit: round ticks, well-formed SVG, marks only where there is data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from loadgen.report.html.svg import (
    Axis,
    Bars,
    Series,
    Threshold,
    bar_chart,
    hbar_chart,
    line_chart,
    plain_number,
    stacked_columns,
)
from loadgen.report.html.svg_frame import nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def marks(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)  # well-formed, or this raises
    assert root.tag == f"{SVG}svg"
    return [e for e in root.iter() if "mark" in e.attrib.get("class", "").split()]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0, 7.3, [0, 2, 4, 6, 8]),
        (0, 1450, [0, 500, 1000, 1500]),
        (0.013, 0.061, [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07]),
        (5, 5, [5, 6, 7, 8, 9, 10]),
    ],
)
def test_ticks_are_round_and_cover_the_range(
    low: float, high: float, expected: list[float]
) -> None:
    assert nice_ticks(low, high) == pytest.approx(expected)


def test_tick_labels_are_compact() -> None:
    assert [plain_number(v) for v in (0, 0.25, 950, 1200, 2_500_000, 3e9)] == [
        "0", "0.25", "950", "1.2k", "2.5M", "3G",
    ]  # fmt: skip


def test_a_line_chart_draws_one_path_per_series_and_escapes_names() -> None:
    svg = line_chart(
        "t", "A <title> & more",
        [Series("a<b", [(0, 1), (1, 2), (2, 3)]), Series("c", [(0, 3), (2, 1)], dashed=True)],
        Axis("x"), Axis("y"),
    )  # fmt: skip
    drawn = marks(svg)
    assert [m.tag for m in drawn] == [f"{SVG}path", f"{SVG}path"]
    assert drawn[0].attrib["d"].count("L") == 2
    assert "A &lt;title&gt; &amp; more" in svg
    assert "stroke-dasharray" in drawn[1].attrib


def test_empty_series_draw_no_marks_but_a_valid_frame() -> None:
    assert marks(line_chart("t", "nothing", [Series("a", [])], Axis("x"), Axis("y"))) == []


def test_a_lone_point_is_drawn_as_a_marker() -> None:
    drawn = marks(line_chart("t", "one", [Series("a", [(3, 4)])], Axis("x"), Axis("y")))
    assert {m.tag for m in drawn} == {f"{SVG}path", f"{SVG}circle"}


def test_grouped_bars_skip_missing_values() -> None:
    svg = bar_chart(
        "b", "bars", ["coding", "support"],
        [Bars("p50", [0.1, None]), Bars("p95", [0.3, 0.2])], Axis("TTFT"),
    )  # fmt: skip
    rects = marks(svg)
    assert len(rects) == 3
    assert all(float(r.attrib["height"]) > 0 for r in rects)


def test_horizontal_bars_write_their_values() -> None:
    svg = hbar_chart(
        "f", "funnel", ["started", "completed"], [10.0, 8.0], ["#111", "#222"],
        value_format=Axis("", lambda v: f"{v:,.0f}"),
    )  # fmt: skip
    assert len(marks(svg)) == 2
    assert ">10</text>" in svg
    assert ">8</text>" in svg


def test_stacked_columns_stack_kinds_and_always_name_them() -> None:
    svg = stacked_columns(
        "s", "failures", [0.0, 10.0, 20.0], 10.0,
        [Bars("timeout", [1, 0, 2]), Bars("http_error", [0, 0, 3])], Axis("t"), Axis("n"),
    )  # fmt: skip
    rects = marks(svg)
    assert len(rects) == 3  # zero counts draw nothing
    one = stacked_columns("s", "f", [0.0], 1.0, [Bars("timeout", [1])], Axis("t"), Axis("n"))
    assert ">timeout</text>" in one  # a single kind still gets its legend


def _thresholds(svg: str) -> list[tuple[float, str]]:
    """(pixel y, label) of each threshold line: horizontal, dashed, and no data mark."""
    found = []
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if group.attrib.get("class") == "threshold":
            line, text = group.find(f"{SVG}line"), group.find(f"{SVG}text")
            assert line is not None
            assert text is not None
            assert line.attrib["y1"] == line.attrib["y2"]
            assert "stroke-dasharray" in line.attrib
            assert "mark" not in group.attrib["class"]
            found.append((float(line.attrib["y1"]), text.text or ""))
    return found


def _grid(svg: str) -> dict[str, float]:
    """Each y tick's label and the pixel y of its grid line."""
    root = ET.fromstring(svg)
    return {
        t.text or "": float(t.attrib["y"]) - 4
        for t in root.iter(f"{SVG}text")
        if t.attrib.get("text-anchor") == "end" and t.attrib.get("fill") == "#52606d"
    }


def test_a_threshold_above_the_data_stretches_the_axis_and_lies_on_its_value() -> None:
    data = [Series("p95", [(0, 0.2), (1, 0.4), (2, 0.3)])]
    plain = line_chart("t", "TTFT", data, Axis("x"), Axis("y"))
    assert _thresholds(plain) == []
    assert max(float(label) for label in _grid(plain)) < 1  # the data alone: up to 0.4
    svg = line_chart(
        "t", "TTFT", data, Axis("x"), Axis("y"), thresholds=[Threshold(2.0, "SLO <ttft> 2 s")]
    )
    ((y, label),) = _thresholds(svg)
    assert label == "SLO <ttft> 2 s"  # escaped in the SVG, read back by the parser
    grid = _grid(svg)
    assert max(float(label) for label in grid) == 2
    assert y == pytest.approx(grid["2"], abs=0.05)
    assert len(marks(svg)) == 1  # the threshold is no data mark


def test_thresholds_are_drawn_at_their_values_on_bar_charts_too() -> None:
    svg = bar_chart(
        "b", "bars", ["coding", "support"], [Bars("p95", [0.1, 0.3])], Axis("TTFT"),
        thresholds=[Threshold(0.5, "gate a"), Threshold(0.25, "gate b", "#c0262d")],
    )  # fmt: skip
    lines = dict((label, y) for y, label in _thresholds(svg))
    grid = _grid(svg)
    assert lines["gate a"] == pytest.approx(grid["0.5"], abs=0.05)
    zero, half = grid["0"], grid["0.5"]
    assert lines["gate b"] == pytest.approx(zero + (half - zero) / 2, abs=0.05)
    assert 'stroke="#c0262d"' in svg
    assert len(marks(svg)) == 2
