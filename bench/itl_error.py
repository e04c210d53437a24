"""ITL measurement error of loadgen.protocol.send against the server's own emission times.

A fast SSE server (bench/fast_sse_server.py) runs in a child process pinned to core 1 and
writes one token to every open stream each --step-ms (a batching engine's decode step),
either all streams at once (--slots 1, a burst, as a step's tokens leave vLLM together) or
spread over K equal sub-steps (--slots K). Every token's content is the server's
perf_counter_ns() taken just before that chunk was written. This process, pinned to core
0, keeps --streams streams open for --duration seconds after --warmup, then lets the open
replies finish.

For every pair of consecutive tokens of a reply (emitted inside the window) it compares the
gap the client measured with the gap the server emitted: error = client gap - server gap.
perf_counter_ns is CLOCK_MONOTONIC on Linux, one clock for every process on the machine,
so arrival - emission (the delay the client adds, loopback included) is reported too.
The goal: p99 |error| <= 2 ms at 1,000 streams through loadgen.

Clients (--clients):
  engine  loadgen.protocol.send over a loadgen Transport, exactly as agents send;
          Reply.token_times_ns against the stamps in Reply.text. For this http://
          target the Transport POSTs through its kernel-stamped HTTP/1.1 client
          (loadgen.transport.kernel_stream: recvmsg + SO_TIMESTAMPNS), the default.
  engine-loop  the same over Transport(kernel_timestamps=False): aiohttp, each event
          stamped when the event loop reads it (the path https targets still take).
  bare    aiohttp session.post + `async for line in resp.content`, stamped per line.
  raw     hand-written HTTP/1.1 asyncio.Protocol, stamped inside data_received: the floor
          for any client that stamps with the clock when its event loop gets the bytes.
  kernel  the same over a plain socket read with recvmsg, stamped with the kernel's
          receive time (SO_TIMESTAMPNS): the prototype of the engine's path, with no
          HTTP framing, SSE parsing or reply assembly.

    python bench/itl_error.py                           # 1,000 streams, 50 ms steps
    python bench/itl_error.py --slots 1 --clients engine,engine-loop,bare,raw,kernel
    python bench/itl_error.py --streams 200 --step-ms 10 --slots 1
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from time import perf_counter_ns

import aiohttp
import orjson
import uvloop
from fast_sse_server import pin_client, runqueue_wait_s, spawn_server

from loadgen.protocol import chat_body, encode_message, send
from loadgen.transport import TargetConfig, Transport

CLIENTS = ("engine", "engine-loop", "bare", "raw", "kernel")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux
REALTIME_OFFSET_NS = time.time_ns() - perf_counter_ns()
CONTENT = b'"content":" '


@dataclass
class Run:
    """Pairs of (server emission, client arrival) per reply, for replies ended after warm-up."""

    client: str
    slots: int
    streams: list[tuple[list[int], list[int]]] = field(default_factory=list)
    errors: int = 0
    requests: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    window: tuple[int, int] = (0, 0)  # perf_counter_ns bounds of the measured window
    server_lag_max_ms: float = 0.0
    loop_lag_ms: list[float] = field(default_factory=list)  # oversleep of a 10 ms probe
    preempted: int = 0  # involuntary context switches of this process in the window
    waited_s: float = 0.0  # time runnable but without a CPU (other work on core 0)
    kernel_stamps: bool = False  # events stamped with the kernel's receive time


def involuntary_switches() -> int:
    """How often the kernel took the CPU away from this process (other work on its core)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("nonvoluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


async def probe_loop(run: Run, stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes: the delay any callback, a stamp included, waits."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        run.loop_lag_ms.append((time.perf_counter() - t - 0.01) * 1e3)


def first_length(i: int, streams: int, max_tokens: int) -> int:
    """The first request of stream i is shortened so that request ends are spread evenly."""
    return 1 + i * max_tokens // streams


async def engine_stream(
    i: int, args: argparse.Namespace, transport: Transport, run: Run, stop: asyncio.Event
) -> None:
    n = first_length(i, args.streams, args.max_tokens)
    messages = [encode_message("user", f"stream {i}: go")]
    while not stop.is_set():
        body = chat_body("bench", messages, max_tokens=n, ignore_eos=True)
        n = args.max_tokens
        reply = await send(transport, "chat", body)
        run.requests += 1
        if not reply.ok:
            run.errors += 1
            continue
        stamps = [int(x) for x in reply.text.split()]
        if len(stamps) != len(reply.token_times_ns):
            run.errors += 1
            continue
        run.streams.append((stamps, reply.token_times_ns))


async def bare_stream(
    i: int,
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    url: str,
    run: Run,
    stop: asyncio.Event,
) -> None:
    n = first_length(i, args.streams, args.max_tokens)
    while not stop.is_set():
        messages = [{"role": "user", "content": f"stream {i}: go"}]
        body = orjson.dumps(
            {"model": "bench", "messages": messages, "stream": True, "max_tokens": n}
        )
        n = args.max_tokens
        stamps: list[int] = []
        times: list[int] = []
        try:
            async with session.post(url, data=body) as resp:
                async for line in resp.content:
                    at = line.find(CONTENT)
                    if at >= 0:
                        times.append(perf_counter_ns())
                        start = at + len(CONTENT)
                        stamps.append(int(line[start : line.index(b'"', start)]))
        except (aiohttp.ClientError, OSError):
            run.errors += 1
            await asyncio.sleep(0.1)
            continue
        run.requests += 1
        run.streams.append((stamps, times))


class Scanner:
    """Hand-rolled HTTP/1.1 streaming reply: token stamps and arrival times, no JSON."""

    def __init__(self) -> None:
        self.tail = b""
        self.stamps: list[int] = []
        self.times: list[int] = []
        self.done: asyncio.Future[None] | None = None

    def request(self, body: bytes) -> bytes:
        self.stamps, self.times, self.tail = [], [], b""
        self.done = asyncio.get_running_loop().create_future()
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )

    def feed(self, data: bytes, t_ns: int) -> None:
        buf = self.tail + data
        pos = 0
        while (at := buf.find(CONTENT, pos)) >= 0:
            end = buf.find(b'"', at + len(CONTENT))
            if end < 0:
                break
            self.stamps.append(int(buf[at + len(CONTENT) : end]))
            self.times.append(t_ns)
            pos = end
        self.tail = buf[pos:][-256:]
        if buf.endswith(b"\r\n0\r\n\r\n") and self.done is not None:
            self.done.set_result(None)

    def lost(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))


