"""Client CPU per streamed token: loadgen's engine against a bare aiohttp client.

A fast SSE server (bench/fast_sse_server.py: raw asyncio, one token to every open stream per
step) runs in a child process pinned to core 1; this process, pinned to core 0, keeps
--streams streams open at a fixed total token rate (--rate tokens/s, so the step is
streams / rate seconds), once per client mode, alternating modes --repeats times:

  bare     aiohttp session.post + `async for line in resp.content`; a token is a line that
           starts with `data: {` and holds `"delta"`; one perf_counter_ns() stamp per token;
           no JSON decoding.
  any      aiohttp with no line splitting at all: `resp.content.iter_any()`, tokens counted
           with bytes.count(b'"delta"'), one stamp per read (the cheapest aiohttp client).
  json     bare, plus orjson.loads of every data line and choices[0].delta.content.
  engine   loadgen as the agents use it: chat_body + loadgen.protocol.send over a
           loadgen Transport (SSE parser, Reply assembly, token_times_ns, ending checks),
           whose POSTs go through the kernel-stamped HTTP/1.1 client (recvmsg +
           SO_TIMESTAMPNS) as they do by default for http:// targets.
  engine-loop  the same over Transport(kernel_timestamps=False): aiohttp, stamped by the
           event loop (the engine's path before the kernel client, and for https).

Client CPU is time.process_time() over a --window seconds measured window after --warmup;
tokens are those the server wrote in the same window (its /stats), so both modes are
charged for exactly the tokens they were sent ("kernel" is the system-time share of the
client CPU; "CPU wait" the share of the window the client was runnable while other
processes held core 0). The goal: engine <= 2x bare.

    python bench/engine_cpu.py                        # 200 and 1000 streams, 20K tokens/s
    python bench/engine_cpu.py --streams 1000 --rate 40000 --modes bare,json,engine
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns

import aiohttp
import orjson
import uvloop
from fast_sse_server import pin_client, runqueue_wait_s, spawn_server

from loadgen.protocol import chat_body, encode_message, send
from loadgen.transport import TargetConfig, Transport

MODES = ("bare", "any", "json", "engine", "engine-loop")
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Counters:
    """What the client tasks saw; `tokens` counts only while `measuring` (bare modes)."""

    measuring: bool = False
    requests: int = 0
    errors: int = 0
    tokens: int = 0


@dataclass
class Phase:
    """One measured window of one client mode."""

    mode: str
    streams: int
    cpu_s: float
    sys_s: float  # the kernel's share of cpu_s (socket reads and writes, epoll)
    waited_s: float  # runnable but without a CPU: other processes on core 0
    wall_s: float
    server: dict[str, float]  # deltas of the server's counters over the window
    requests: int
    errors: int
    client_tokens: int

    @property
    def server_wall_s(self) -> float:
        return self.server["now_ns"] / 1e9

    @property
    def tokens_per_s(self) -> float:
        return self.server["tokens"] / self.server_wall_s

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s

    @property
    def us_per_token(self) -> float:
        return self.cpu_share / self.tokens_per_s * 1e6


def first_length(i: int, streams: int, max_tokens: int) -> int:
    """The first request of stream i is shortened so that request ends are spread evenly."""
    return 1 + i * max_tokens // streams


async def bare_stream(
    i: int,
    streams: int,
    session: aiohttp.ClientSession,
    url: str,
    args: argparse.Namespace,
    mode: str,
    c: Counters,
) -> None:
    """One stream's request loop with a bare aiohttp client (bare, any or json mode)."""
    decode, chunks = mode == "json", mode == "any"
    n = first_length(i, streams, args.max_tokens)
    while True:
        messages = [{"role": "user", "content": f"stream {i}: go"}]
        body = orjson.dumps(
            {"model": "bench", "messages": messages, "stream": True, "max_tokens": n}
        )
        n = args.max_tokens
        times: list[int] = []
        parts: list[str] = []
        try:
            async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
                if chunks:
                    async for data in resp.content.iter_any():
                        times.append(perf_counter_ns())
                        if c.measuring:
                            c.tokens += data.count(b'"delta"')
                    c.requests += c.measuring
                    continue
                async for line in resp.content:
                    if line.startswith(b"data: {") and b'"delta"' in line:
                        times.append(perf_counter_ns())
                        if decode:
                            choices = orjson.loads(line[6:])["choices"]
                            parts.append(choices[0]["delta"].get("content") or "")
                        if c.measuring:
                            c.tokens += 1
            c.requests += c.measuring
            c.errors += resp.status != 200
        except (aiohttp.ClientError, OSError):
            c.errors += 1
            await asyncio.sleep(0.1)


async def engine_stream(
    i: int, streams: int, transport: Transport, args: argparse.Namespace, c: Counters
) -> None:
    """One stream's request loop through loadgen.protocol.send, as an agent step sends."""
    n = first_length(i, streams, args.max_tokens)
    messages = [encode_message("user", f"stream {i}: go")]
    while True:
        body = chat_body("bench", messages, max_tokens=n, ignore_eos=True)
        n = args.max_tokens
        reply = await send(transport, "chat", body)
        c.requests += c.measuring
        c.errors += not reply.ok


async def server_stats(ctl: aiohttp.ClientSession, root: str) -> dict[str, float]:
    async with ctl.get(root + "/stats") as resp:
        out: dict[str, float] = orjson.loads(await resp.read())
        return out


