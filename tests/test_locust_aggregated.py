"""Locust's "Aggregated" row and Charts count the LLM calls (STEP), not whole sessions too.

Each session is also a Locust request (SESSION, its duration in seconds where a step takes a
fraction): added to Locust's total, it counted as one more request and made the aggregate
percentiles a session's. SESSION rows and their failures stay listed on their own; the
total (Aggregated in the web UI, --csv and --html, the Charts' lines, a master's merge of its
workers' totals) is the STEP rows'. Real runs against a simulator that cuts and rate-limits
a few requests, so that failures are counted too.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_swarm import (
    AGENTLOAD,
    LOCUST,
    ROOT,
    SMOKE,
    Processes,
    child_env,
    free_port,
    locustfile_path,
    wait_for,
)

Row = dict[str, Any]


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path / "logs")
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="module")
def faulty_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fast simulator that cuts 5% of streams and rate-limits 5% of requests; its URL."""
    group = Processes(tmp_path_factory.mktemp("sim"))
    try:
        sim = group.start(
            "sim",
            [*AGENTLOAD, "sim", "--preset", "fast", "--port", "0",
             "--fault-stream-cut", "0.05", "--fault-rate-limit", "0.05"],
        )  # fmt: skip

        def banner() -> re.Match[str] | None:
            assert sim.poll() is None, group.output("sim")
            return re.search(r"on (http://127\.0\.0\.1:\d+/v1)", group.output("sim"))

        wait_for("the sim's banner", lambda: banner() is not None, 60)
        found = banner()
        assert found is not None
        yield found.group(1)
    finally:
        group.close()


def assert_aggregated_is_the_steps(rows: list[Row], errors: list[Row]) -> int:
    """`rows`: Locust's entries then its total, as dicts of to_dict()'s keys; errors: the
    Failures tab's. Returns the largest step time (ms)."""
    *entries, total = rows
    assert total["name"] == "Aggregated", total
    steps = [r for r in entries if r["method"] == "STEP"]
    sessions = [r for r in entries if r["method"] == "SESSION"]
    assert {r["method"] for r in entries} == {"STEP", "SESSION"}, entries
    assert sum(r["num_requests"] for r in sessions) > 0  # still listed, on their own rows
    assert total["num_requests"] == sum(r["num_requests"] for r in steps), (total, entries)
    assert total["num_failures"] == sum(r["num_failures"] for r in steps), (total, entries)
    step_max = max(r["max_response_time"] for r in steps)
    assert total["max_response_time"] == step_max, (total, entries)
    # Percentiles are of Locust's rounded times (at most 5% up); a session's are seconds.
    assert total["response_time_percentile_0.95"] <= step_max * 1.06 + 1, total
    # A failed session is still in the Failures tab.
    failed = {r["name"] for r in sessions if r["num_failures"] > 0}
    assert failed <= {e["name"] for e in errors if e["method"] == "SESSION"}, errors
    return int(step_max)


def _get(base: str, path: str, procs: Processes) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            return resp.status, resp.read()
    except (urllib.error.URLError, ConnectionError) as exc:
        assert procs.procs["run"].poll() is None, procs.output("run")[-3000:]
        return -1, str(exc).encode()


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2], ids=["local", "master-2-workers"])
def test_the_web_uis_aggregated_row_and_chart_lines_count_steps_only(
    faulty_sim: str, procs: Processes, tmp_path: Path, processes: int
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs.start(
        "run",
        [*AGENTLOAD, "run", *SMOKE, "--duration", "60s", "--processes", str(processes),
         "--web", "--web-port", str(port), "--target", faulty_sim, "--out", str(tmp_path / "run")],
    )  # fmt: skip
    wait_for("GET / to answer 200", lambda: _get(base, "/", procs)[0] == 200, 60)

    def report() -> dict[str, Any]:
        status, body = _get(base, "/stats/requests", procs)
        found: dict[str, Any] = json.loads(body) if status == 200 else {}
        return found

    def sessions_and_steps() -> bool:
        rows = report().get("stats", [])
        counts = {
            m: sum(r["num_requests"] for r in rows if r["method"] == m) for m in ("STEP", "SESSION")
        }
        return counts["SESSION"] >= 3 and counts["STEP"] > 0

    # ci-smoke's coding sessions last about two seconds; workers report every 3 s.
    wait_for("finished sessions in the statistics", sessions_and_steps, 60)
    now = report()
    step_max = assert_aggregated_is_the_steps(now["stats"], now["errors"])
    # The Charts tab's response-time lines are these (Locust's total, last 10 s).
    for line, value in now["current_response_time_percentiles"].items():
        assert (value or 0) <= step_max * 1.06 + 1, (line, value, step_max)


def _template_args(page: str) -> dict[str, Any]:
    at = page.index("window.templateArgs = ") + len("window.templateArgs = ")
    args, _ = json.JSONDecoder().raw_decode(page, at)
    assert isinstance(args, dict)
    return args


def _csv_rows(path: Path) -> list[Row]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2], ids=["local", "master-2-workers"])
def test_locusts_csv_and_html_aggregated_and_charts_count_steps_only(
    faulty_sim: str, procs: Processes, tmp_path: Path, processes: int
) -> None:
    smoke = (ROOT / "profiles" / "ci-smoke.yaml").read_text().replace("duration: 20s\n", "")
    profile = tmp_path / "short.yaml"
    profile.write_text(f"{smoke}\nstages:\n  - {{kind: hold, duration: 8s, target: 4}}\n")
    prefix, html = tmp_path / "locust", tmp_path / "locust.html"
    procs.start(
        "locust",
        # Without --processes a local runner; --processes 2 a master and two forked workers.
        [*LOCUST, "-f", locustfile_path(), "--headless",
         *(["--processes", str(processes)] if processes > 1 else []), "--host", faulty_sim,
         "--agentload-out", str(tmp_path / "out"), "--csv", str(prefix), "--html", str(html),
         "--only-summary", "--exit-code-on-error", "0"],  # the sim's faults are failures
        AGENTLOAD_PROFILE=str(profile),
    )  # fmt: skip
    assert procs.wait("locust", timeout=90) == 0, procs.output("locust")[-3000:]

    rows = [
        {
            "method": r["Type"],
            "name": r["Name"],
            "num_requests": int(r["Request Count"]),
            "num_failures": int(r["Failure Count"]),
            "max_response_time": round(float(r["Max Response Time"])),
            "response_time_percentile_0.95": float(r["95%"]),
        }
        for r in _csv_rows(Path(f"{prefix}_stats.csv"))
    ]
    failures = [
        {"method": r["Method"], "name": r["Name"]}
        for r in _csv_rows(Path(f"{prefix}_failures.csv"))
    ]
    step_max = assert_aggregated_is_the_steps(rows, failures)
    # The CSV's history (its Charts): the Aggregated line each second.
    history = [
        r for r in _csv_rows(Path(f"{prefix}_stats_history.csv")) if r["Name"] == "Aggregated"
    ]
    assert history
    for r in history:
        assert (0.0 if r["95%"] == "N/A" else float(r["95%"])) <= step_max * 1.06 + 1, r

    args = _template_args(html.read_text())
    assert_aggregated_is_the_steps(args["requests_statistics"], args["failures_statistics"])
    assert args["history"]
    for point in args["history"]:
        for key in ("response_time_percentile_0.5", "response_time_percentile_0.95"):
            assert point[key][1] <= step_max * 1.06 + 1, (key, point)


