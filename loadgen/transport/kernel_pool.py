"""Keep-alive connections for the kernel-stamped client, per (host, port), and how they open."""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohappyeyeballs

from loadgen.transport.kernel_clock import enable_receive_timestamps
from loadgen.transport.kernel_conn import KernelConnection
from loadgen.transport.kernel_sweep import ReadSweeper

__all__ = ["IDLE_S", "AddrInfo", "ConnectTimeoutError", "ConnectionPool", "SocketFactory"]

AddrInfo = tuple[Any, ...]  # (family, type, proto, canonname, sockaddr), as getaddrinfo gives
# aiohttp's (3.12+) socket_factory hook: an addrinfo tuple in, an unconnected socket out.
SocketFactory = Callable[[AddrInfo], socket.socket]
# An idle connection older than this is closed: uvicorn (vLLM, SGLang, LiteLLM) and Node
# close theirs after 5 s without a word, and one reused at that moment fails. A second
# below leaves room for the request's transit and for the server's clock having started
# when it sent the last byte. The aiohttp path uses the same limit.
IDLE_S = 4.0
_DNS_TTL_S = 10.0  # aiohttp's default DNS cache lifetime
_HAPPY_EYEBALLS_DELAY_S = 0.25  # aiohttp's, and RFC 8305's recommendation


class ConnectTimeoutError(TimeoutError):
    """No connection within connect_timeout_s: about reachability, not a slow reply."""


class ConnectionPool:
    """Idle connections by (host, port), newest reused first; new ones via `socket_factory`."""

    def __init__(self, socket_factory: SocketFactory | None = None) -> None:
        """`socket_factory`: aiohttp's hook shape; under Locust it must make native sockets."""
        self._socket_factory = socket_factory
        self._idle: dict[tuple[str, int], deque[KernelConnection]] = {}
        self._open: weakref.WeakSet[KernelConnection] = weakref.WeakSet()
        self._dns: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Task[list[AddrInfo]]] = {}
        self._sweeper = ReadSweeper()
        self.closed = False

    async def acquire(
        self,
        host: str,
        port: int,
        connect_timeout_s: float,
        deadline: float,
        *,
        fresh: bool = False,
    ) -> KernelConnection:
        """An idle connection to host:port, or a new one (deadline: the request's, loop time).

        `fresh`: always a new one (the idle ones stay pooled).
        """
        if self.closed:
            raise RuntimeError("the connection pool is closed")
        loop = asyncio.get_running_loop()
        idle = None if fresh else self._idle.get((host, port))
        now = loop.time()
        while idle:
            conn = idle.pop()
            if conn.clean and now < conn.idle_until and conn.quiet():
                conn.busy = True
                return conn
            conn.close()
        left = deadline - now
        try:
            async with asyncio.timeout(min(connect_timeout_s, left)):
                infos = await self._resolve(host, port)
                sock = await self._connect(loop, infos)
        except TimeoutError as exc:
            if connect_timeout_s <= left:
                raise ConnectTimeoutError(f"no connection within {connect_timeout_s:g}s") from exc
            raise
        conn = KernelConnection(sock, loop, self._sweeper)
        self._open.add(conn)
        return conn

    def release(
        self, conn: KernelConnection, host: str, port: int, idle_s: float | None = None
    ) -> None:
        """Take back a connection to host:port whose reply was read to the end.

        `idle_s`: how long the server said it may idle (its Keep-Alive header), if it did.
        """
        limit = IDLE_S if idle_s is None else min(idle_s, IDLE_S)
        if self.closed or not conn.clean or limit <= 0:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.busy = False
        conn.reused = True
        now = loop.time()
        conn.idle_until = now + limit
        idle = self._idle.setdefault((host, port), deque())
        idle.append(conn)
        # The oldest sit at the left: expire them here rather than with a timer per socket
        # (one with a shorter Keep-Alive further right is caught when acquire reaches it).
        while idle and (idle[0].closed or idle[0].idle_until <= now):
            idle.popleft().close()

    def close(self) -> None:
        """Close every connection this pool opened, idle or still in use."""
        self.closed = True
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        self._sweeper.close()
        for task in self._resolving.values():
            task.cancel()

    async def _resolve(self, host: str, port: int) -> list[AddrInfo]:
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(family, host)
            except OSError:
                continue
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        key = (host, port)
        loop = asyncio.get_running_loop()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        task = self._resolving.get(key)
        if task is None:
            # One lookup however many streams open at once; cancelling one waiter (shield)
            # must not fail the others.
            task = loop.create_task(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            self._resolving[key] = task
            task.add_done_callback(lambda done: self._resolved(key, done))
        return await asyncio.shield(task)

    def _resolved(self, key: tuple[str, int], task: asyncio.Task[list[AddrInfo]]) -> None:
        self._resolving.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            loop = asyncio.get_running_loop()
            self._dns[key] = (loop.time() + _DNS_TTL_S, task.result())

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, infos: list[AddrInfo]
    ) -> socket.socket:
        """A connected socket: addresses raced as aiohttp does (happy eyeballs, RFC 8305).

        The next address is tried once the one before has not answered within
        _HAPPY_EYEBALLS_DELAY_S, so an unreachable first address (an IPv6 route that
        black-holes) costs a quarter second, not the whole connect timeout.
        """
        if not infos:
            raise OSError("getaddrinfo returned no addresses")

        def make(info: AddrInfo) -> socket.socket:
            family, kind, proto, _name, _address = info
            if self._socket_factory is not None:
                sock = self._socket_factory(info)
            else:
                sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                enable_receive_timestamps(sock)
            except BaseException:
                sock.close()
                raise
            return sock

        sock = await aiohappyeyeballs.start_connection(
            infos, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY_S, interleave=1, loop=loop,
            socket_factory=make,
        )  # fmt: skip
        if self.closed:  # the Transport was left while this connect was under way
            sock.close()
            raise ConnectionAbortedError("the transport was closed while connecting")
        return sock