async def run_phase(
    mode: str, streams: int, base: str, ctl: aiohttp.ClientSession, args: argparse.Namespace
) -> Phase:
    root = base.removesuffix("/v1")
    step_ms = streams / args.rate * 1000
    async with ctl.get(f"{root}/config?step_ms={step_ms}&slots=1") as resp:
        await resp.read()
    c = Counters()
    url = base + "/chat/completions"
    async with (
        Transport(
            TargetConfig(base, request_timeout_s=3600),
            kernel_timestamps=False if mode == "engine-loop" else None,
        ) as transport,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        tasks = [
            asyncio.create_task(
                engine_stream(i, streams, transport, args, c)
                if mode.startswith("engine")
                else bare_stream(i, streams, session, url, args, mode, c)
            )
            for i in range(streams)
        ]
        try:
            await asyncio.sleep(args.warmup)
            s0 = await server_stats(ctl, root)
            cpu0, t0, sys0 = time.process_time(), time.perf_counter(), os.times().system
            wait0 = runqueue_wait_s()
            c.measuring = True
            await asyncio.sleep(args.window)
            c.measuring = False
            cpu1, t1, sys1 = time.process_time(), time.perf_counter(), os.times().system
            waited = runqueue_wait_s() - wait0
            s1 = await server_stats(ctl, root)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.3)  # let the server notice the closed connections
    delta = {k: s1[k] - s0[k] for k in s1 if k not in ("lag_max_ms", "step_ms", "slots")}
    delta["lag_max_ms"] = s1["lag_max_ms"]
    delta["step_ms"] = s1["step_ms"]
    return Phase(
        mode,
        streams,
        cpu1 - cpu0,
        sys1 - sys0,
        waited,
        t1 - t0,
        delta,
        c.requests,
        c.errors,
        c.tokens,
    )


async def run(args: argparse.Namespace) -> list[Phase]:
    pinned = pin_client(0)
    if not pinned:
        print("warning: one CPU only; client and server share it", file=sys.stderr)
    server = spawn_server(20.0, 1 if pinned else None)
    phases: list[Phase] = []
    try:
        async with aiohttp.ClientSession() as ctl:
            for streams in args.streams:
                for _ in range(args.repeats):
                    for mode in args.modes:
                        phase = await run_phase(mode, streams, server.base_url, ctl, args)
                        print(
                            f"  {streams:>5} streams  {mode:<11}  {phase.us_per_token:6.1f} "
                            f"us/token  client CPU {phase.cpu_share:4.0%}",
                            file=sys.stderr,
                        )
                        phases.append(phase)
    finally:
        server.close()
    return phases


def report(args: argparse.Namespace, phases: list[Phase]) -> None:
    print(
        f"offered {args.rate:,.0f} tokens/s, {args.max_tokens} tokens per reply, "
        f"{args.window:g} s windows x {args.repeats} per mode (medians; range of us/token)"
    )
    head = (
        f"{'streams':>7}  {'client':<11}  {'us/token':>8}  {'range':>11}  {'vs bare':>7}  "
        f"{'client CPU':>10}  {'kernel':>6}  {'tokens/s':>8}  {'req/s':>5}  {'errors':>6}  "
        f"{'server CPU':>10}  {'CPU wait':>8}"
    )
    print(head)
    print("-" * len(head))
    for streams in args.streams:
        runs = {m: [p for p in phases if p.streams == streams and p.mode == m] for m in args.modes}
        bare = statistics.median(p.us_per_token for p in runs["bare"])
        for mode in args.modes:
            rs = runs[mode]

            def med(fn: Callable[[Phase], float], rs: list[Phase] = rs) -> float:
                return statistics.median(fn(p) for p in rs)

            us = med(lambda p: p.us_per_token)
            lo, hi = min(p.us_per_token for p in rs), max(p.us_per_token for p in rs)
            server_cpu = med(lambda p: p.server["cpu_s"] / p.server_wall_s)
            print(
                f"{streams:>7}  {mode:<11}  {us:>8.1f}  {lo:>5.1f}-{hi:<5.1f}  {us / bare:>6.2f}x  "
                f"{med(lambda p: p.cpu_share):>10.0%}  {med(lambda p: p.sys_s / p.cpu_s):>6.0%}  "
                f"{med(lambda p: p.tokens_per_s):>8,.0f}  "
                f"{med(lambda p: p.requests / p.wall_s):>5,.0f}  {sum(p.errors for p in rs):>6}  "
                f"{server_cpu:>10.0%}  {med(lambda p: p.waited_s / p.wall_s):>8.1%}"
            )
    saturated = [p for p in phases if p.cpu_share > 0.9]
    if saturated:
        print(
            f"warning: the client was above 90% CPU in {len(saturated)} window(s): it may have "
            "fallen behind the server (lower --rate)"
        )
    slow = [p for p in phases if p.tokens_per_s < 0.95 * args.rate]
    if slow:
        print(
            f"warning: {len(slow)} window(s) streamed under 95% of --rate: the server or the "
            "client fell behind"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--streams",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[200, 1000],
        help="comma-separated stream counts (default 200,1000)",
    )
    p.add_argument("--rate", type=float, default=20000, help="total tokens/s (default 20000)")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens per reply (default 200)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (1)")
    p.add_argument("--window", type=float, default=3.0, help="measured seconds (default 3)")
    p.add_argument("--repeats", type=int, default=2, help="windows per mode (default 2)")
    p.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=["bare", "engine", "engine-loop"],
        help=f"comma-separated, from {','.join(MODES)} (default bare,engine,engine-loop)",
    )
    args = p.parse_args()
    if unknown := set(args.modes) - set(MODES):
        p.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if "bare" not in args.modes:
        args.modes.insert(0, "bare")
    phases = uvloop.run(run(args))
    report(args, phases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
