"""Pooled connections the server closed: never a failure of the server, on both POST paths."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter_ns
from typing import Any

import pytest
import pytest_asyncio

from loadgen.transport import TargetConfig, Transport, TransportError
from loadgen.transport.kernel_conn import KernelConnection
from loadgen.transport.kernel_pool import IDLE_S
from loadgen.transport.kernel_sweep import ReadSweeper

# A handler gets each accepted connection's reader, writer and number (1, 2, ...).
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
Serve = Callable[[Handler], Awaitable[str]]

# llama-server's reply head: it promises keep-alive, then closes after the streamed reply.
LLAMA_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Keep-Alive: timeout=5, max=100\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@pytest.fixture(params=[True, False], ids=["kernel", "aiohttp"])
def kernel(request: pytest.FixtureRequest) -> bool:
    """Which POST path: the kernel-stamped client, or aiohttp."""
    value: bool = request.param
    return value


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a raw TCP server on 127.0.0.1:0 that numbers its connections; returns its URL."""
    servers: list[asyncio.Server] = []
    handlers: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []
    accepted = 0

    async def start(handler: Handler) -> str:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            task = asyncio.current_task()
            assert task is not None
            handlers.append((task, writer))
            try:
                await handler(reader, writer, accepted)
            finally:
                writer.close()

        server = await asyncio.start_server(run, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    for task, writer in handlers:
        task.cancel()
        writer.close()
    await asyncio.gather(*(task for task, _ in handlers), return_exceptions=True)
    await asyncio.sleep(0)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body; b"" when the client closed instead."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _reply(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n%bContent-Length: %d\r\n\r\n%b" % (extra, len(body), body)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a server does that closes with the request still unread."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _read(transport: Transport) -> bytes:
    async with transport.post("s", b"{}") as exchange:
        return await exchange.read()


async def test_a_server_closing_after_every_streamed_reply_fails_no_request(
    serve: Serve, kernel: bool
) -> None:
    async def llama(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if await _read_request(reader):
            writer.write(LLAMA_HEAD + _frame(b"data: %d\n\n" % n) + _frame(b"data: [DONE]\n\n"))
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    url = await serve(llama)
    events = []
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        for _ in range(40):  # back to back, as an agent's next step follows its reply
            async with transport.post("s", b"{}") as exchange:
                events.append([event.data async for event in exchange.events()])
    assert events == [[b"%d" % n, b"[DONE]"] for n in range(1, 41)]


async def test_a_connection_dropped_at_an_unannounced_1s_idle_timeout_is_retried(
    serve: Serve, kernel: bool
) -> None:
    # The worst moment of a server's idle timeout: its timer fires as the request arrives,
    # so the client cannot see the close coming and its request meets a reset.
    loop = asyncio.get_running_loop()
    dropped = 0

    async def idle_1s(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        nonlocal dropped
        idle_since = loop.time()
        while await reader.read(1):
            if loop.time() - idle_since >= 1.0:
                dropped += 1
                _reset(writer)
                return
            await _read_request(reader)
            writer.write(_reply(b"%d" % n))
            await writer.drain()
            idle_since = loop.time()

    url = await serve(idle_1s)
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        served = [await _read(transport)]
        for pause in (0.9, 1.1, 0.95, 1.05):
            await asyncio.sleep(pause)
            served.append(await _read(transport))
    assert dropped >= 1  # and not one request failed for it
    assert len(served) == 5


async def test_a_new_connection_closed_before_the_reply_is_a_connection_error_not_retried(
    serve: Serve, kernel: bool
) -> None:
    connections = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        nonlocal connections
        connections = n
        writer.close()

    url = await serve(hang_up)
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        with pytest.raises(TransportError) as caught:
            await _read(transport)
    assert caught.value.kind == "connection_error"
    assert connections == 1


async def test_a_reused_connection_is_retried_at_most_once(serve: Serve, kernel: bool) -> None:
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        nonlocal connections
        connections = n
        if n == 1 and await _read_request(reader):
            writer.write(_reply(b"1"))
            await writer.drain()
        await _read_request(reader)  # every later request: closed unanswered

    url = await serve(once)
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        assert await _read(transport) == b"1"
        with pytest.raises(TransportError) as caught:
            await _read(transport)
    assert caught.value.kind == "connection_error"
    assert connections == 2  # the reused one, then one retry


async def test_a_retried_request_is_timed_from_its_retry(serve: Serve, kernel: bool) -> None:
    async def slow_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for turn in range(2):
            if not await _read_request(reader):
                return
            if n == 1 and turn == 1:
                await asyncio.sleep(0.5)  # then closed unanswered
                return
            writer.write(_reply(b"%d" % n))
            await writer.drain()

    url = await serve(slow_drop)
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        assert await _read(transport) == b"1"
        started = perf_counter_ns()
        async with transport.post("s", b"{}") as exchange:
            assert await exchange.read() == b"2"
    assert exchange.t_sent_ns - started >= 500_000_000
    assert exchange.t_headers_ns - exchange.t_sent_ns < 250_000_000


async def test_keep_alive_timeout_shortens_the_idle_life_of_its_connection(
    serve: Serve, kernel: bool
) -> None:
    async def announce(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await _read_request(reader):  # kept open: only the header says 2 s
            writer.write(_reply(b"%d" % n, b"Keep-Alive: timeout=2\r\n"))
            await writer.drain()

    url = await serve(announce)
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        served = [await _read(transport), await _read(transport)]
        await asyncio.sleep(1.2)  # under the server's 2 s, over the second it leaves it
        served.append(await _read(transport))
    assert served == [b"1", b"1", b"2"]


async def test_a_connection_close_reply_is_not_reused(serve: Serve, kernel: bool) -> None:
    async def say_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await _read_request(reader):  # kept open: only the header says close
            writer.write(_reply(b"%d" % n, b"Connection: close\r\n"))
            await writer.drain()

    url = await serve(say_close)
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        served = [await _read(transport) for _ in range(3)]
    assert served == [b"1", b"2", b"3"]


@pytest.mark.slow
async def test_idle_connections_are_dropped_before_the_common_5s_server_timeout(
    serve: Serve,
) -> None:
    async def forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await _read_request(reader):
            writer.write(_reply(b"%d" % n))
            await writer.drain()

    url = await serve(forever)

    async def connections(kernel: bool) -> list[bytes]:
        async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
            first = await _read(transport)
            await asyncio.sleep(IDLE_S + 0.25)
            return [first, await _read(transport)]

    assert IDLE_S < 5  # uvicorn's (vLLM, SGLang, LiteLLM) and Node's default
    served = await asyncio.gather(connections(True), connections(False))
    assert all(first != second for first, second in served)


async def test_an_idle_connection_is_quiet_until_its_peer_closes_or_writes() -> None:
    loop = asyncio.get_running_loop()
    sweeper = ReadSweeper()
    pairs = [socket.socketpair() for _ in range(3)]
    conns = []
    for ours, _theirs in pairs:
        ours.setblocking(False)
        conns.append(KernelConnection(ours, loop, sweeper))
    try:
        pairs[1][1].close()
        pairs[2][1].send(b"x")
        assert [conn.quiet() for conn in conns] == [True, False, False]
        assert conns[0].quiet()  # peeking consumed nothing
    finally:
        for conn in conns:
            conn.close()
        for _ours, theirs in pairs:
            theirs.close()
        sweeper.close()
