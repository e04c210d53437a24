"""The HTML report of a run whose model reasons: TTFAT beside TTFT, answer beside output
tokens/s, reasoning tokens and share, by agent too, the `ttfat_*` SLOs and gates as lines, and
the ceiling's answer rate; a run whose model does not reason renders none of it.

The runs are real: `agentload run` against the built-in simulator, whose coding agents ask for
`reasoning_effort: low` and think for exactly 32 tokens before every answer (spread 0), while
the support agents ask for nothing and do not think.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from html import unescape
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from test_report_html import _Charts, _drawn, _headless
from test_report_thresholds import _charts, _lines, _value_at

from loadgen.gates.gates import format_value
from loadgen.gates.metrics import Unit
from loadgen.report import load_results, render_report
from loadgen.report.html.ceiling import ceiling_section, parse_ceiling

ROOT = Path(__file__).resolve().parents[1]
AGENTLOAD = [sys.executable, "-m", "loadgen"]
THINKING = 32  # reasoning tokens of every coding request
REASONING_CHARTS = {
    "answer-tokens-over-time", "ttfat-over-time", "ttft-ttfat-percentiles", "ttfat-by-agent",
}  # fmt: skip
PLAIN_CHARTS = {
    "tokens-over-time", "requests-over-time", "ttft-over-time", "e2e-over-time",
    "ttft-itl-percentiles", "e2e-percentiles", "ttft-by-agent", "ttft-by-step-kind",
    "session-funnel", "context-growth",
}  # fmt: skip
SLO = "SLO ttfat_p95 3 s"
GATE = "gate ttfat_p95 < 2500ms"


def _profile(reasoning: bool) -> dict[str, Any]:
    params = {
        "system_prompt_tokens": 400,
        "turns": 2,
        "steps_per_turn": {"uniform": [2, 4]},
        "output_tokens": {"uniform": [24, 64]},
        "tool_result_tokens": 200,
        "think_time_s": 0,
    }
    coding: dict[str, Any] = {"kind": "coding", "params": params}
    if reasoning:
        coding["reasoning_effort"] = "low"
    return {
        "name": "reasoning-report" if reasoning else "plain-report",
        "seed": 7,
        "time_scale": 0.01,
        "arrival": {"mode": "closed", "agents": 4},
        "agents": [coding, {"kind": "support", "params": {"think_time_s": 0}}],
        "sim": {"preset": "fast", "reasoning": {"tokens": {"low": THINKING}, "spread": 0}},
        "slos": {"ttft_p95": "2s", "ttfat_p95": "3s"},
    }


def _run(tmp: Path, reasoning: bool) -> Path:
    """`agentload run PROFILE --html` on the built-in simulator, a passing ttfat gate set."""
    profile = tmp / "profile.yaml"
    profile.write_text(yaml.safe_dump(_profile(reasoning)))
    out = tmp / "run"
    made = subprocess.run(
        [*AGENTLOAD, "run", str(profile), "--duration", "3s", "--quiet", "--out", str(out),
         "--gate", "ttfat_p95 < 2500ms", "--html", str(out / "report.html")],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def reasoning_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("reasoning"), reasoning=True)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("plain"), reasoning=False)


def _summary(run: Path) -> dict[str, Any]:
    summary: dict[str, Any] = orjson.loads((run / "summary.json").read_bytes())
    return summary


def _steps(run: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (run / "steps.jsonl").read_bytes().splitlines()]


def _page(run: Path) -> str:
    """The report `agentload run --html` wrote at the end of the run."""
    return (run / "report.html").read_text()


def _cards(page: str) -> list[tuple[str, str, str]]:
    """The headline cards, in order: (label, value, detail)."""
    found = re.findall(
        r'<div class="card"><div class="label">([^<]+)</div><div class="value">([^<]+)</div>'
        r'(?:<div class="detail">([^<]*)</div>)?',
        page.split("</header>", 1)[1].split("<section>", 1)[0],
    )
    return [(unescape(a), unescape(b), unescape(c)) for a, b, c in found]


def _table(page: str, first: str) -> dict[str, dict[str, str]]:
    """The table whose first header is `first`: each row by its first cell, cells by header."""
    match = re.search(rf"<table><tr><th>{first}</th>.*?</table>", page)
    assert match, f"no table headed {first!r}"
    rows = re.findall(r"<tr>(.*?)</tr>", match.group(0))
    heads = [unescape(h) for h in re.findall(r"<th[^>]*>([^<]*)</th>", rows[0])]
    table = {}
    for row in rows[1:]:
        cells = [unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", row)]
        table[cells[0]] = dict(zip(heads, cells, strict=True))
    return table


def _s(value: float | None) -> str:
    return format_value(value, Unit.SECONDS)


def test_the_run_reasoned_as_the_profile_asked(reasoning_run: Path) -> None:
    steps = _steps(reasoning_run)
    coding = [s for s in steps if s["agent"] == "coding" and s["ok"]]
    assert coding
    assert {s["reasoning_tokens"] for s in coding} == {THINKING}
    assert {s["reasoning_tokens"] for s in steps if s["agent"] == "support"} == {None}
    tokens = _summary(reasoning_run)["tokens"]
    assert tokens["reasoning"] == sum(s["reasoning_tokens"] or 0 for s in steps) > 0


def test_the_headline_cards_put_answer_rate_and_ttfat_beside_their_kin(
    reasoning_run: Path,
) -> None:
    s = _summary(reasoning_run)
    tokens, ttfat = s["tokens"], s["latency"]["ttfat_s"]
    cards = _cards(_page(reasoning_run))
    labels = [label for label, _, _ in cards]
    at = labels.index("output tokens/s")
    assert labels[at + 1 : at + 3] == ["answer tokens/s", "reasoning share"]
    assert labels[labels.index("TTFT p95") + 1] == "TTFAT p95"
    by_label = {label: (value, detail) for label, value, detail in cards}
    assert by_label["answer tokens/s"] == (
        f"{s['throughput']['answer_tokens_per_s']:,.1f}",
        f"output less reasoning · {tokens['answer']:,} answer tokens",
    )
    assert by_label["reasoning share"] == (
        format_value(tokens["reasoning_share"], Unit.RATIO),
        f"{tokens['reasoning']:,} reasoning tokens · "
        f"{tokens['reasoning_per_session_mean']:,.1f} per session",
    )
    assert by_label["TTFAT p95"] == (
        _s(ttfat["p95"]),
        f"first answer token · p50 {_s(ttfat['p50'])} · p99 {_s(ttfat['p99'])}",
    )
    # The coding agents think 32 tokens before answering: the first answer comes later.
    assert ttfat["p95"] > s["latency"]["ttft_s"]["p50"]


def test_the_reasoning_table_gives_the_run_and_each_agent(reasoning_run: Path) -> None:
    s = _summary(reasoning_run)
    table = _table(_page(reasoning_run), "agent</th><th>output tokens")
    assert set(table) == {"all", "coding", "support"}
    assert table["all"] == {
        "agent": "all",
        "output tokens": f"{s['tokens']['completion']:,}",
        "reasoning tokens": f"{s['tokens']['reasoning']:,}",
        "reasoning share": format_value(s["tokens"]["reasoning_share"], Unit.RATIO),
        "TTFT p95": _s(s["latency"]["ttft_s"]["p95"]),
        "TTFAT p50": _s(s["latency"]["ttfat_s"]["p50"]),
        "TTFAT p95": _s(s["latency"]["ttfat_s"]["p95"]),
        "TTFAT p99": _s(s["latency"]["ttfat_s"]["p99"]),
    }
    coding = s["by_agent"]["coding"]
    assert table["coding"]["reasoning tokens"] == f"{coding['tokens']['reasoning']:,}"
    assert table["coding"]["reasoning share"] == format_value(
        coding["tokens"]["reasoning"] / coding["tokens"]["completion"], Unit.RATIO
    )
    assert table["coding"]["TTFAT p95"] == _s(coding["latency"]["ttfat_s"]["p95"])
    assert table["support"]["reasoning tokens"] == "0"
    assert table["support"]["reasoning share"] == "0%"


def test_the_agent_and_step_kind_tables_add_ttfat_and_reasoning_tokens(
    reasoning_run: Path,
) -> None:
    steps, page = _steps(reasoning_run), _page(reasoning_run)
    agents = _table(page, "agent</th><th>requests")
    kinds = _table(page, "step kind")
    for table, key in ((agents, "agent"), (kinds, "kind")):
        thought: dict[str, int] = defaultdict(int)
        for step in steps:
            thought[step[key]] += step["reasoning_tokens"] or 0
        assert {name: row["reasoning tokens"] for name, row in table.items()} == {
            name: f"{n:,}" for name, n in thought.items()
        }
        assert all({"TTFAT p50", "TTFAT p95", "TTFAT p99"} <= set(row) for row in table.values())
    # A support agent does not think: its first answer token is its first token.
    for q in ("p50", "p95", "p99"):
        assert agents["support"][f"TTFAT {q}"] == agents["support"][f"TTFT {q}"]
    assert agents["coding"]["reasoning tokens"] == f"{THINKING * _coding_requests(steps):,}"


def _coding_requests(steps: list[dict[str, Any]]) -> int:
    return sum(1 for s in steps if s["agent"] == "coding" and s["reasoning_tokens"])


def test_the_reasoning_section_draws_every_chart_after_the_latency_ones(
    reasoning_run: Path,
) -> None:
    page = _page(reasoning_run)
    charts = re.findall(r'data-chart="([^"]+)"', page)
    assert set(charts) == PLAIN_CHARTS | REASONING_CHARTS
    titles = re.findall(r"<h2>([^<]+)</h2>", page)
    assert titles.index("Reasoning") == titles.index("Latency distribution") + 1
    tokens = page.split('data-chart="answer-tokens-over-time"', 1)[1].split("</svg>", 1)[0]
    assert re.findall(r'<path class="mark"[^>]*><title>([^<]+)</title>', tokens) == [
        "output tokens/s",
        "answer tokens/s",
    ]
    percentiles = page.split('data-chart="ttft-ttfat-percentiles"', 1)[1].split("</svg>", 1)[0]
    assert re.findall(r'<path class="mark"[^>]*><title>([^<]+)</title>', percentiles) == [
        "TTFT",
        "TTFAT",
    ]


def test_ttfat_charts_draw_the_ttfat_slos_and_gates_at_their_values(reasoning_run: Path) -> None:
    charts = _charts(_page(reasoning_run))
    for name in ("ttfat-over-time", "ttfat-by-agent"):
        lines = _lines(charts[name])
        assert set(lines) == {SLO, GATE}, name
        assert lines[GATE][1] == "#1e7b17"  # passed
        assert _value_at(charts[name], lines[SLO][0]) == pytest.approx(3.0, abs=0.02)
        assert _value_at(charts[name], lines[GATE][0]) == pytest.approx(2.5, abs=0.02)
    # The percentile chart draws both metrics' lines; TTFT's charts stay with TTFT's own.
    assert set(_lines(charts["ttft-ttfat-percentiles"])) == {SLO, GATE, "SLO ttft_p95 2 s"}
    for name in ("ttft-over-time", "ttft-by-agent", "ttft-itl-percentiles"):
        assert set(_lines(charts[name])) == {"SLO ttft_p95 2 s"}, name


def test_a_run_without_reasoning_shows_none_of_it(plain_run: Path) -> None:
    s = _summary(plain_run)
    assert s["tokens"]["reasoning"] == 0
    page = _page(plain_run)
    assert set(re.findall(r'data-chart="([^"]+)"', page)) == PLAIN_CHARTS
    for absent in ("TTFAT", "answer tokens", "reasoning", "<h2>Reasoning", "ttfat_p95 3"):
        assert absent not in page, absent
    labels = [label for label, _, _ in _cards(page)]
    assert labels == [
        "sessions completed", "requests", "output tokens/s", "TTFT p95", "ITL p99",
        "end-to-end p95", "prefix cache hits", "state failures",
    ]  # fmt: skip
    assert list(_table(page, "agent</th><th>requests")["coding"]) == [
        "agent", "requests", "failed", "TTFT p50", "TTFT p95", "TTFT p99", "e2e p50", "e2e p95",
    ]  # fmt: skip
    assert '<div class="tables">' in page


def test_a_summary_without_records_still_shows_the_reasoning_figures(
    reasoning_run: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(reasoning_run / "summary.json", bare / "summary.json")
    page = render_report(load_results(bare))
    charts = set(re.findall(r'data-chart="([^"]+)"', page))
    assert charts == {
        "ttft-itl-percentiles", "e2e-percentiles", "ttft-ttfat-percentiles", "session-funnel",
    }  # fmt: skip
    assert "TTFAT p95" in [label for label, _, _ in _cards(page)]
    assert set(_table(page, "agent</th><th>output tokens")) == {"all", "coding", "support"}


@pytest.mark.slow
def test_the_reasoning_report_renders_in_headless_chromium_with_every_plot_drawn(
    reasoning_run: Path, tmp_path: Path
) -> None:
    html = tmp_path / "report.html"
    made = subprocess.run(
        [*AGENTLOAD, "report", str(reasoning_run), "--html", str(html)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    dom = _headless(tmp_path, "--dump-dom", html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Charts()
    parser.feed(dom.stdout)
    assert set(parser.charts) == PLAIN_CHARTS | REASONING_CHARTS
    assert [name for name, marks in parser.charts.items() if not any(map(_drawn, marks))] == []
    assert parser.fetching == []


def _level(load: int, output: float, answer: float, ttft: float, ttfat: float) -> dict[str, Any]:
    return {"load": load, "output_tokens_per_s": output, "answer_tokens_per_s": answer,
            "ttft_p95_s": ttft, "ttfat_p95_s": ttfat, "e2e_p95_s": ttfat * 4}  # fmt: skip


REASONING_CEILING: dict[str, Any] = {
    "load_unit": "agents",
    "levels": [
        _level(8, 1500, 1100, 0.03, 0.4),
        _level(16, 2900, 2150, 0.035, 0.45),
        _level(32, 5200, 3900, 0.06, 0.7),
        _level(64, 7400, 5550, 0.2, 1.6),
    ],
    "ceiling": {
        "load": 32,
        "output_tokens_per_s": 5200,
        "answer_tokens_per_s": 3900,
        "reason": "beyond it: ttfat_p95 above 1 s",
    },
    "failed_first": {"load": 64, "slo": ["ttfat_p95 = 1.6 s, needs < 1 s"]},
    "stopped_by": "settled",
}


def _titles(chart: str) -> list[str]:
    return re.findall(r'<path class="mark"[^>]*><title>([^<]+)</title>', chart)


def test_the_ceiling_section_draws_answer_rate_and_ttfat_and_names_the_answer_rate() -> None:
    section = ceiling_section(parse_ceiling(REASONING_CEILING))
    throughput, latency = section.charts[:2]
    assert _titles(throughput) == ["output tokens/s", "answer tokens/s", "ceiling at 32 agents"]
    assert _titles(latency) == ["TTFT p95", "TTFAT p95", "e2e p95"]
    said = "At the ceiling: 3,900 answer tokens/s of 5,200 output tokens/s (the rest reasoning)."
    assert f"Ceiling: 32 agents. {said} Failed first at 64 agents" in section.note
    # A mark without its answer rate (an older search) takes its level's.
    older = {**REASONING_CEILING, "ceiling": {"load": 16, "reason": "why"}}
    note = ceiling_section(parse_ceiling(older)).note
    assert "At the ceiling: 2,150 answer tokens/s of 2,900 output tokens/s" in note


def test_a_ceiling_without_reasoning_draws_and_says_as_before() -> None:
    plain = {
        **REASONING_CEILING,
        "levels": [
            {
                **lv,
                "answer_tokens_per_s": lv["output_tokens_per_s"],
                "ttfat_p95_s": lv["ttft_p95_s"],
            }
            for lv in REASONING_CEILING["levels"]
        ],
    }
    section = ceiling_section(parse_ceiling(plain))
    throughput, latency = section.charts[:2]
    assert _titles(throughput) == ["output tokens/s", "ceiling at 32 agents"]
    assert _titles(latency) == ["TTFT p95", "e2e p95"]
    assert "answer" not in section.note
    assert "TTFAT" not in "".join(section.charts)
