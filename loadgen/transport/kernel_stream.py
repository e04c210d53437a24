"""A streaming HTTP/1.1 POST over plain http:// whose events carry kernel receive times."""

# An event-loop client stamps bytes when the loop gets round to them: with N streams
# receiving a token in the same decode step, the last is stamped about N x 20 us late
# (about 20 ms at 1,000 streams), and which streams land late changes every step, so
# inter-token latencies inherit the delay as error. Here each read is stamped with the time
# the kernel received it (kernel_clock), and each SSE event with the stamp of the read that
# completed it, so the loop's backlog no longer shows in the timings. Failures map onto
# TransportError kinds as the aiohttp path's do. What it cannot undo: a loop that falls a
# whole decode step behind finds two tokens already merged into one read (the kernel keeps
# the later stamp when it coalesces queued segments), so both carry the later time.

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from time import perf_counter_ns
from types import TracebackType

from loadgen.transport.config import TargetConfig
from loadgen.transport.errors import TransportError
from loadgen.transport.exchange import HttpExchange, map_error
from loadgen.transport.http1_body import BodyDecoder, body_decoder
from loadgen.transport.http1_head import (
    Origin,
    ProtocolError,
    RequestTemplate,
    ResponseHead,
    origin,
)
from loadgen.transport.kernel_conn import KernelConnection, PeerClosedError
from loadgen.transport.kernel_pool import ConnectionPool, ConnectTimeoutError, SocketFactory
from loadgen.transport.sse import SSEEvent, SSEParser

__all__ = ["KernelExchange", "KernelHttp", "KernelPost", "NoReplyError"]

_FAILURES = (OSError, TimeoutError, ProtocolError)


def _failure(exc: BaseException, *, after_headers: bool, timeout_s: float) -> TransportError:
    if isinstance(exc, ConnectTimeoutError):
        return TransportError("connection_error", f"connect timed out ({exc})")
    return map_error(exc, after_headers=after_headers, timeout_s=timeout_s)


class KernelHttp:
    """The kernel-stamped client of one Transport: a connection pool and request templates."""

    def __init__(self, target: TargetConfig, socket_factory: SocketFactory | None) -> None:
        """`socket_factory`: makes each unconnected socket (native ones under Locust)."""
        self.target = target
        self.pool = ConnectionPool(socket_factory)
        self._templates: dict[str, RequestTemplate] = {}

    def post(
        self, url: str, segments: Sequence[bytes], headers: Mapping[str, str] | None
    ) -> KernelPost:
        """POST `segments` to the http:// `url`; `async with` it for the reply."""
        where = origin(url)
        template = self._templates.get(where.host_header)
        if template is None:
            template = RequestTemplate(where.host_header, self.target.request_headers())
            self._templates[where.host_header] = template
        head = template.head(where.target, sum(map(len, segments)), headers)
        return KernelPost(self, where, [head, *segments])

    def close(self) -> None:
        """Close every connection, idle or in use."""
        self.pool.close()


class KernelPost:
    """`async with client.post(...) as exchange:` sends the request and yields the reply."""

    __slots__ = ("_buffers", "_client", "_conn", "_exchange", "_origin")

    def __init__(self, client: KernelHttp, where: Origin, buffers: list[bytes]) -> None:
        self._client = client
        self._origin = where
        self._buffers = buffers
        self._conn: KernelConnection | None = None
        self._exchange: KernelExchange | None = None

    async def __aenter__(self) -> KernelExchange:
        client = self._client
        target = client.target
        timeout_s = target.request_timeout_s
        # One deadline for connect, send, head and body, as aiohttp's total timeout; a retry
        # shares it.
        deadline = asyncio.get_running_loop().time() + timeout_s
        where = self._origin
        fresh = False
        while True:
            t_sent = perf_counter_ns()  # so a retried request is timed from its retry
            try:
                conn = await client.pool.acquire(
                    where.host, where.port, target.connect_timeout_s, deadline, fresh=fresh
                )
            except _FAILURES as exc:
                raise _failure(exc, after_headers=False, timeout_s=timeout_s) from exc
            self._conn = conn
            conn.arm(deadline)
            try:
                head, rest, t_head = await _request_head(conn, self._buffers)
                decoder = body_decoder(head)
            except BaseException as exc:
                conn.close()
                if isinstance(exc, NoReplyError) and conn.reused:
                    # The server closed the pooled connection before our request reached it
                    # (llama-server after every streamed reply; uvicorn at its idle timeout):
                    # not the server's failure. Retried once, on a new connection, whose
                    # failure then counts (a new connection is never `reused`).
                    fresh = True
                    continue
                if isinstance(exc, _FAILURES):
                    raise _failure(exc, after_headers=False, timeout_s=timeout_s) from exc
                raise
            self._exchange = KernelExchange(
                conn, head, decoder, rest, t_sent, max(t_head, t_sent), timeout_s
            )
            return self._exchange

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, exchange = self._conn, self._exchange
        if conn is None:
            return
        conn.disarm()
        if exc is None and exchange is not None and exchange.reusable:
            where = self._origin
            self._client.pool.release(conn, where.host, where.port, exchange.idle_s)
        else:
            conn.close()  # an unread or broken body must not go back to the pool


