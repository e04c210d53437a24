"""Honest session statistics (issue #14): sessions still running when a run ends are reported
with their ages (summary.json, the printed summary, the HTML report, a 2-process swarm's
merged summary), and session gates count them rather than passing on the short sessions that
happened to finish. Real `agentload run`s against the built-in simulator, plus the pieces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.gates import evaluate_gates, parse_gates
from loadgen.observe import LatencyHistogram, RunStats, SessionOutcome, SessionRecord
from loadgen.observe.histogram import censored_percentile
from loadgen.observe.summary import running_at_end
from loadgen.observe.summary_text import running_at_end_text
from tests.cli_runs import CliRun, agentload_run, write_profile

# Sessions of `long` take 40 turns with 0.5 s of think time between them (20 s and more):
# every one is still running when a 6 s run ends. `short` sessions are one quick request.
LONG = {
    "turns": 40,
    "steps_per_turn": 1,
    "think_time_s": 0.5,
    "tool_latency_s": 0,
    "output_tokens": 8,
    "user_tokens": 16,
}
SHORT = {**LONG, "turns": 1, "think_time_s": 0}


def _profile(arrival: dict[str, Any], short_idle_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": "long-sessions",
        "seed": 7,
        "time_scale": 1,
        "arrival": arrival,
        "agents": [
            {"kind": "support", "name": "long", "weight": 2, "params": LONG},
            {
                "kind": "support",
                "name": "short",
                "weight": 1,
                "params": {**SHORT, "idle_between_sessions_s": short_idle_s},
            },
        ],
        "sim": {"preset": "fast"},
        **extra,
    }


def _flagged(folder: Path) -> list[dict[str, Any]]:
    """The sessions.jsonl lines (workers' included) of sessions still running at the end."""
    lines = []
    for path in sorted(folder.glob("**/sessions.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("running_at_end"):
                lines.append(record)
    return lines


def _assert_sane_ages(summary: dict[str, Any], flagged: list[dict[str, Any]]) -> None:
    running = summary["sessions"]["running_at_end"]
    assert running["count"] == len(flagged) > 0
    assert running["count"] <= summary["sessions"]["aborted"]
    assert all(r["outcome"] == "aborted" for r in flagged)
    ages = sorted(r["duration_s"] for r in flagged)
    assert 0 < running["age_p50_s"] <= running["age_p90_s"] <= running["age_max_s"]
    assert running["age_max_s"] == max(ages) <= summary["duration_s"]
    assert min(ages) <= running["age_p50_s"] <= max(ages)


# --- a real run with sessions longer than itself ---------------------------------------


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliRun, Path]:
    tmp = tmp_path_factory.mktemp("running-at-end")
    out = tmp / "run"
    profile = write_profile(
        tmp / "long.yaml", _profile({"mode": "closed", "agents": 6}, short_idle_s=0.5)
    )
    run = asyncio.run(
        agentload_run(
            profile, out, "--duration", "6s",
            "--gate", "session_p90 < 2s", "--gate", "session_p90 < 10m",
            "--gate", "session_p50 < 2s", "--html", str(out / "report.html"),
            codes=(1,),  # the session gates fail: they must not pass on short sessions alone
        )
    )  # fmt: skip
    return run, out


@pytest.mark.slow
def test_the_summary_reports_the_sessions_still_running_with_sane_ages(
    long_run: tuple[CliRun, Path],
) -> None:
    run, out = long_run
    summary = run.summary
    _assert_sane_ages(summary, _flagged(out))
    running = summary["sessions"]["running_at_end"]
    assert summary["sessions"]["completed"] > 0  # short sessions finished: a p90 exists
    finished_p90 = summary["latency"]["session_s"]["p90"]
    assert running["age_max_s"] > 10 * finished_p90  # the long ones: far older than any
    assert running["older_than_finished_p90"] >= 1
    # Kaplan-Meier: too many still running for a p90 within the longest session seen.
    assert running["session_s"]["p90"] is None
    assert running["session_s"]["max"] == running["age_max_s"]
    long = summary["by_agent"]["long"]["sessions"]
    assert long["completed"] == 0
    assert long["running_at_end"]["count"] == long["aborted"] >= 1
    assert summary["by_agent"]["long"]["latency"]["session_s"]["p90"] is None
    assert summary["by_agent"]["short"]["latency"]["session_s"]["p90"] == pytest.approx(
        finished_p90, rel=0.01
    )


@pytest.mark.slow
def test_the_printed_summary_says_how_many_were_still_running(
    long_run: tuple[CliRun, Path],
) -> None:
    run, _out = long_run
    count = run.summary["sessions"]["running_at_end"]["count"]
    printed = " ".join(run.stdout.split())
    assert f"still running at the end: {count}, ages p50" in printed
    assert "the oldest longer than every finished session" in printed


@pytest.mark.slow
def test_the_report_shows_them_next_to_the_session_durations(
    long_run: tuple[CliRun, Path],
) -> None:
    run, out = long_run
    page = (out / "report.html").read_text()
    count = run.summary["sessions"]["running_at_end"]["count"]
    sessions = page[page.index("<h2>Sessions</h2>") :]
    assert "<th>still running at the end</th>" in sessions
    assert f"<tr><td>all</td><td>{run.summary['sessions']['completed']:,}</td>" in sessions
    assert "still running at the end · success" in page  # the sessions card says it too
    assert f"{count:,} still running at the end" in page


@pytest.mark.slow
def test_session_gates_do_not_pass_on_the_short_sessions_that_finished(
    long_run: tuple[CliRun, Path],
) -> None:
    run, _out = long_run
    gates = {g["gate"]: g for g in run.summary["gates"]}
    # Judged on finished sessions alone, both p90 gates would pass (short ones take ms).
    assert run.summary["latency"]["session_s"]["p90"] < 2
    settled = gates["session_p90 < 2s"]
    assert settled["verdict"] == "fail"
    assert "still running at the end" in settled["reason"]
    assert settled["value"] == pytest.approx(run.summary["sessions"]["running_at_end"]["age_max_s"])
    undecided = gates["session_p90 < 10m"]
    assert undecided["verdict"] == "fail"
    assert undecided["value"] is None
    assert "cannot tell" in undecided["reason"]
    # Most sessions were short and finished: their median is known, and said with the rest.
    median = gates["session_p50 < 2s"]
    assert median["verdict"] == "pass"
    assert "still running at the end" in median["reason"]


# --- which aborted sessions were running at the end ------------------------------------


@pytest.mark.slow
def test_sessions_a_ramp_down_retired_mid_run_are_not_counted(tmp_path: Path) -> None:
    stages = [
        {"kind": "hold", "duration": "3s", "target": 4},
        {"kind": "hold", "duration": "3s", "target": 2},
    ]
    spec = _profile({"mode": "closed", "agents": 4}, short_idle_s=0, stages=stages)
    spec["agents"] = spec["agents"][:1]  # long sessions only
    out = tmp_path / "run"
    run = asyncio.run(agentload_run(write_profile(tmp_path / "ramp.yaml", spec), out))
    sessions = run.summary["sessions"]
    assert sessions["aborted"] == 4  # two retired at 3 s, two cut off by the end at 6 s
    assert sessions["running_at_end"]["count"] == 2
    _assert_sane_ages(run.summary, _flagged(out))
    records = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    retired = [r["duration_s"] for r in records if not r["running_at_end"]]
    assert len(retired) == 2
    assert max(retired) < sessions["running_at_end"]["age_p50_s"]


@pytest.mark.slow
def test_a_run_whose_sessions_all_finish_reports_none(tmp_path: Path) -> None:
    # Each agent runs one quick session, then idles past the run's end: none in flight.
    spec = _profile({"mode": "closed", "agents": 3}, short_idle_s=600)
    spec["agents"] = spec["agents"][1:]
    out = tmp_path / "run"
    run = asyncio.run(
        agentload_run(
            write_profile(tmp_path / "short.yaml", spec), out, "--duration", "3s",
            "--gate", "sessions.running_at_end == 0", "--gate", "session_p90 < 10m",
        )
    )  # fmt: skip
    summary = run.summary
    assert summary["sessions"]["completed"] >= 1
    assert summary["sessions"]["aborted"] == 0
    running = summary["sessions"]["running_at_end"]
    assert running["count"] == 0
    assert running["age_max_s"] is None
    assert running["older_than_finished_p90"] == 0
    assert running["session_s"] == summary["latency"]["session_s"]
    assert "still running" not in run.stdout
    assert all(g["verdict"] == "pass" for g in summary["gates"])
    assert all("still running" not in g["reason"] for g in summary["gates"])
    assert not _flagged(out)


@pytest.mark.slow
def test_a_two_process_swarm_merges_the_workers_sessions_still_running(tmp_path: Path) -> None:
    # Open loop: each worker's arrival driver ends its sessions itself at the duration.
    spec = _profile({"mode": "open", "rate": 4}, short_idle_s=0)
    out = tmp_path / "run"
    run = asyncio.run(
        agentload_run(
            write_profile(tmp_path / "open.yaml", spec), out, "--duration", "6s",
            "--processes", "2",
        )
    )  # fmt: skip
    summary = run.summary
    assert len(summary["workers"]["reported"]) == 2
    flagged = _flagged(out)
    _assert_sane_ages(summary, flagged)
    # Open loop retires nobody mid-run: every aborted session was cut off by the end.
    assert summary["sessions"]["running_at_end"]["count"] == summary["sessions"]["aborted"]
    by_worker = {
        path.parent.name: sum(bool(json.loads(line).get("running_at_end"))
                              for line in path.read_text().splitlines())
        for path in out.glob("worker-*/sessions.jsonl")
    }  # fmt: skip
    assert sorted(by_worker) == ["worker-0", "worker-1"]
    assert all(n > 0 for n in by_worker.values())
    long = summary["by_agent"]["long"]["sessions"]["running_at_end"]
    assert long["count"] == summary["by_agent"]["long"]["sessions"]["aborted"] > 0


# --- the pieces -------------------------------------------------------------------------


def _histogram(*values: float) -> LatencyHistogram:
    hist = LatencyHistogram()
    hist.record_many(values)
    return hist


def test_kaplan_meier_counts_running_sessions_as_lasting_at_least_their_age() -> None:
    ended = _histogram(1.0, 2.0, 3.0, 4.0)
    # One session still running at 2.5 s: at risk until then, then no longer counted.
    running = _histogram(2.5)
    # Survival: 4/5 after 1 s, 3/5 after 2 s, 3/10 after 3 s, 0 after 4 s.
    assert censored_percentile(ended, running, 20) == pytest.approx(1.0, rel=0.005)
    assert censored_percentile(ended, running, 40) == pytest.approx(2.0, rel=0.005)
    assert censored_percentile(ended, running, 50) == pytest.approx(3.0, rel=0.005)
    assert censored_percentile(ended, running, 90) == pytest.approx(4.0, rel=0.005)
    # Nothing running: the plain percentile of finished sessions.
    for q in (50, 90, 99):
        assert censored_percentile(ended, LatencyHistogram(), q) == ended.percentile(q)
    # Three of seven still running past every finished one: the p90 is beyond what was seen.
    assert censored_percentile(ended, _histogram(10.0, 11.0, 12.0), 90) is None
    assert censored_percentile(ended, _histogram(10.0, 11.0, 12.0), 50) == pytest.approx(
        4.0, rel=0.005
    )


def test_count_above_follows_the_reported_values() -> None:
    hist = _histogram(1.0, 2.0, 3.0, 10.0)
    assert hist.count_above(0.5) == 4
    assert hist.count_above(2.5) == 2
    assert hist.count_above(10.0) == 0
    assert LatencyHistogram().count_above(1.0) == 0


def _session(duration: float, outcome: str, *, at_end: bool = False) -> SessionRecord:
    return SessionRecord("s", "coder", 0.0, duration, 3, outcome, running_at_end=at_end)


def test_run_stats_keep_the_ages_of_sessions_the_end_cut_off_and_merge_them() -> None:
    worker_a, worker_b = RunStats(), RunStats()
    worker_a.add_session(_session(1.0, SessionOutcome.COMPLETED))
    worker_a.add_session(_session(7.0, SessionOutcome.ABORTED, at_end=True))
    worker_a.add_session(_session(3.0, SessionOutcome.ABORTED))  # a ramp-down's: not counted
    worker_b.add_session(_session(9.0, SessionOutcome.ABORTED, at_end=True))
    merged = RunStats()
    for worker in (worker_a, worker_b):
        merged.merge(RunStats.from_dict(json.loads(json.dumps(worker.to_dict()))))
    assert merged.running_at_end_s == _histogram(7.0, 9.0)
    assert merged.agents["coder"].running_at_end_s == _histogram(7.0, 9.0)
    summary = merged.summary(target={}, profile="p", duration_s=10.0, generator={})
    running = summary["sessions"]["running_at_end"]
    assert running["count"] == 2
    assert running["age_max_s"] == 9.0
    assert running["older_than_finished_p90"] == 2
    assert summary["by_agent"]["coder"]["sessions"]["running_at_end"]["count"] == 2
    assert summary["sessions"]["aborted"] == 3


def test_a_worker_of_an_older_version_merges_without_ages() -> None:
    data = RunStats().to_dict()
    del data["histograms"]["running_at_end_s"]
    assert RunStats.from_dict(data).running_at_end_s.count == 0


def _summary_with(ended: list[float], running: list[float]) -> dict[str, Any]:
    stats = RunStats()
    for d in ended:
        stats.add_session(_session(d, SessionOutcome.COMPLETED))
    for d in running:
        stats.add_session(_session(d, SessionOutcome.ABORTED, at_end=True))
    return stats.summary(target={}, profile="p", duration_s=100.0, generator={})


def _verdicts(summary: dict[str, Any], *gates: str) -> list[tuple[bool, float | None, str]]:
    return [(r.passed, r.value, r.reason) for r in evaluate_gates(summary, parse_gates(gates))]


def test_session_gates_judge_the_estimate_counting_running_sessions() -> None:
    # 18 sessions of 1 s finished; 2 running at 60 s: the p90 lies within, at 1 s; the p95
    # does not: more than 5% of sessions lasted longer than any the run saw end.
    summary = _summary_with([1.0] * 18, [60.0, 60.0])
    ((p90_ok, p90, reason), (p95_ok, p95, why), (max_ok, longest, _)) = _verdicts(
        summary, "session_p90 < 2s", "session_p95 < 2s", "session_max < 30s"
    )
    assert p90_ok
    assert p90 == pytest.approx(1.0, rel=0.005)
    assert "counting the 2 sessions still running at the end" in reason
    assert not p95_ok
    assert p95 == 60.0
    assert "fewer than 95%" in why
    assert not max_ok
    assert longest == 60.0
    # Beyond what was seen and above the bound: this run cannot tell, so the gate fails.
    ((undecided, value, because),) = _verdicts(summary, "session_p95 < 10m")
    assert not undecided
    assert value is None
    assert "cannot tell" in because
    # ... while a lower bound the run did establish passes.
    ((at_least, _, _),) = _verdicts(summary, "session_p95 > 30s")
    assert at_least


def test_session_gates_without_sessions_running_at_the_end_are_judged_as_before() -> None:
    summary = _summary_with([1.0, 2.0, 3.0], [])
    ((passed, value, reason),) = _verdicts(summary, "session_p90 < 5s")
    assert passed
    assert value == summary["latency"]["session_s"]["p90"]
    assert reason == f"session_p90 = {value:.4g} s, < 5 s"
    ((zero, _, _),) = _verdicts(summary, "sessions.running_at_end == 0")
    assert zero


def test_the_printed_line_compares_ages_with_the_finished_sessions() -> None:
    summary = _summary_with([60.0] * 9 + [300.0], [30.0, 420.0, 720.0])
    line = running_at_end_text(summary["sessions"], summary["latency"]["session_s"])
    # Percentiles are read from the histogram (within 0.4%); the max is exact.
    assert line == (
        "still running at the end: 3, ages p50 7.02 min, max 12 min; 2 older than the finished "
        "sessions' p90 (60.1 s), the oldest longer than every finished session"
    )
    nothing_finished = _summary_with([], [5.0])
    line = running_at_end_text(
        nothing_finished["sessions"], nothing_finished["latency"]["session_s"]
    )
    assert line == "still running at the end: 1, ages p50 5 s, max 5 s; no session completed"
    assert running_at_end_text(_summary_with([1.0], [])["sessions"], {}) is None


def test_the_section_equals_the_finished_figures_when_nothing_was_running() -> None:
    ended = _histogram(1.0, 2.0, 3.0)
    section = running_at_end(ended, LatencyHistogram())
    assert section["count"] == 0
    assert section["session_s"] == ended.quantiles_dict()
