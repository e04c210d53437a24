"""`agentload replay`: a trace's requests reach the target as recorded (count, lengths,
shared prefixes, times), sessions in order, sub-agents before their parent's next request."""

from __future__ import annotations

import itertools
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadgen.traces import Trace, TraceRequest, TraceSession, load_trace
from loadgen.traces.formats.agentload import write_agentload
from loadgen.traces.timeline import implied_cached_tokens

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def mooncake_like(rows: int, rate: float, seed: int = 7) -> Trace:
    """One request per session, as Mooncake's rows: 512-token blocks, prefixes shared by
    groups of rows (a system prompt, a document), arrivals `rate` per second."""
    rng = random.Random(seed)
    sessions = []
    for i in range(rows):
        group = i % 5
        shared = [group * 100 + k for k in range(rng.randint(1, 3))]  # a group's prefix
        own = [10_000 + i * 10 + k for k in range(rng.randint(0, 2))]
        ids = tuple(shared + own)
        tokens = len(ids) * 512 - rng.randint(0, 300)
        request = TraceRequest(at_s=i / rate, input_tokens=tokens,
                               output_tokens=rng.randint(4, 12), hash_ids=ids)  # fmt: skip
        sessions.append(TraceSession(f"row{i}", [request]))
    return Trace(sessions, block_size=512, hash_scope="global")


def write(trace: Trace, path: Path) -> Path:
    with path.open("w") as out:
        write_agentload(trace, out)
    return path


def write_mooncake(trace: Trace, path: Path) -> Trace:
    """`trace` as Mooncake's rows (timestamp in ms, lengths, hash_ids); the trace read back."""
    with path.open("w") as out:
        for r in trace.requests():
            row = {"timestamp": round(r.at_s * 1000), "input_length": r.input_tokens,
                   "output_length": r.output_tokens, "hash_ids": list(r.hash_ids)}  # fmt: skip
            out.write(json.dumps(row) + "\n")
    return load_trace(path, "mooncake")


