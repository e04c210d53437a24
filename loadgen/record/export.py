"""A run's steps.jsonl as an agentload trace, so a synthetic run and a recorded one compare.

Each step that got a usable reply becomes a request of its session: `t` is when it started
(from the run's first exported step), `in`/`out`/`cached` are the server's usage (the
agent's own estimate of its prompt where the server reported none; the count of streamed
token events where it reported no output), `ttft`/`duration` what the client measured,
and `gap` the pause since the session's previous step ended (failed tries included, so a
retry's back-off counts as the agent's time). Sub-agents (session ids `PARENT.N`) become
sub-agents of their parent's session, started after the parent's last request before them.

Steps keep no prompt text, so the hash_ids are synthesized, per session, as a prefix chain:

- a session's first request opens with blocks shared by every session of the same agent
  (its sub-agents included: they are made with its system prompt): as many as the most
  cached tokens any of those sessions' first requests reported (the system prompt and tool
  definitions the server already held), up to the prompt's length; the rest are its own;
- a later request whose prompt grew repeats all of the previous request's blocks (the agent
  resent its history) and appends new ones;
- a request whose prompt shrank (after a compaction, or a trim) keeps
  `min(cached, in) // block_size` of the previous request's blocks and continues with new ones.

So a replay of the export presents the target with the prefix structure the agents made;
what the original server evicted is not in it (its cached figures are kept for comparison).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from loadgen.errors import UsageError
from loadgen.traces.formats.agentload import trace_lines
from loadgen.traces.model import Trace, TraceRequest, TraceSession, session_order

__all__ = ["export_run", "read_steps", "run_trace"]

STEPS_FILE = "steps.jsonl"


def read_steps(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Every step record of a results folder: its own steps.jsonl and each worker-*/ one."""
    files = [run_dir / STEPS_FILE] if (run_dir / STEPS_FILE).is_file() else []
    files += sorted(p for p in run_dir.glob(f"worker-*/{STEPS_FILE}") if p.is_file())
    if not files:
        raise UsageError(
            f"{run_dir}: no {STEPS_FILE} here or in worker-*/ (is it a results folder of "
            "`agentload run`? runs with records off keep none)"
        )
    for path in files:
        with path.open("rb") as lines:
            for line in lines:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a killed run
                if isinstance(row, dict) and "session_id" in row:
                    yield row


