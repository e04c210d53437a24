"""The swarm under Locust, through the real CLI: real processes on 127.0.0.1 against a real sim.

Every run here is a bounded `agentload run` (or `locust -f`) against one simulator process
started for the module; results are compared with the workers' own steps.jsonl and
sessions.jsonl lines, which each worker appends as it measures.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from loadgen.protocol.failures import FailureKind

ROOT = Path(__file__).resolve().parents[1]
AGENTLOAD = [sys.executable, "-m", "loadgen"]
LOCUST = [sys.executable, "-m", "locust"]
# Run-length flags shared by every process of one run (workers load the profile too).
SMOKE = ["ci-smoke", "--quiet"]

pytestmark = pytest.mark.slow

Record = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment of every child: this checkout's loadgen first, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Processes:
    """Children of one test, with their output in files; every one is ended by `close()`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (
            (self.logs / f"{name}.out").open("wb") as out,
            (self.logs / f"{name}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(
                argv, stdout=out, stderr=err, cwd=self.logs, env={**child_env(), **env}
            )
        self.procs[name] = proc
        return proc

    def output(self, name: str) -> str:
        return (self.logs / f"{name}.out").read_text() + (self.logs / f"{name}.err").read_text()

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {timeout:.0f}s:\n{self.output(name)[-3000:]}")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path / "logs")
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`agentload sim --preset fast --port 0` in its own process; its banner gives the URL."""
    logs = tmp_path_factory.mktemp("sim")
    group = Processes(logs)
    try:
        proc = group.start("sim", [*AGENTLOAD, "sim", "--preset", "fast", "--port", "0"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", group.output("sim"))
            if found:
                break
            assert proc.poll() is None, f"sim exited: {group.output('sim')}"
            time.sleep(0.1)
        else:
            pytest.fail(f"no sim banner within 60s: {group.output('sim')}")
        yield found.group(1)
    finally:
        group.close()


# -- what the workers wrote -------------------------------------------------------------------


def read_jsonl(paths: list[Path]) -> list[Record]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def records(out: Path) -> tuple[list[Record], list[Record]]:
    """(steps, sessions) that every worker under `out` wrote to its own files."""
    steps = read_jsonl(sorted(out.glob("worker-*/steps.jsonl")))
    sessions = read_jsonl(sorted(out.glob("worker-*/sessions.jsonl")))
    return steps, sessions


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) / 100)) - 1]


def assert_summary_is_the_sum_of(
    summary: Record, steps: list[Record], sessions: list[Record]
) -> None:
    """Merged totals equal the files' sums; percentiles equal the merged raw samples' (1%)."""
    ok = [s for s in steps if s["ok"]]
    assert steps, "the workers measured nothing"
    assert summary["requests"] == {
        "total": len(steps),
        "ok": len(ok),
        "failed": len(steps) - len(ok),
    }
    outcomes = Counter(s["outcome"] for s in sessions)
    for outcome in ("completed", "failed", "aborted"):
        assert summary["sessions"][outcome] == outcomes[outcome], outcome
    assert summary["sessions"]["started"] >= len(sessions)
    for field in ("prompt", "completion", "cached"):
        assert summary["tokens"][field] == sum(s[f"{field}_tokens"] or 0 for s in steps), field
    kinds = Counter(kind for s in steps for kind in s["failures"])
    assert summary["state_failures"] == {k.value: kinds[k.value] for k in FailureKind}
    for name in ("ttft_s", "e2e_s"):
        samples = [s[name] for s in ok if s[name] is not None]
        for q in (50, 90, 99):
            exact = nearest_rank(samples, q)
            reported = summary["latency"][name][f"p{q}"]
            assert reported == pytest.approx(exact, rel=0.01), f"{name} p{q}"


def assert_counts_are_its_own(counts: Record, steps: list[Record], sessions: list[Record]) -> None:
    """A worker's summary.json counts ("workers.by_worker") equal its own files' exactly."""
    ok = sum(bool(s["ok"]) for s in steps)
    assert counts["requests"] == {"total": len(steps), "ok": ok, "failed": len(steps) - ok}
    outcomes = Counter(s["outcome"] for s in sessions)
    for outcome in ("completed", "failed", "aborted"):
        assert counts["sessions"][outcome] == outcomes[outcome], outcome
    assert counts["sessions"]["recovered"] == sum(bool(s["recoveries"]) for s in sessions)
    assert counts["sessions"]["started"] >= len(sessions)


def assert_stopping_aborted_and_failed_none(summary: Record, sessions: list[Record]) -> None:
    """The run's stop ended the sessions in flight as aborted (the client's doing), and no
    session failed: stopping is not a server failure."""
    assert summary["sessions"]["aborted"] > 0  # 8 agents, sessions of seconds: some in flight
    assert summary["sessions"]["failed"] == 0
    assert Counter(s["outcome"] for s in sessions)["failed"] == 0
    assert summary["requests"]["failed"] == 0


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.2)


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_length(profile: Sequence[str], duration: str | None) -> list[str]:
    """The profile and run-length flags every process of one run takes."""
    return [*profile, *([] if duration is None else ["--duration", duration])]


def start_master(
    procs: Processes,
    sim_url: str,
    out: Path,
    duration: str | None,
    port: int,
    workers: int = 2,
    profile: Sequence[str] = SMOKE,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """A master expecting `workers` workers on `port` (on 127.0.0.1); `extra`: its own flags.

    `duration` None: the profile's stages, which --duration would replace.
    """
    return procs.start(
        "master",
        [*AGENTLOAD, "run", *run_length(profile, duration), *extra, "--master",
         "--expect-workers", str(workers),
         "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
         "--target", sim_url, "--out", str(out)],
    )  # fmt: skip


def start_worker(
    procs: Processes,
    name: str,
    sim_url: str,
    out: Path,
    duration: str | None,
    port: int,
    profile: Sequence[str] = SMOKE,
) -> None:
    """A worker of the master on `port`, writing under `out`."""
    procs.start(
        name,
        [*AGENTLOAD, "run", *run_length(profile, duration), "--worker",
         "--master-host", "127.0.0.1", "--master-port", str(port),
         "--target", sim_url, "--out", str(out)],
    )  # fmt: skip


# -- tests ------------------------------------------------------------------------------------


def test_processes_2_merges_worker_totals_and_percentiles_exactly(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    procs.start(
        "run",
        [*AGENTLOAD, "run", *SMOKE, "--duration", "10s", "--processes", "2",
         "--target", sim_url, "--out", str(out)],
    )  # fmt: skip
    assert procs.wait("run", timeout=120) == 0, procs.output("run")
    assert sorted(p.name for p in out.glob("worker-*")) == ["worker-0", "worker-1"]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["workers"]["reported"]) == 2
    assert summary["workers"]["lost"] == []
    assert_summary_is_the_sum_of(summary, *records(out))


def test_master_with_two_worker_processes_merges_their_totals_and_percentiles(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    out, port = tmp_path / "run", free_port()
    start_master(procs, sim_url, out, "10s", port)
    for i in range(2):
        start_worker(procs, f"worker{i}", sim_url, out, "10s", port)
    assert procs.wait("master", timeout=120) == 0, procs.output("master")
    for i in range(2):
        assert procs.wait(f"worker{i}", timeout=60) == 0, procs.output(f"worker{i}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"]["expected"] == 2
    assert len(summary["workers"]["reported"]) == 2
    steps, sessions = records(out)
    assert {s["session_id"].split("-", 1)[0] for s in steps} == {"w0", "w1"}  # both worked
    assert_summary_is_the_sum_of(summary, steps, sessions)
    assert_stopping_aborted_and_failed_none(summary, sessions)


# A Locust worker that connects, then dies the moment the run starts (as a SIGKILL would:
# no report, no goodbye); it prints the index the master acked it with.
CRASHES_AT_START = textwrap.dedent(
    """
    import os, sys
    from locust.env import Environment

    env = Environment(user_classes=[])
    runner = env.create_worker_runner(sys.argv[1], int(sys.argv[2]))
    env.events.test_start.add_listener(lambda **_kw: os._exit(17))
    print(runner.worker_index, flush=True)
    runner.greenlet.join()
    """
)


@dataclasses.dataclass
class WorkerProcessesRun:
    out: Path
    summary: Record
    master_log: str
    crashed_index: int


@pytest.fixture(scope="module")
def worker_processes_run(
    sim_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcessesRun]:
    """A master expecting 3 workers: `--worker --processes 2` on this machine, and one that
    connects and dies before its first report."""
    tmp = tmp_path_factory.mktemp("worker-processes")
    group = Processes(tmp / "logs")
    out, port = tmp / "run", free_port()
    try:
        start_master(group, sim_url, out, "8s", port, workers=3)
        group.start(
            "workers",
            [*AGENTLOAD, "run", *SMOKE, "--duration", "8s", "--worker", "--processes", "2",
             "--master-host", "127.0.0.1", "--master-port", str(port),
             "--target", sim_url, "--out", str(out)],
        )  # fmt: skip
        group.start("crashes", [sys.executable, "-c", CRASHES_AT_START, "127.0.0.1", str(port)])
        assert group.wait("master", timeout=120) == 0, group.output("master")
        assert group.wait("workers", timeout=60) == 0, group.output("workers")
        assert group.wait("crashes", timeout=30) == 17, group.output("crashes")
        yield WorkerProcessesRun(
            out,
            json.loads((out / "summary.json").read_text()),
            group.output("master"),
            int((group.logs / "crashes.out").read_text()),
        )
    finally:
        group.close()


def test_worker_with_processes_2_runs_two_workers_of_the_given_master(
    worker_processes_run: WorkerProcessesRun,
) -> None:
    run = worker_processes_run
    folders = sorted(p.name for p in run.out.glob("worker-*"))
    assert len(folders) == 2
    assert run.summary["workers"]["reported"] == folders
    for folder in folders:
        own = [read_jsonl([run.out / folder / f"{name}.jsonl"]) for name in ("steps", "sessions")]
        assert_counts_are_its_own(run.summary["workers"]["by_worker"][folder], *own)
    assert_summary_is_the_sum_of(run.summary, *records(run.out))


def test_a_worker_lost_before_its_first_report_is_named_lost(
    worker_processes_run: WorkerProcessesRun,
) -> None:
    run = worker_processes_run
    crashed = f"worker-{run.crashed_index}"
    assert run.summary["workers"]["lost"] == [crashed]
    assert crashed not in run.summary["workers"]["reported"]
    assert f"lost worker {crashed} before its first report" in run.master_log


def test_the_same_slot_on_two_workers_is_a_different_agent(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    # One kind of agent only: Locust hands each worker a share of the same user class.
    profile = tmp_path / "coding-only.yaml"
    profile.write_text(
        "name: coding-only\nseed: 42\ntime_scale: 0.01\narrival: {mode: closed, agents: 4}\n"
        "agents:\n  - kind: coding\n    params: {turns: 1, steps_per_turn: {uniform: [3, 6]},"
        " output_tokens: {uniform: [32, 128]}}\n"
    )
    out = tmp_path / "run"
    procs.start(
        "run",
        [*AGENTLOAD, "run", str(profile), "--quiet", "--duration", "4s", "--processes", "2",
         "--target", sim_url, "--out", str(out)],
    )  # fmt: skip
    assert procs.wait("run", timeout=120) == 0, procs.output("run")
    steps, _ = records(out)
    # Each worker seeds its own agents: with one seed, slot 0 of each would send the same
    # prompts (and sizes) as the other's, in step.
    plans: dict[str, dict[str, list[int]]] = {"w0": {}, "w1": {}}
    for s in steps:
        worker, rest = s["session_id"].split("-", 1)
        plans[worker].setdefault(rest, []).append(s["prompt_tokens"])
    shared = sorted(set(plans["w0"]) & set(plans["w1"]))
    assert shared, plans
    assert any(plans["w0"][k] != plans["w1"][k] for k in shared)


def test_killed_worker_is_named_lost_and_its_reported_share_is_kept(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    out, port = tmp_path / "master", free_port()
    victim_out, survivor_out = tmp_path / "victim", tmp_path / "survivor"
    start_master(procs, sim_url, out, "20s", port)
    for name, folder in (("victim", victim_out), ("survivor", survivor_out)):
        start_worker(procs, name, sim_url, folder, "20s", port)
    # Workers report every 3 s: kill the victim once it has measured for ~6 s.
    wait_for("the victim's first step", lambda: bool(list(victim_out.glob("*/steps.jsonl"))), 60)
    time.sleep(6)
    procs.procs["victim"].send_signal(signal.SIGKILL)
    procs.procs["victim"].wait(timeout=10)

    assert procs.wait("master", timeout=120) == 0, procs.output("master")
    assert procs.wait("survivor", timeout=60) == 0, procs.output("survivor")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["workers"]["reported"]) == 2
    (victim_folder,) = victim_out.glob("worker-*")
    # Named by its results folder, where its steps.jsonl is.
    assert summary["workers"]["lost"] == [victim_folder.name]
    assert victim_folder.name in summary["workers"]["reported"]
    (survivor_folder,) = survivor_out.glob("worker-*")
    survivor_steps, survivor_sessions = records(survivor_out)
    victim_steps, _ = records(victim_out)
    by_worker = summary["workers"]["by_worker"]
    assert set(by_worker) == {survivor_folder.name, victim_folder.name}
    # Everything the survivor measured is in, its final report included.
    assert_counts_are_its_own(by_worker[survivor_folder.name], survivor_steps, survivor_sessions)
    # The victim's reported share is kept: some of what it measured, at most all of it (the
    # steps after its last report died with it).
    victim_reported = by_worker[victim_folder.name]["requests"]["total"]
    assert 0 < victim_reported <= len(victim_steps)
    assert summary["requests"]["total"] == len(survivor_steps) + victim_reported


def test_worker_stopped_with_sigterm_leaves_cleanly_and_nothing_it_measured_is_lost(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    out, port = tmp_path / "run", free_port()
    start_master(procs, sim_url, out, "20s", port)
    for name in ("leaver", "stayer"):
        start_worker(procs, name, sim_url, tmp_path / name, "20s", port)
    leaver_out = tmp_path / "leaver"
    wait_for("the leaver's first step", lambda: bool(list(leaver_out.glob("*/steps.jsonl"))), 60)
    time.sleep(4)  # mid-report-interval: its last seconds exist only in its own files
    procs.procs["leaver"].send_signal(signal.SIGTERM)
    assert procs.wait("leaver", timeout=60) == 0, procs.output("leaver")

    assert procs.wait("master", timeout=120) == 0, procs.output("master")
    assert procs.wait("stayer", timeout=60) == 0, procs.output("stayer")
    summary = json.loads((out / "summary.json").read_text())
    (leaver_folder,) = leaver_out.glob("worker-*")
    assert summary["workers"]["left"] == [leaver_folder.name]
    assert summary["workers"]["lost"] == []
    # Its sessions in flight ended as aborted, and every record it wrote reached the master.
    steps, sessions = [], []
    for name in ("leaver", "stayer"):
        more_steps, more_sessions = records(tmp_path / name)
        steps += more_steps
        sessions += more_sessions
    assert_summary_is_the_sum_of(summary, steps, sessions)
    assert_stopping_aborted_and_failed_none(summary, sessions)
    _, leaver_sessions = records(leaver_out)
    assert any(s["outcome"] == "aborted" for s in leaver_sessions)  # the leaver's own in flight


def test_web_ui_serves_agent_stats_over_http_during_a_run(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs.start(
        "run",
        [*AGENTLOAD, "run", *SMOKE, "--duration", "60s", "--web", "--web-port", str(port),
         "--target", sim_url, "--out", str(tmp_path / "run")],
    )  # fmt: skip

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as resp:
                return resp.status, resp.read()
        except (urllib.error.URLError, ConnectionError) as exc:
            assert procs.procs["run"].poll() is None, procs.output("run")
            return -1, str(exc).encode()

    wait_for("GET / to answer 200", lambda: get("/")[0] == 200, 60)

    def entries() -> set[tuple[str, str]]:
        status, body = get("/stats/requests")
        if status != 200:
            return set()
        return {(s["method"], s["name"]) for s in json.loads(body)["stats"]}

    agents = {"coding", "support"}
    kinds = {"turn", "tool_result", "subagent", "compaction", "resume"}
    # Coding sessions in ci-smoke last about two seconds; wait for a finished one.
    wait_for("a SESSION entry", lambda: any(m == "SESSION" for m, _ in entries()), 30)
    seen = entries()
    assert {n for m, n in seen if m == "SESSION"} <= agents
    steps = {n for m, n in seen if m == "STEP"}
    assert steps
    assert all(n.split(" ")[0] in agents and n.split(" ")[1] in kinds for n in steps), steps
    status, body = get("/agentload/stats")
    assert status == 200
    own = json.loads(body)
    assert own["requests"]["ok"] > 0
    assert set(own["agents"]) <= agents
    assert set(own["sessions"]) >= {"started", "completed", "failed", "aborted"}
    # Locust's Stop button ends the run early; the run then writes its results and exits 0.
    request = urllib.request.Request(base + "/stop", method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
    assert procs.wait("run", timeout=60) == 0, procs.output("run")
    assert (tmp_path / "run" / "summary.json").exists()


def test_stopping_a_run_counts_in_flight_sessions_as_aborted_not_failed(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    procs.start(
        "run",
        [*AGENTLOAD, "run", *SMOKE, "--duration", "6s", "--target", sim_url, "--out", str(out)],
    )
    assert procs.wait("run", timeout=90) == 0, procs.output("run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sessions"]["aborted"] > 0  # 8 agents, sessions of seconds: some in flight
    assert summary["sessions"]["failed"] == 0
    assert summary["requests"]["failed"] == 0
    assert set(summary["state_failures"].values()) == {0}
    outcomes = Counter(s["outcome"] for s in read_jsonl([out / "sessions.jsonl"]))
    assert outcomes["aborted"] == summary["sessions"]["aborted"]
    assert outcomes["failed"] == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_a_run_writes_its_results_with_in_flight_sessions_aborted(
    sim_url: str, procs: Processes, tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "run"
    proc = procs.start(
        "run",
        [*AGENTLOAD, "run", *SMOKE, "--duration", "60s", "--target", sim_url, "--out", str(out)],
    )
    wait_for("the first sessions", lambda: line_count(out / "sessions.jsonl") >= 3, 60)
    proc.send_signal(sig)  # Ctrl-C in a terminal; `docker stop` / Kubernetes send SIGTERM
    # As a shell reports a command a signal ended, never 0: the run was not whole.
    assert procs.wait("run", timeout=60) == 128 + sig, procs.output("run")
    assert "Traceback" not in procs.output("run")
    assert f"interrupted by {sig.name}" in procs.output("run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"]["signal"] == sig.name
    assert 0 < summary["interrupted"]["at_s"] < 50
    assert summary["duration_s"] < 50  # stopped early, not at the end of the 60 s
    assert summary["sessions"]["aborted"] > 0
    assert summary["sessions"]["failed"] == 0
    outcomes = Counter(s["outcome"] for s in read_jsonl([out / "sessions.jsonl"]))
    assert outcomes["aborted"] == summary["sessions"]["aborted"]


def test_processes_2_split_an_open_loop_rate_instead_of_each_running_all_of_it(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    started = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        procs.start(
            f"p{processes}",
            [*AGENTLOAD, "run", *SMOKE, "--rate", "4", "--duration", "8s",
             "--processes", str(processes), "--target", sim_url, "--out", str(out)],
        )  # fmt: skip
        assert procs.wait(f"p{processes}", timeout=120) == 0, procs.output(f"p{processes}")
        started[processes] = json.loads((out / "summary.json").read_text())["sessions"]["started"]
    # The same seeded arrival process, split in two: about the same count, not twice as many.
    assert started[1] > 10
    assert started[2] < 1.4 * started[1], started


def locustfile_path() -> str:
    return subprocess.run(
        [sys.executable, "-m", "loadgen.orchestration.locustfile"],
        capture_output=True, text=True, check=True, timeout=60, env=child_env(),
    ).stdout.strip()  # fmt: skip


def _staged_smoke(tmp_path: Path) -> Path:
    """ci-smoke's agents, ramped to 4 over 2 s and held 3 s, as a profile file."""
    smoke = (ROOT / "profiles" / "ci-smoke.yaml").read_text().replace("duration: 20s\n", "")
    profile = tmp_path / "staged.yaml"
    profile.write_text(
        f"{smoke}\nstages:\n  - {{kind: ramp, duration: 2s, target: 4}}\n"
        "  - {kind: hold, duration: 3s}\n"
    )
    return profile


