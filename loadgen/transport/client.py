"""The one HTTP client of a process: POSTs kernel-stamped or through aiohttp, GETs via aiohttp."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from time import perf_counter_ns
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from loadgen.errors import ConfigError
from loadgen.transport.aiohttp_pool import (
    ReuseAwareConnector,
    attempt,
    begin_attempt,
    honour_keep_alive,
    unanswered,
)
from loadgen.transport.config import TargetConfig
from loadgen.transport.exchange import WIRE_ERRORS, AiohttpExchange, HttpExchange, map_error
from loadgen.transport.kernel_clock import kernel_timestamps_available
from loadgen.transport.kernel_pool import SocketFactory
from loadgen.transport.kernel_stream import KernelHttp
from loadgen.transport.payload import SegmentsPayload

__all__ = ["PostExchange", "SocketFactory", "Transport"]


_NOT_OPEN = "Transport is not open: use `async with Transport(...)`"


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _use_kernel_timestamps(target: TargetConfig, wanted: bool | None) -> bool:
    """Whether POSTs go through the kernel-stamped client; ConfigError if asked and impossible.

    A fleet's replicas are read one way: all through the kernel-stamped client, or (one of
    them https) all through aiohttp, so that no comparison between them mixes clocks.
    """
    secure = [r.base_url for r in target.replica_configs() if not r.base_url.startswith("http://")]
    plain = not secure
    if wanted is None:
        return plain and kernel_timestamps_available()
    if wanted and not plain:
        raise ConfigError(
            f"kernel timestamps need a plain http:// target, not {secure[0]}; "
            "https targets are read through aiohttp (leave kernel_timestamps unset)"
        )
    if wanted and not kernel_timestamps_available():
        raise ConfigError("kernel receive timestamps (SO_TIMESTAMPNS) are not available here")
    return wanted


class Transport:
    """Sends requests to one target; use `async with Transport(target) as t:`.

    A target of several replicas (a fleet without a router) is balanced here: `pick` names
    the replica of each request, and every replica has its own keep-alive connections (both
    pools keep them per origin).
    """

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
        self._fresh: aiohttp.ClientSession | None = None
        self._kernel: KernelHttp | None = None
        self.replicas = target.replica_configs()  # (target,) for a single endpoint
        self._names = tuple(name for name, _ in target.replicas)
        self._next = 0  # round robin: the replica of the next request

    def pick(self, session: str) -> int:
        """The replica (index into `replicas`) of a request of session `session`, as balanced.

        round-robin: the next in turn, whatever the session; session: the same replica for
        every request of the session, by a hash of its id, stable across processes and runs.
        """
        count = len(self.replicas)
        if count == 1:
            return 0
        if self.target.balance == "session":
            return zlib.crc32(session.encode()) % count
        turn = self._next
        self._next = (turn + 1) % count
        return turn

    def replica_name(self, replica: int) -> str | None:
        """The name of replica `replica`; None for a single endpoint (it has no replicas)."""
        return self._names[replica] if self._names else None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The live aiohttp session; RuntimeError outside `async with`."""
        if self._session is None:
            raise RuntimeError(_NOT_OPEN)
        return self._session

    @property
    def fresh_session(self) -> aiohttp.ClientSession:
        """A session whose every request gets a new connection, closed after its reply."""
        # For the one retry of a POST whose pooled connection the server had closed: the
        # main pool cannot be asked for a new connection while it holds idle ones. Retries
        # are rare, so these connections are not kept.
        if self._fresh is None:
            if self._session is None:
                raise RuntimeError(_NOT_OPEN)
            connector = aiohttp.TCPConnector(
                limit=0, ssl=self.target.verify_tls, force_close=True, **self._factory_arg()
            )
            self._fresh = self._new_session(connector, owned=True)
        return self._fresh

    async def __aenter__(self) -> Transport:
        owned = self._connector is None
        connector = self._connector
        if connector is None:
            # limit=0: thousands of concurrent streams must never queue for a pool slot.
            connector = ReuseAwareConnector(
                limit=0, ssl=self.target.verify_tls, **self._factory_arg()
            )
        self._session = self._new_session(connector, owned=owned)
        if self.kernel_timestamps:
            self._kernel = KernelHttp(self.target, self._socket_factory)
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
        if self._fresh is not None:
            await self._fresh.close()
            self._fresh = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _factory_arg(self) -> dict[str, Any]:
        if self._socket_factory is None:
            return {}
        return {"socket_factory": self._socket_factory}

    def _new_session(
        self, connector: aiohttp.BaseConnector, *, owned: bool
    ) -> aiohttp.ClientSession:
        target = self.target
        return aiohttp.ClientSession(
            connector=connector,
            connector_owner=owned,
            headers=target.request_headers(),
            timeout=aiohttp.ClientTimeout(
                total=target.request_timeout_s, sock_connect=target.connect_timeout_s
            ),
            json_serialize=_json_text,
        )

    def post(
        self,
        path: str,
        body: bytes | Sequence[bytes],
        headers: Mapping[str, str] | None = None,
        replica: int = 0,
    ) -> AbstractAsyncContextManager[HttpExchange]:
        """POST `body` (bytes, or segments sent back to back) to `replica` (see `pick`);
        `async with` it for the reply."""
        segments = (body,) if isinstance(body, bytes) else body
        url = self.replicas[replica].url(path)
        if self._kernel is not None and url.startswith("http://"):
            return self._kernel.post(url, segments, headers)
        return PostExchange(self, url, segments, headers)

    async def get(
        self, path: str, *, timeout_s: float | None = None, replica: int = 0
    ) -> tuple[int, bytes]:
        """GET `path` (relative to `replica`'s base_url, or absolute): its status and body."""
        limit = timeout_s or self.target.request_timeout_s
        timeout = aiohttp.ClientTimeout(total=limit, sock_connect=self.target.connect_timeout_s)
        after_headers = False
        url = self.replicas[replica].url(path)
        try:
            async with self.session.get(url, timeout=timeout) as resp:
                after_headers = True
                return resp.status, await resp.read()
        except WIRE_ERRORS as exc:
            raise map_error(exc, after_headers=after_headers, timeout_s=limit) from exc


