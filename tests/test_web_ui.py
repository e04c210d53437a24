"""agentload's tabs in Locust's web UI: declared on the page, fed through /stats/requests,
downloadable as CSV and rendered by the real UI in headless Chromium.

The live tests share one bounded `agentload run --web` against a simulator that cuts 5% of
streams and rate-limits 5% of requests, so the Agent state tab has non-zero counts to show.
The row-building tests below them need no process.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_report_html import _headless
from test_swarm import AGENTLOAD, SMOKE, Processes, free_port, wait_for

from loadgen.observe import RunStats, SessionOutcome, SessionRecord, StepRecord
from loadgen.orchestration.web_ui_tables import (
    AGENT_COLUMNS,
    AGENTS_TAB,
    AGENTS_TITLE,
    STATE_COLUMNS,
    STATE_TAB,
    STATE_TITLE,
    TOTAL_ROW,
    agent_rows,
    state_rows,
)
from loadgen.protocol.failures import FailureKind

# Importing loadgen.orchestration.web_ui would import Locust, which patches this process.
AGENTS_CSV = "/agentload/agents.csv"
AGENTS = {"coding", "support"}  # ci-smoke's archetypes
INJECTED = ("stream_truncated", "rate_limited")  # what the simulator below is told to do


@dataclass
class LiveUI:
    base: str
    procs: Processes
    target: str  # the faulty simulator

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return resp.status, resp.read()
        except (urllib.error.URLError, ConnectionError) as exc:
            assert self.procs.procs["run"].poll() is None, self.procs.output("run")[-3000:]
            return -1, str(exc).encode()

    def extended_stats(self) -> dict[str, list[dict[str, Any]]]:
        """The tabs' rows from the UI's own poll, by tab key; {} while the UI is not up."""
        status, body = self.get("/stats/requests")
        if status != 200:
            return {}
        return {tab["key"]: tab["data"] for tab in json.loads(body)["extended_stats"]}


@pytest.fixture(scope="module")
def live_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveUI]:
    """A faulty simulator and a 120 s ci-smoke run with --web against it; both are ended after."""
    logs = tmp_path_factory.mktemp("web-ui")
    procs = Processes(logs)
    try:
        sim = procs.start(
            "sim",
            [*AGENTLOAD, "sim", "--preset", "fast", "--port", "0",
             "--fault-stream-cut", "0.05", "--fault-rate-limit", "0.05"],
        )  # fmt: skip

        def banner() -> re.Match[str] | None:
            assert sim.poll() is None, procs.output("sim")
            return re.search(r"on (http://127\.0\.0\.1:\d+/v1)", procs.output("sim"))

        wait_for("the sim's banner", lambda: banner() is not None, 60)
        found = banner()
        assert found is not None
        port = free_port()
        procs.start(
            "run",
            [*AGENTLOAD, "run", *SMOKE, "--duration", "120s", "--web", "--web-port", str(port),
             "--target", found.group(1), "--out", str(logs / "run")],
        )  # fmt: skip
        ui = LiveUI(f"http://127.0.0.1:{port}", procs, found.group(1))
        wait_for("GET / to answer 200", lambda: ui.get("/")[0] == 200, 60)
        # ci-smoke starts 8 agents of two archetypes at once; a step of each takes well under
        # a second on the fast preset, and about one in ten requests is faulty.
        wait_for(
            "a row per archetype and an injected failure",
            lambda: _seen(ui.extended_stats()),
            30,
        )
        yield ui
    finally:
        procs.close()


def _seen(tabs: dict[str, list[dict[str, Any]]]) -> bool:
    agents = {row["agent"] for row in tabs.get(AGENTS_TAB, []) if row["steps"] > 0}
    failed = {row["kind"] for row in tabs.get(STATE_TAB, []) if row["count"] > 0}
    return agents >= AGENTS and bool(failed & set(INJECTED))


# -- live --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_page_declares_the_agent_tabs_and_their_tables(live_ui: LiveUI) -> None:
    status, body = live_ui.get("/")
    assert status == 200
    found = re.search(r"window\.templateArgs = (\{.*\})\s*</script>", body.decode(), re.DOTALL)
    assert found, body[:2000]
    args = json.loads(found.group(1))
    assert args["extended_tabs"] == [
        {"key": AGENTS_TAB, "title": AGENTS_TITLE},
        {"key": STATE_TAB, "title": STATE_TITLE},
    ]
    tables = {table["key"]: table["structure"] for table in args["extended_tables"]}
    assert [c["key"] for c in tables[AGENTS_TAB]] == [key for key, _ in AGENT_COLUMNS]
    assert [c["key"] for c in tables[STATE_TAB]] == [key for key, _ in STATE_COLUMNS]
    assert [f["href"] for f in args["extended_csv_files"]] == [AGENTS_CSV]
    assert args["state"] in {"spawning", "running"}  # Locust's own arguments are still there


@pytest.mark.slow
def test_stats_requests_carries_an_agents_row_per_archetype_and_a_total(
    live_ui: LiveUI,
) -> None:
    rows = live_ui.extended_stats()[AGENTS_TAB]
    _, body = live_ui.get("/agentload/stats")
    seen_later = set(json.loads(body)["agents"])  # agents are only ever added
    names = [row["agent"] for row in rows]
    assert names[-1] == TOTAL_ROW
    assert set(names[:-1]) == AGENTS
    assert set(names[:-1]) <= seen_later
    for row in rows:
        assert set(row) == {key for key, _ in AGENT_COLUMNS}
        assert row["started"] > 0
        assert row["steps"] > 0
        assert 0 < row["ttft50"] <= row["ttft95"]  # milliseconds
        assert row["e2e95"] > 0
    agents, total = rows[:-1], rows[-1]
    # The engine counts the run's total before the agent's, and rows read agents first.
    assert total["steps"] >= sum(row["steps"] for row in agents)
    assert total["tokens"] > 0
    # Session times and output tokens split by archetype too, and add up to the total.
    assert all(row["tokens"] > 0 for row in agents)
    assert total["tokens"] >= sum(row["tokens"] for row in agents)


@pytest.mark.slow
def test_agent_state_rows_list_every_kind_with_the_injected_failures_counted(
    live_ui: LiveUI,
) -> None:
    rows = live_ui.extended_stats()[STATE_TAB]
    _, body = live_ui.get("/agentload/stats")
    counted_later = json.loads(body)["state_failures"]
    assert [row["kind"] for row in rows] == [kind.value for kind in FailureKind]
    hit = [row for row in rows if row["kind"] in INJECTED and row["count"] > 0]
    assert hit, rows
    for row in hit:
        assert row["count"] <= counted_later[row["kind"]]  # counts only grow
        assert row["rate"] > 0
        assert set(re.findall(r"(\w+) \d+", row["agents"])) <= AGENTS
        assert row["agents"]
    assert all(row["meaning"] for row in rows)
    assert {row["layer"] for row in rows} == {"agent state", "transport", "agent code"}


@pytest.mark.slow
def test_the_failures_tab_says_each_failures_kind_and_why(live_ui: LiveUI) -> None:
    def errors() -> list[dict[str, Any]]:
        status, body = live_ui.get("/stats/requests")
        rows: list[dict[str, Any]] = json.loads(body)["errors"] if status == 200 else []
        return rows

    wait_for("a failure in the Failures tab", lambda: bool(errors()), 30)
    said = [row["error"] for row in errors()]
    assert not any("RuntimeError" in text for text in said), said
    # The injected faults, each named by its kind and followed by why.
    assert any(text.startswith(("stream_truncated: ", "rate_limited: HTTP N")) for text in said), (
        said
    )


@pytest.mark.slow
def test_the_agents_csv_has_the_tabs_columns_and_rows(live_ui: LiveUI) -> None:
    status, body = live_ui.get(AGENTS_CSV)
    assert status == 200
    table = list(csv.reader(io.StringIO(body.decode())))
    assert table[0] == [title for _, title in AGENT_COLUMNS]
    assert [line[0] for line in table[1:]] == [*sorted(AGENTS), TOTAL_ROW]


def _requests_total(body: bytes) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == "agentload_requests_total"
    )


def test_the_ui_serves_the_runs_live_metrics(live_ui: LiveUI) -> None:
    status, body = live_ui.get("/metrics")
    assert status == 200
    assert _requests_total(body) > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tab", "title", "expected"),
    [(AGENTS_TAB, AGENTS_TITLE, ["coding", "support", TOTAL_ROW, "TTFT p95 (ms)"]),
     (STATE_TAB, STATE_TITLE, ["stream_truncated", "malformed_tool_call", "Per 1,000 steps"])],
)  # fmt: skip
def test_the_real_ui_renders_the_tab_in_headless_chromium(
    live_ui: LiveUI, tmp_path: Path, tab: str, title: str, expected: list[str]
) -> None:
    # The React app fetches /stats/requests after it loads; virtual time lets it do so
    # before the DOM is dumped (it needs no websocket).
    dom = _headless(
        tmp_path, "--virtual-time-budget=10000", "--dump-dom", f"{live_ui.base}/?tab={tab}"
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    cells = set(re.findall(r"<t[dh][^>]*>([^<]*)</t[dh]>", dom.stdout))
    assert set(expected) <= cells, sorted(cells)
    assert f">{title}<" in dom.stdout  # the tab itself, beside Locust's own


@pytest.mark.slow
def test_a_master_shows_the_merge_of_its_workers_agents(live_ui: LiveUI, tmp_path: Path) -> None:
    procs = Processes(tmp_path / "logs")
    try:
        port = free_port()
        procs.start(
            "run",
            [*AGENTLOAD, "run", *SMOKE, "--duration", "120s", "--processes", "2", "--web",
             "--web-port", str(port), "--target", live_ui.target, "--out", str(tmp_path / "run")],
        )  # fmt: skip
        master = LiveUI(f"http://127.0.0.1:{port}", procs, live_ui.target)
        # Workers report every 3 s; the first reports may hold one archetype only.
        wait_for(
            "both archetypes in the workers' reports", lambda: _seen(master.extended_stats()), 60
        )
        rows = master.extended_stats()[AGENTS_TAB]
        agents, total = rows[:-1], rows[-1]
        assert {row["agent"] for row in agents} == AGENTS
        # Merged reports are whole snapshots, so here the total is exactly the agents' sum.
        for key in ("started", "completed", "failed", "aborted", "steps", "errors"):
            assert total[key] == sum(row[key] for row in agents), key
        # The master's /metrics is the merge of what the workers shipped.
        status, body = master.get("/metrics")
        assert status == 200
        assert _requests_total(body) > 0
    finally:
        procs.close()


# -- rows, without a process -------------------------------------------------------------------


def _step(agent: str, *, ok: bool = True, failures: tuple[str, ...] = ()) -> StepRecord:
    return StepRecord(
        "s", agent, 0, "turn", "chat", 0.0, e2e_s=0.5, ttft_s=0.1 if ok else None,
        completion_tokens=40 if ok else None, ok=ok, failures=list(failures),
    )  # fmt: skip


def _session(agent: str, outcome: str) -> SessionRecord:
    return SessionRecord("s", agent, 0.0, duration_s=2.0, steps=1, outcome=outcome)


def test_no_agent_rows_before_any_agent_and_no_state_rate_before_any_step() -> None:
    stats = RunStats()
    assert agent_rows(stats) == []
    rows = state_rows(stats)
    assert len(rows) == len(FailureKind)
    assert all(row["count"] == 0 and row["rate"] is None for row in rows)


def test_each_agent_row_has_its_own_session_times_and_output_tokens() -> None:
    stats = RunStats()
    for agent, seconds, tokens in (("coding", 30.0, 400), ("support", 2.0, 40)):
        stats.session_started(agent)
        stats.add_step(dataclasses.replace(_step(agent), completion_tokens=tokens))
        stats.add_session(dataclasses.replace(_session(agent, SessionOutcome.COMPLETED),
                                              duration_s=seconds))  # fmt: skip
    coding, support, total = agent_rows(stats)
    assert (coding["session50"], coding["tokens"]) == (30.0, 400)
    assert (support["session50"], support["tokens"]) == (2.0, 40)
    assert total["tokens"] == 440


def test_session_success_leaves_aborted_sessions_out_and_empty_figures_are_none() -> None:
    stats = RunStats()
    for outcome in (SessionOutcome.COMPLETED, SessionOutcome.FAILED, SessionOutcome.ABORTED):
        stats.session_started("coding")
        stats.add_session(_session("coding", outcome))
    stats.session_started("support")
    stats.add_step(_step("support"))
    coding, support, total = agent_rows(stats)
    assert coding["success"] == 50.0  # 1 completed of 2 judged; the client stopped the third
    assert coding["active"] == 0
    assert coding["ttft50"] is None  # no step yet: empty, not zero
    assert support["success"] is None
    assert support["active"] == 1
    assert support["ttft50"] == pytest.approx(100.0, rel=0.01)
    assert total["agent"] == TOTAL_ROW
    assert total["started"] == 4
    assert total["session50"] == pytest.approx(2.0, rel=0.01)
    assert total["tokens"] == 40


def test_state_rows_count_each_kind_with_its_agents_rate_and_recoveries() -> None:
    stats = RunStats()
    for _ in range(3):
        stats.add_step(_step("coding", ok=False, failures=("stream_truncated",)))
    stats.add_step(_step("support", ok=False, failures=("stream_truncated",)))
    stats.add_step(_step("support", failures=("cache_miss",)))
    stats.recovery("stream_truncated", "coding")
    rows = {row["kind"]: row for row in state_rows(stats)}
    cut = rows["stream_truncated"]
    assert (cut["count"], cut["recovered"], cut["rate"]) == (4, 1, 800.0)
    assert cut["agents"] == "coding 3, support 1"
    assert rows["cache_miss"]["agents"] == "support 1"
    assert rows["timeout"]["agents"] == ""
    assert rows["cache_miss"]["layer"] == "agent state"
    assert rows["timeout"]["layer"] == "transport"
