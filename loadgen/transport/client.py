"""The one HTTP client of a process: a shared aiohttp session with unlimited keep-alive pool."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter_ns
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from loadgen.transport.config import TargetConfig
from loadgen.transport.exchange import WIRE_ERRORS, HttpExchange, map_error
from loadgen.transport.payload import SegmentsPayload

__all__ = ["PostExchange", "SocketFactory", "Transport"]

# aiohttp's (3.12+) socket_factory hook: an addrinfo tuple in, an unconnected socket out.
SocketFactory = Callable[[tuple[Any, ...]], socket.socket]


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


class Transport:
    """Sends requests to one target; use `async with Transport(target) as t:`."""

    def __init__(
        self,
        target: TargetConfig,
        *,
        connector: aiohttp.BaseConnector | None = None,
        socket_factory: SocketFactory | None = None,
    ) -> None:
        """`connector`: a pre-built one the caller owns and closes; else one is made here."""
        self.target = target
        self._connector = connector
        self._socket_factory = socket_factory
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The live aiohttp session; RuntimeError outside `async with`."""
        if self._session is None:
            raise RuntimeError("Transport is not open: use `async with Transport(...)`")
        return self._session

    async def __aenter__(self) -> Transport:
        target = self.target
        owned = self._connector is None
        connector = self._connector
        if connector is None:
            extra: dict[str, Any] = {}
            if self._socket_factory is not None:
                extra["socket_factory"] = self._socket_factory
            # limit=0: thousands of concurrent streams must never queue for a pool slot.
            connector = aiohttp.TCPConnector(
                limit=0, ssl=target.verify_tls, keepalive_timeout=30, **extra
            )
        self._session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=owned,
            headers=target.request_headers(),
            timeout=aiohttp.ClientTimeout(
                total=target.request_timeout_s, sock_connect=target.connect_timeout_s
            ),
            json_serialize=_json_text,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def post(
        self,
        path: str,
        body: bytes | Sequence[bytes],
        headers: Mapping[str, str] | None = None,
    ) -> PostExchange:
        """POST `body` (bytes, or segments sent back to back); `async with` it for the reply."""
        segments = (body,) if isinstance(body, bytes) else body
        return PostExchange(self, self.target.url(path), SegmentsPayload(segments), headers)

    async def get(self, path: str, *, timeout_s: float | None = None) -> tuple[int, bytes]:
        """GET `path` (relative to base_url, or absolute) and return its status and body."""
        limit = timeout_s or self.target.request_timeout_s
        timeout = aiohttp.ClientTimeout(total=limit, sock_connect=self.target.connect_timeout_s)
        after_headers = False
        try:
            async with self.session.get(self.target.url(path), timeout=timeout) as resp:
                after_headers = True
                return resp.status, await resp.read()
        except WIRE_ERRORS as exc:
            raise map_error(exc, after_headers=after_headers, timeout_s=limit) from exc


class PostExchange:
    """`async with transport.post(...) as exchange:` sends the request and yields the reply."""

    __slots__ = ("_exchange", "_headers", "_payload", "_transport", "_url")

    def __init__(
        self,
        transport: Transport,
        url: str,
        payload: SegmentsPayload,
        headers: Mapping[str, str] | None,
    ) -> None:
        self._transport = transport
        self._url = url
        self._payload = payload
        self._headers = headers
        self._exchange: HttpExchange | None = None

    async def __aenter__(self) -> HttpExchange:
        session = self._transport.session
        timeout_s = self._transport.target.request_timeout_s
        t_sent = perf_counter_ns()
        try:
            resp = await session.post(self._url, data=self._payload, headers=self._headers)
        except WIRE_ERRORS as exc:
            raise map_error(exc, after_headers=False, timeout_s=timeout_s) from exc
        self._exchange = HttpExchange(resp, t_sent, perf_counter_ns(), timeout_s)
        return self._exchange

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._exchange is None:
            return
        resp = self._exchange._resp
        if exc is None:
            resp.release()  # back to the pool when fully read; closed otherwise
        else:
            resp.close()  # an unread or broken body must not go back to the pool