class PostExchange:
    """`async with transport.post(...) as exchange:` through aiohttp; yields the reply."""

    __slots__ = ("_exchange", "_headers", "_segments", "_transport", "_url")

    def __init__(
        self,
        transport: Transport,
        url: str,
        segments: Sequence[bytes],
        headers: Mapping[str, str] | None,
    ) -> None:
        self._transport = transport
        self._url = url
        self._segments = segments
        self._headers = headers
        self._exchange: AiohttpExchange | None = None

    async def __aenter__(self) -> AiohttpExchange:
        transport = self._transport
        session = transport.session
        timeout_s = transport.target.request_timeout_s
        t_sent = perf_counter_ns()
        begin_attempt()
        try:
            resp = await session.post(
                self._url,
                data=SegmentsPayload(self._segments),
                headers=self._headers,
                allow_redirects=False,
            )
        except WIRE_ERRORS as exc:
            pooled = attempt()
            if pooled is None or not pooled.reused or not unanswered(exc):
                raise map_error(exc, after_headers=False, timeout_s=timeout_s) from exc
            # The server closed the pooled connection before our request reached it
            # (llama-server after every streamed reply; uvicorn at its idle timeout): not
            # its failure. Retried once on a new connection, whose failure then counts,
            # within what is left of the request's timeout; timed from the retry.
            left_s = timeout_s - (perf_counter_ns() - t_sent) / 1e9
            t_sent = perf_counter_ns()
            resp = await self._retry(max(left_s, 1e-3), timeout_s)
        else:
            honour_keep_alive(resp.headers)
        self._exchange = AiohttpExchange(resp, t_sent, perf_counter_ns(), timeout_s)
        return self._exchange

    async def _retry(self, left_s: float, timeout_s: float) -> aiohttp.ClientResponse:
        transport = self._transport
        timeout = aiohttp.ClientTimeout(
            total=left_s, sock_connect=transport.target.connect_timeout_s
        )
        try:
            return await transport.fresh_session.post(
                self._url,
                data=SegmentsPayload(self._segments),
                headers=self._headers,
                timeout=timeout,
                # As the kernel-stamped path: a redirected POST is the server's answer.
                allow_redirects=False,
            )
        except WIRE_ERRORS as exc:
            raise map_error(exc, after_headers=False, timeout_s=timeout_s) from exc

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
