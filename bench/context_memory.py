"""Memory of many long agent sessions in one process, and step cost as the context grows.

Builds --sessions loadgen CodingAgents (chat API, scripted tools, archetype defaults except a
--system-tokens system prompt, unlimited turns and no compaction) and drives each one
offline, step by step, exactly as the runtime does: plan_step(), a synthetic Reply of the
planned length to apply_reply(), then the tool results to apply_tool_results(), until its
history holds --context tokens (Conversation.tokens, counted with
loadgen.protocol.count_tokens plus the per-message overhead). Then it reports the process
RSS (VmRSS from /proc/self/status, after gc.collect()).

On the first --probes agents, each time the history first passes a --checkpoints size, it
times (median of --calls calls) what one step costs to build and to hand to aiohttp:

  plan_step()     the whole StepPlan, body included (chat_body over the encoded history)
  chat_body()     the body alone
  payload write   SegmentsPayload(body).write() into a writer that only counts the bytes:
                  the serialisation aiohttp does when the request is sent
  join            b"".join(body), what a client that sends one contiguous body pays
  re-encode       orjson.dumps of the same request from dicts, what a client that keeps the
                  history as objects pays every step (for comparison)

--prototype-fixes measures two changes this bench suggests for loadgen before they are
made, by patching them into this process only (loadgen's files are untouched): history
bytes from orjson right-sized with bytes(memoryview(...)) (orjson hands back buffers with
up to ~8x spare capacity, kept for as long as the message is), and chat agents not keeping
Agent._prompt_parts (a plain-text copy of the history only the completions API reads).

    python bench/context_memory.py                      # 1,000 sessions x 100K tokens
    python bench/context_memory.py --sessions 200 --context 50000
    python bench/context_memory.py --prototype-fixes
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp.abc import AbstractStreamWriter

import loadgen.protocol.messages as messages_module
from loadgen.agents import CodingAgent
from loadgen.protocol import Reply, chat_body, words_for_tokens
from loadgen.transport import SegmentsPayload


def rss_mb(field: str = "VmRSS") -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class CountingWriter(AbstractStreamWriter):
    """A stream writer that only counts what it is given (no socket, no copy)."""

    def __init__(self) -> None:
        self.buffer_size = 0
        self.output_size = 0
        self.length: int | None = 0

    async def write(self, chunk: Any) -> None:
        self.output_size += len(chunk)

    async def write_eof(self, chunk: bytes = b"") -> None:
        self.output_size += len(chunk)

    async def drain(self) -> None:
        return None

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        return None

    def enable_chunking(self) -> None:
        return None

    async def write_headers(self, status_line: str, headers: Any) -> None:
        return None

    def send_headers(self) -> None:
        return None


class _Discard(list[str]):
    """A list that keeps nothing (stands in for a chat agent's unused _prompt_parts)."""

    def append(self, item: str) -> None:
        return None


def apply_prototype_fixes() -> None:
    """Right-size every encoded message (this process only; see --prototype-fixes)."""
    encode = messages_module.encode_json

    def right_sized(value: Any) -> bytes:
        return bytes(memoryview(encode(value)))

    messages_module.encode_json = right_sized


def median_us(fn: Callable[[], object], calls: int) -> float:
    """Median wall time of fn() in microseconds."""
    times = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1e3


def time_step(agent: CodingAgent, calls: int, loop: asyncio.AbstractEventLoop) -> dict[str, float]:
    """What building and serialising one step costs at the agent's current context."""
    messages = agent.conversation.messages
    body = chat_body(agent.model, messages, max_tokens=256, min_tokens=256, ignore_eos=True)
    as_objects = {
        "model": agent.model,
        "messages": [orjson.loads(m) for m in messages],
        "max_tokens": 256,
        "min_tokens": 256,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async def payload_writes() -> list[int]:
        times = []
        for _ in range(calls):
            t = time.perf_counter_ns()
            writer = CountingWriter()
            await SegmentsPayload(body).write(writer)
            times.append(time.perf_counter_ns() - t)
        assert writer.output_size == sum(map(len, body))
        return times

    return {
        "tokens": agent.conversation.tokens,
        "messages": len(messages),
        "bytes": sum(map(len, body)),
        "plan_step": median_us(agent.plan_step, calls),
        "chat_body": median_us(
            lambda: chat_body(agent.model, messages, max_tokens=256, min_tokens=256), calls
        ),
        "payload": statistics.median(loop.run_until_complete(payload_writes())) / 1e3,
        "join": median_us(lambda: b"".join(body), calls),
        "reencode": median_us(lambda: orjson.dumps(as_objects), max(5, calls // 10)),
    }


def grow(
    agent: CodingAgent,
    target: int,
    checkpoints: list[int],
    probe: bool,
    calls: int,
    loop: asyncio.AbstractEventLoop,
) -> list[dict[str, float]]:
    """Drive the agent's steps offline until its history holds `target` tokens."""
    timings = []
    pending = [c for c in checkpoints if c <= target] if probe else []
    while True:
        conv = agent.conversation
        while pending and conv.tokens >= pending[0]:
            timing = time_step(agent, calls, loop)
            timing["checkpoint"] = pending.pop(0)
            timings.append(timing)
        if conv.tokens >= target:
            return timings
        plan = agent.plan_step()
        if plan is None:
            raise RuntimeError(f"agent {agent.id} ended its session at {conv.tokens} tokens")
        text = words_for_tokens(plan.max_tokens, offset=agent.rng.getrandbits(16))
        reply = Reply(api="chat", text=text, finish_reason="length", saw_done=True)
        invocations = agent.apply_reply(reply)
        if invocations:
            agent.apply_tool_results(invocations)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=1000, help="agents (default 1000)")
    p.add_argument("--context", type=int, default=100_000, help="tokens each (default 100000)")
    p.add_argument(
        "--checkpoints",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1_000, 10_000, 50_000, 100_000],
        help="context sizes to time steps at (default 1000,10000,50000,100000)",
    )
    p.add_argument("--probes", type=int, default=3, help="agents timed at checkpoints (3)")
    p.add_argument("--calls", type=int, default=300, help="calls per timing median (300)")
    p.add_argument("--system-tokens", type=int, default=500, help="system prompt (default 500)")
    p.add_argument(
        "--prototype-fixes",
        action="store_true",
        help="patch the suggested loadgen fixes into this process (see above)",
    )
    args = p.parse_args()
    if args.prototype_fixes:
        apply_prototype_fixes()

    params = CodingAgent.Params.model_validate(
        {"turns": 1_000_000, "system_prompt_tokens": args.system_tokens, "compaction": False}
    )
    loop = asyncio.new_event_loop()
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    agents: list[CodingAgent] = []
    timings: list[dict[str, float]] = []
    for i in range(args.sessions):
        agent = CodingAgent(f"agent-{i}", params, model="bench-model", seed=1)
        agent.start_session(f"session-{i}")
        if args.prototype_fixes:
            agent._prompt_parts = _Discard()
        timings += grow(agent, args.context, args.checkpoints, i < args.probes, args.calls, loop)
        agents.append(agent)
        if (i + 1) % 100 == 0:
            print(
                f"  {i + 1} sessions built, RSS {rss_mb():,.0f} MiB, "
                f"{time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
    build_s = time.perf_counter() - t0
    loop.close()
    gc.collect()
    rss1, peak = rss_mb(), rss_mb("VmHWM")

    tokens = [a.conversation.tokens for a in agents]
    encoded = sum(len(m) for a in agents for m in a.conversation.messages)
    # The completions API's plain-text copy of the history, which every agent also keeps.
    text_copy = sum(sys.getsizeof(t) for a in agents for t in a._prompt_parts)
    n = len(agents)
    fixes = " (with --prototype-fixes)" if args.prototype_fixes else ""
    print(
        f"{n:,} CodingAgent sessions{fixes}, context {min(tokens):,}-{max(tokens):,} tokens "
        f"(mean {statistics.mean(tokens):,.0f}), built in {build_s:.1f} s"
    )
    rows = [
        ("RSS before / after (MiB)", f"{rss0:,.0f} / {rss1:,.0f}  (peak {peak:,.0f})"),
        ("RSS added by the sessions (MiB)", f"{rss1 - rss0:,.0f}"),
        ("  per session (KiB)", f"{(rss1 - rss0) * 1024 / n:,.0f}"),
        ("  encoded history bytes (MiB)", f"{encoded / 2**20:,.0f}"),
        ("  Agent._prompt_parts text copy (MiB)", f"{text_copy / 2**20:,.0f}"),
        ("goal: RSS <= 1.5 GB (1,431 MiB)", "met" if rss1 * 2**20 <= 1.5e9 else "MISSED"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")

    print(f"\nper-step cost, median of {args.calls} calls, over {args.probes} agents (us)")
    head = (
        f"{'context':>14} {'messages':>8} {'body KiB':>8} {'plan_step':>9} {'chat_body':>9} "
        f"{'payload write':>13} {'join':>7} {'re-encode':>9}"
    )
    print(head)
    print("-" * len(head))
    for checkpoint in args.checkpoints:
        at = [t for t in timings if t["checkpoint"] == checkpoint]
        if not at:
            continue

        def med(key: str, at: list[dict[str, float]] = at) -> float:
            return statistics.median(t[key] for t in at)

        print(
            f"{med('tokens'):>14,.0f} {med('messages'):>8,.0f} {med('bytes') / 1024:>8,.0f} "
            f"{med('plan_step'):>9.1f} {med('chat_body'):>9.1f} {med('payload'):>13.1f} "
            f"{med('join'):>7.1f} {med('reencode'):>9.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
