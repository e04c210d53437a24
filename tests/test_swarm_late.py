"""Workers that join a running swarm (`--scale worker=N`, a replica a second late) take a share.

A master waits for one worker and starts the run; a second worker connects mid-run. Each
worker writes under its own folder, so the records say which one did what.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_swarm import (
    SMOKE,
    Processes,
    Record,
    assert_counts_are_its_own,
    assert_summary_is_the_sum_of,
    free_port,
    line_count,
    procs,
    read_jsonl,
    records,
    sim_url,
    start_master,
    start_worker,
    wait_for,
)
from tests.test_swarm_metrics import (
    Samples,
    assert_scraped_totals_are_the_summarys,
    scrape_until_it_exits,
)

__all__ = ["procs", "sim_url"]  # fixtures used here

pytestmark = pytest.mark.slow


@dataclasses.dataclass
class LateJoin:
    """A run with one worker from the start and others that joined mid-run, one by one."""

    summary: Record
    early: Path  # each worker's results folder (worker-<index>/ inside)
    late: list[Path]
    scraped: Samples  # the master's last /metrics

    @property
    def workers(self) -> list[Path]:
        return [self.early, *self.late]

    def folder(self, which: Path) -> str:
        found = list(which.glob("worker-*"))
        assert len(found) == 1, f"{which.name} wrote {len(found)} results folders (no agents?)"
        return found[0].name

    def sessions(self, which: Path) -> list[Record]:
        return sessions_in(which)

    def first_session(self, which: Path) -> float:
        return min(s["started_unix"] for s in self.sessions(which))


def sessions_in(folder: Path) -> list[Record]:
    """The sessions.jsonl records of the worker writing under `folder`."""
    return read_jsonl(sorted(folder.glob("worker-*/sessions.jsonl")))


def finished_sessions(folder: Path) -> int:
    return sum(line_count(f) for f in folder.glob("worker-*/sessions.jsonl"))


def join_late(
    sim_url: str,
    tmp: Path,
    group: Processes,
    profile: list[str],
    duration: str | None,
    late_workers: int = 1,
    sessions_before: int = 3,
) -> LateJoin:
    """Master (expecting 1 worker, serving metrics) and an early worker; `late_workers` join
    one by one, each once the one before has finished `sessions_before` sessions."""
    out, port = tmp / "run", free_port()
    metrics = ["--prometheus-port", "0"]
    master = start_master(group, sim_url, out, duration, port, 1, profile, extra=metrics)
    early = tmp / "early"
    start_worker(group, "early", sim_url, early, duration, port, profile)
    late: list[Path] = []
    for i in range(late_workers):
        before = late[-1] if late else early
        wait_for(
            f"{before.name}'s first sessions",
            lambda b=before: finished_sessions(b) >= sessions_before,
            60,
        )
        late.append(tmp / f"late{i}")
        start_worker(group, late[-1].name, sim_url, late[-1], duration, port, profile)
    scraped = scrape_until_it_exits(group, "master", master, timeout=120)
    assert master.returncode == 0, group.output("master")
    for which in (early, *late):
        assert group.wait(which.name, timeout=60) == 0, group.output(which.name)
    return LateJoin(json.loads((out / "summary.json").read_text()), early, late, scraped)


# -- closed loop: a hold of 8 agents; a second worker joins during it, then a third ----------


@pytest.fixture(scope="module")
def closed_loop(sim_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LateJoin]:
    tmp = tmp_path_factory.mktemp("late-closed")
    group = Processes(tmp / "logs")
    try:
        yield join_late(sim_url, tmp, group, SMOKE, "20s", late_workers=2)
    finally:
        group.close()


def test_workers_that_join_a_hold_take_their_share_of_the_agents(closed_loop: LateJoin) -> None:
    run = closed_loop
    folders = [run.folder(w) for w in run.workers]
    assert run.summary["workers"]["reported"] == sorted(folders)
    assert run.summary["workers"]["lost"] == []
    # Each joined mid-run, after the one before had agents.
    starts = [run.first_session(w) for w in run.workers]
    assert starts[0] + 1 < starts[1] < starts[2], starts
    by_worker = run.summary["workers"]["by_worker"]
    # The third came after the second's rebalance: Locust moves agents to it only with
    # rebalancing on (without, it would idle until the user count next changed).
    for late in run.late:
        assert by_worker[run.folder(late)]["sessions"]["completed"] > 0, late.name
    for which, folder in zip(run.workers, folders, strict=True):
        assert_counts_are_its_own(by_worker[folder], *records(which))


def test_late_workers_measurements_are_in_the_merged_totals(closed_loop: LateJoin) -> None:
    steps: list[Record] = []
    sessions: list[Record] = []
    for which in closed_loop.workers:
        more_steps, more_sessions = records(which)
        steps += more_steps
        sessions += more_sessions
    assert_summary_is_the_sum_of(closed_loop.summary, steps, sessions)


def test_the_masters_metrics_count_late_workers_samples(closed_loop: LateJoin) -> None:
    assert_scraped_totals_are_the_summarys(closed_loop.scraped, closed_loop.summary)


def test_agents_moved_to_a_late_worker_end_as_aborted_never_failed(closed_loop: LateJoin) -> None:
    run = closed_loop
    sessions = run.sessions(run.early)
    run_end = max(s["started_unix"] + s["duration_s"] for s in sessions)
    # The rebalances took agents from the early worker mid-run: their sessions in flight
    # ended then, seconds before the run's own stop ended the others.
    moved = [
        s
        for s in sessions
        if s["outcome"] == "aborted" and s["started_unix"] + s["duration_s"] < run_end - 3
    ]
    assert moved
    assert [s for s in sessions if s["outcome"] == "failed"] == []
    assert run.summary["sessions"]["failed"] == 0
    assert run.summary["requests"]["failed"] == 0


# -- open loop: RATE sessions/s of one step each for ARRIVING_S, then none for QUIET_S -----

RATE, ARRIVING_S, QUIET_S = 20.0, 24.0, 4.0


def one_step_sessions(folder: Path) -> list[str]:
    """A profile whose sessions are one short step: a rate high enough for tight counts,
    cheap enough for a shared 2-core machine."""
    profile = folder / "one-step.yaml"
    profile.write_text(
        textwrap.dedent(
            f"""
            name: one-step
            seed: 42
            time_scale: 0.01
            arrival: {{mode: open, rate: {RATE:g}}}
            agents:
              - kind: support
                params: {{turns: 1, steps_per_turn: 1, output_tokens: {{uniform: [16, 32]}}}}
            stages:
              - {{kind: hold, duration: {ARRIVING_S:g}s}}
              - {{kind: hold, duration: {QUIET_S:g}s, target: 0}}
            """
        )
    )
    return [str(profile), "--quiet"]


def within_poisson(count: int, expected: float) -> bool:
    """Within 5 standard deviations of a Poisson count of arrivals: the errors looked for
    (a share not split, or not taken over) are multiples of that."""
    return abs(count - expected) <= 5 * math.sqrt(expected)


def started_between(sessions: list[Record], start: float, end: float) -> int:
    return sum(start <= s["started_unix"] < end for s in sessions)


@pytest.fixture(scope="module")
def open_loop(sim_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LateJoin]:
    tmp = tmp_path_factory.mktemp("late-open")
    group = Processes(tmp / "logs")
    try:
        # The late worker joins about 3 s in (RATE x 3 s of the early one's sessions).
        profile = one_step_sessions(tmp)
        yield join_late(sim_url, tmp, group, profile, None, sessions_before=round(RATE * 3))
    finally:
        group.close()


@dataclasses.dataclass
class Timeline:
    """When the run began (the early worker's first arrival) and the late one took over."""

    began: float
    joined: float  # seconds into the run


def timeline(run: LateJoin) -> Timeline:
    began = run.first_session(run.early)
    return Timeline(began, run.first_session(run.late[0]) - began)


def test_an_open_loop_run_keeps_its_rate_when_a_worker_joins(open_loop: LateJoin) -> None:
    started = open_loop.summary["sessions"]["started"]
    # A late worker running the whole rate would add about RATE x 20 s (400) on top.
    assert within_poisson(started, RATE * ARRIVING_S), started


def test_a_late_worker_takes_half_an_open_loop_rate_from_the_early_one(
    open_loop: LateJoin,
) -> None:
    run = open_loop
    t = timeline(run)
    assert 1 < t.joined < ARRIVING_S - 10, t.joined
    late = run.late[0]
    assert run.summary["workers"]["by_worker"][run.folder(late)]["sessions"]["started"] > 0
    # Once both run, each starts RATE / 2: a late worker at the whole rate would start
    # twice its count, an early one that kept the whole rate twice its own.
    start, end = t.began + t.joined + 1, t.began + ARRIVING_S
    for which in (run.early, late):
        count = started_between(run.sessions(which), start, end)
        assert within_poisson(count, RATE / 2 * (end - start)), (which.name, count, t.joined)


def test_a_late_worker_follows_the_stages_on_the_runs_clock(open_loop: LateJoin) -> None:
    run = open_loop
    t = timeline(run)
    # The arrivals stop ARRIVING_S into the run; on its own clock, the late worker would go
    # on for as long as it joined late.
    after = started_between(run.sessions(run.late[0]), t.began + ARRIVING_S + 1, math.inf)
    assert after == 0


# -- open loop: two workers from the start; one leaves (SIGTERM, a scale-down) mid-run -------


@dataclasses.dataclass
class Leave:
    """A run of two workers, one of which left mid-run; each worker's sessions."""

    summary: Record
    stayer: list[Record]
    leaver: list[Record]


@pytest.fixture(scope="module")
def open_loop_leave(sim_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leave]:
    tmp = tmp_path_factory.mktemp("leave-open")
    group = Processes(tmp / "logs")
    out, port = tmp / "run", free_port()
    profile = one_step_sessions(tmp)
    try:
        start_master(group, sim_url, out, None, port, 2, profile)
        for name in ("stayer", "leaver"):
            start_worker(group, name, sim_url, tmp / name, None, port, profile)
        # About 6 s in: RATE / 2 x 6 s of the leaver's sessions.
        wait_for("the leaver's sessions", lambda: finished_sessions(tmp / "leaver") >= 60, 60)
        group.procs["leaver"].send_signal(signal.SIGTERM)
        assert group.wait("leaver", timeout=60) == 0, group.output("leaver")
        assert group.wait("master", timeout=120) == 0, group.output("master")
        assert group.wait("stayer", timeout=60) == 0, group.output("stayer")
        summary = json.loads((out / "summary.json").read_text())
        yield Leave(summary, sessions_in(tmp / "stayer"), sessions_in(tmp / "leaver"))
    finally:
        group.close()


def test_an_open_loop_run_keeps_its_rate_when_a_worker_leaves(open_loop_leave: Leave) -> None:
    started = open_loop_leave.summary["sessions"]["started"]
    # Had the stayer kept its half, RATE / 2 x ~16 s (160) would be missing.
    assert within_poisson(started, RATE * ARRIVING_S), started


def test_the_worker_that_stays_takes_over_a_leavers_open_loop_share(
    open_loop_leave: Leave,
) -> None:
    run = open_loop_leave
    began = min(s["started_unix"] for s in run.stayer + run.leaver)
    left = max(s["started_unix"] for s in run.leaver)
    assert 3 < left - began < ARRIVING_S - 8, left - began
    before = started_between(run.stayer, began + 1, left - 1)
    assert within_poisson(before, RATE / 2 * (left - 1 - began - 1)), before
    start, end = left + 2, began + ARRIVING_S
    after = started_between(run.stayer, start, end)
    assert within_poisson(after, RATE * (end - start)), after
