"""SLOs and gates on the report's latency charts: summary.json carries the profile's `slos`,
and the TTFT / ITL / end-to-end charts draw each latency SLO and gate as a labelled dashed
line at its value, stretching the y axis to reach it; a run with neither draws none."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from loadgen.report import load_results, render_report, save_summary

ROOT = Path(__file__).resolve().parents[1]
AGENTLOAD = [sys.executable, "-m", "loadgen"]
SVG = "{http://www.w3.org/2000/svg}"
QUICKSTART_SLOS = {"ttft_p95": 2.0, "itl_p99": 0.2, "session_success": 0.95}
LATENCY_CHARTS = ("ttft-over-time", "e2e-over-time", "ttft-itl-percentiles", "e2e-percentiles")


def _run(out: Path, *args: str) -> dict[str, Any]:
    made = subprocess.run(
        [*AGENTLOAD, "run", *args, "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    summary: dict[str, Any] = orjson.loads((out / "summary.json").read_bytes())
    return summary


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """quickstart (slos: ttft_p95 2s, itl_p99 200ms, session_success 0.95) on the built-in
    simulator, with two gates the simulator's millisecond latencies pass."""
    out = tmp_path_factory.mktemp("thresholds") / "run"
    _run(out, "quickstart", "--duration", "4s",
         "--gate", "ttft_p95 < 1500ms", "--gate", "itl_p99 < 1s abort after 30s")  # fmt: skip
    return out


def _charts(page: str) -> dict[str, ET.Element]:
    """Every chart of a report page, parsed (each <svg> is well-formed XML)."""
    return {
        m.group(1): ET.fromstring(m.group(0))
        for m in re.finditer(r'<svg class="chart" data-chart="([^"]+)".*?</svg>', page, re.S)
    }


def _seconds(label: str) -> float:
    number, unit = label.split()
    return float(number) * {"s": 1.0, "ms": 0.001}[unit]


def _y_ticks(chart: ET.Element) -> list[tuple[float, float]]:
    """(pixel y, seconds) of each y-axis tick: its label sits 4 px below the grid line."""
    return [
        (float(t.attrib["y"]) - 4, _seconds(t.text or ""))
        for t in chart.iter(f"{SVG}text")
        if t.attrib.get("text-anchor") == "end" and t.attrib.get("fill") == "#52606d"
    ]


def _value_at(chart: ET.Element, y: float) -> float:
    """The seconds the chart's y axis puts at pixel `y`, read off its first and last tick."""
    ticks = _y_ticks(chart)
    (y0, v0), (y1, v1) = ticks[0], ticks[-1]
    return v0 + (y - y0) * (v1 - v0) / (y1 - y0)


def _lines(chart: ET.Element) -> dict[str, tuple[float, str]]:
    """Each threshold line by its label: (pixel y, colour)."""
    found = {}
    for group in chart.iter(f"{SVG}g"):
        if group.attrib.get("class") != "threshold":
            continue
        line = group.find(f"{SVG}line")
        text = group.find(f"{SVG}text")
        assert line is not None
        assert text is not None
        assert text.text
        assert line.attrib["y1"] == line.attrib["y2"]  # horizontal
        assert "stroke-dasharray" in line.attrib
        found[text.text] = (float(line.attrib["y1"]), line.attrib["stroke"])
    return found


def _report(run: Path, tmp_path: Path, **changes: Any) -> dict[str, ET.Element]:
    """The report of `run` with its summary changed: a key set to None is removed."""
    folder = tmp_path / "changed"
    folder.mkdir()
    for name in ("steps.jsonl", "sessions.jsonl"):
        (folder / name).write_bytes((run / name).read_bytes())
    summary = orjson.loads((run / "summary.json").read_bytes())
    summary.update(changes)
    save_summary(folder, {k: v for k, v in summary.items() if v is not None})
    return _charts(render_report(load_results(folder)))


def test_summary_json_of_a_run_carries_the_profiles_slos(gated_run: Path) -> None:
    summary = orjson.loads((gated_run / "summary.json").read_bytes())
    assert summary["slos"] == QUICKSTART_SLOS
    assert [g["gate"] for g in summary["gates"]] == [
        "ttft_p95 < 1500ms", "itl_p99 < 1s abort after 30s",
    ]  # fmt: skip


