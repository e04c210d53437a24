"""Mooncake (Kimi) traces: kvcache-ai/Mooncake FAST25-release/traces/*.jsonl.

JSON Lines, one request per row:

    {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, ...]}

`timestamp` is the arrival in milliseconds from the trace's start; each hash id names one
512-token block of the prompt, and equal ids anywhere in the file are equal text (global
scope). Mooncake has no sessions, so each row is a session of one request. Rows that carry a
`session_id` (AIPerf's multi-turn variant, with an optional `delay` in milliseconds before
the turn and `timestamp` then optional) are grouped into sessions instead.
"""

from __future__ import annotations

from pathlib import Path

from loadgen.traces.formats._common import (
    Notes,
    finish,
    hash_id_list,
    json_records,
    need,
    need_object,
    number,
    opt_number,
    token_count,
)
from loadgen.traces.model import Trace, TraceRequest, TraceSession

__all__ = ["BLOCK_SIZE", "read_mooncake"]

BLOCK_SIZE = 512  # tokens per hash id, as the Mooncake release documents
FIELDS = "a mooncake row has timestamp (ms), input_length, output_length and hash_ids"


def read_mooncake(path: Path, *, block_size: int = BLOCK_SIZE) -> Trace:
    """Read a Mooncake trace; ConfigError naming file:line and field on bad input."""
    sessions: dict[str, TraceSession] = {}
    notes = Notes()
    for index, (where, value) in enumerate(json_records(path, "mooncake"), 1):
        row = need_object(value, where, "a mooncake row")
        key = row.get("session_id")
        session_id = f"r{index}" if key is None else str(key)
        session = sessions.setdefault(session_id, TraceSession(session_id))
        session.hash_namespace = session_id
        delay = opt_number(row, "delay", where)
        gap = None if delay is None else delay / 1000
        if row.get("timestamp") is not None or key is None:
            at = number(need(row, "timestamp", where, FIELDS), where, "timestamp") / 1000
        else:
            # AIPerf's multi-turn rows may leave the time to the delay after the last turn.
            previous = session.requests[-1].at_s if session.requests else 0.0
            at = previous + (gap or 0.0)
        input_tokens = token_count(need(row, "input_length", where, FIELDS), where, "input_length")
        output = token_count(need(row, "output_length", where, FIELDS), where, "output_length")
        if input_tokens == 0:
            notes.add("rows with input_length 0 skipped")
            continue
        if output == 0:
            notes.add("rows with output_length 0 asked for 1 token")
        request = TraceRequest(
            at_s=at,
            input_tokens=input_tokens,
            output_tokens=max(output, 1),
            hash_ids=hash_id_list(row.get("hash_ids"), where),
            gap_s=gap if session.requests else None,
        )
        session.requests.append(request)
    for session in sessions.values():
        session.requests.sort(key=lambda r: r.at_s)
    return finish(
        list(sessions.values()), block_size, "global", f"{path} (mooncake{notes.suffix()})"
    )
