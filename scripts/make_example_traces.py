"""Write the small example traces in examples/traces/, one per supported format.

    python scripts/make_example_traces.py [--out DIR]

Made up from a fixed seed, never downloaded: a few sessions and tens of requests each, in each
publisher's own field layout, with the structure replay has to keep (prefixes shared across
turns and sessions, Weka sub-agents, one of them with calls in parallel, a TraceLab sub-agent
inside its parent's Agent call, tool and think gaps). The same run writes the same bytes
(tests/test_traces_formats.py checks the committed files against a fresh run).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loadgen.traces.formats.agentload import write_agentload
from loadgen.traces.model import Trace, TraceRequest, TraceSession

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "examples" / "traces"
SEED = 14  # the issue that asked for them
EPOCH = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

Row = dict[str, Any]


def _line(row: Any) -> str:
    return json.dumps(row, separators=(",", ":"))


def _jsonl(rows: list[Row]) -> str:
    return "".join(_line(row) + "\n" for row in rows)


def _iso(seconds: float) -> str:
    stamp = EPOCH + timedelta(seconds=round(seconds, 3))
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Ids:
    """Consecutive block ids, as the publishers number them."""

    def __init__(self, first: int = 1) -> None:
        self.next = first

    def take(self, count: int) -> list[int]:
        ids = list(range(self.next, self.next + count))
        self.next += count
        return ids


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- Mooncake: rows of requests, 512-token blocks, global ids, no sessions -----------------


def mooncake(rng: random.Random) -> str:
    """Three chat conversations and some one-off tool-agent calls, interleaved in time: the
    turns of a conversation grow on its previous prompt, all share a system prompt."""
    ids = Ids(0)
    system = ids.take(2)  # 1,024 tokens of system prompt every request starts with
    events: list[tuple[float, int, int, list[int]]] = []
    for conversation in range(3):
        t = conversation * 2.5
        length = 1024 + rng.randint(300, 2500)
        chain = system + ids.take(_ceil_div(length, 512) - len(system))
        for _turn in range(rng.randint(4, 6)):
            events.append((t, length, rng.randint(40, 600), list(chain)))
            t += rng.uniform(6.0, 20.0)
            grown = length + rng.randint(200, 1800)
            kept = length // 512  # whole blocks of the previous prompt stay equal
            chain = chain[:kept] + ids.take(_ceil_div(grown, 512) - kept)
            length = grown
    for call in range(8):
        length = 1024 + rng.randint(2000, 9000)
        events.append(
            (
                1.0 + call * 7.3,
                length,
                rng.randint(20, 200),
                system + ids.take(_ceil_div(length, 512) - len(system)),
            )
        )
    events.sort(key=lambda e: e[0])
    rows = [
        {"timestamp": round(t * 1000), "input_length": n, "output_length": out, "hash_ids": h}
        for t, n, out, h in events
    ]
    return _jsonl(rows)


# --- Bailian: chats linked by parent_chat_id, 16-token blocks, global ids -------------------


def bailian(rng: random.Random) -> str:
    """Five conversations of one to six turns; each turn's prompt is the previous one plus the
    reply and a new message; text chats share a system prompt."""
    ids = Ids(rng.randint(10_000, 20_000))
    system = ids.take(12)  # 192 tokens
    rows: list[Row] = []
    chat_ids = iter(rng.sample(range(1, 999_999), 40))
    kinds = ["text", "text", "search", "text", "file"]
    for conversation, kind in enumerate(kinds):
        t = 60.0 + conversation * 4.2
        parent = -1
        length = (len(system) * 16 if kind == "text" else 0) + rng.randint(100, 900)
        head = system if kind == "text" else []
        chain = head + ids.take(_ceil_div(length, 16) - len(head))
        for turn in range(1, rng.randint(2, 6) + 1):
            chat = next(chat_ids)
            out = rng.randint(30, 400)
            rows.append(
                {
                    "chat_id": chat,
                    "parent_chat_id": parent,
                    "timestamp": round(t, 3),
                    "input_length": length,
                    "output_length": out,
                    "type": kind,
                    "turn": turn,
                    "hash_ids": list(chain),
                }
            )
            parent = chat
            t += out * 0.02 + rng.uniform(5.0, 40.0)
            grown = length + out + rng.randint(20, 300)
            kept = length // 16
            chain = chain[:kept] + ids.take(_ceil_div(grown, 16) - kept)
            length = grown
    rows.sort(key=lambda row: row["timestamp"])
    return _jsonl(rows)


# --- Weka / cc-traces: per-trace objects with nested sub-agents, 64-token blocks, local ids --


class _Agent:
    """One Claude Code agent's calls: a context that grows by each reply and tool result."""

    def __init__(self, rng: random.Random, ids: Ids, head: list[int], model: str) -> None:
        self.rng, self.ids, self.model = rng, ids, model
        self.length = len(head) * 64 + rng.randint(300, 1500)
        self.chain = head + ids.take(self.length // 64 - len(head))

    def call(self, t: float, think: float, streamed: bool) -> Row:
        api = round(self.rng.uniform(1.5, 6.0), 3)
        out = self.rng.randint(60, 700)
        row: Row = {
            "t": round(t, 3),
            "type": "s" if streamed else "n",
            "model": self.model,
            "in": self.length,
            "out": out,
            "hash_ids": list(self.chain),
            "api_time": api,
            "think_time": round(think, 3),
        }
        if streamed:
            row["ttft"] = round(api * self.rng.uniform(0.1, 0.3), 3)
        grown = self.length + out + self.rng.randint(80, 1200)  # the reply and a tool result
        kept = self.length // 64
        self.chain = self.chain[:kept] + self.ids.take(grown // 64 - kept)
        self.length = grown
        return row


def _weka_trace(
    rng: random.Random, trace_id: str, calls: int, subagents: dict[int, tuple[int, int]]
) -> Row:
    """A trace of `calls` parent calls; after call i, subagents[i] = (calls, parallel) runs a
    sub-agent whose calls 1..parallel-1 overlap the one before (a parallel fan-out)."""
    ids = Ids()  # local scope: every trace numbers its blocks from 1
    tool_tokens, system_tokens = rng.randint(900, 1400), rng.randint(500, 800)
    tools = ids.take(tool_tokens // 64)  # sub-agents get the same tool definitions
    parent = _Agent(rng, ids, tools + ids.take(system_tokens // 64), "claude-opus-4-5")
    requests: list[Row] = []
    t, think = 0.0, 0.0
    for i in range(calls):
        row = parent.call(t, think, streamed=i % 2 == 1)
        requests.append(row)
        t = row["t"] + row["api_time"]
        think = rng.choice([0.2, 0.4, 1.1, 2.5]) if i % 3 else rng.uniform(20.0, 90.0)
        if i in subagents:
            entry = _weka_subagent(rng, ids, tools, t + 0.05, *subagents[i], f"agent_{i:03d}")
            requests.append(entry)
            t = entry["t"] + entry["duration_ms"] / 1000
            think = 0.3
        t += think
    return {
        "id": trace_id,
        "models": ["claude-opus-4-5", "claude-haiku-4-5"],
        "block_size": 64,
        "hash_id_scope": "local",
        "tool_tokens": tool_tokens,
        "system_tokens": system_tokens,
        "requests": requests,
    }


def _weka_subagent(
    rng: random.Random,
    ids: Ids,
    tools: list[int],
    start: float,
    calls: int,
    parallel: int,
    agent_id: str,
) -> Row:
    agent = _Agent(rng, ids, tools, "claude-haiku-4-5")
    inner: list[Row] = []
    t, think = start + 0.1, 0.0
    for k in range(calls):
        row = agent.call(t, think, streamed=False)
        inner.append(row)
        if 0 < k + 1 < parallel:
            t = row["t"] + row["api_time"] / 2  # the next starts before this one ends
        else:
            t = row["t"] + row["api_time"] + 0.4
        think = 0.4 if k + 1 >= parallel else 0.0
    end = max(r["t"] + r["api_time"] for r in inner)
    return {
        "t": round(start, 3),
        "type": "subagent",
        "agent_id": agent_id,
        "subagent_type": "Explore",
        "duration_ms": round((end - start) * 1000),
        "status": "completed",
        "models": ["claude-haiku-4-5"],
        "requests": inner,
    }


def weka(rng: random.Random) -> str:
    """Two traces: the first with a sub-agent after its third call and one, two calls of it in
    parallel, after its sixth; the second with a sub-agent after its first call."""
    traces = [
        _weka_trace(rng, "trace_0001", 9, {2: (4, 1), 5: (5, 2)}),
        _weka_trace(rng, "trace_0002", 6, {0: (3, 1)}),
    ]
    return "[\n" + ",\n".join(_line(trace) for trace in traces) + "\n]\n"


# --- TraceLab: one row per round, ISO times, tools, no hashes -------------------------------


class _Session:
    def __init__(self, provider: str, session_id: str, model: str, user: str) -> None:
        self.provider, self.session_id, self.model, self.user = provider, session_id, model, user
        self.rows: list[Row] = []


def _tracelab_rounds(
    rng: random.Random,
    session: _Session,
    start: float,
    rounds: int,
    first_prefix: int,
    spawn_at: int | None = None,
    compact_at: int | None = None,
    fast: bool = False,
) -> tuple[float, float] | None:
    """Append `rounds` rounds from time `start`; return the Agent call's window if round
    `spawn_at` makes one (40 s, for a sub-agent to run in; a `fast` one fits)."""
    sent, kind = start, "user_message"
    total = 14_000 + rng.randint(0, 3000)
    prefix = first_prefix
    window = None
    for index in range(rounds):
        out = rng.randint(80, 900)
        reasoning = rng.randint(0, out // 2) if session.provider == "codex" else None
        llm = rng.uniform(1.0, 3.0) if fast else rng.uniform(2.0, 9.0)
        ended = sent + llm
        events = [{"event_type": kind, "timestamp": _iso(sent)}]
        if reasoning:
            events.append({"event_type": "reasoning", "timestamp": _iso(sent + llm / 3)})
        tools: list[Row] = []
        if index == spawn_at:
            window = (ended, ended + 40.0)
            tools.append(_tool("Agent", ended, 40_000))
        elif index % 4 != 3:
            for n in range(1 + (index % 3 == 0)):
                latency = rng.randint(90, 900 if fast else 4000) * (n + 1)
                tools.append(_tool(rng.choice(["Bash", "Read", "Grep"]), ended, latency))
        events.append({"event_type": "tool_call" if tools else "text", "timestamp": _iso(ended)})
        session.rows.append(
            {
                "provider": session.provider,
                "session_id": session.session_id,
                "round_index": index,
                "model": session.model,
                "user": session.user,
                "project": "p1",
                "input_tokens_total": total,
                "prefix_tokens": prefix,
                "newly_append_tokens": total - prefix,
                "output_tokens": out,
                "reasoning_output_tokens": reasoning,
                "first_input_event_type": kind,
                "timing_events": events,
                "tools": tools,
            }
        )
        if tools:
            sent, kind = ended + max(t["tool_wall_latency_ms"] for t in tools) / 1000, "tool_result"
        else:
            sent, kind = ended + rng.uniform(30.0, 120.0), "user_message"  # the user reads
        appended = out + rng.randint(200, 2500)
        if index + 1 == compact_at:
            prefix, total = 0, 9000 + rng.randint(0, 2000)  # compacted: a new, shorter prompt
        else:
            prefix, total = total, total + appended
    return window


def _tool(name: str, emitted: float, latency_ms: int) -> Row:
    return {
        "tool_name": name,
        "emitted_at": _iso(emitted),
        "result_at": _iso(emitted + latency_ms / 1000),
        "tool_wall_latency_ms": latency_ms,
        "tool_internal_latency_ms": latency_ms - 40,
        "is_error": False,
    }


def tracelab(rng: random.Random) -> str:
    """A Claude session whose fourth round runs an Explore sub-agent (a session of its own,
    inside the Agent call), a Codex session that compacts, and a later Claude session of the
    same user whose first prompt hits the cached system prompt."""
    main = _Session("claude", "claude:7d1c", "claude-opus-4-5", "u07")
    window = _tracelab_rounds(rng, main, 0.0, 8, 0, spawn_at=3)
    assert window is not None
    child = _Session("claude", "claude:a3f0", "claude-haiku-4-5", "u07")
    _tracelab_rounds(rng, child, window[0] + 0.8, 3, 0, fast=True)
    codex = _Session("codex", "codex:52be", "gpt-5-codex", "u12")
    _tracelab_rounds(rng, codex, 95.0, 6, 0, compact_at=4)
    later = _Session("claude", "claude:e915", "claude-opus-4-5", "u07")
    _tracelab_rounds(rng, later, 700.0, 4, 12_032)
    rows = [row for s in (main, child, codex, later) for row in s.rows]
    return _jsonl(rows)


# --- Copilot: one session per line, turns of LLM calls and tool batches, gzipped ------------


def _copilot_session(rng: random.Random, number: int, start: float) -> Row:
    turns = []
    t = start
    prompt, cached = 9000 + rng.randint(0, 4000), 8192  # the system prompt and tools are cached
    for turn in range(rng.randint(2, 3)):
        calls, batches = [], []
        for step in range(rng.randint(2, 4)):
            small = turn == 1 and step == 0  # a call to a small model (a summary, say)
            duration = rng.uniform(1.5, 7.0)
            message_id = f"m{number}.{turn}.{step}"
            completion = rng.randint(40, 900)
            tokens = {
                "prompt": 2100 if small else prompt,
                "completion": completion,
                "cached": 0 if small else cached,
            }
            calls.append(
                {
                    "message_id": message_id,
                    "timestamp": _iso(t),
                    "duration_ms": round(duration * 1000, 1),
                    "initiator_type": "user" if step == 0 else "agent",
                    "model": "Model B" if small else "Model A",
                    "result": "Success",
                    "status_code": "OK",
                    "tokens": {**tokens, "total": tokens["prompt"] + completion},
                }
            )
            t += duration
            if small:
                continue
            tool_ms = rng.randint(120, 6000)
            batches.append(
                {
                    "timestamp": _iso(t + 0.05),
                    "duration_ms": float(tool_ms),
                    "auto_continue": True,
                    "result": "Success",
                    "request_id": message_id,
                    "function_calls": [
                        {
                            "name": rng.choice(["read_file", "run_in_terminal", "grep_search"]),
                            "status": 1,
                            "duration_ms": float(tool_ms - 20),
                        }
                    ],
                }
            )
            t += 0.05 + tool_ms / 1000
            cached = prompt - prompt % 64  # the next call reuses this whole prompt
            prompt += completion + rng.randint(150, 3000)
        turns.append({"turn_id": f"t{number}.{turn}", "llm_calls": calls, "tool_batches": batches})
        t += rng.uniform(25.0, 150.0)  # the user reads the answer and asks again
    return {"session_id": f"s{number:04d}", "date": "2026-05-04", "turns": turns}


def copilot(rng: random.Random) -> bytes:
    """Three sessions of two or three turns, gzipped like the release's shards."""
    rows = [_copilot_session(rng, n, n * 40.0) for n in range(3)]
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as out:
        out.write(_jsonl(rows).encode())
    return buffer.getvalue()


# --- agentload's own format -----------------------------------------------------------------


def agentload(rng: random.Random) -> str:
    """Two sessions, the first with a sub-agent sharing its blocks (local scope)."""
    ids = Ids()

    def requests(start: float, chain: list[int], count: int) -> Iterator[TraceRequest]:
        t, length = start, len(chain) * 64 + 20
        for k in range(count):
            duration = round(rng.uniform(0.8, 3.0), 3)
            yield TraceRequest(
                at_s=round(t, 3),
                input_tokens=length,
                output_tokens=rng.randint(50, 300),
                hash_ids=tuple(chain),
                gap_s=None if k == 0 else 0.5,
                cached_tokens=0 if k == 0 else (length - 600) // 64 * 64,
                ttft_s=round(duration / 5, 3),
                duration_s=duration,
            )
            t += duration + 0.5
            chain = chain + ids.take(9)
            length += 9 * 64

    head = ids.take(20)
    main = TraceSession("main", list(requests(0.0, head + ids.take(4), 4)), hash_namespace="main")
    sub_chain = head[:10] + ids.take(3)
    helper = TraceSession("main/helper", list(requests(4.2, sub_chain, 2)), hash_namespace="main")
    main.subagents.append((1, helper))
    other = TraceSession("other", list(requests(2.0, ids.take(30), 3)), hash_namespace="other")
    buffer = io.StringIO()
    write_agentload(Trace([main, other], 64, "local"), buffer)
    return buffer.getvalue()


FILES = {
    "mooncake.jsonl": mooncake,
    "bailian.jsonl": bailian,
    "weka.json": weka,
    "tracelab.jsonl": tracelab,
    "copilot.jsonl.gz": copilot,
    "agentload.jsonl": agentload,
}


def write_examples(out: Path) -> list[Path]:
    """Write every example into `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (name, make) in enumerate(FILES.items()):
        content = make(random.Random(SEED * 100 + number))
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder (default {OUT})")
    for path in write_examples(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