def test_the_ttft_chart_draws_the_slo_and_the_gate_at_their_values(gated_run: Path) -> None:
    summary = orjson.loads((gated_run / "summary.json").read_bytes())
    # The simulator answers in milliseconds: both lines lie above every point drawn.
    assert summary["latency"]["ttft_s"]["max"] < 1.5
    chart = _charts(render_report(load_results(gated_run)))["ttft-over-time"]
    lines = _lines(chart)
    assert set(lines) == {"SLO ttft_p95 2 s", "gate ttft_p95 < 1500ms"}
    slo_y, _ = lines["SLO ttft_p95 2 s"]
    gate_y, gate_color = lines["gate ttft_p95 < 1500ms"]
    assert _value_at(chart, slo_y) == pytest.approx(2.0, abs=0.01)
    assert _value_at(chart, gate_y) == pytest.approx(1.5, abs=0.01)
    assert gate_color == "#1e7b17"  # passed
    # The axis reaches the highest line: its top tick is at or above it, the line inside.
    top_y, top_value = min(_y_ticks(chart))
    assert top_value >= 2.0
    assert slo_y >= top_y - 0.05


def test_every_latency_chart_draws_the_slos_and_gates_of_its_metrics(gated_run: Path) -> None:
    charts = _charts(render_report(load_results(gated_run)))
    ttft = {"SLO ttft_p95 2 s", "gate ttft_p95 < 1500ms"}
    assert set(_lines(charts["ttft-itl-percentiles"])) == {
        *ttft, "SLO itl_p99 200 ms", "gate itl_p99 < 1s",  # the abort clause left out
    }  # fmt: skip
    assert set(_lines(charts["ttft-by-agent"])) == ttft
    assert set(_lines(charts["ttft-by-step-kind"])) == ttft
    for name in ("e2e-over-time", "e2e-percentiles", "tokens-over-time", "session-funnel"):
        assert _lines(charts[name]) == {}, name  # no e2e SLO; session_success is no latency
    chart = charts["ttft-itl-percentiles"]
    y, _ = _lines(chart)["SLO itl_p99 200 ms"]
    assert _value_at(chart, y) == pytest.approx(0.2, abs=0.01)


def test_a_failed_gate_is_drawn_red_and_an_slo_far_above_the_data_stretches_the_axis(
    gated_run: Path, tmp_path: Path
) -> None:
    summary = orjson.loads((gated_run / "summary.json").read_bytes())
    failed = [{**summary["gates"][0], "verdict": "fail"}]
    charts = _report(gated_run, tmp_path, slos={"e2e_p95": 30.0}, gates=failed)
    assert set(_lines(charts["ttft-over-time"])) == {"gate ttft_p95 < 1500ms"}
    assert _lines(charts["ttft-over-time"])["gate ttft_p95 < 1500ms"][1] == "#c0262d"
    chart = charts["e2e-over-time"]
    y, _ = _lines(chart)["SLO e2e_p95 30 s"]
    assert _value_at(chart, y) == pytest.approx(30.0, abs=0.1)
    assert max(v for _, v in _y_ticks(chart)) >= 30.0
    assert summary["latency"]["e2e_s"]["max"] < 15.0  # the data alone would stop far below


def test_without_slos_or_gates_no_line_is_drawn_and_axes_follow_the_data(
    gated_run: Path, tmp_path: Path
) -> None:
    charts = _report(gated_run, tmp_path, slos=None, gates=None)
    for name in LATENCY_CHARTS:
        chart = charts[name]
        assert not [g for g in chart.iter(f"{SVG}g") if g.attrib.get("class") == "threshold"]
    # The simulator's TTFTs are milliseconds: without the lines, the axis stops well below.
    assert max(v for _, v in _y_ticks(charts["ttft-over-time"])) < 1.5


def test_a_profile_without_slos_writes_none(tmp_path: Path) -> None:
    profile = yaml.safe_load((ROOT / "profiles" / "quickstart.yaml").read_text())
    del profile["slos"]
    path = tmp_path / "no-slos.yaml"
    path.write_text(yaml.safe_dump({**profile, "name": "no-slos"}))
    summary = _run(tmp_path / "run", str(path), "--duration", "2s")
    assert "slos" not in summary
    page = render_report(load_results(tmp_path / "run"))
    assert 'class="threshold"' not in page


@pytest.mark.slow
def test_a_swarms_merged_summary_carries_the_slos(tmp_path: Path) -> None:
    summary = _run(tmp_path / "swarm", "quickstart", "--duration", "3s", "--processes", "2")
    assert summary["slos"] == QUICKSTART_SLOS
    assert summary["workers"]["expected"] == 2  # the master's merged summary
