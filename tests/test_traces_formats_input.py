"""Trace readers on inputs the examples do not show: each bad record is a one-line ConfigError
naming file:line and the field; the variants publishers use (AIPerf's Mooncake sessions, Weka
files as JSON Lines, arrays or folders, relative sub-agent times, gzip) load."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.errors import ConfigError
from loadgen.traces import FORMATS, load_trace
from loadgen.traces.formats import detect_format


def _jsonl(path: Path, *rows: Any) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _error(path: Path, fmt: str = "auto") -> str:
    with pytest.raises(ConfigError) as caught:
        load_trace(path, fmt)
    message = str(caught.value)
    assert "\n" not in message
    return message


MOONCAKE = {"timestamp": 0, "input_length": 700, "output_length": 20, "hash_ids": [1, 2]}
BAILIAN = {
    "chat_id": 1,
    "parent_chat_id": -1,
    "timestamp": 1.5,
    "input_length": 40,
    "output_length": 9,
    "type": "text",
    "turn": 1,
    "hash_ids": [7, 8],
}
WEKA_CALL = {"t": 0.0, "type": "n", "model": "m", "in": 900, "out": 40, "hash_ids": [1]}
TRACELAB = {
    "provider": "claude",
    "session_id": "s",
    "round_index": 0,
    "model": "m",
    "input_tokens_total": 500,
    "prefix_tokens": 0,
    "newly_append_tokens": 500,
    "output_tokens": 30,
    "timing_events": [{"event_type": "user_message", "timestamp": "2026-05-04T09:00:00Z"}],
    "tools": [],
}


def _copilot_call(**tokens: Any) -> dict[str, Any]:
    return {
        "timestamp": "2026-05-04T09:00:00Z",
        "duration_ms": 1000.0,
        "model": "Model A",
        "tokens": {"prompt": 900, "completion": 10, "cached": 0, **tokens},
    }


def _weka(trace_requests: list[Any], **fields: Any) -> dict[str, Any]:
    return {"id": "t1", "block_size": 64, "hash_id_scope": "local", **fields,
            "requests": trace_requests}  # fmt: skip


BAD: list[tuple[str, str, list[Any], str]] = [
    ("mooncake", "m.jsonl", [MOONCAKE, {**MOONCAKE, "input_length": None}],
     "m.jsonl:2: field 'input_length' is missing; a mooncake row has timestamp (ms)"),
    ("mooncake", "m.jsonl", ["{not json"], "m.jsonl:1: not JSON"),
    ("mooncake", "m.jsonl", [{**MOONCAKE, "hash_ids": "1,2"}],
     "m.jsonl:1: field 'hash_ids' must be a list of integer block ids"),
    ("mooncake", "m.jsonl", [{**MOONCAKE, "output_length": -3}],
     "m.jsonl:1: field 'output_length' must be a whole number of tokens >= 0, not -3"),
    ("mooncake", "m.jsonl", [[1, 2]], "m.jsonl:1: a mooncake row must be a JSON object"),
    ("bailian", "b.jsonl", [{**BAILIAN, "timestamp": "noon"}],
     "b.jsonl:1: field 'timestamp' must be a number, not 'noon'"),
    ("bailian", "b.jsonl", [{**BAILIAN, "parent_chat_id": 2}, {**BAILIAN, "chat_id": 2,
                                                                "parent_chat_id": 1}],
     "into a loop; fix the row"),
    ("weka", "w.json", [_weka([WEKA_CALL, {"t": 1, "type": "subagent", "agent_id": "a",
                                           "requests": [{**WEKA_CALL, "in": None}]}])],
     "w.json:1: trace 't1' requests[1].requests[0]: field 'in' is missing"),
    ("weka", "w.json", [_weka([{**WEKA_CALL, "type": "x"}])],
     "w.json:1: trace 't1' requests[0]: field 'type' must be n, s or subagent, not 'x'"),
    ("weka", "w.json", [_weka([WEKA_CALL], hash_id_scope="shared")],
     "w.json:1: trace 't1': hash_id_scope must be local or global, not 'shared'"),
    ("weka", "w.json", [_weka([WEKA_CALL]), _weka([WEKA_CALL])],
     "w.json:2: trace id 't1' is also at "),
    ("weka", "w.json", [_weka([WEKA_CALL]), _weka([WEKA_CALL], block_size=16)],
     "w.json:2: trace 't1' has block_size 16 and scope local, the traces before it 64"),
    ("tracelab", "t.jsonl", [{**TRACELAB, "timing_events": [
        {"event_type": "text", "timestamp": "yesterday"}]}],
     "t.jsonl:1: field 'timing_events[0].timestamp' must be an ISO-8601 time"),
    ("tracelab", "t.jsonl", [{**TRACELAB, "session_id": None}],
     "t.jsonl:1: field 'session_id' is missing; a tracelab row has session_id"),
    ("copilot", "c.jsonl", [{"session_id": "s", "turns": [{"llm_calls": [
        _copilot_call(prompt=-1)]}]}],
     "c.jsonl:1: field 'turns[0].llm_calls[0].tokens.prompt' must be a whole number"),
    ("copilot", "c.jsonl", [{"session_id": "s", "turns": [{"llm_calls": [
        {**_copilot_call(), "tokens": None}]}]}],
     "c.jsonl:1: field 'tokens' is missing; an llm call has timestamp"),
    ("copilot", "c.jsonl", [{"session_id": "s", "turns": "many"}],
     "c.jsonl:1: field 'turns' must be a list"),
    ("agentload", "a.jsonl", [{"format": "agentload-trace", "version": 1, "block_size": 64},
                              {"session": "x", "t": 0, "in": 5, "out": 5, "parent": "y",
                               "after": "first"}],
     "a.jsonl:2: after must be a request number >= -1, not 'first'"),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "name", "rows", "expected"), BAD)
def test_a_bad_record_is_a_one_line_error_naming_file_line_and_field(
    tmp_path: Path, fmt: str, name: str, rows: list[Any], expected: str
) -> None:
    path = _jsonl(tmp_path / name, *rows)
    assert expected in _error(path, fmt)


def test_an_unknown_format_name_lists_the_formats(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "x.jsonl", MOONCAKE)
    message = _error(path, "burstgpt")
    assert message == (
        "unknown trace format 'burstgpt'; use auto or one of: "
        "mooncake, bailian, weka, tracelab, copilot, agentload"
    )


def test_an_undetectable_trace_says_to_pass_format(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "x.jsonl", {"prompt": "hi", "reply": "there"})
    assert _error(path) == (
        f"{path}: cannot tell the trace format from its first record (prompt, reply); "
        f"pass --format with one of: {', '.join(FORMATS)}"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "the trace file is empty"), ("\n\n", "the trace file is empty")],
)
def test_an_empty_trace_is_an_error(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    assert expected in _error(path)


def test_a_missing_trace_file_is_an_error(tmp_path: Path) -> None:
    assert _error(tmp_path / "nowhere.jsonl") == (
        f"{tmp_path / 'nowhere.jsonl'}: no such trace file; check the path"
    )


def test_a_trace_of_another_format_read_as_one_names_the_missing_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "b.jsonl", BAILIAN)
    assert "field 'id' is missing; a weka trace has id" in _error(path, "weka")


def test_gzipped_traces_are_detected_and_read_whatever_their_name(tmp_path: Path) -> None:
    path = tmp_path / "trace.bin"
    path.write_bytes(gzip.compress((json.dumps(MOONCAKE) + "\n").encode()))
    assert detect_format(path) == "mooncake"
    assert load_trace(path).request_count() == 1


def test_mooncake_rows_with_a_session_id_are_sessions_with_their_delays(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "m.jsonl",
        {"session_id": "a", "input_length": 600, "output_length": 30, "hash_ids": [1, 2]},
        {"session_id": "b", "timestamp": 500, "input_length": 100, "output_length": 5},
        {"session_id": "a", "delay": 2500, "input_length": 900, "output_length": 40},
    )
    trace = load_trace(path)
    a, b = trace.sessions
    assert [r.at_s for r in a.requests] == [0.0, 2.5]
    assert [r.gap_s for r in a.requests] == [None, 2.5]
    assert [r.at_s for r in b.requests] == [0.5]
    assert b.requests[0].hash_ids == ()


def test_zero_output_asks_for_one_token_and_zero_input_is_skipped_with_a_note(
    tmp_path: Path,
) -> None:
    path = _jsonl(
        tmp_path / "m.jsonl",
        {**MOONCAKE, "output_length": 0},
        {**MOONCAKE, "timestamp": 10, "input_length": 0},
    )
    trace = load_trace(path)
    assert [r.output_tokens for r in trace.requests()] == [1]
    assert trace.source == (
        f"{path} (mooncake; 1 rows with output_length 0 asked for 1 token; "
        "1 rows with input_length 0 skipped)"
    )


def test_a_bailian_chat_whose_parent_was_cut_off_starts_a_session(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "b.jsonl",
        {**BAILIAN, "chat_id": 5, "parent_chat_id": 4, "timestamp": 3.0, "turn": 2},
        {**BAILIAN, "chat_id": 6, "parent_chat_id": 5, "timestamp": 9.0, "turn": 3},
        {**BAILIAN, "chat_id": 7, "timestamp": 4.0},
    )
    trace = load_trace(path)
    assert [(s.id, len(s.requests)) for s in trace.sessions] == [("5", 2), ("7", 1)]
    assert [r.at_s for r in trace.sessions[0].requests] == [0.0, 6.0]


def _subagent(t: float, *times: float, agent: str = "a") -> dict[str, Any]:
    calls = [{**WEKA_CALL, "t": x, "api_time": 1.0} for x in times]
    return {"t": t, "type": "subagent", "agent_id": agent, "requests": calls}


def test_weka_relative_sub_agent_times_are_read_from_their_start(tmp_path: Path) -> None:
    # Raw kv-cache-tester output: nested t counts from the sub-agent's start.
    trace = _weka([WEKA_CALL, _subagent(30.0, 0.5, 3.0), {**WEKA_CALL, "t": 40.0}])
    path = _jsonl(tmp_path / "w.json", trace)
    ((after, sub),) = load_trace(path).sessions[0].subagents
    assert after == 0
    assert [r.at_s for r in sub.requests] == [30.5, 33.0]
    assert [r.gap_s for r in sub.requests] == [None, pytest.approx(1.5)]  # from t + api_time


def test_weka_absolute_sub_agent_times_stay(tmp_path: Path) -> None:
    trace = _weka([WEKA_CALL, _subagent(30.0, 30.5, 33.0), {**WEKA_CALL, "t": 40.0}])
    path = _jsonl(tmp_path / "w.json", trace)
    ((_after, sub),) = load_trace(path).sessions[0].subagents
    assert [r.at_s for r in sub.requests] == [30.5, 33.0]


@pytest.mark.parametrize("layout", ["jsonl", "array", "pretty", "folder"])
def test_weka_files_may_hold_one_trace_many_or_be_a_folder(tmp_path: Path, layout: str) -> None:
    traces = [
        _weka([WEKA_CALL, {**WEKA_CALL, "t": 2.0}]),
        {**_weka([WEKA_CALL, _subagent(1.0, 1.5, agent="x")]), "id": "t2"},
    ]
    if layout == "jsonl":
        path = _jsonl(tmp_path / "w.jsonl", *traces)
    elif layout == "array":
        path = tmp_path / "w.json"
        path.write_text(json.dumps(traces))
    elif layout == "pretty":
        path = tmp_path / "w.json"
        path.write_text(json.dumps(traces, indent=2))
    else:
        path = tmp_path / "traces"
        path.mkdir()
        for trace in traces:
            (path / f"{trace['id']}.json").write_text(json.dumps(trace, indent=1))
    assert detect_format(path) == "weka"
    trace = load_trace(path)
    assert [s.id for s in trace.sessions] == ["t1", "t2"]
    assert [sub.id for _a, sub in trace.sessions[1].subagents] == ["t2/x"]
    assert trace.request_count() == 4


def test_weka_trace_without_own_calls_keeps_its_sub_agents_as_sessions(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "w.json", _weka([_subagent(0.0, 0.5, 2.0)]))
    trace = load_trace(path)
    assert [(s.id, len(s.requests)) for s in trace.sessions] == [("t1/a", 2)]


def test_tracelab_rounds_without_times_are_skipped_with_a_note(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", TRACELAB, {**TRACELAB, "timing_events": []})
    trace = load_trace(path)
    assert trace.request_count() == 1
    assert trace.source.endswith("(tracelab; 1 rounds without input or output times skipped)")


def test_copilot_reads_a_folder_of_gzipped_shards(tmp_path: Path) -> None:
    for day, session in (("2026-06-02", "late"), ("2026-06-01", "early")):
        folder = tmp_path / f"date={day}"
        folder.mkdir()
        call = {**_copilot_call(), "timestamp": f"{day}T09:00:00Z"}
        row = {"session_id": session, "date": day, "turns": [{"llm_calls": [call]}]}
        (folder / "shard-0000.jsonl.gz").write_bytes(gzip.compress(json.dumps(row).encode()))
        (folder / "manifest.json").write_text('{"sessions": 1, "shards": 1}')
    assert detect_format(tmp_path) == "copilot"
    trace = load_trace(tmp_path)
    assert [s.id for s in trace.sessions] == ["early", "late"]
    assert [s.requests[0].at_s for s in trace.sessions] == [0.0, 86400.0]


def test_agentload_keeps_a_sub_agent_started_after_the_first_request(tmp_path: Path) -> None:
    # `after` 0 once read as -1 (`0 or -1`): the sub-agent then started before the parent.
    path = _jsonl(
        tmp_path / "a.jsonl",
        {"format": "agentload-trace", "version": 1, "block_size": 64},
        {"session": "p", "t": 0, "in": 5, "out": 5},
        {"session": "c", "t": 1, "in": 5, "out": 5, "parent": "p", "after": 0},
    )
    ((after, child),) = load_trace(path).sessions[0].subagents
    assert (after, child.id, child.hash_namespace) == (0, "c", "c")


def test_a_block_size_can_be_chosen_for_formats_whose_files_do_not_say_it() -> None:
    examples = Path(__file__).resolve().parents[1] / "examples" / "traces"
    trace = load_trace(examples / "tracelab.jsonl", block_size=256)
    assert trace.block_size == 256
    assert all(len(r.hash_ids) == r.input_tokens // 256 for r in trace.requests())
    with pytest.raises(ConfigError, match="a weka trace says its own block size"):
        load_trace(examples / "weka.json", block_size=16)
    with pytest.raises(ConfigError, match="block size must be a positive number"):
        load_trace(examples / "mooncake.jsonl", block_size=0)


def test_a_broken_gzip_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"session_id": "s", "turns": []}\n')[:-12])
    assert f"{path}: cannot read it" in _error(path, "copilot")
