"""agentload's own trace format: what `agentload record` writes and any run's steps export to.

JSON Lines. The first line is the header, then one line per request, in order of `t`:

    {"format": "agentload-trace", "version": 1, "block_size": 64, "hash_scope": "global"}
    {"session": "s1", "t": 0.0, "in": 1200, "out": 80, "hash_ids": [1, 2], "gap": null,
     "parent": null, "after": null, "cached": 0, "ttft": 0.21, "duration": 1.4}

`session` groups requests (in file order within it); a session with a `parent` is a
sub-agent of it, started after the parent's request number `after` (0-based, -1: before
its first). `ns`, written only where it is not the session's own id, is the namespace its
local-scope hash ids live in (a Weka sub-agent shares its trace's). Times are seconds from
the trace's start; `gap` is the recorded pause since the session's previous request ended.
`cached`, `ttft` and `duration` are what the original server did, kept for comparison. No
prompt or reply text is ever in it.

A recording's hash ids are cut in agentload's stand-in tokens, which the recorded server may
count otherwise; its rows then say in `block_in` how many of the server's tokens one id
covers (from the calls' usage), and the trace's ids are read as that many tokens each (the
median over its rows) instead of the header's `block_size`. The same ratio puts into the
server's tokens the prompts of `counted` rows without a `scale` (calls before any usage,
whose `in` the recorder could only count in its own tokens).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from loadgen.errors import ConfigError
from loadgen.traces.model import Trace, TraceRequest, TraceSession, session_order

__all__ = ["FORMAT_NAME", "read_agentload", "trace_lines", "write_agentload"]

FORMAT_NAME = "agentload-trace"
VERSION = 1


def trace_lines(trace: Trace) -> Iterator[dict[str, Any]]:
    """The header, then each request as a line's object, ordered by time."""
    yield {
        "format": FORMAT_NAME,
        "version": VERSION,
        "block_size": trace.block_size,
        "hash_scope": trace.hash_scope,
    }
    rows: list[dict[str, Any]] = []

    def add(session: TraceSession, parent: str | None, after: int | None) -> None:
        for request in session.requests:
            row = _row(session.id, request, parent, after)
            if session.hash_namespace and session.hash_namespace != session.id:
                row["ns"] = session.hash_namespace
            rows.append(row)
        for sub_after, sub in session.subagents:
            add(sub, session.id, sub_after)

    for session in trace.sessions:
        add(session, None, None)
    rows.sort(key=lambda row: row["t"])  # stable: a session's own order is kept on ties
    yield from rows


def _row(session: str, r: TraceRequest, parent: str | None, after: int | None) -> dict[str, Any]:
    return {
        "session": session,
        "t": round(r.at_s, 6),
        "in": r.input_tokens,
        "out": r.output_tokens,
        "hash_ids": list(r.hash_ids),
        "gap": None if r.gap_s is None else round(r.gap_s, 6),
        "parent": parent,
        "after": after,
        "cached": r.cached_tokens,
        "ttft": r.ttft_s,
        "duration": r.duration_s,
    }


def write_agentload(trace: Trace, out: IO[str]) -> None:
    """Write `trace` in the agentload format."""
    for line in trace_lines(trace):
        out.write(json.dumps(line, separators=(",", ":")) + "\n")


def read_agentload(path: Path, lines: Iterable[str] | None = None) -> Trace:
    """Read an agentload trace; ConfigError naming the line and field on bad input."""
    source = lines if lines is not None else path.read_text(encoding="utf-8").splitlines()
    header: dict[str, Any] | None = None
    sessions: dict[str, TraceSession] = {}
    links: dict[str, tuple[str, int]] = {}
    block_in: list[float] = []  # a recording's server tokens per hash id, where known
    unscaled: list[tuple[TraceSession, int]] = []  # prompts counted in stand-in tokens
    for number, text in enumerate(source, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if header is None:
            if not isinstance(row, dict) or row.get("format") != FORMAT_NAME:
                raise ConfigError(
                    f"{path}:{number}: the first line must be the header "
                    f'{{"format": "{FORMAT_NAME}", ...}}; is this another format? '
                    "(see --format)"
                )
            header = row
            continue
        session_id, request = _request(path, number, row)
        namespace = str(row.get("ns") or session_id)
        session = sessions.setdefault(
            session_id, TraceSession(session_id, hash_namespace=namespace)
        )
        session.requests.append(request)
        if isinstance(row.get("block_in"), int | float) and row["block_in"] > 0:
            block_in.append(float(row["block_in"]))
        if row.get("counted") and "scale" not in row:
            unscaled.append((session, len(session.requests) - 1))
        if row.get("parent") is not None and session_id not in links:
            links[session_id] = (str(row["parent"]), _after(path, number, row.get("after")))
    if header is None:
        raise ConfigError(f"{path}: empty trace (no header line)")
    for child, (parent, after) in links.items():
        if parent not in sessions:
            raise ConfigError(
                f"{path}: session {child!r} names parent {parent!r}, not in the trace"
            )
        sessions[parent].subagents.append((after, sessions[child]))
    top = [s for sid, s in sessions.items() if sid not in links]
    block_size = int(header.get("block_size") or 0)
    if block_size <= 0:
        raise ConfigError(f"{path}:1: block_size must be a positive number of tokens")
    if block_in:
        block_size = _in_server_tokens(block_size, statistics.median(block_in), unscaled)
    scope = header.get("hash_scope", "global")
    if scope not in ("global", "local"):
        raise ConfigError(f"{path}:1: hash_scope must be global or local, not {scope!r}")
    return Trace(session_order(top), block_size, scope, f"{path} (agentload)")


def _in_server_tokens(
    block_size: int, server_block: float, unscaled: list[tuple[TraceSession, int]]
) -> int:
    """A recording's tokens per hash id in its server's units (`server_block` for the
    header's `block_size` stand-in tokens), its `unscaled` prompts put into them too."""
    for session, index in unscaled:
        request = session.requests[index]
        tokens = max(1, round(request.input_tokens * server_block / block_size))
        session.requests[index] = dataclasses.replace(request, input_tokens=tokens)
    return max(1, round(server_block))


def _after(path: Path, number: int, value: Any) -> int:
    """The parent's request a sub-agent follows; -1 (before its first) where not given."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ConfigError(f"{path}:{number}: after must be a request number >= -1, not {value!r}")
    return value


def _request(path: Path, number: int, row: Any) -> tuple[str, TraceRequest]:
    if not isinstance(row, dict):
        raise ConfigError(f"{path}:{number}: a request line must be a JSON object")
    try:
        request = TraceRequest(
            at_s=float(row["t"]),
            input_tokens=int(row["in"]),
            output_tokens=int(row["out"]),
            hash_ids=tuple(int(h) for h in row.get("hash_ids") or ()),
            gap_s=None if row.get("gap") is None else float(row["gap"]),
            cached_tokens=None if row.get("cached") is None else int(row["cached"]),
            ttft_s=None if row.get("ttft") is None else float(row["ttft"]),
            duration_s=None if row.get("duration") is None else float(row["duration"]),
        )
    except KeyError as exc:
        raise ConfigError(f"{path}:{number}: field {exc.args[0]!r} is missing") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}:{number}: {exc}") from exc
    if request.input_tokens < 1 or request.output_tokens < 1:
        raise ConfigError(f"{path}:{number}: in and out must be at least 1 token")
    return str(row.get("session", number)), request
