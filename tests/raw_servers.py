"""Loopback servers for the transport tests, and the helpers their handlers share.

`raw_servers()` starts TCP servers that write exactly the bytes their handler writes (a
broken head, a cut body, a reset, a close at the worst moment); `aiohttp_servers()` starts
one-handler aiohttp servers; `unanswering_address()` is an address whose connects hang;
`kernel_socketpairs()` gives the kernel-stamped client's connections a peer with no server.
conftest.py's fixtures `raw_serve`, `serve` and `unanswering_address` give each test its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web

from loadgen.transport.kernel_conn import KernelConnection
from loadgen.transport.kernel_sweep import ReadSweeper

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
RawServe = Callable[[RawHandler], Awaitable[str]]
# A raw handler that is also told which accepted connection it serves (1, 2, ...).
NumberedHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[str]]


@contextlib.asynccontextmanager
async def raw_servers() -> AsyncIterator[RawServe]:
    """`await start(handler)` serves raw TCP on 127.0.0.1:0 and returns the base URL.

    Each accepted connection runs `handler(reader, writer)` and is closed when it returns;
    on leaving, every server stops and every handler still running is cancelled.
    """
    servers: list[asyncio.Server] = []
    handlers: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []

    async def start(handler: RawHandler) -> str:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.append((task, writer))
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(run, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    try:
        yield start
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
        # Python 3.11's wait_closed() does not wait for handlers: end them and their sockets.
        for task, writer in handlers:
            task.cancel()
            writer.close()
        await asyncio.gather(*(task for task, _ in handlers), return_exceptions=True)
        await asyncio.sleep(0)  # the transports close on the next loop pass


def numbered(handler: NumberedHandler) -> RawHandler:
    """`handler`, also given the number of the connection it serves (1 for the first)."""
    accepted = 0

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await handler(reader, writer, accepted)

    return run


@contextlib.asynccontextmanager
async def aiohttp_servers() -> AsyncIterator[Serve]:
    """`await start(handler)` serves every method and path with `handler` on 127.0.0.1:0."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handler)
        # handler_cancellation: a stalled handler ends when the client leaves, not 5 s later.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


@contextlib.contextmanager
def unanswering_address() -> Iterator[tuple[str, int]]:
    """An address whose connects hang: a listener with a full accept queue drops new SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # in progress: the queue fills
            filler.connect(address)
        fillers.append(filler)
    time.sleep(0.2)
    try:
        yield address
    finally:
        for sock in [*fillers, listener]:
            sock.close()


@contextlib.contextmanager
def kernel_socketpairs(
    count: int,
) -> Iterator[tuple[list[KernelConnection], list[socket.socket], ReadSweeper]]:
    """`count` socketpairs: our ends as KernelConnections on the running loop, sharing one
    ReadSweeper, and the peer ends; all of them closed on leaving."""
    loop = asyncio.get_running_loop()
    sweeper = ReadSweeper()
    pairs = [socket.socketpair() for _ in range(count)]
    conns = []
    for ours, _theirs in pairs:
        ours.setblocking(False)
        conns.append(KernelConnection(ours, loop, sweeper))
    try:
        yield conns, [theirs for _ours, theirs in pairs], sweeper
    finally:
        for conn in conns:
            conn.close()
        for _ours, theirs in pairs:
            theirs.close()
        sweeper.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body off the wire; b"" when the client closed instead."""
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


def frame(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a server does that closes with the request still unread."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