class RawProtocol(asyncio.Protocol):
    """The floor for an asyncio client: stamped with perf_counter_ns() in data_received."""

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.scanner.lost()

    def data_received(self, data: bytes) -> None:
        self.scanner.feed(data, perf_counter_ns())


class KernelReader:
    """Reads with recvmsg and stamps with the kernel's receive time (SO_TIMESTAMPNS).

    The kernel stamps a packet when it arrives, however busy this event loop is; the
    stamp is CLOCK_REALTIME and is moved onto perf_counter_ns with an offset sampled once.
    """

    def __init__(self, sock: socket.socket, scanner: Scanner) -> None:
        self.sock = sock
        self.scanner = scanner
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 18, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        if not data:
            self.close()
            self.scanner.lost()
            return
        t_ns = perf_counter_ns()
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", raw[:16])
                t_ns = sec * 1_000_000_000 + nsec - REALTIME_OFFSET_NS
        self.scanner.feed(data, t_ns)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


async def raw_stream(
    i: int, args: argparse.Namespace, base: str, run: Run, stop: asyncio.Event, *, kernel: bool
) -> None:
    host, port = base.split("//")[1].split("/")[0].split(":")
    loop = asyncio.get_running_loop()
    scanner = Scanner()
    send_request: Callable[[bytes], Awaitable[None] | None]
    if kernel:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (host, int(port)))
        reader = KernelReader(sock, scanner)
        close: Callable[[], None] = reader.close

        def send_request(data: bytes) -> Awaitable[None]:
            return loop.sock_sendall(sock, data)
    else:
        transport, _ = await loop.create_connection(lambda: RawProtocol(scanner), host, int(port))
        close = transport.close
        send_request = transport.write
    n = first_length(i, args.streams, args.max_tokens)
    try:
        while not stop.is_set():
            messages = [{"role": "user", "content": f"stream {i}: go"}]
            body = orjson.dumps(
                {"model": "bench", "messages": messages, "stream": True, "max_tokens": n}
            )
            n = args.max_tokens
            sent = send_request(scanner.request(body))
            if sent is not None:
                await sent
            assert scanner.done is not None
            await scanner.done
            run.requests += 1
            run.streams.append((scanner.stamps, scanner.times))
    finally:
        close()