class NoReplyError(PeerClosedError):
    """The connection closed or was reset before a single byte of the reply arrived."""


async def _request_head(
    conn: KernelConnection, buffers: list[bytes]
) -> tuple[ResponseHead, bytes, int]:
    """Send the request; the final reply head, the bytes after it, the stamp that completed it."""
    try:
        await conn.send(buffers)
    except OSError as exc:
        # A server may answer early (413, 400) and stop reading the body: with its reply
        # already here, that reply is the outcome, as aiohttp would report it.
        if not conn.has_unread:
            if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                raise NoReplyError(f"connection closed while sending the request ({exc})") from exc
            raise
    return await _read_head(conn)


async def _read_head(conn: KernelConnection) -> tuple[ResponseHead, bytes, int]:
    """The final (non-1xx) response head, the bytes after it, and the stamp that completed it."""
    buf = b""
    t_ns = 0
    answered = False  # a reply byte arrived: a close from here on is the server's doing
    while True:
        parsed = ResponseHead.parse(buf) if buf else None
        if parsed is not None:
            head, body_at = parsed
            buf = buf[body_at:]
            if 100 <= head.status < 200 and head.status != 101:
                continue  # 100 Continue, 103 Early Hints: the real head follows
            return head, buf, t_ns
        try:
            got = await conn.receive()
        except ConnectionResetError as exc:
            if answered:
                raise
            raise NoReplyError(f"connection reset before any reply ({exc})") from exc
        if got is None:
            if answered:
                raise PeerClosedError("server closed the connection before a complete reply head")
            raise NoReplyError("server closed the connection before replying")
        t_ns, data = got
        answered = True
        buf = buf + data if buf else data


class KernelExchange(HttpExchange):
    """A response read off a KernelConnection; events are stamped with kernel receive times."""

    __slots__ = ("_conn", "_decoder", "_head", "_rest", "_timeout_s")

    def __init__(
        self,
        conn: KernelConnection,
        head: ResponseHead,
        decoder: BodyDecoder,
        rest: bytes,
        t_sent_ns: int,
        t_headers_ns: int,
        timeout_s: float,
    ) -> None:
        super().__init__(head.status, head.headers, t_sent_ns, t_headers_ns)
        self._conn = conn
        self._head = head
        self._decoder = decoder
        self._rest: bytes | None = rest  # body bytes that came in the head's read
        self._timeout_s = timeout_s

    @property
    def idle_s(self) -> float | None:
        """How long the server's Keep-Alive header lets the connection idle, if it says."""
        return self._head.idle_s

    @property
    def reusable(self) -> bool:
        """The body was read to its end and the connection can carry another request."""
        return (
            self._rest is None
            and self._decoder.done
            and self._decoder.reusable
            and self._head.keep_alive
            and self._conn.clean
        )

    async def read(self) -> bytes:
        """The whole body."""
        parts: list[bytes] = []
        while (got := await self._next()) is not None:
            parts += got[1]
        return b"".join(parts)

    async def events(self) -> AsyncIterator[SSEEvent]:
        """The body's server-sent events, each stamped with its last read's kernel receive time."""
        feed = SSEParser().feed
        while (got := await self._next()) is not None:
            t_ns, pieces = got
            for piece in pieces:
                try:
                    events = feed(piece)
                except TransportError:
                    self._conn.close()  # an event past the parser's cap: the body is abandoned
                    raise
                for event, data in events:
                    yield SSEEvent(t_ns, event, data)

    async def _next(self) -> tuple[int, list[bytes]] | None:
        """The body bytes of the next read and its stamp; None once the body has ended."""
        decoder = self._decoder
        try:
            if self._rest is not None:
                rest, self._rest = self._rest, None
                if rest:
                    return self.t_headers_ns, decoder.feed(rest)
            if decoder.done:
                return None
            if decoder.error is not None:
                raise decoder.error
            got = await self._conn.receive()
            if got is not None:
                return got[0], decoder.feed(got[1])
            tail = decoder.end_of_stream()
            return (perf_counter_ns(), tail) if tail else None
        except _FAILURES as exc:
            self._conn.close()
            raise _failure(exc, after_headers=True, timeout_s=self._timeout_s) from exc
