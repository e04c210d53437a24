"""UW SyFI TraceLab: Claude Code and Codex rounds (github.com/uw-syfi/TraceLab, round_trace.jsonl,
released as syfi_coding_trace.jsonl.gz).

JSON Lines, one LLM round per row:

    {"provider": "claude", "session_id": "claude:5f0c...", "round_index": 3, "model": "...",
     "user": "u07", "project": "p12", "input_tokens_total": 41210, "prefix_tokens": 40112,
     "newly_append_tokens": 1098, "output_tokens": 214, "reasoning_output_tokens": null,
     "timing_events": [{"event_type": "tool_result", "timestamp": "2026-05-02T10:00:03.120Z"},
                       {"event_type": "tool_call", "timestamp": "2026-05-02T10:00:07.410Z"}],
     "tools": [{"tool_name": "Bash", "emitted_at": "...", "result_at": "...",
                "tool_wall_latency_ms": 812, "tool_internal_latency_ms": 790, "is_error": false}]}

TraceLab records no block hashes, so they are made up to keep the recorded prefix reuse
(input_tokens_total = prefix_tokens + newly_append_tokens, prefix_tokens being what the
provider's cache served): a round's first prefix_tokens // 64 blocks are its agent's previous
round's (same session and model), the rest are new. A session's first round takes its cached
head from a pool shared by the user's sessions on that provider and model (its system prompt
was cached by an earlier session). Block ids are then unique across the file (global scope).

A round was sent at its latest input event (user_message, tool_result) and ended at its last
output event (text, reasoning, tool_call); the gap before it is from the previous round's
end, tool runs and the user's pauses included. `output_tokens` already counts reasoning for
Codex (reasoning_output_tokens is a part of it) and is the message's output for Claude.

Sub-agents: TraceLab links none. A Claude sub-agent runs inside one blocking Agent/Task tool
call, so a session of the same user and project whose whole span lies inside such a call of
at least 10 s (shorter ones are no-op or error returns) becomes that call's sub-agent, the
tightest call winning; Codex's asynchronous spawn_agent cannot be paired and is not joined.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.traces.formats._common import (
    BlockMinter,
    Notes,
    fail,
    finish,
    iso_seconds,
    json_records,
    need,
    need_object,
    opt_number,
    synth_chain,
    token_count,
)
from loadgen.traces.model import Trace, TraceRequest, TraceSession

__all__ = ["BLOCK_SIZE", "read_tracelab"]

BLOCK_SIZE = 64  # the block size ids are made up at (cc-traces' and AIPerf's choice)
FIELDS = (
    "a tracelab row has session_id, round_index, input_tokens_total, prefix_tokens, "
    "output_tokens and timing_events"
)
INPUT_EVENTS = frozenset({"user_message", "tool_result"})
OUTPUT_EVENTS = frozenset({"text", "reasoning", "tool_call"})
SPAWN_TOOLS = frozenset({"Agent", "Task"})  # Claude Code's blocking sub-agent calls
MIN_SPAWN_S = 10.0


@dataclass(slots=True)
class _Round:
    where: str
    session_id: str
    round_index: float
    model: str
    head: tuple[str, ...]  # (provider, user, model): whose first prompts share a head
    ident: tuple[str, str]  # (user, project): who may have spawned it
    input_tokens: int
    prefix_tokens: int
    output_tokens: int
    sent: float | None = None
    ended: float | None = None
    stamps: list[float] = field(default_factory=list)
    spawns: list[tuple[float, float]] = field(default_factory=list)


def read_tracelab(path: Path, *, block_size: int = BLOCK_SIZE) -> Trace:
    """Read a TraceLab round trace; ConfigError naming file:line and field on bad input."""
    notes = Notes()
    by_session: dict[str, list[_Round]] = defaultdict(list)
    for where, value in json_records(path, "tracelab"):
        round_ = _round(where, need_object(value, where, "a tracelab row"))
        if round_.sent is None:
            notes.add("rounds without input or output times skipped")
        elif round_.input_tokens == 0:
            notes.add("rounds with input_tokens_total 0 skipped")
        else:
            by_session[round_.session_id].append(round_)
    for rounds in by_session.values():
        rounds.sort(key=lambda r: (r.sent, r.round_index))  # stable: file order on ties
    order = sorted(by_session, key=lambda sid: _first(by_session[sid]))
    minter = BlockMinter()
    sessions = {sid: _session(sid, by_session[sid], block_size, minter) for sid in order}
    top = dict(sessions)
    for child, (parent, start) in _joins(by_session, order).items():
        requests = sessions[parent].requests
        after = sum(1 for r in requests if r.at_s <= start) - 1
        sessions[parent].subagents.append((after, sessions[child]))
        del top[child]
    source = f"{path} (tracelab{notes.suffix()})"
    return finish(list(top.values()), block_size, "global", source)


def _first(rounds: Sequence[_Round]) -> float:
    return rounds[0].sent or 0.0


def _round(where: str, row: Mapping[str, Any]) -> _Round:
    model = str(row.get("model") or "")
    provider, user = str(row.get("provider") or ""), str(row.get("user") or "")
    total = token_count(need(row, "input_tokens_total", where, FIELDS), where, "input_tokens_total")
    prefix = row.get("prefix_tokens")
    output = row.get("output_tokens")
    round_ = _Round(
        where=where,
        session_id=str(need(row, "session_id", where, FIELDS)),
        round_index=opt_number(row, "round_index", where) or 0.0,
        model=model,
        head=(provider, user, model),
        ident=(user, str(row.get("project") or "")),
        input_tokens=total,
        prefix_tokens=0 if prefix is None else token_count(prefix, where, "prefix_tokens"),
        output_tokens=0 if output is None else token_count(output, where, "output_tokens"),
    )
    _timing(round_, row.get("timing_events"), where)
    _tools(round_, row.get("tools"), where)
    return round_


def _timing(round_: _Round, events: Any, where: str) -> None:
    if events is None:
        return
    if not isinstance(events, list):
        fail(where, "field 'timing_events' must be a list of {event_type, timestamp}")
    ins: list[float] = []
    outs: list[float] = []
    for i, value in enumerate(events):
        key = f"timing_events[{i}]"
        event = need_object(value, where, key)
        if event.get("timestamp") is None:
            continue
        stamp = iso_seconds(event["timestamp"], where, f"{key}.timestamp")
        round_.stamps.append(stamp)
        kind = event.get("event_type")
        (ins if kind in INPUT_EVENTS else outs if kind in OUTPUT_EVENTS else []).append(stamp)
    if ins or outs:
        # Sent once the last of its inputs (parallel tool results) was in.
        round_.sent = max(ins) if ins else min(outs)
        round_.ended = max([round_.sent, *outs])


def _tools(round_: _Round, tools: Any, where: str) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        fail(where, "field 'tools' must be a list of tool calls")
    for i, value in enumerate(tools):
        key = f"tools[{i}]"
        tool = need_object(value, where, key)
        stamps = {
            name: iso_seconds(tool[name], where, f"{key}.{name}")
            for name in ("emitted_at", "result_at")
            if tool.get(name) is not None
        }
        round_.stamps.extend(stamps.values())
        if tool.get("tool_name") in SPAWN_TOOLS and len(stamps) == 2:
            start, end = stamps["emitted_at"], stamps["result_at"]
            if end - start >= MIN_SPAWN_S:
                round_.spawns.append((start, end))


def _session(
    session_id: str, rounds: Sequence[_Round], block_size: int, minter: BlockMinter
) -> TraceSession:
    session = TraceSession(session_id, hash_namespace=session_id)
    chains: dict[str, tuple[int, ...]] = {}
    previous_end: float | None = None
    for r in rounds:
        assert r.sent is not None
        assert r.ended is not None
        chain = synth_chain(
            chains.get(r.model, ()), r.prefix_tokens, r.input_tokens, block_size, minter, r.head
        )
        chains[r.model] = chain
        session.requests.append(
            TraceRequest(
                at_s=r.sent,
                input_tokens=r.input_tokens,
                output_tokens=max(r.output_tokens, 1),
                hash_ids=chain,
                gap_s=None if previous_end is None else max(r.sent - previous_end, 0.0),
                cached_tokens=min(r.prefix_tokens, r.input_tokens),
                duration_s=r.ended - r.sent,
            )
        )
        previous_end = r.ended
    return session


def _joins(
    by_session: Mapping[str, Sequence[_Round]], order: Sequence[str]
) -> dict[str, tuple[str, float]]:
    """Sub-agent links, child -> (parent, start of the spawning call): a session inside the
    tightest Agent/Task call of another session of the same user and project."""
    windows: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    spans: dict[str, tuple[float, float]] = {}
    for sid in order:
        rounds = by_session[sid]
        stamps = [s for r in rounds for s in r.stamps]
        spans[sid] = (min(stamps), max(stamps))
        for r in rounds:
            windows[r.ident].extend((start, end, sid) for start, end in r.spawns)
    links: dict[str, tuple[str, float]] = {}
    for sid in order:
        begin, end = spans[sid]
        fits = [
            (w_end - w_start, w_start, parent)
            for w_start, w_end, parent in windows[by_session[sid][0].ident]
            if parent != sid and w_start <= begin and end <= w_end
        ]
        if fits and not _descends(min(fits)[2], sid, links):
            _width, start, parent = min(fits)
            links[sid] = (parent, start)
    return links


def _descends(session: str, ancestor: str, links: Mapping[str, tuple[str, float]]) -> bool:
    """Whether `ancestor` is `session` or above it (a link would close a loop)."""
    seen = set()
    while session not in seen:
        if session == ancestor:
            return True
        seen.add(session)
        if session not in links:
            return False
        session = links[session][0]
    return False