async def measure(client: str, slots: int, args: argparse.Namespace, base: str) -> Run:
    run = Run(client, slots)
    stop = asyncio.Event()
    root = base.removesuffix("/v1")
    async with (
        aiohttp.ClientSession() as ctl,
        Transport(
            TargetConfig(base, request_timeout_s=3600),
            kernel_timestamps=False if client == "engine-loop" else None,
        ) as transport,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            headers={"Content-Type": "application/json"},
        ) as session,
    ):
        async with ctl.get(f"{root}/config?step_ms={args.step_ms}&slots={slots}") as resp:
            await resp.read()
        engine = client.startswith("engine")
        run.kernel_stamps = transport.kernel_timestamps if engine else client == "kernel"
        tasks = [
            asyncio.create_task(one_stream(client, i, args, base, transport, session, run, stop))
            for i in range(args.streams)
        ]
        try:
            await asyncio.sleep(args.warmup)
            async with ctl.get(root + "/stats") as resp:
                await resp.read()  # resets the server's max lag
            cpu0, t0, sw0 = time.process_time(), perf_counter_ns(), involuntary_switches()
            wait0 = runqueue_wait_s()
            probe_stop = asyncio.Event()
            probe = asyncio.create_task(probe_loop(run, probe_stop))
            await asyncio.sleep(args.duration)
            probe_stop.set()
            cpu1, t1, sw1 = time.process_time(), perf_counter_ns(), involuntary_switches()
            run.waited_s = runqueue_wait_s() - wait0
            await probe
            run.preempted = sw1 - sw0
            async with ctl.get(root + "/stats") as resp:
                run.server_lag_max_ms = orjson.loads(await resp.read())["lag_max_ms"]
            stop.set()  # every stream ends after its current reply
            drain = args.max_tokens * args.step_ms / 1000 + 5
            await asyncio.wait_for(asyncio.gather(*tasks), drain)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    run.cpu_s, run.wall_s, run.window = cpu1 - cpu0, (t1 - t0) / 1e9, (t0, t1)
    return run


async def one_stream(
    client: str,
    i: int,
    args: argparse.Namespace,
    base: str,
    transport: Transport,
    session: aiohttp.ClientSession,
    run: Run,
    stop: asyncio.Event,
) -> None:
    if client.startswith("engine"):
        await engine_stream(i, args, transport, run, stop)
    elif client == "bare":
        await bare_stream(i, args, session, base + "/chat/completions", run, stop)
    else:
        await raw_stream(i, args, base, run, stop, kernel=client == "kernel")


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def analyse(run: Run) -> dict[str, float]:
    """Gap errors and one-way delays (ms) for tokens the server emitted inside the window."""
    lo, hi = run.window
    gap_err: list[float] = []
    server_gaps: list[float] = []
    delays: list[float] = []
    coalesced = 0
    tokens = 0
    for stamps, times in run.streams:
        for (s0, c0), (s1, c1) in pairwise(zip(stamps, times, strict=True)):
            if not lo <= s1 < hi:
                continue
            gap_err.append(abs((c1 - c0) - (s1 - s0)) / 1e6)
            server_gaps.append((s1 - s0) / 1e6)
            coalesced += c1 == c0
        for s, c in zip(stamps, times, strict=True):
            if lo <= s < hi:
                delays.append((c - s) / 1e6)
                tokens += 1
    gap_err.sort()
    delays.sort()
    server_gaps.sort()
    return {
        "tokens": tokens,
        "gaps": len(gap_err),
        "err_p50": quantile(gap_err, 0.5),
        "err_p90": quantile(gap_err, 0.9),
        "err_p99": quantile(gap_err, 0.99),
        "err_p999": quantile(gap_err, 0.999),
        "err_max": gap_err[-1] if gap_err else float("nan"),
        "coalesced": coalesced / max(1, len(gap_err)),
        "delay_p50": quantile(delays, 0.5),
        "delay_p99": quantile(delays, 0.99),
        "delay_max": delays[-1] if delays else float("nan"),
        "server_gap_p50": quantile(server_gaps, 0.5),
        "server_gap_p99": quantile(server_gaps, 0.99),
    }


