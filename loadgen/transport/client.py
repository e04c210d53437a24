"""The one HTTP client of a process: POSTs kernel-stamped or through aiohttp, GETs via aiohttp."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from time import perf_counter_ns
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from loadgen.errors import ConfigError
from loadgen.transport.config import TargetConfig
from loadgen.transport.exchange import WIRE_ERRORS, AiohttpExchange, HttpExchange, map_error
from loadgen.transport.kernel_clock import kernel_timestamps_available
from loadgen.transport.kernel_pool import SocketFactory
from loadgen.transport.kernel_stream import KernelHttp
from loadgen.transport.payload import SegmentsPayload

__all__ = ["PostExchange", "SocketFactory", "Transport"]


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _use_kernel_timestamps(target: TargetConfig, wanted: bool | None) -> bool:
    """Whether POSTs go through the kernel-stamped client; ConfigError if asked and impossible."""
    plain = target.base_url.startswith("http://")
    if wanted is None:
        return plain and kernel_timestamps_available()
    if wanted and not plain:
        raise ConfigError(
            f"kernel timestamps need a plain http:// target, not {target.base_url}; "
            "https targets are read through aiohttp (leave kernel_timestamps unset)"
        )
    if wanted and not kernel_timestamps_available():
        raise ConfigError("kernel receive timestamps (SO_TIMESTAMPNS) are not available here")
    return wanted


class Transport:
    """Sends requests to one target; use `async with Transport(target) as t:`."""

    def __init__(
        self,
        target: TargetConfig,
        *,
        connector: aiohttp.BaseConnector | None = None,
        socket_factory: SocketFactory | None = None,
        kernel_timestamps: bool | None = None,
    ) -> None:
        """`connector`: aiohttp's, owned by the caller; `kernel_timestamps`: see below."""
        # kernel_timestamps: POST through the kernel-stamped HTTP/1.1 client (True), through
        # aiohttp (False), or None for target.kernel_timestamps (None there too: on for
        # http:// targets where SO_TIMESTAMPNS works). GETs (discovery, /metrics) always use
        # aiohttp: their timing is never measured, and it keeps https-only features there.
        self.target = target
        wanted = target.kernel_timestamps if kernel_timestamps is None else kernel_timestamps
        self.kernel_timestamps = _use_kernel_timestamps(target, wanted)
        self._connector = connector
        self._socket_factory = socket_factory
        self._session: aiohttp.ClientSession | None = None
        self._kernel: KernelHttp | None = None

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
        if self.kernel_timestamps:
            self._kernel = KernelHttp(target, self._socket_factory)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def post(
        self,
        path: str,
        body: bytes | Sequence[bytes],
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[HttpExchange]:
        """POST `body` (bytes, or segments sent back to back); `async with` it for the reply."""
        segments = (body,) if isinstance(body, bytes) else body
        url = self.target.url(path)
        if self._kernel is not None and url.startswith("http://"):
            return self._kernel.post(url, segments, headers)
        return PostExchange(self, url, SegmentsPayload(segments), headers)

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
    """`async with transport.post(...) as exchange:` through aiohttp; yields the reply."""

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
        self._exchange: AiohttpExchange | None = None

    async def __aenter__(self) -> AiohttpExchange:
        session = self._transport.session
        timeout_s = self._transport.target.request_timeout_s
        t_sent = perf_counter_ns()
        try:
            resp = await session.post(self._url, data=self._payload, headers=self._headers)
        except WIRE_ERRORS as exc:
            raise map_error(exc, after_headers=False, timeout_s=timeout_s) from exc
        self._exchange = AiohttpExchange(resp, t_sent, perf_counter_ns(), timeout_s)
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
