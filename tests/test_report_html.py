"""The HTML report of a real run, opened in headless Chromium: it renders, every plot has drawn
marks, nothing is fetched; the screenshot is kept in test-artifacts/ for people to look at."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from html import escape, unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_gates_run import run_against_sim
from test_observe_summary_text import (
    SATURATING,
    sampled_server_report,
    unreachable_server_report,
    vllm_exposition,
)

from loadgen.errors import UsageError
from loadgen.report import load_results, render_report, save_summary
from loadgen.report.html.ceiling import ceiling_section, parse_ceiling
from loadgen.report.html.charts import session_label

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
AGENTLOAD = [sys.executable, "-m", "loadgen"]
EXPECTED_CHARTS = {
    "tokens-over-time", "requests-over-time", "ttft-over-time", "e2e-over-time",
    "ttft-itl-percentiles", "e2e-percentiles", "ttft-by-agent", "ttft-by-step-kind",
    "session-funnel", "context-growth", "failures-over-time", "ceiling-throughput",
    "ceiling-latency", "ceiling-slices-throughput", "ceiling-slices-ttft",
}  # fmt: skip


def _slices(tokens: float, ttft: float) -> list[dict[str, float]]:
    """What `agentload ceiling` adds to a level: its window's slices, here gently rising."""
    return [{"start_s": 15.0 * i, "duration_s": 15.0, "ttft_p95_s": ttft,
             "output_tokens_per_s": tokens * (0.97 + 0.02 * i)} for i in range(4)]  # fmt: skip


CEILING = {
    "load_unit": "agents",
    "levels": [
        {"load": load, "output_tokens_per_s": tps, "ttft_p95_s": ttft, "e2e_p95_s": e2e,
         "slices": _slices(tps, ttft)}
        for load, tps, ttft, e2e in (
            (8, 1500, 0.03, 0.4), (16, 2900, 0.035, 0.45), (32, 5200, 0.06, 0.6),
            (64, 7400, 0.2, 1.1), (128, 7600, 0.9, 2.6), (256, 7650, 2.4, 5.9),
        )
    ],
    "ceiling": {"load": 64, "reason": "TTFT p95 above the 1 s SLO beyond it"},
}  # fmt: skip


