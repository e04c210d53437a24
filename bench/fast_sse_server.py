"""A deliberately cheap streaming chat-completions server for the engine benchmarks.

Not the simulator: a raw asyncio (uvloop) HTTP/1.1 protocol with no framework on the
path, so that the client under test, not the server, is what costs CPU. It behaves like a
batching engine: one decode step every --step-ms writes one token chunk to every open
stream (vLLM emits a step's tokens to all streams together). Every chunk is shaped like
vLLM's `chat.completion.chunk`; its content is " <perf_counter_ns>", the server's own
emission time, stamped just before the chunk is written, so a client can compare the
arrival times it measured against the times the server actually sent each token
(perf_counter_ns is CLOCK_MONOTONIC on Linux, one clock for every process on a machine).

    python bench/fast_sse_server.py --port 0 --step-ms 20 --cpu 1

Endpoints: POST /v1/chat/completions (streams max_tokens tokens, then a usage chunk and
[DONE]); GET /stats (cumulative counters as JSON; `lag_max_ms` is since the last /stats);
GET /config?step_ms=N&slots=K (change the step; K > 1 spreads a step's tokens over K
equal sub-steps, each stream in its own one, instead of one burst). The benches start it
with spawn_server().
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns

import orjson
import uvloop

__all__ = ["ServerProcess", "pin_client", "runqueue_wait_s", "spawn_server"]

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_CHUNK = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","choices":[{"index":0,"delta":{"content":" '
)
_MORE = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
_LAST = b'"},"logprobs":null,"finish_reason":"length"}]}\n\n'
_USAGE = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,'
    b'"total_tokens":%d}}\n\ndata: [DONE]\n\n'
)


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunked-encoding frame."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _reply(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass(slots=True)
class _Stream:
    transport: asyncio.Transport
    left: int
    sent: int = 0


class _Server:
    """Open streams, the step loop, and the counters /stats reports."""

    def __init__(self, step_ms: float) -> None:
        self.step_s = step_ms / 1000
        # Streams by emission slot: a step is cut into len(slots) equal sub-steps and each
        # stream gets its token in its own one (1 slot: every stream at once, a burst).
        self.slots: list[dict[int, _Stream]] = [{}]
        self.slot = 0  # the sub-step due next
        self.tokens = 0
        self.requests = 0
        self.finished = 0
        self.ticks = 0
        self.late_ticks = 0  # woke more than 2 ms after the step was due
        self.busy_ns = 0  # time spent writing steps
        self.lag_max_s = 0.0

    def stats(self) -> bytes:
        out = {
            "now_ns": perf_counter_ns(),
            "cpu_s": time.process_time(),
            "tokens": self.tokens,
            "requests": self.requests,
            "finished": self.finished,
            "open": sum(map(len, self.slots)),
            "ticks": self.ticks,
            "late_ticks": self.late_ticks,
            "busy_ns": self.busy_ns,
            "lag_max_ms": self.lag_max_s * 1e3,
            "step_ms": self.step_s * 1e3,
            "slots": len(self.slots),
        }
        self.lag_max_s = 0.0
        return orjson.dumps(out)

    async def run(self) -> None:
        # perf_counter, not loop.time(): uvloop's clock moves in whole milliseconds.
        clock = time.perf_counter
        due = checked = clock()
        parent = os.getppid()
        while True:
            if due - checked > 1.0:
                checked = due
                if os.getppid() != parent:
                    return  # the bench that spawned us is gone: do not linger
            due += self.step_s / len(self.slots)
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = clock() - due
            if lag > 0.05:
                due = clock()  # far behind: restart the timeline rather than burst
            self.lag_max_s = max(self.lag_max_s, lag)
            self.late_ticks += lag > 0.002
            self.ticks += 1
            start = perf_counter_ns()
            self._step()
            self.busy_ns += perf_counter_ns() - start

    def add(self, key: int, stream: _Stream) -> None:
        self.slots[self.requests % len(self.slots)][key] = stream

    def drop(self, key: int) -> None:
        for streams in self.slots:
            streams.pop(key, None)

    def set_slots(self, count: int) -> None:
        old = [s for streams in self.slots for s in streams.items()]
        self.slots = [{} for _ in range(max(1, count))]
        self.slot = 0
        for i, (key, stream) in enumerate(old):
            self.slots[i % len(self.slots)][key] = stream

    def _step(self) -> None:
        self.slot = (self.slot + 1) % len(self.slots)
        streams = self.slots[self.slot]
        done = []
        for key, stream in streams.items():
            stream.left -= 1
            stream.sent += 1
            last = stream.left <= 0
            stamp = perf_counter_ns()
            data = _CHUNK + b"%d" % stamp + (_LAST if last else _MORE)
            if last:
                usage = _USAGE % (16, stream.sent, 16 + stream.sent)
                stream.transport.write(_frame(data) + _frame(usage) + b"0\r\n\r\n")
                done.append(key)
            else:
                stream.transport.write(_frame(data))
        self.tokens += len(streams)
        for key in done:
            del streams[key]
        self.finished += len(done)


class _Connection(asyncio.Protocol):
    """HTTP/1.1 keep-alive: headers, a Content-Length body, then one reply at a time."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.buf = bytearray()
        self.head: list[bytes] | None = None
        self.need = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.drop(id(self))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = bytes(self.buf[:end]).split(b"\r\n")
                del self.buf[: end + 4]
                self.need = 0
                for line in self.head[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        self.need = int(value)
            if len(self.buf) < self.need:
                return
            body = bytes(self.buf[: self.need])
            del self.buf[: self.need]
            head, self.head = self.head, None
            self._handle(head[0].split(b" ")[:2], body)

    def _handle(self, request_line: list[bytes], body: bytes) -> None:
        assert self.transport is not None
        method, target = request_line
        path, _, query = target.partition(b"?")
        if method == b"POST" and path == b"/v1/chat/completions":
            obj = orjson.loads(body)
            tokens = int(obj.get("max_tokens") or 16)
            self.transport.write(_HEAD)
            self.server.add(id(self), _Stream(self.transport, max(1, tokens)))
            self.server.requests += 1
        elif method == b"GET" and path == b"/stats":
            self.transport.write(_reply("200 OK", self.server.stats()))
        elif method == b"GET" and path == b"/config":
            for pair in query.split(b"&"):
                key, _, value = pair.partition(b"=")
                if key == b"step_ms":
                    self.server.step_s = float(value) / 1000
                elif key == b"slots":
                    self.server.set_slots(int(value))
            self.transport.write(_reply("200 OK", b"{}"))
        else:
            self.transport.write(_reply("404 Not Found", b'{"error":"not found"}'))


async def _serve(host: str, port: int, step_ms: float) -> None:
    server = _Server(step_ms)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: _Connection(server), host, port, backlog=4096)
    bound = listener.sockets[0].getsockname()[1]
    print(f"listening on http://{host}:{bound}/v1", flush=True)
    await server.run()


class ServerProcess:
    """A running fast_sse_server child: its pid, base URL; `close()` stops it."""

    def __init__(self, proc: subprocess.Popen[bytes], base_url: str) -> None:
        self.proc = proc
        self.base_url = base_url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def spawn_server(step_ms: float, cpu: int | None) -> ServerProcess:
    """Start the server on a free port (pinned to `cpu` when given) and wait for its URL."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--port", "0", "--step-ms", str(step_ms)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"fast_sse_server did not start: {line!r}")
    return ServerProcess(proc, line.split()[-1])


def runqueue_wait_s(pid: int | str = "self") -> float:
    """Seconds a process's main thread has spent runnable but waiting for a CPU (schedstat).

    On a machine shared with other work this is how long that work held our core: time in
    which no timestamp could be taken and no byte read, whatever the code under test does.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def pin_client(core: int = 0) -> bool:
    """Pin this process to `core` when the machine has another one for the server."""
    if (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(0, {core})
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--step-ms", type=float, default=20.0, help="decode step (default 20)")
    p.add_argument("--cpu", type=int, help="pin to this core")
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        uvloop.run(_serve(args.host, args.port, args.step_ms))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
