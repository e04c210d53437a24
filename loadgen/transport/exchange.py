"""One HTTP request in flight: status, headers, timestamps, and its body as bytes or events."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from time import perf_counter_ns

import aiohttp

from loadgen.transport.errors import TransportError
from loadgen.transport.sse import SSEEvent, SSEParser

__all__ = ["WIRE_ERRORS", "AiohttpExchange", "HttpExchange", "map_error"]

# Everything aiohttp and the socket layer raise for a failed exchange (TimeoutError covers
# asyncio's and aiohttp's timeouts; OSError covers resets that escape aiohttp unwrapped).
WIRE_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


def map_error(exc: BaseException, *, after_headers: bool, timeout_s: float) -> TransportError:
    """The TransportError for a library failure; raise it `from exc`."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # The server was never reached, so this is about reachability, not slowness.
        return TransportError("connection_error", f"connect timed out ({detail})")
    if isinstance(exc, TimeoutError):
        return TransportError("timeout", f"no complete reply within {timeout_s:g}s ({detail})")
    if after_headers:
        return TransportError("stream_truncated", f"connection dropped mid-body ({detail})")
    return TransportError("connection_error", detail)


class HttpExchange(ABC):
    """A response whose headers have arrived; the body is read with read() or events()."""

    __slots__ = ("headers", "status", "t_headers_ns", "t_sent_ns")

    def __init__(
        self, status: int, headers: Mapping[str, str], t_sent_ns: int, t_headers_ns: int
    ) -> None:
        self.status = status
        self.headers = headers  # case-insensitive
        # perf_counter_ns just before the request was sent; when a pooled connection the
        # server had closed made it retry on a new one (once), just before the retry.
        self.t_sent_ns = t_sent_ns
        self.t_headers_ns = t_headers_ns  # perf_counter_ns when the status and headers arrived

    @abstractmethod
    async def read(self) -> bytes:
        """The whole body."""

    @abstractmethod
    def events(self) -> AsyncIterator[SSEEvent]:
        """The body's server-sent events, each stamped with when its bytes arrived."""


class AiohttpExchange(HttpExchange):
    """An exchange read through aiohttp: stamped when the event loop gets the bytes."""

    __slots__ = ("_resp", "_timeout_s")

    def __init__(
        self, resp: aiohttp.ClientResponse, t_sent_ns: int, t_headers_ns: int, timeout_s: float
    ) -> None:
        super().__init__(resp.status, resp.headers, t_sent_ns, t_headers_ns)
        self._resp = resp
        self._timeout_s = timeout_s

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return await self._resp.read()
        except WIRE_ERRORS as exc:
            raise map_error(exc, after_headers=True, timeout_s=self._timeout_s) from exc

    async def events(self) -> AsyncIterator[SSEEvent]:
        """The body's server-sent events, each stamped with when its bytes arrived."""
        parser = SSEParser()
        content = self._resp.content
        try:
            while chunk := await content.readany():
                t_ns = perf_counter_ns()
                try:
                    events = parser.feed(chunk)
                except TransportError:
                    # An event past the parser's cap: the rest of the body will never be
                    # read, so the connection must not go back to the pool.
                    self._resp.close()
                    raise
                for event, data in events:
                    yield SSEEvent(t_ns, event, data)
        except WIRE_ERRORS as exc:
            raise map_error(exc, after_headers=True, timeout_s=self._timeout_s) from exc