def test_plain_locust_f_runs_the_profiles_stages_and_writes_results(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    profile = _staged_smoke(tmp_path)
    out = tmp_path / "locust"
    procs.start(
        "locust",
        # The profile's stages are the locustfile's shape: Locust ignores -u, -r and -t.
        [*LOCUST, "-f", locustfile_path(), "--headless", "-u", "1", "-r", "1", "-t", "60s",
         "--host", sim_url, "--agentload-out", str(out), "--json", "--only-summary"],
        AGENTLOAD_PROFILE=str(profile),
    )  # fmt: skip
    assert procs.wait("locust", timeout=90) == 0, procs.output("locust")
    assert "will be ignored: --users, --spawn-rate, --run-time" in procs.output("locust")
    stats = json.loads((procs.logs / "locust.out").read_text())
    locust_steps = sum(s["num_requests"] for s in stats if s["method"] == "STEP")
    locust_sessions = sum(s["num_requests"] for s in stats if s["method"] == "SESSION")
    (folder,) = out.glob("pid-*")
    steps = read_jsonl([folder / "steps.jsonl"])
    sessions = read_jsonl([folder / "sessions.jsonl"])
    assert steps
    assert len(steps) == locust_steps
    # Aborted sessions (stopped by the client) are not Locust requests.
    assert sum(s["outcome"] != "aborted" for s in sessions) == locust_sessions
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["requests"]["total"] == len(steps)
    assert summary["duration_s"] < 30  # the stages' end, not -t's 60 s
    assert len({s["session_id"].rsplit("-s", 1)[0] for s in steps}) == 4  # the ramp's, not -u's


def _json_documents(text: str) -> list[Any]:
    """Every JSON document in `text`, one after another (forked processes print their own)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while rest := text[at:].lstrip():
        document, at = decoder.raw_decode(text, len(text) - len(rest))
        found.append(document)
    return found


def test_plain_locust_f_with_processes_2_runs_agents_in_each_forked_worker(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    # Locust forks its workers after importing the locustfile: each must make its own bridge
    # (loop thread, uvloop, sockets) on first use, not inherit one from the parent.
    profile = _staged_smoke(tmp_path)
    out = tmp_path / "locust"
    procs.start(
        "locust",
        [*LOCUST, "-f", locustfile_path(), "--headless", "--processes", "2", "--host", sim_url,
         "--agentload-out", str(out), "--json", "--only-summary"],
        AGENTLOAD_PROFILE=str(profile),
    )  # fmt: skip
    assert procs.wait("locust", timeout=90) == 0, procs.output("locust")
    folders = sorted(out.glob("pid-*/worker-*"))
    assert len(folders) == 2, folders  # one per forked worker, each with its own pid
    steps = [read_jsonl([folder / "steps.jsonl"]) for folder in folders]
    assert all(steps), [len(s) for s in steps]  # both workers ran agents
    sessions = read_jsonl([folder / "sessions.jsonl" for folder in folders])
    # The master's statistics (the last document printed) are what the workers measured.
    stats = _json_documents((procs.logs / "locust.out").read_text())[-1]
    assert sum(s["num_requests"] for s in stats if s["method"] == "STEP") == sum(map(len, steps))
    assert sum(s["num_requests"] for s in stats if s["method"] == "SESSION") == sum(
        s["outcome"] != "aborted" for s in sessions
    )


def test_locusts_own_csv_and_html_reports_list_the_agents_steps_and_sessions(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    smoke = (ROOT / "profiles" / "ci-smoke.yaml").read_text().replace("duration: 20s\n", "")
    profile = tmp_path / "short.yaml"
    profile.write_text(f"{smoke}\nstages:\n  - {{kind: hold, duration: 3s, target: 2}}\n")
    prefix, html = tmp_path / "locust", tmp_path / "locust.html"
    procs.start(
        "locust",
        [*LOCUST, "-f", locustfile_path(), "--headless", "--host", sim_url,
         "--agentload-out", str(tmp_path / "out"), "--csv", str(prefix), "--html", str(html),
         "--only-summary"],
        AGENTLOAD_PROFILE=str(profile),
    )  # fmt: skip
    assert procs.wait("locust", timeout=60) == 0, procs.output("locust")
    with Path(f"{prefix}_stats.csv").open() as f:
        rows = {(r["Type"], r["Name"]): int(r["Request Count"]) for r in csv.DictReader(f)}
    assert any(kind == "STEP" and n > 0 for (kind, _name), n in rows.items()), rows
    assert any(kind == "SESSION" and n > 0 for (kind, _name), n in rows.items()), rows
    page = html.read_text()
    assert "STEP" in page
    assert "SESSION" in page


def test_plain_locust_f_says_an_open_loop_profile_runs_closed_loop(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    procs.start(
        "locust",
        [*LOCUST, "-f", locustfile_path(), "--headless", "-u", "1", "-r", "1", "-t", "2s",
         "--host", sim_url, "--agentload-out", str(tmp_path / "locust"), "--only-summary"],
        AGENTLOAD_PROFILE="support-chat",
    )  # fmt: skip
    assert procs.wait("locust", timeout=60) == 0, procs.output("locust")
    assert "profile support-chat is open loop" in procs.output("locust")
    assert "`agentload run support-chat` runs it as written" in procs.output("locust")


def test_ramps_past_100_agents_per_second_do_not_log_locusts_spawn_rate_advice(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    procs.start(
        "run",
        [*AGENTLOAD, "run", *SMOKE, "--agents", "150", "--duration", "3s",
         "--target", sim_url, "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert procs.wait("run", timeout=120) == 0, procs.output("run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["requests"]["total"] > 0
    assert "spawn rate is very high" not in procs.output("run")


def test_master_gives_up_on_missing_workers_after_expect_workers_max_wait(
    procs: Processes, tmp_path: Path
) -> None:
    procs.start(
        "master",
        [*AGENTLOAD, "run", *SMOKE, "--master", "--expect-workers", "1",
         "--expect-workers-max-wait", "1s", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(free_port()), "--target", "http://127.0.0.1:9/v1",
         "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert procs.wait("master", timeout=60) == 3
    last = procs.output("master").strip().splitlines()[-1]
    assert "0 of 1 workers connected within 1s" in last
    assert "--expect-workers-max-wait" in last