async def main_async(args: argparse.Namespace) -> list[tuple[Run, dict[str, float]]]:
    pinned = pin_client(0)
    if not pinned:
        print("warning: one CPU only; client and server share it", file=sys.stderr)
    server = spawn_server(args.step_ms, 1 if pinned else None)
    out = []
    try:
        for slots in args.slots:
            for client in args.clients:
                run = await measure(client, slots, args, server.base_url)
                out.append((run, analyse(run)))
                await asyncio.sleep(0.3)
    finally:
        server.close()
    return out


def report(args: argparse.Namespace, results: list[tuple[Run, dict[str, float]]]) -> None:
    rate = args.streams * 1000 / args.step_ms
    print(
        f"{args.streams} streams, {args.step_ms:g} ms steps ({rate:,.0f} tokens/s offered), "
        f"{args.max_tokens} tokens per reply, {args.duration:g} s window"
    )
    noisy = False
    for run, a in results:
        noisy |= run.waited_s > 0.02 * run.wall_s
        lag = sorted(run.loop_lag_ms) or [float("nan")]
        rows = [
            ("client", run.client),
            ("event stamps", "kernel receive time" if run.kernel_stamps else "user space"),
            (
                "emission",
                "one burst per step"
                if run.slots == 1
                else f"spread over {run.slots} sub-steps of {args.step_ms / run.slots:.1f} ms",
            ),
            ("tokens / gaps compared", f"{a['tokens']:,.0f} / {a['gaps']:,.0f}"),
            ("requests, errors", f"{run.requests:,} ({run.errors} errors)"),
            ("client CPU in window", f"{run.cpu_s / run.wall_s:.0%} of core 0"),
            (
                "event-loop lag p50 / p99 / max (ms)",
                f"{quantile(lag, 0.5):.3f} / {quantile(lag, 0.99):.3f} / {lag[-1]:.3f}",
            ),
            (
                "waited for CPU (run queue) / preempted",
                f"{run.waited_s / run.wall_s:.1%} of the window / "
                f"{run.preempted / run.wall_s:,.0f}/s",
            ),
            ("server step lag max", f"{run.server_lag_max_ms:.1f} ms"),
            ("server gap p50 / p99 (ms)", f"{a['server_gap_p50']:.2f} / {a['server_gap_p99']:.2f}"),
            (
                "|client gap - server gap| p50 / p90 / p99 (ms)",
                f"{a['err_p50']:.3f} / {a['err_p90']:.3f} / {a['err_p99']:.3f}",
            ),
            ("  p99.9 / max (ms)", f"{a['err_p999']:.3f} / {a['err_max']:.3f}"),
            ("  gaps of 0 (two tokens in one read)", f"{a['coalesced']:.2%}"),
            (
                "arrival - emission p50 / p99 / max (ms)",
                f"{a['delay_p50']:.3f} / {a['delay_p99']:.3f} / {a['delay_max']:.3f}",
            ),
            ("goal p99 <= 2 ms", "met" if a["err_p99"] <= 2.0 else "MISSED"),
        ]
        width = max(len(k) for k, _ in rows)
        print()
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    if noisy:
        print(
            "\nwarning: other processes held this client's core for over 2% of a window; "
            "every user-space stamp taken then is late, so those figures overstate the error"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--streams", type=int, default=1000, help="concurrent streams (default 1000)")
    p.add_argument("--step-ms", type=float, default=50.0, help="server decode step (default 50)")
    p.add_argument("--max-tokens", type=int, default=100, help="tokens per reply (default 100)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (2)")
    p.add_argument("--duration", type=float, default=6.0, help="measured seconds (default 6)")
    p.add_argument(
        "--slots",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 50],
        help="emission patterns: 1 = every stream's token in one burst per step (vLLM-like);\n"
        "K = the step cut into K sub-steps, streams spread over them (default 1,50)",
    )
    p.add_argument(
        "--clients",
        type=lambda s: s.split(","),
        default=["engine", "engine-loop"],
        help=f"comma-separated, from {','.join(CLIENTS)} (default engine,engine-loop)",
    )
    args = p.parse_args()
    if unknown := set(args.clients) - set(CLIENTS):
        p.error(f"unknown clients: {', '.join(sorted(unknown))}")
    report(args, uvloop.run(main_async(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