def replay(trace: Path, out: Path, *flags: str, timeout: float = 240) -> dict[str, Any]:
    result = subprocess.run(
        [*AGENTLOAD, "replay", str(trace), "--quiet", "--out", str(out), *flags],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def steps_of(out: Path) -> list[dict[str, Any]]:
    files = [out / "steps.jsonl", *sorted(out.glob("worker-*/steps.jsonl"))]
    return [json.loads(line) for f in files if f.exists() for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def mooncake_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trace, dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("mooncake")
    trace = write_mooncake(mooncake_like(rows=120, rate=20.0), tmp / "mooncake.jsonl")
    out = tmp / "out"
    summary = replay(tmp / "mooncake.jsonl", out)  # its format detected
    assert summary["replay"]["trace"].endswith("(mooncake)")
    return trace, summary, out


def test_each_trace_row_is_one_request(mooncake_run: tuple[Trace, dict[str, Any], Path]) -> None:
    trace, summary, out = mooncake_run
    assert summary["requests"]["ok"] == trace.request_count() == 120
    assert summary["requests"]["failed"] == 0
    assert len(steps_of(out)) == 120


def test_prompt_lengths_are_the_traces_within_2_percent(
    mooncake_run: tuple[Trace, dict[str, Any], Path],
) -> None:
    trace, _summary, out = mooncake_run
    wanted = {s.id: s.requests[0].input_tokens for s in trace.sessions}
    for step in steps_of(out):
        asked = wanted[step["session_id"]]
        assert abs(step["prompt_tokens"] - asked) <= 0.02 * asked, (step, asked)


def test_output_lengths_are_forced_to_the_traces(
    mooncake_run: tuple[Trace, dict[str, Any], Path],
) -> None:
    trace, _summary, out = mooncake_run
    wanted = {s.id: s.requests[0].output_tokens for s in trace.sessions}
    assert all(s["completion_tokens"] == wanted[s["session_id"]] for s in steps_of(out))


def test_cached_tokens_are_within_10_percent_of_what_the_hash_ids_imply(
    mooncake_run: tuple[Trace, dict[str, Any], Path],
) -> None:
    trace, summary, _out = mooncake_run
    implied, total = implied_cached_tokens(trace)
    measured = summary["tokens"]["cached"]
    assert implied > 0.3 * total  # the trace shares prefixes: the check means something
    assert abs(measured - implied) <= 0.10 * implied, (measured, implied)
    assert summary["replay"]["implied_cache_hit_ratio"] == pytest.approx(implied / total, abs=1e-4)
    assert summary["replay"]["requests"] == 120


def test_arrivals_follow_the_scaled_timestamps(
    mooncake_run: tuple[Trace, dict[str, Any], Path],
) -> None:
    trace, _summary, out = mooncake_run
    at = {s.id: s.requests[0].at_s for s in trace.sessions}
    sent = {s["session_id"]: s["started_unix"] for s in steps_of(out)}
    offsets = sorted(sent[sid] - at[sid] for sid in at)
    origin = offsets[0]
    late = [o - origin for o in offsets]
    # 2-core machine shared with the rest of the suite: the 5 ms p99 claim is measured in
    # bench/replay_arrivals.py. Here 3 in 4 within 10x that; a stall of the whole machine
    # (CI saw 0.4 s) sends the requests it held at once, so the tail is a burst, not drift:
    # a replay that ignored or mis-scaled the timestamps would be seconds late (6 s trace).
    assert late[int(0.75 * len(late))] < 0.05, late[-10:]
    assert statistics.median(late) < 0.02, late
    assert late[-1] < 2.0, late[-10:]


def agent_with_subagents(parents: int = 3) -> Trace:
    """Claude-Code-like sessions: three requests a second apart (think and tool time), two
    sub-agents forked after the first, each two requests with a 1 s tool gap."""

    def req(at: float, gap: float | None, ids: tuple[int, ...]) -> TraceRequest:
        return TraceRequest(at_s=at, input_tokens=64 * len(ids) - 10, output_tokens=8,
                            hash_ids=ids, gap_s=gap)  # fmt: skip

    sessions = []
    for p in range(parents):
        at = p * 0.5
        first, later = req(at, None, (1, 2)), [req(at, 1.0, (1, 2, 3)), req(at, 1.0, (1, 2, 3, 4))]
        parent = TraceSession(f"p{p}", [first, *later], hash_namespace=f"p{p}")
        for s in range(2):
            steps = [req(at, None, (1, 50 + s)), req(at, 1.0, (1, 50 + s, 60 + s))]
            parent.subagents.append(
                (0, TraceSession(f"p{p}.sub{s}", steps, hash_namespace=f"p{p}"))
            )
        sessions.append(parent)
    return Trace(sessions, block_size=64, hash_scope="local")


def weka_with_subagents(parents: int = 3) -> list[dict[str, Any]]:
    """The same sessions as cc-traces publish them (one object per trace, sub-agents nested
    with absolute times, think_time before each call)."""

    def call(t: float, ids: list[int], think: float) -> dict[str, Any]:
        return {"t": t, "type": "n", "model": "m", "in": 64 * len(ids) - 10, "out": 8,
                "hash_ids": ids, "api_time": 0.001, "think_time": think}  # fmt: skip

    traces = []
    for p in range(parents):
        at = p * 0.5
        subs = [
            {"t": at + 0.1, "type": "subagent", "agent_id": f"a{s}",
             "requests": [call(at + 0.1, [1, 50 + s], 0.0),
                          call(at + 1.101, [1, 50 + s, 60 + s], 1.0)]}
            for s in range(2)
        ]  # fmt: skip
        # Recorded as a fast server served them (api_time 1 ms): the target's own time
        # decides when each call ends, the recorded think time what follows.
        requests = [call(at, [1, 2], 0.0), *subs, call(at + 2.2, [1, 2, 3], 1.0),
                    call(at + 3.201, [1, 2, 3, 4], 1.0)]  # fmt: skip
        traces.append({"id": f"p{p}", "block_size": 64, "hash_id_scope": "local",
                       "requests": requests})  # fmt: skip
    return traces


@pytest.fixture(scope="module", params=["agentload", "weka"])
def subagent_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("subagents")
    out = tmp / "out"
    if request.param == "weka":
        trace = tmp / "cc-traces.json"
        trace.write_text(json.dumps(weka_with_subagents()))
    else:
        trace = write(agent_with_subagents(), tmp / "trace.jsonl")
    summary = replay(trace, out)
    assert summary["requests"]["ok"] == 3 * (3 + 2 * 2)
    return steps_of(out)


def _by_session(steps: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    sessions: dict[str, list[dict[str, Any]]] = {}
    for step in sorted(steps, key=lambda s: s["started_unix"]):
        sessions.setdefault(step["session_id"], []).append(step)
    return sessions


def test_a_parents_next_request_waits_for_all_its_subagents(
    subagent_run: list[dict[str, Any]],
) -> None:
    sessions = _by_session(subagent_run)
    parents = [sid for sid in sessions if "." not in sid]
    assert len(parents) == 3
    for parent in parents:
        subs = [steps for sid, steps in sessions.items() if sid.startswith(f"{parent}.")]
        assert len(subs) == 2
        assert all(len(steps) == 2 for steps in subs)
        first_end = sessions[parent][0]["started_unix"] + sessions[parent][0]["e2e_s"]
        subs_end = max(s[-1]["started_unix"] + s[-1]["e2e_s"] for s in subs)
        assert all(s[0]["started_unix"] >= first_end for s in subs)
        assert sessions[parent][1]["started_unix"] >= subs_end


def test_think_and_tool_gaps_are_kept_within_5_percent(
    subagent_run: list[dict[str, Any]],
) -> None:
    gaps = []
    for sid, steps in _by_session(subagent_run).items():
        for before, after in itertools.pairwise(steps):
            if "." not in sid and after is steps[1]:
                continue  # the parent's second request waited for its sub-agents too
            gaps.append(after["started_unix"] - before["started_unix"] - before["e2e_s"])
    assert len(gaps) == 3 * (1 + 2)
    assert all(abs(gap - 1.0) <= 0.05 for gap in gaps), gaps


def test_two_worker_processes_split_the_trace_without_sending_a_row_twice(
    tmp_path: Path,
) -> None:
    trace = write_mooncake(mooncake_like(rows=200, rate=50.0), tmp_path / "mooncake.jsonl")
    out = tmp_path / "out"
    summary = replay(tmp_path / "mooncake.jsonl", out, "--format", "mooncake", "--processes", "2",
                     "--duration", "40s")  # fmt: skip
    steps = steps_of(out)
    assert summary["requests"]["ok"] == 200
    assert sorted(s["session_id"] for s in steps) == sorted(s.id for s in trace.sessions)
    assert {p.parent.name for p in out.glob("worker-*/steps.jsonl")} == {"worker-0", "worker-1"}
    at = {s.id: s.requests[0].at_s for s in trace.sessions}
    offsets = sorted(s["started_unix"] - at[s["session_id"]] for s in steps)
    late = [o - offsets[0] for o in offsets]
    # Both workers start from the master's start message: one timeline (9 in 10 within 10x
    # the bench's p99; the suite's other worker shares these 2 cores).
    assert late[int(0.9 * len(late))] < 0.05, late[-10:]


def test_a_profile_replays_a_trace_by_its_arrival(tmp_path: Path) -> None:
    trace = write(mooncake_like(rows=30, rate=30.0), tmp_path / "t.jsonl")
    profile = tmp_path / "replay.yaml"
    profile.write_text(
        "name: traced\narrival: {mode: trace, file: t.jsonl, speedup: 2}\n"
        "sim: {preset: fast}\nslos: {ttft_p95: 5s}\n"
    )
    result = subprocess.run(
        [*AGENTLOAD, "run", str(profile), "--quiet", "--duration", "20s", "--out",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["requests"]["ok"] == 30
    assert summary["replay"]["speedup"] == 2
    assert summary["duration_s"] < 15  # one process: the run ends when the trace did
    assert trace.exists()


def test_a_trace_that_is_not_there_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([*AGENTLOAD, "replay", str(tmp_path / "nope.jsonl")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "no such trace file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_profile_naming_a_missing_trace_says_which_field(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("arrival: {mode: trace, file: missing.jsonl}\n")
    result = subprocess.run([*AGENTLOAD, "run", str(profile), "--duration", "5s"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "arrival.file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_trace_line_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"format": "agentload-trace", "version": 1, "block_size": 64}\n{"t": 0}\n')
    result = subprocess.run([*AGENTLOAD, "replay", str(path), "--format", "agentload"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert f"{path}:2" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_ceiling_over_a_trace_raises_its_speedup_level_by_level(tmp_path: Path) -> None:
    write(mooncake_like(rows=200, rate=10.0), tmp_path / "t.jsonl")
    profile = tmp_path / "p.yaml"
    profile.write_text("name: traced\narrival: {mode: trace, file: t.jsonl}\nsim: {preset: fast}\n")
    result = subprocess.run(
        [*AGENTLOAD, "ceiling", str(profile), "--slo", "ttft_p95 < 5s", "--warmup", "2s",
         "--window", "3s", "--max-duration", "20s", "--quiet", "--out", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    doc = json.loads((tmp_path / "c" / "ceiling.json").read_text())
    assert doc["load_unit"] == "x trace speed"
    loads = [level["load"] for level in doc["levels"]]
    assert loads[:2] == [1, 2]
    rates = [level["sessions_per_min"] for level in doc["levels"][:2]]
    assert rates[1] > 1.3 * rates[0]  # twice as fast a replay: about twice the sessions


def test_a_text_scale_sizes_prompts_and_blocks_in_the_targets_tokens() -> None:
    """A target counting 2 tokens per stand-in token: half the stand-in text, blocks of the
    measured length, and equal ids still equal text (the prefix the target caches)."""
    from loadgen.protocol import count_tokens
    from loadgen.runtime.replay import TraceAgent
    from loadgen.traces.prompt import TextScale

    requests = [TraceRequest(0.0, 1010, 8, (1, 2, 3)), TraceRequest(1.0, 1210, 8, (1, 2, 3, 4))]
    trace = Trace([TraceSession("a", requests)], 64)
    agent = TraceAgent("a", trace.sessions[0], trace, model="m")
    agent.template_tokens = 10
    agent.text_scale = TextScale(2.0, 32)
    agent.start_session("a")
    texts = []
    for _ in requests:
        plan = agent.plan_step()
        assert plan is not None
        texts.append(json.loads(b"".join(plan.body))["messages"][0]["content"])
        agent._next += 1  # the reply itself does not matter here
    assert [count_tokens(t) for t in texts] == [500, 600]
    first, second = (t.split() for t in texts)  # markers and words are one token each
    assert first[: 3 * 32] == second[: 3 * 32]  # blocks 1, 2, 3: 32 stand-in tokens each
    assert first[3 * 32] != second[3 * 32]  # then the first's own text, the second's block 4
