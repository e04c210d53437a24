"""GitHub Copilot coding-agent traces: Azure/AzurePublicDataset, its 2026 coding-agent release
(GitHubCopilotCodingAgentDataset2026.md, analysis/GitHubCopilotCodingAgents/schema.json).

Gzipped (or plain) JSON Lines, one agent session per line; the release's shards are
date=YYYY-MM-DD/shard-NNNN.jsonl.gz, and a folder of them is read whole:

    {"session_id": "9f2e...", "date": "2026-06-01", "turns": [{"turn_id": "...",
      "llm_calls": [{"message_id": "...", "timestamp": "2026-06-01T10:00:00.000Z",
                     "duration_ms": 5120.0, "initiator_type": "user", "model": "Model A",
                     "tokens": {"prompt": 61200, "completion": 410, "cached": 52000}}],
      "tool_batches": [{"timestamp": "...", "duration_ms": 830.0, "request_id": "...",
                        "function_calls": [{"name": "read_file", "duration_ms": 800.0}]}]}]}

Each LLM call is a request, the session's calls in order of time across its turns; the gap
before one is from the end (timestamp + duration_ms) of the calls before it, so tool batches
and the user's pauses between turns are inside it (tool batches are not requests). Copilot
records no block hashes, so they are made up to keep the recorded cache reuse: a call's first
`cached` tokens are its session's previous prompt to the same model, in whole blocks of 64
tokens, the rest new; a session's first call to a model shares its cached head with the first
prompt of the first session on that model (Copilot's system prompt and tool definitions,
the same for every user). Ids are unique across the file (global scope).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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

__all__ = ["BLOCK_SIZE", "read_copilot"]

BLOCK_SIZE = 64  # the block size ids are made up at
FIELDS = "a copilot session has session_id and turns[].llm_calls[]"
CALL_FIELDS = "an llm call has timestamp, duration_ms, model and tokens{prompt, completion, cached}"


@dataclass(frozen=True, slots=True)
class _Call:
    start: float
    end: float
    model: str
    prompt: int
    completion: int
    cached: int
    duration_s: float | None


def read_copilot(path: Path, *, block_size: int = BLOCK_SIZE) -> Trace:
    """Read Copilot coding-agent sessions; ConfigError naming file:line and field."""
    notes = Notes()
    minter = BlockMinter()
    calls_by_session: list[tuple[str, list[_Call]]] = []
    for where, value in json_records(path, "copilot"):
        row = need_object(value, where, "a copilot session")
        session_id = str(need(row, "session_id", where, FIELDS))
        calls = sorted(_calls(row, where, notes), key=lambda c: c.start)  # stable
        calls_by_session.append((session_id, calls))
    # Ids are minted session by session in order of start, so they do not depend on the
    # order of the shards.
    calls_by_session.sort(key=lambda pair: pair[1][0].start if pair[1] else float("inf"))
    sessions = [_session(sid, calls, block_size, minter) for sid, calls in calls_by_session]
    return finish(sessions, block_size, "global", f"{path} (copilot{notes.suffix()})")


def _calls(row: Mapping[str, Any], where: str, notes: Notes) -> list[_Call]:
    turns = need(row, "turns", where, FIELDS)
    if not isinstance(turns, list):
        fail(where, "field 'turns' must be a list")
    calls = []
    for t, turn_value in enumerate(turns):
        turn = need_object(turn_value, where, f"turns[{t}]")
        llm_calls = turn.get("llm_calls") or []
        if not isinstance(llm_calls, list):
            fail(where, f"field 'turns[{t}].llm_calls' must be a list")
        for c, call_value in enumerate(llm_calls):
            key = f"turns[{t}].llm_calls[{c}]"
            call = _call(need_object(call_value, where, key), where, key)
            if call.prompt == 0:
                notes.add("calls with no prompt tokens skipped")
                continue
            if call.completion == 0:
                notes.add("calls with 0 completion tokens asked for 1")
            calls.append(call)
    return calls


def _call(call: Mapping[str, Any], where: str, key: str) -> _Call:
    start = iso_seconds(need(call, "timestamp", where, CALL_FIELDS), where, f"{key}.timestamp")
    duration_ms = opt_number(call, "duration_ms", where)
    tokens = need_object(need(call, "tokens", where, CALL_FIELDS), where, f"{key}.tokens")
    counts = {
        name: token_count(tokens.get(name) or 0, where, f"{key}.tokens.{name}")
        for name in ("prompt", "completion", "cached")
    }
    duration_s = None if duration_ms is None else max(duration_ms, 0.0) / 1000
    return _Call(
        start=start,
        end=start + (duration_s or 0.0),
        model=str(call.get("model") or ""),
        prompt=counts["prompt"],
        completion=counts["completion"],
        cached=min(counts["cached"], counts["prompt"]),
        duration_s=duration_s,
    )


def _session(
    session_id: str, calls: list[_Call], block_size: int, minter: BlockMinter
) -> TraceSession:
    session = TraceSession(session_id, hash_namespace=session_id)
    chains: dict[str, tuple[int, ...]] = {}
    previous_end: float | None = None
    for call in calls:
        chain = synth_chain(
            chains.get(call.model, ()), call.cached, call.prompt, block_size, minter, (call.model,)
        )
        chains[call.model] = chain
        session.requests.append(
            TraceRequest(
                at_s=call.start,
                input_tokens=call.prompt,
                output_tokens=max(call.completion, 1),
                hash_ids=chain,
                gap_s=None if previous_end is None else max(call.start - previous_end, 0.0),
                cached_tokens=call.cached,
                duration_s=call.duration_s,
            )
        )
        previous_end = max(call.end, previous_end or call.end)
    return session
