"""The published trace formats load from the example traces the way their publishers define
them: request counts, lengths, hash ids, sessions, sub-agents and gaps; auto-detection picks
each; agentload's own format keeps every trace; and the examples are the script's output."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from loadgen.traces import FORMATS, Trace, TraceRequest, TraceSession, load_trace
from loadgen.traces.formats import detect_format
from loadgen.traces.formats.agentload import read_agentload, write_agentload

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "traces"
SCRIPT = ROOT / "scripts" / "make_example_traces.py"
EXAMPLE_OF = {
    "mooncake": "mooncake.jsonl",
    "bailian": "bailian.jsonl",
    "weka": "weka.json",
    "tracelab": "tracelab.jsonl",
    "copilot": "copilot.jsonl.gz",
    "agentload": "agentload.jsonl",
}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_example_traces", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(name: str) -> list[dict[str, Any]]:
    raw = (EXAMPLES / name).read_bytes()
    text = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _load(fmt: str) -> Trace:
    return load_trace(EXAMPLES / EXAMPLE_OF[fmt], fmt)


def _walk(session: TraceSession) -> Iterator[TraceSession]:
    yield session
    for _after, sub in session.subagents:
        yield from _walk(sub)


def _shared(a: TraceRequest, b: TraceRequest) -> int:
    """How many leading blocks two requests' prompts share."""
    n = 0
    for x, y in zip(a.hash_ids, b.hash_ids, strict=False):
        if x != y:
            break
        n += 1
    return n


def test_the_examples_are_what_the_script_writes(tmp_path: Path) -> None:
    written = _script().write_examples(tmp_path)
    assert sorted(p.name for p in written) == sorted(EXAMPLE_OF.values())
    for path in written:
        committed = EXAMPLES / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is stale: run python scripts/make_example_traces.py"
        )