_STATS_SCRIPT = textwrap.dedent(
    """
    from locust.env import Environment
    from locust.event import Events
    from locust.stats import RequestStats, setup_distributed_stats_event_listeners

    from loadgen.orchestration.locust_stats import StepTotalStats, steps_only_in_total
    from loadgen.orchestration.process_engine import LocustReporter, StepFailure

    CALLS = [
        ("STEP", "coding turn", 120.0, 10, None),
        ("STEP", "coding turn", 310.0, 10, StepFailure("rate_limited", "HTTP 429")),
        ("SESSION", "coding", 9000.0, 3, None),
        ("SESSION", "coding", 11000.0, 2, StepFailure("session failed", "agent_error")),
        ("STEP", "support turn", 80.0, 5, None),
        ("SESSION", "support", 2500.0, 1, None),
    ]

    def feed(stats, calls):
        for method, name, ms, length, exc in calls:
            stats.log_request(method, name, ms, length)
            if exc is not None:
                stats.log_error(method, name, exc)
        return stats

    def entry(e):
        return (e.num_requests, e.num_failures, e.total_response_time, e.min_response_time,
                e.max_response_time, dict(e.response_times), e.total_content_length)

    def errors(stats):
        return {k: (e.method, e.name, e.to_name(), e.occurrences) for k, e in stats.errors.items()}

    # The reporter makes its process's stats (in use by the runner) keep SESSION out.
    env = Environment(events=Events())
    runner = env.create_local_runner()
    before = env.stats
    LocustReporter(None, env)
    assert env.stats is before and type(env.stats) is StepTotalStats
    for method, name, ms, length, exc in CALLS:
        env.events.request.fire(request_type=method, name=name, response_time=ms,
                                response_length=length, exception=exc, context={})
    ours = env.stats
    plain = feed(RequestStats(), CALLS)
    steps = feed(RequestStats(), [c for c in CALLS if c[0] == "STEP"])
    assert {k: entry(e) for k, e in ours.entries.items()} == {
        k: entry(e) for k, e in plain.entries.items()}
    assert errors(ours) == errors(plain) and len(ours.errors) == 2
    assert entry(ours.total) == entry(steps.total), (entry(ours.total), entry(steps.total))
    assert (ours.num_requests, ours.num_failures) == (3, 1)
    ours.reset_all()
    assert type(env.stats) is StepTotalStats and ours.total.num_requests == 0
    runner.quit()

    # A master's total is its workers' totals: STEP only, rows and errors all there.
    worker = RequestStats(use_response_times_cache=False)
    steps_only_in_total(worker)
    steps_only_in_total(worker)  # once is enough; again changes nothing
    worker_events, master_events, master = Events(), Events(), RequestStats()
    setup_distributed_stats_event_listeners(worker_events, worker)
    setup_distributed_stats_event_listeners(master_events, master)
    for _ in range(2):  # each report carries (and clears) what the worker logged since
        feed(worker, CALLS)
        data = {}
        worker_events.report_to_master.fire(client_id="w", data=data)
        master_events.worker_report.fire(client_id="w", data=data)
    assert (master.total.num_requests, master.total.num_failures) == (6, 2)
    assert master.total.max_response_time == 310.0
    assert master.entries[("coding", "SESSION")].num_requests == 4
    assert master.entries[("coding", "SESSION")].num_failures == 2
    assert sorted(e.method for e in master.errors.values()) == ["SESSION", "STEP"]

    # Another RequestStats subclass (a plugin's) is left as it is.
    class Other(RequestStats):
        pass

    other = Other()
    steps_only_in_total(other)
    assert type(other) is Other
    print("ok")
    """
)


def test_session_requests_keep_their_rows_and_failures_but_leave_the_total() -> None:
    # In a subprocess: importing Locust patches the standard library, which this one must not.
    result = subprocess.run(
        [sys.executable, "-c", _STATS_SCRIPT],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
