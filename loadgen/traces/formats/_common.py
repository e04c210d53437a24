"""What every format reader shares: opening (plain, gzip, a folder of shards), JSON records
with their file:line, typed fields with one-line errors, block ids minted where a format has
none, and the last step of every reader (times from 0, sessions in order)."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from loadgen.errors import ConfigError
from loadgen.traces.model import HashScope, Trace, TraceRequest, TraceSession, session_order

__all__ = [
    "TRACE_SUFFIXES",
    "BlockMinter",
    "Notes",
    "fail",
    "finish",
    "hash_id_list",
    "iso_seconds",
    "json_records",
    "json_values",
    "need",
    "need_object",
    "number",
    "open_text",
    "opt_number",
    "read_text",
    "synth_chain",
    "token_count",
    "trace_files",
]

# What a folder of trace shards may hold (Copilot ships date=*/shard-*.jsonl.gz).
TRACE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".gz")
NOT_TRACES = frozenset({"manifest.json"})
GZIP_MAGIC = b"\x1f\x8b"
TIME_DECIMALS = 6  # microseconds: what every format records at most, and what agentload keeps


def fail(where: str, message: str) -> NoReturn:
    """Raise the one-line ConfigError every reader gives: location, what is wrong, the fix."""
    raise ConfigError(f"{where}: {message}")


def trace_files(path: Path) -> list[Path]:
    """`path` itself, or the trace files in the folder `path` and below, in name order
    (a release's manifest.json, which Copilot's shard folders hold, is not one)."""
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.name.endswith(TRACE_SUFFIXES) and p.name not in NOT_TRACES
        )
        if not files:
            fail(str(path), f"no trace files ({', '.join(TRACE_SUFFIXES)}) in this folder")
        return files
    if not path.is_file():
        fail(str(path), "no such trace file; check the path")
    return [path]


def read_text(path: Path) -> str:
    """The whole file as text, gunzipped when it is gzip (by its first bytes, not its name)."""
    with open_text(path) as text:
        return text.read()


@contextlib.contextmanager
def open_text(path: Path) -> Iterator[IO[str]]:
    """`path` opened as UTF-8 text, through gzip when it is gzip (by its first bytes)."""
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            with io.TextIOWrapper(stream, encoding="utf-8") as text:
                yield text
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        fail(str(path), f"cannot read it ({exc}); is it a trace file?")


def json_records(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    """Each non-blank line of each file of `path` as JSON, with its 'file:line' (read as a
    stream: a release file may be larger than memory would like)."""
    for file in trace_files(path):
        with open_text(file) as lines:
            for number, text in enumerate(lines, 1):
                if not text.strip():
                    continue
                where = f"{file}:{number}"
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    fail(where, f"not JSON ({exc.msg}); is this a {fmt} trace? (see --format)")
                yield where, value


def json_values(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    """The JSON values of each file of `path`, with the 'file:line' each starts on: one value,
    several one after another (JSON Lines), or the elements of one top-level array."""
    decoder = json.JSONDecoder()
    for file in trace_files(path):
        text = read_text(file)
        i = _skip(text, 0, "")
        in_array = text.startswith("[", i)
        if in_array:
            i = _skip(text, i + 1, ",")
        while i < len(text) and not (in_array and text[i] == "]"):
            line = text.count("\n", 0, i) + 1
            try:
                value, i = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                fail(f"{file}:{exc.lineno}", f"not JSON ({exc.msg}); is this a {fmt} trace?")
            yield f"{file}:{line}", value
            i = _skip(text, i, "," if in_array else "")


def _skip(text: str, i: int, also: str) -> int:
    while i < len(text) and (text[i].isspace() or text[i] in also):
        i += 1
    return i


def need_object(value: Any, where: str, what: str) -> Mapping[str, Any]:
    """`value` as a JSON object, or the error saying `what` it should have been."""
    if not isinstance(value, dict):
        fail(where, f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def need(row: Mapping[str, Any], key: str, where: str, fields: str) -> Any:
    """Field `key` of `row`; when it is missing (or null) the error names it and `fields`,
    the fields a record of this format needs."""
    value = row.get(key)
    if value is None:
        fail(where, f"field {key!r} is missing; {fields}")
    return value


def number(value: Any, where: str, key: str) -> float:
    """A finite JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        fail(where, f"field {key!r} must be a number, not {value!r}")
    return float(value)


def opt_number(row: Mapping[str, Any], key: str, where: str) -> float | None:
    """Field `key` as a number, or None where it is missing or null."""
    value = row.get(key)
    return None if value is None else number(value, where, key)