def test_there_is_an_example_of_every_format() -> None:
    assert set(EXAMPLE_OF) == set(FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_auto_detection_picks_each_format(fmt: str) -> None:
    path = EXAMPLES / EXAMPLE_OF[fmt]
    assert detect_format(path) == fmt
    assert load_trace(path).sessions == load_trace(path, fmt).sessions


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_trace_starts_at_zero_with_sessions_in_order_of_start(fmt: str) -> None:
    trace = _load(fmt)
    firsts = [s.requests[0].at_s for s in trace.sessions]
    assert min(r.at_s for r in trace.requests()) == 0.0
    assert firsts == sorted(firsts)
    for session in trace.sessions:
        for each in _walk(session):
            times = [r.at_s for r in each.requests]
            assert times == sorted(times), each.id
            assert each.requests[0].gap_s is None  # nothing before an agent's first request
    assert fmt in trace.source


@pytest.mark.parametrize("fmt", FORMATS)
def test_agentload_keeps_every_example_through_a_write_and_read(fmt: str) -> None:
    trace = _load(fmt)
    out = io.StringIO()
    write_agentload(trace, out)
    back = read_agentload(Path("round-trip.jsonl"), out.getvalue().splitlines())
    assert back.sessions == trace.sessions
    assert (back.block_size, back.hash_scope) == (trace.block_size, trace.hash_scope)


def test_a_recordings_ids_are_read_in_the_recorded_servers_tokens() -> None:
    header = {"format": "agentload-trace", "version": 1, "block_size": 64, "hash_scope": "global"}
    row = {"session": "s1", "in": 900, "out": 8, "hash_ids": [1, 2, 3, 4, 5, 6, 7]}
    lines = [header, {**row, "t": 0.0}]  # before any usage: the header's stand-in block
    lines += [{**row, "t": float(i), "block_in": b} for i, b in enumerate([128.4, 131.0, 129.6], 1)]

    lines[1] |= {"in": 450, "counted": True}  # counted in stand-in tokens: no usage yet
    lines[2] |= {"counted": True, "scale": {"in": 2.0}}  # counted, then scaled by the recorder

    trace = read_agentload(Path("rec.jsonl"), [json.dumps(x) for x in lines])

    assert trace.block_size == 130  # the median server tokens per id, rounded
    prompts = [r.input_tokens for r in trace.sessions[0].requests]
    assert prompts == [911, 900, 900, 900]  # 450 stand-in tokens x 129.6 / 64
    alone = read_agentload(Path("rec.jsonl"), [json.dumps(x) for x in lines[:2]])
    assert (alone.block_size, alone.sessions[0].requests[0].input_tokens) == (64, 450)


def test_mooncake_rows_are_one_request_sessions_of_512_token_blocks() -> None:
    rows = _rows("mooncake.jsonl")
    trace = _load("mooncake")
    assert (trace.block_size, trace.hash_scope) == (512, "global")
    assert trace.request_count() == len(rows) == len(trace.sessions)
    start = min(row["timestamp"] for row in rows)
    for row, session in zip(rows, trace.sessions, strict=True):
        (request,) = session.requests
        assert request.at_s == pytest.approx((row["timestamp"] - start) / 1000)
        assert (request.input_tokens, request.output_tokens) == (
            row["input_length"],
            row["output_length"],
        )
        assert request.hash_ids == tuple(row["hash_ids"])
        assert request.gap_s is None
        assert request.hash_ids[:2] == (0, 1)  # the system prompt every row starts with


def test_bailian_parent_links_make_sessions_of_16_token_blocks() -> None:
    rows = _rows("bailian.jsonl")
    trace = _load("bailian")
    assert (trace.block_size, trace.hash_scope) == (16, "global")
    assert trace.request_count() == len(rows)
    roots = [row for row in rows if row["parent_chat_id"] == -1]
    assert [s.id for s in trace.sessions] == [str(row["chat_id"]) for row in roots]
    start = min(row["timestamp"] for row in rows)
    by_chat = {row["chat_id"]: row for row in rows}
    for root, session in zip(roots, trace.sessions, strict=True):
        chain = [root]
        while child := [row for row in rows if row["parent_chat_id"] == chain[-1]["chat_id"]]:
            chain.append(child[0])
        assert [r.at_s for r in session.requests] == pytest.approx(
            [row["timestamp"] - start for row in chain]
        )
        assert [r.hash_ids for r in session.requests] == [tuple(row["hash_ids"]) for row in chain]
        assert [r.input_tokens for r in session.requests] == [row["input_length"] for row in chain]
        assert all(r.gap_s is None for r in session.requests)  # Bailian records no end times
        for earlier, later in zip(session.requests, session.requests[1:], strict=False):
            assert _shared(earlier, later) == earlier.input_tokens // 16  # history kept
    assert {row["parent_chat_id"] for row in rows} - {-1} <= set(by_chat)  # no chain cut off


def _weka_calls(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["type"] in ("n", "s")]


def test_weka_traces_keep_their_sub_agents_gaps_and_local_blocks() -> None:
    raw = json.loads((EXAMPLES / "weka.json").read_text())
    trace = _load("weka")
    assert (trace.block_size, trace.hash_scope) == (64, "local")
    subagents = [e for t in raw for e in t["requests"] if e["type"] == "subagent"]
    nested = [c for e in subagents for c in e["requests"]]
    top = [c for t in raw for c in _weka_calls(t["requests"])]
    assert trace.request_count() == len(top) + len(nested) == 27
    assert [s.id for s in trace.sessions] == ["trace_0001", "trace_0002"]
    first, second = trace.sessions
    for raw_trace, session in zip(raw, trace.sessions, strict=True):
        calls = _weka_calls(raw_trace["requests"])
        assert len(session.requests) == len(calls)
        for i, (call, request) in enumerate(zip(calls, session.requests, strict=True)):
            assert request.at_s == pytest.approx(call["t"])  # each trace's clock starts at 0
            assert (request.input_tokens, request.output_tokens) == (call["in"], call["out"])
            assert request.hash_ids == tuple(call["hash_ids"])
            assert request.duration_s == call["api_time"]
            assert request.ttft_s == call.get("ttft")
            assert request.gap_s == (None if i == 0 else call["think_time"])
        # One namespace per trace: its sub-agents share the parent's blocks, others do not.
        assert {s.hash_namespace for s in _walk(session)} == {raw_trace["id"]}
    assert first.requests[0].hash_ids[:10] == second.requests[0].hash_ids[:10]  # local ids
    assert [(after, sub.id) for after, sub in first.subagents] == [
        (2, "trace_0001/agent_002"),
        (5, "trace_0001/agent_005"),
        (5, "trace_0001/agent_005.2"),
    ]
    assert [(after, sub.id) for after, sub in second.subagents] == [(0, "trace_0002/agent_000")]


def test_a_weka_sub_agent_with_parallel_calls_runs_them_side_by_side() -> None:
    raw = json.loads((EXAMPLES / "weka.json").read_text())
    (entry,) = [e for e in raw[0]["requests"] if e.get("agent_id") == "agent_005"]
    first, second = entry["requests"][:2]
    assert second["t"] < first["t"] + first["api_time"]  # recorded overlapping
    subs = {sub.id: sub for _after, sub in _load("weka").sessions[0].subagents}
    main, side = subs["trace_0001/agent_005"], subs["trace_0001/agent_005.2"]
    assert len(main.requests) + len(side.requests) == len(entry["requests"])
    assert side.requests[0].at_s == pytest.approx(second["t"])
    assert main.requests[0].at_s == pytest.approx(first["t"])
    # The parent's next call comes after the sub-agent ended.
    parent = _load("weka").sessions[0]
    assert parent.requests[6].at_s >= entry["t"] + entry["duration_ms"] / 1000


def test_tracelab_rounds_get_synthesized_blocks_tool_gaps_and_their_sub_agent() -> None:
    rows = _rows("tracelab.jsonl")
    trace = _load("tracelab")
    assert (trace.block_size, trace.hash_scope) == (64, "global")
    assert trace.request_count() == len(rows)
    main, codex, later = trace.sessions
    assert [main.id, codex.id, later.id] == ["claude:7d1c", "codex:52be", "claude:e915"]
    ((after, child),) = main.subagents  # inside the Agent call of round 3
    assert (after, child.id, len(child.requests)) == (3, "claude:a3f0", 3)
    spawn = rows[3]["tools"][0]
    assert spawn["tool_name"] == "Agent"
    assert main.requests[4].gap_s == pytest.approx(spawn["tool_wall_latency_ms"] / 1000)
    by_session: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_session.setdefault(row["session_id"], []).append(row)
    for session in (main, child, codex, later):
        session_rows = by_session[session.id]
        for row, request in zip(session_rows, session.requests, strict=True):
            assert request.input_tokens == row["input_tokens_total"]
            assert request.output_tokens == row["output_tokens"]  # reasoning is part of it
            assert request.cached_tokens == row["prefix_tokens"]
            assert len(request.hash_ids) == row["input_tokens_total"] // 64
        for earlier, request in zip(session.requests, session.requests[1:], strict=False):
            assert _shared(earlier, request) == request.cached_tokens // 64
    # Codex compacted before its fifth round: a new prompt, nothing shared.
    assert codex.requests[4].cached_tokens == 0
    assert set(codex.requests[4].hash_ids).isdisjoint(codex.requests[3].hash_ids)
    # The later session's cached head is the first session's system prompt.
    assert _shared(later.requests[0], main.requests[0]) == 12_032 // 64
    assert _shared(child.requests[0], main.requests[0]) == 0  # another model


def test_tracelab_gaps_run_from_the_last_output_to_the_next_input() -> None:
    rows = _rows("tracelab.jsonl")
    main = _load("tracelab").sessions[0]
    for k in (1, 2, 5):
        ended = max(e["timestamp"] for e in rows[k - 1]["timing_events"])
        sent = rows[k]["timing_events"][0]["timestamp"]
        expected = (datetime.fromisoformat(sent) - datetime.fromisoformat(ended)).total_seconds()
        assert main.requests[k].gap_s == pytest.approx(expected)


def test_copilot_calls_become_requests_with_cached_prefixes_and_tool_gaps() -> None:
    sessions = _rows("copilot.jsonl.gz")
    trace = _load("copilot")
    assert (trace.block_size, trace.hash_scope) == (64, "global")
    calls = [[c for t in s["turns"] for c in t["llm_calls"]] for s in sessions]
    assert trace.request_count() == sum(len(c) for c in calls)
    assert [s.id for s in trace.sessions] == [s["session_id"] for s in sessions]
    for session_calls, session in zip(calls, trace.sessions, strict=True):
        chains: dict[str, TraceRequest] = {}
        for call, request in zip(session_calls, session.requests, strict=True):
            tokens = call["tokens"]
            assert (request.input_tokens, request.output_tokens, request.cached_tokens) == (
                tokens["prompt"],
                tokens["completion"],
                tokens["cached"],
            )
            assert request.duration_s == pytest.approx(call["duration_ms"] / 1000)
            previous = chains.get(call["model"])
            if previous is not None:  # the same model's previous prompt is the cached part
                assert _shared(previous, request) == tokens["cached"] // 64
            chains[call["model"]] = request
    first, second, _third = trace.sessions
    # Every session's first prompt shares the cached system prompt of the first session's.
    assert _shared(second.requests[0], first.requests[0]) == 8192 // 64


def test_copilot_gaps_are_from_the_previous_call_end() -> None:
    session = _rows("copilot.jsonl.gz")[0]
    calls = [c for t in session["turns"] for c in t["llm_calls"]]
    requests = _load("copilot").sessions[0].requests

    def at(call: dict[str, Any]) -> float:
        return datetime.fromisoformat(call["timestamp"]).timestamp()

    for previous, call, request in zip(calls, calls[1:], requests[1:], strict=False):
        expected = at(call) - at(previous) - previous["duration_ms"] / 1000
        assert request.gap_s == pytest.approx(expected, abs=1e-6)
    batch = session["turns"][0]["tool_batches"][0]
    assert requests[1].gap_s >= batch["duration_ms"] / 1000  # the tool ran inside the gap


def test_agentload_example_keeps_a_sub_agent_sharing_its_parents_blocks() -> None:
    trace = _load("agentload")
    main, other = trace.sessions
    ((after, helper),) = main.subagents
    assert (after, helper.id, helper.hash_namespace) == (1, "main/helper", "main")
    assert other.hash_namespace == "other"
    assert _shared(helper.requests[0], main.requests[0]) == 10