class _Charts(HTMLParser):
    """Collects each <svg class="chart"> and the data marks drawn inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, list[dict[str, str]]] = {}
        self._current: str | None = None
        self.fetching: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in {"script", "link", "img", "iframe"} or "src" in a or "href" in a:
            self.fetching.append(tag)
        if tag == "svg" and "chart" in a.get("class", ""):
            self._current = a["data-chart"]
            self.charts[self._current] = []
        elif self._current and "mark" in a.get("class", "").split():
            self.charts[self._current].append({"tag": tag, **a})

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._current = None


def _drawn(mark: dict[str, str]) -> bool:
    if mark["tag"] == "path":
        return mark.get("d", "").count("L") >= 1  # at least two points
    if mark["tag"] == "rect":
        return float(mark["width"]) > 0 and float(mark["height"]) > 0
    return mark["tag"] == "circle" and float(mark["r"]) > 0


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    summary = asyncio.run(run_against_sim(out, 8.0))
    assert summary["state_failures"]["stream_truncated"] > 0
    (out / "ceiling.json").write_bytes(orjson.dumps(CEILING))
    return out


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def _headless(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium_with_every_plot_drawn(
    report_dir: Path, tmp_path: Path
) -> None:
    html = tmp_path / "report.html"
    made = subprocess.run(
        [*AGENTLOAD, "report", str(report_dir), "--html", str(html),
         "--gate", "ttft_p95 < 2s", "--gate", "state_failures.stream_truncated == 0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 1, made.stdout + made.stderr  # the second gate fails, as written
    assert f"report: {html}" in made.stdout

    dom = _headless(tmp_path, "--dump-dom", html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Charts()
    parser.feed(dom.stdout)
    assert set(parser.charts) == EXPECTED_CHARTS
    empty = [name for name, marks in parser.charts.items() if not any(map(_drawn, marks))]
    assert empty == []
    assert parser.fetching == []  # self-contained: nothing to load from anywhere
    assert "1 of 2 gates failed" in dom.stdout
    assert "agentload report · gates-small" in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    taken = _headless(
        tmp_path, f"--screenshot={shot}", "--window-size=1400,3800", "--hide-scrollbars",
        html.as_uri(),
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kB
    shutil.copyfile(html, ARTIFACTS / "report.html")


def test_default_location_and_no_scripts_or_external_resources(report_dir: Path) -> None:
    made = subprocess.run(
        [*AGENTLOAD, "report", str(report_dir)], capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    page = (report_dir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert not re.search(r"""(src|href)=|url\(|@import""", page)
    assert "No gates were set for this run." in page  # the run itself judged none


def test_sections_without_data_are_left_out(report_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(report_dir / "summary.json", bare / "summary.json")
    page = render_report(load_results(bare))  # no records, no ceiling.json
    charts = set(re.findall(r'data-chart="([^"]+)"', page))
    assert charts == {"ttft-itl-percentiles", "e2e-percentiles", "session-funnel"}
    assert "<h2>Server</h2>" not in page  # not run with --scrape-target-metrics
    assert "workers reported" not in page  # not a swarm


def test_names_from_records_are_escaped(report_dir: Path, tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(report_dir, odd)
    steps = (odd / "steps.jsonl").read_text().replace('"agent":"support"', '"agent":"<b>x</b>"')
    (odd / "steps.jsonl").write_text(steps)
    page = render_report(load_results(odd))
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_a_malformed_ceiling_file_is_a_one_line_usage_error() -> None:
    with pytest.raises(UsageError, match=r"ceiling.json: levels.1 needs numeric `load`"):
        parse_ceiling({"levels": [{"load": 1, "output_tokens_per_s": 2}, {"load": "many"}]})
    with pytest.raises(UsageError, match="expected an object with a `levels` list"):
        parse_ceiling([1, 2])
    ceiling = parse_ceiling(CEILING)
    assert [lv.load for lv in ceiling.levels] == [8, 16, 32, 64, 128, 256]
    assert ceiling.ceiling_load == 64


def test_ceiling_slices_are_drawn_a_line_per_level_in_the_order_measured() -> None:
    def level(load: int, tokens: float) -> dict[str, object]:
        pieces = [{"start_s": 2.0 * i, "duration_s": 2.0, "output_tokens_per_s": tokens,
                   "ttft_p95_s": 0.1} for i in range(3)]  # fmt: skip
        return {"load": load, "output_tokens_per_s": tokens, "slices": pieces}

    # Bisection measures 16 before 12: the slices keep that order, the curve sorts by load.
    measured = [level(8, 400), level(16, 800), level(12, 600)]
    ceiling = parse_ceiling({"load_unit": "agents", "levels": measured})
    assert [lv.load for lv in ceiling.levels] == [8, 12, 16]
    charts = ceiling_section(ceiling).charts
    timeline = next(c for c in charts if 'data-chart="ceiling-slices-throughput"' in c)
    lines = re.findall(r'<path class="mark" d="M([\d.]+),[^"]*"[^>]*><title>([^<]+)</title>',
                       timeline)  # fmt: skip
    assert [name for _x, name in lines] == ["8 agents", "16 agents", "12 agents"]
    starts = [float(x) for x, _name in lines]
    assert starts == sorted(starts)  # laid end to end, in the order measured


def test_a_malformed_slice_is_a_one_line_usage_error_naming_it() -> None:
    level = {"load": 8, "output_tokens_per_s": 1.0, "slices": [{"start_s": 0}]}
    with pytest.raises(UsageError, match=r"levels.0.slices.0 needs numeric `start_s` and"):
        parse_ceiling({"levels": [level]})


def _report_with(report_dir: Path, tmp_path: Path, **sections: Any) -> str:
    """The report of the real run's summary with `sections` added (no records: quick)."""
    folder = tmp_path / "with-sections"
    folder.mkdir()
    summary = orjson.loads((report_dir / "summary.json").read_bytes())
    save_summary(folder, {**summary, **sections})
    return render_report(load_results(folder))


def _generator_keeping_up(report_dir: Path) -> dict[str, Any]:
    """The real run's generator health, declared unsaturated: on a busy CI machine the run's own
    schedule lag can cross the threshold and add a banner the test is not about."""
    generator = orjson.loads((report_dir / "summary.json").read_bytes())["generator"]
    return {**generator, "saturated": False, "reasons": []}


def _text(html: str) -> str:
    """What a reader sees of `html`: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _server_section(page: str) -> str:
    match = re.search(r"<section><h2>Server</h2>.*?</section>", page)
    assert match, "no Server section"
    return match.group(0)


async def test_the_server_section_names_what_saturated_first_and_when(
    report_dir: Path, tmp_path: Path
) -> None:
    page = _report_with(report_dir, tmp_path, server=await sampled_server_report(*SATURATING))

    section = _server_section(page)
    assert (
        '<div class="banner warn">vLLM: KV cache saturated first, 2.0 s into the run '
        "(then preemptions at 4.0 s, queue at 6.0 s).</div>"
    ) in section
    onsets = re.findall(r'<tr><td>([^<]+)</td><td class="(\w+)">([^<]+)</td>', section)
    assert onsets == [
        ("KV cache", "fail", "2.0 s · first"),
        ("preemptions", "fail", "4.0 s"),
        ("queue", "fail", "6.0 s"),
    ]


async def test_the_server_section_shows_the_targets_peaks_and_prefix_hits(
    report_dir: Path, tmp_path: Path
) -> None:
    page = _report_with(report_dir, tmp_path, server=await sampled_server_report(*SATURATING))

    section = _server_section(page)
    cards = re.findall(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>', section)
    assert cards == [
        ("KV cache peak", "99%"),
        ("waiting peak", "4"),
        ("preemptions", "5"),
        ("prefix cache hits (server)", "50%"),
    ]
    assert "It counted 4,000 prompt and 400 generation tokens." in _text(section)


async def test_a_server_with_room_to_spare_has_no_onsets_in_the_report(
    report_dir: Path, tmp_path: Path
) -> None:
    report = await sampled_server_report(vllm_exposition(0.2), vllm_exposition(0.4))
    section = _server_section(_report_with(report_dir, tmp_path, server=report))

    assert '<div class="banner none">vLLM: nothing saturated' in section
    assert section.count('<td class="pass">never</td>') == 3


async def test_unread_target_metrics_are_said_so_with_the_reason(
    report_dir: Path, tmp_path: Path
) -> None:
    report = await unreachable_server_report()
    section = _server_section(_report_with(report_dir, tmp_path, server=report))

    assert _text(section) == (
        "Server The target's metrics were requested (--scrape-target-metrics) but not read: "
        f"metrics unavailable from {report['metrics_url']} (2 failed scrapes, last: "
        f"{report['last_error']})."
    )


def test_a_lost_worker_is_named_in_a_warning_banner(report_dir: Path, tmp_path: Path) -> None:
    workers = {
        "expected": 2,
        "reported": ["worker-0", "worker-1"],
        "left": [],
        "lost": ["worker-1"],
    }
    page = _report_with(
        report_dir, tmp_path, workers=workers, generator=_generator_keeping_up(report_dir)
    )

    banners = re.findall(r'<div class="banner warn">(.*?)</div>', page)
    assert [_text(b) for b in banners] == [
        "Incomplete swarm: worker-1 was lost mid-run (killed, crashed or cut off): what it "
        "measured after its last report is missing from every figure of this report."
    ]
    assert "measured · 2 of 2 workers reported, 1 lost" in page


def test_a_record_file_that_stopped_early_is_said_in_a_warning_banner(
    report_dir: Path, tmp_path: Path
) -> None:
    page = _report_with(
        report_dir,
        tmp_path,
        results_incomplete="steps.jsonl: [Errno 28] No space left on device after 1234 records",
        generator=_generator_keeping_up(report_dir),
    )

    banners = re.findall(r'<div class="banner warn">(.*?)</div>', page)
    assert [_text(b) for b in banners] == [
        "Results incomplete: steps.jsonl: [Errno 28] No space left on device after 1234 "
        "records. The headline figures count the whole run; the charts and tables drawn from "
        "the record files stop early."
    ]


def test_the_subtitle_counts_workers_that_joined_the_running_swarm(
    report_dir: Path, tmp_path: Path
) -> None:
    workers = {"expected": 1, "reported": ["worker-0", "worker-1"], "left": [], "lost": []}
    page = _report_with(
        report_dir, tmp_path, workers=workers, generator=_generator_keeping_up(report_dir)
    )

    assert "measured · 2 workers reported (1 awaited at the start, 1 joined)" in page
    assert '<div class="banner warn">' not in page


def test_each_failure_kind_is_listed_with_the_messages_that_explain_it(report_dir: Path) -> None:
    results = load_results(report_dir)
    reasons = results.summary["failure_reasons"]["stream_truncated"]
    page = render_report(results)
    table = page.split("<h2>State failures</h2>", 1)[1]
    assert escape(reasons[0]["message"]) in table
    assert f"×{reasons[0]['count']:,}" in table


def test_a_failed_run_says_why_in_a_banner(report_dir: Path, tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    shutil.copytree(report_dir, failed)
    summary = orjson.loads((failed / "summary.json").read_bytes())
    summary["run_failed"] = (
        "every one of 12 requests failed (most frequent: http_error: <HTTP 500>)"
    )
    (failed / "summary.json").write_bytes(orjson.dumps(summary))
    page = render_report(load_results(failed))
    assert '<div class="banner fail">The run failed: every one of 12 requests failed' in page
    assert "&lt;HTTP 500&gt;" in page


@pytest.mark.parametrize(
    ("session_id", "label"),
    [
        ("w0-coding-0-s9", "coding 0, session 9"),
        ("w2-support-14-s0", "support 14, session 0 (worker 2)"),
        ("w0-research-3-s1.2", "research 3, session 1, sub-agent 2"),
        ("my-own-id", "my-own-id"),
    ],
)
def test_context_growth_legends_name_sessions_as_readers_do(session_id: str, label: str) -> None:
    assert session_label(session_id) == label


def test_the_context_chart_shows_no_raw_session_ids(report_dir: Path) -> None:
    page = render_report(load_results(report_dir))
    chart = page.split('data-chart="context-growth"', 1)[1].split("</svg>", 1)[0]
    assert "session" in chart
    assert not re.search(r"w\d+-\w+-\d+-s\d+", chart)
