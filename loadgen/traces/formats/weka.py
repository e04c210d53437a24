"""Weka KV-cache-tester / SemiAnalysis cc-traces: Claude Code sessions with their sub-agents.

One JSON object per trace (a file holds one, a JSON array of them, or one per line; a folder
of such files is read file by file):

    {"id": "trace_0001", "models": ["claude-opus-4-5"], "block_size": 64,
     "hash_id_scope": "local", "tool_tokens": 12974, "system_tokens": 4243,
     "requests": [
       {"t": 0.0, "type": "n", "model": "...", "in": 71175, "out": 169, "hash_ids": [1, 2],
        "api_time": 3.1, "think_time": 0.0},
       {"t": 9.5, "type": "subagent", "agent_id": "agent_001", "subagent_type": "Explore",
        "duration_ms": 41000, "requests": [{"t": 9.6, "type": "s", ..., "ttft": 0.8}]},
       ...]}

`t` is seconds from the trace's start; `type` n is a plain call, s a streamed one (with its
`ttft`), subagent a sub-agent whose own calls are nested, started after the parent's
previous call. `api_time` is the call's time on the server, `think_time` the client's pause
before sending it (tool runs, the user). Hash ids name `block_size`-token blocks and are
numbered per trace (hash_id_scope local: the parent and its sub-agents share them, other
traces do not) unless the trace says global. Nested `t` is absolute in SemiAnalysis'
releases and relative to the sub-agent's start in raw kv-cache-tester output: each file is
read one way, the one most of its sub-agents fit (a relative one has calls before its start).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.traces.formats._common import (
    Notes,
    fail,
    finish,
    hash_id_list,
    json_values,
    need,
    need_object,
    number,
    opt_number,
    token_count,
    trace_files,
)
from loadgen.traces.model import HashScope, Trace, TraceRequest, TraceSession

__all__ = ["BLOCK_SIZE", "read_weka"]

BLOCK_SIZE = 64  # cc-traces' block size, for a trace that does not say
TRACE_FIELDS = "a weka trace has id, block_size, hash_id_scope and requests"
FIELDS = "a weka request has t (s), type (n, s or subagent), in, out and hash_ids"
EPS = 1e-6


@dataclass(frozen=True, slots=True)
class _Call:
    t: float
    request: TraceRequest  # its gap not yet set
    api_time: float | None
    think_time: float | None


@dataclass(slots=True)
class _Shape:
    """What every trace of one replay must agree on."""

    block_size: int | None = None
    scope: HashScope | None = None


def read_weka(path: Path) -> Trace:
    """Read Weka / cc-traces traces; ConfigError naming file:line, request and field."""
    sessions: list[TraceSession] = []
    notes = Notes()
    shape = _Shape()
    seen: dict[str, str] = {}
    for file in trace_files(path):
        traces = [(w, need_object(v, w, "a weka trace")) for w, v in json_values(file, "weka")]
        relative = _nested_times_relative(traces)
        for where, obj in traces:
            session = _trace(where, obj, relative, notes, shape)
            if session.id in seen:
                # Local ids are numbered per trace: two traces under one id would share text.
                fail(where, f"trace id {session.id!r} is also at {seen[session.id]}; rename one")
            seen[session.id] = where
            sessions.append(session)
    source = f"{path} (weka{notes.suffix()})"
    if shape.block_size is None or shape.scope is None:
        fail(source, "the trace holds no requests")
    return finish(sessions, shape.block_size, shape.scope, source)


def _trace(
    where: str, obj: Mapping[str, Any], relative: bool, notes: Notes, shape: _Shape
) -> TraceSession:
    trace_id = str(need(obj, "id", where, TRACE_FIELDS))
    block_size = token_count(obj.get("block_size", BLOCK_SIZE), where, "block_size")
    scope = obj.get("hash_id_scope", "local")
    if block_size < 1:
        fail(where, f"trace {trace_id!r}: block_size must be a positive number of tokens")
    if scope not in ("local", "global"):
        fail(where, f"trace {trace_id!r}: hash_id_scope must be local or global, not {scope!r}")
    _agree(where, trace_id, shape, block_size, scope)
    entries = need(obj, "requests", where, TRACE_FIELDS)
    if not isinstance(entries, list):
        fail(where, f"trace {trace_id!r}: field 'requests' must be a list")
    parent = TraceSession(trace_id, hash_namespace=trace_id)
    calls: list[_Call] = []
    used = {trace_id}
    for index, value in enumerate(entries):
        loc = f"{where}: trace {trace_id!r} requests[{index}]"
        entry = need_object(value, loc, "a request")
        kind = entry.get("type")
        if kind in ("n", "s"):
            call = _call(entry, loc, 0.0, notes)
            if call is not None:
                calls.append(call)
        elif kind == "subagent":
            for sub in _subagent(entry, loc, trace_id, relative, used, notes):
                parent.subagents.append((len(calls) - 1, sub))
        else:
            fail(loc, f"field 'type' must be n, s or subagent, not {kind!r}")
    parent.requests = _with_gaps(calls)
    return parent


def _agree(where: str, trace_id: str, shape: _Shape, block_size: int, scope: HashScope) -> None:
    if shape.block_size is None:
        shape.block_size, shape.scope = block_size, scope
    elif (block_size, scope) != (shape.block_size, shape.scope):
        fail(
            where,
            f"trace {trace_id!r} has block_size {block_size} and scope {scope}, the traces "
            f"before it {shape.block_size} and {shape.scope}; replay such traces separately",
        )


def _subagent(
    entry: Mapping[str, Any],
    loc: str,
    trace_id: str,
    relative: bool,
    used: set[str],
    notes: Notes,
) -> list[TraceSession]:
    """A sub-agent's calls as one session, or several where its calls overlapped in time
    (parallel streams of it run side by side, all started at the same point)."""
    start = number(need(entry, "t", loc, FIELDS), loc, "t")
    agent_id = str(entry.get("agent_id") or loc.rsplit(" ", 1)[-1])
    inner = entry.get("requests") or []
    if not isinstance(inner, list):
        fail(loc, "field 'requests' of a sub-agent must be a list")
    calls: list[_Call] = []
    for index, value in enumerate(inner):
        at = f"{loc}.requests[{index}]"
        call_entry = need_object(value, at, "a request")
        if call_entry.get("type") not in ("n", "s"):
            fail(at, f"field 'type' must be n or s in a sub-agent, not {call_entry.get('type')!r}")
        call = _call(call_entry, at, start if relative else 0.0, notes)
        if call is not None:
            calls.append(call)
    sessions = []
    for number_, stream in enumerate(_streams(calls)):
        base = f"{trace_id}/{agent_id}" + (f".{number_ + 1}" if number_ else "")
        session_id, n = base, 1
        while session_id in used:
            n += 1
            session_id = f"{base}~{n}"
        used.add(session_id)
        sessions.append(TraceSession(session_id, _with_gaps(stream), hash_namespace=trace_id))
    return sessions


def _call(entry: Mapping[str, Any], loc: str, offset: float, notes: Notes) -> _Call | None:
    input_tokens = token_count(need(entry, "in", loc, FIELDS), loc, "in")
    output = token_count(need(entry, "out", loc, FIELDS), loc, "out")
    if input_tokens == 0:
        notes.add("calls with in 0 skipped")
        return None
    if output == 0:
        notes.add("calls with out 0 asked for 1 token")
    t = offset + number(need(entry, "t", loc, FIELDS), loc, "t")
    api_time = opt_number(entry, "api_time", loc)
    think_time = opt_number(entry, "think_time", loc)
    request = TraceRequest(
        at_s=t,
        input_tokens=input_tokens,
        output_tokens=max(output, 1),
        hash_ids=hash_id_list(entry.get("hash_ids"), loc),
        ttft_s=opt_number(entry, "ttft", loc),
        duration_s=api_time,
    )
    return _Call(t, request, api_time, think_time)


def _with_gaps(calls: Sequence[_Call]) -> list[TraceRequest]:
    """The calls' requests, each but the first with its gap: the recorded think_time, else
    the time from the previous call's end (t + api_time) to this one's start."""
    requests = []
    for i, call in enumerate(calls):
        gap = None
        if i > 0:
            previous = calls[i - 1]
            if call.think_time is not None:
                gap = max(call.think_time, 0.0)
            elif previous.api_time is not None:
                gap = max(call.t - previous.t - previous.api_time, 0.0)
        requests.append(dataclasses.replace(call.request, gap_s=gap))
    return requests


def _streams(calls: Sequence[_Call]) -> list[list[_Call]]:
    """Calls in time order, packed into the fewest sequences in which none starts before
    the previous one ended (a call with no api_time ends when it starts)."""
    streams: list[list[_Call]] = []
    ends: list[float] = []
    for call in sorted(calls, key=lambda c: c.t):
        end = call.t + (call.api_time or 0.0)
        for i, stream_end in enumerate(ends):
            if stream_end <= call.t + EPS:
                streams[i].append(call)
                ends[i] = end
                break
        else:
            streams.append([call])
            ends.append(end)
    return streams


def _nested_times_relative(traces: Sequence[tuple[str, Mapping[str, Any]]]) -> bool:
    """Whether most sub-agents in these traces have a call before their own start, which
    only relative nested times (raw kv-cache-tester output) give."""
    votes = [0, 0]  # absolute, relative
    for _where, obj in traces:
        entries = obj.get("requests")
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict) or entry.get("type") != "subagent":
                continue
            start = entry.get("t")
            inner = entry.get("requests")
            times = [
                r["t"]
                for r in (inner if isinstance(inner, list) else ())
                if isinstance(r, dict) and isinstance(r.get("t"), int | float)
            ]
            if times and isinstance(start, int | float):
                votes[min(times) < start - EPS] += 1
    return votes[1] > votes[0]