class _Blocks:
    """Small ids for synthesized blocks, numbered in order of first use."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, ...], int] = {}

    def id(self, *name: str) -> int:
        found = self._ids.get(name)
        if found is None:
            found = self._ids[name] = len(self._ids) + 1
        return found


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _rounded(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else round(number, 6)


def _tokens(step: dict[str, Any], field: str) -> int | None:
    value = step.get(field)
    return int(value) if isinstance(value, (int, float)) else None


class _SessionBuilder:
    """One session's requests, with hash_ids chained from request to request."""

    def __init__(
        self, session_id: str, block_size: int, blocks: _Blocks, shared: dict[str, int]
    ) -> None:
        self.session = TraceSession(session_id, hash_namespace=session_id)
        self.block_size = block_size
        self.blocks = blocks
        self.shared = shared  # tokens of prefix shared by the sessions of each namespace
        self.fresh = 0
        self.last_end: float | None = None  # started + e2e of its latest step, failed or not
        self.starts: list[float] = []  # unix start of each exported request

    def add(self, step: dict[str, Any], t0: float) -> None:
        started = float(step["started_unix"])
        end = started + (_number(step.get("e2e_s")) or 0.0)
        gap = None if self.last_end is None else max(0.0, started - self.last_end)
        self.last_end = max(end, self.last_end or end)
        if not step.get("ok", True):
            return
        prompt = _tokens(step, "prompt_tokens") or _tokens(step, "context_tokens") or 1
        output = _tokens(step, "completion_tokens")
        if output is None:
            output = (_tokens(step, "itl_count") or 0) + 1
        cached = _tokens(step, "cached_tokens")
        self.session.requests.append(
            TraceRequest(
                at_s=started - t0,
                input_tokens=max(1, prompt),
                output_tokens=max(1, output),
                hash_ids=self._hash_ids(step, prompt, cached or 0),
                gap_s=gap,
                cached_tokens=cached,
                ttft_s=_rounded(step.get("ttft_s")),
                duration_s=_rounded(step.get("e2e_s")),
            )
        )
        self.starts.append(started)

    def _hash_ids(self, step: dict[str, Any], prompt: int, cached: int) -> tuple[int, ...]:
        size = self.block_size
        full = prompt // size
        requests = self.session.requests
        if not requests:
            namespace = _namespace(step)
            shared = min(self.shared.get(namespace, 0), prompt) // size
            kept = [self.blocks.id("shared", namespace, str(i)) for i in range(shared)]
        else:
            previous = requests[-1]
            if prompt >= previous.input_tokens:
                kept = list(previous.hash_ids)
            else:
                kept = list(previous.hash_ids[: min(cached, prompt) // size])
        kept = kept[:full]
        while len(kept) < full:
            self.fresh += 1
            kept.append(self.blocks.id("session", self.session.id, str(self.fresh)))
        return tuple(kept)


def _namespace(step: dict[str, Any]) -> str:
    """Whose sessions share a prompt prefix: the agent's (its label in the run)."""
    return str(step.get("agent", ""))


def _shared_prefixes(steps: list[dict[str, Any]]) -> dict[str, int]:
    """Per namespace, the most cached tokens a session's first usable step reported."""
    shared: dict[str, int] = {}
    seen: set[str] = set()
    for step in steps:
        sid = str(step["session_id"])
        if sid in seen or not step.get("ok", True):
            continue
        seen.add(sid)
        cached = min(_tokens(step, "cached_tokens") or 0, _tokens(step, "prompt_tokens") or 0)
        namespace = _namespace(step)
        shared[namespace] = max(shared.get(namespace, 0), cached)
    return shared


def run_trace(run_dir: str | os.PathLike[str], block_size: int = 64) -> Trace:
    """The trace of a results folder's steps (see the module's docstring for the mapping)."""
    if block_size < 1:
        raise UsageError(f"--block-size {block_size}: use a whole number of tokens, >= 1")
    path = Path(run_dir)
    steps = sorted(
        read_steps(path),
        key=lambda s: (float(s.get("started_unix", 0.0)), int(s.get("attempt", 0))),
    )
    exported = [s for s in steps if s.get("ok", True)]
    if not exported:
        raise UsageError(f"{path}: no step got a usable reply; nothing to export")
    t0 = float(exported[0]["started_unix"])
    blocks = _Blocks()
    shared = _shared_prefixes(steps)
    builders: dict[str, _SessionBuilder] = {}
    for step in steps:
        sid = str(step["session_id"])
        builder = builders.get(sid)
        if builder is None:
            builder = builders[sid] = _SessionBuilder(sid, block_size, blocks, shared)
        builder.add(step, t0)
    return Trace(_link_subagents(builders), block_size, "global", f"{path} (steps export)")


def _link_subagents(builders: dict[str, _SessionBuilder]) -> list[TraceSession]:
    """Top-level sessions, each sub-agent (PARENT.N) hung under its parent."""
    top: list[TraceSession] = []
    children: dict[str, list[_SessionBuilder]] = defaultdict(list)
    for sid, builder in builders.items():
        if not builder.session.requests:
            continue
        parent = sid.rsplit(".", 1)[0] if "." in sid else None
        if parent is not None and parent in builders and builders[parent].session.requests:
            children[parent].append(builder)
        else:
            top.append(builder.session)
    for parent_id, subs in children.items():
        owner = builders[parent_id]
        for sub in sorted(subs, key=lambda b: b.starts[0]):
            after = sum(1 for start in owner.starts if start < sub.starts[0]) - 1
            owner.session.subagents.append((after, sub.session))
    return session_order(top)


def _lines(trace: Trace) -> Iterable[dict[str, Any]]:
    lines = trace_lines(trace)
    yield {**next(lines), "source": "agentload export-trace"}
    yield from lines


def export_run(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str], block_size: int = 64
) -> Trace:
    """Write the trace of a results folder's steps to `out`; returns it."""
    trace = run_trace(run_dir, block_size)
    try:
        with Path(out).open("w", encoding="utf-8") as file:
            for line in _lines(trace):
                file.write(json.dumps(line, separators=(",", ":")) + "\n")
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
    return trace