def token_count(value: Any, where: str, key: str) -> int:
    """A whole, non-negative number of tokens (2.0 is accepted as 2)."""
    as_float = number(value, where, key)
    if as_float < 0 or not as_float.is_integer():
        fail(where, f"field {key!r} must be a whole number of tokens >= 0, not {value!r}")
    return int(as_float)


def hash_id_list(value: Any, where: str, key: str = "hash_ids") -> tuple[int, ...]:
    """A list of integer block ids."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in value
    ):
        fail(where, f"field {key!r} must be a list of integer block ids")
    return tuple(value)


def iso_seconds(value: Any, where: str, key: str) -> float:
    """An ISO-8601 time (naive means UTC) as POSIX seconds."""
    if not isinstance(value, str):
        fail(where, f"field {key!r} must be an ISO-8601 time like 2026-06-01T12:00:00Z")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        fail(where, f"field {key!r} must be an ISO-8601 time like 2026-06-01T12:00:00Z")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


class Notes:
    """What a reader left out or changed, counted, for the trace's `source` line."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def suffix(self) -> str:
        return "".join(f"; {n} {what}" for what, n in self.counts.items())


class BlockMinter:
    """Block ids for formats that record none: fresh ones from one counter, and shared heads
    (one per key, say a user's system prompt on a model) that first prompts start with."""

    def __init__(self) -> None:
        self._next = 1
        self._heads: dict[tuple[str, ...], list[int]] = {}

    def fresh(self, count: int) -> list[int]:
        ids = list(range(self._next, self._next + max(count, 0)))
        self._next += len(ids)
        return ids

    def head(self, key: tuple[str, ...], cached: int, blocks: int) -> list[int]:
        """A first prompt of `blocks` blocks, its first `cached` cached: the first prompt of
        `key` is new and becomes the head; a later one shares the head's first `cached`
        blocks (grown with new ids where it is shorter), the rest of it new."""
        shared = self._heads.get(key)
        if shared is None:
            chain = self.fresh(blocks)
            self._heads[key] = list(chain)
            return chain
        if len(shared) < cached:
            shared.extend(self.fresh(cached - len(shared)))
        return shared[:cached] + self.fresh(blocks - cached)


def synth_chain(
    previous: Sequence[int],
    cached_tokens: int,
    input_tokens: int,
    block_size: int,
    minter: BlockMinter,
    head: tuple[str, ...],
) -> tuple[int, ...]:
    """The blocks of a prompt of `input_tokens` whose first `cached_tokens` the recorded server
    had cached: whole blocks only (a partial tail is the request's own text); the cached ones
    are `previous`'s (the same agent's previous prompt), or, for an agent's first prompt,
    the shared head of `head` (the cache then held an earlier session's first prompt)."""
    blocks = input_tokens // block_size
    cached = min(cached_tokens, input_tokens) // block_size
    if not previous:
        return tuple(minter.head(head, cached, blocks))
    reused = list(previous[: min(cached, len(previous))])
    return tuple(reused + minter.fresh(blocks - len(reused)))


def _shift(request: TraceRequest, t0: float) -> TraceRequest:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, TIME_DECIMALS)

    return dataclasses.replace(
        request,
        at_s=round(request.at_s - t0, TIME_DECIMALS),
        gap_s=r(request.gap_s),
        ttft_s=r(request.ttft_s),
        duration_s=r(request.duration_s),
    )


def _normalise(session: TraceSession, t0: float) -> None:
    # Readers build each session in time order already (sub-agents' `after` index into it).
    session.requests = [_shift(r, t0) for r in session.requests]
    for _after, sub in session.subagents:
        _normalise(sub, t0)
    # In order of start, as agentload's own format reads them back.
    session.subagents.sort(key=lambda pair: (pair[1].requests[0].at_s, pair[0]))


def finish(
    sessions: Sequence[TraceSession],
    block_size: int,
    hash_scope: HashScope,
    source: str,
) -> Trace:
    """The trace a reader returns: sub-agents that made no request dropped (those of a session
    that made none start as sessions of their own), times counted from the first request and
    rounded to microseconds, sub-agents in order of start, sessions by first request."""
    kept = [top for s in sessions for top in _prune(s)]
    if not kept:
        fail(source, "the trace holds no requests")
    t0 = min(r.at_s for s in kept for r in s.all_requests())
    for session in kept:
        _normalise(session, t0)
    return Trace(session_order(kept), block_size, hash_scope, source)


def _prune(session: TraceSession) -> list[TraceSession]:
    """`session` without sub-agents that made no request; where it made none itself, its
    sub-agents in its place."""
    subs = [(after, top) for after, sub in session.subagents for top in _prune(sub)]
    if not session.requests:
        return [sub for _after, sub in subs]
    session.subagents = subs
    return [session]
