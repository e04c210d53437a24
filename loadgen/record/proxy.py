"""`agentload record`'s pass-through proxy: relays everything, records the LLM calls.

Every request goes to the upstream with its method, path, query, body and headers
(Authorization included; hop-by-hop headers are dropped and `Accept-Encoding: identity` is
asked for, so that the recorder can read replies and no stream is held back by
compression). The reply comes back with its status and headers, and its body is written to
the client chunk by chunk as it is read, never buffered. The request body is never changed.

For POST .../chat/completions, .../completions and .../responses the proxy keeps what it
relayed (the body, each reply chunk and when it read it) and, once the reply has ended,
hands it to the Recorder, which does all analysis and writing off the relay's path.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from loadgen.errors import UsageError
from loadgen.record.prompts import API_OF_PATH
from loadgen.record.recorder import DEFAULT_SESSION_HEADERS, Exchange, Recorder
from loadgen.record.trace_file import TraceWriter

__all__ = ["RecordProxy", "upstream_base"]

# Headers about one hop of the connection, never forwarded either way.
_HOP = frozenset(
    (
        "connection", "keep-alive", "proxy-connection", "proxy-authorization",
        "proxy-authenticate", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    )
)  # fmt: skip
# Set by the proxy's own client from the body and URL it sends.
_REQUEST_DROPPED = _HOP | {"host", "content-length", "expect", "accept-encoding"}
_RESPONSE_DROPPED = _HOP | {"content-length"}
MAX_BODY_BYTES = 256 << 20  # a request body larger than this gets 413 from the proxy itself


def upstream_base(upstream: str) -> URL:
    """The upstream's base URL, checked: http(s), a host, no query, fragment or credentials."""
    try:
        url = URL(upstream)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--upstream {upstream!r}: not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(
            f"--upstream {upstream!r}: give the server's base URL, e.g. http://localhost:8000/v1"
        )
    if url.query_string or url.fragment:
        raise UsageError(f"--upstream {upstream!r}: no query string or fragment, please")
    if url.user is not None or url.password is not None:
        raise UsageError(
            "--upstream: no credentials in the URL, please; the client's own Authorization "
            "header goes to the upstream as it is"
        )
    return url


def _dropped(headers: CIMultiDictProxy[str], always: frozenset[str]) -> frozenset[str]:
    named = {h.strip().lower() for v in headers.getall("Connection", ()) for h in v.split(",")}
    return always | named if named else always


class RecordProxy:
    """A recording pass-through proxy on host:port in front of `upstream`."""

    def __init__(
        self,
        upstream: str,
        out: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        block_size: int = 64,
        keep_text: bool = False,
        session_headers: Iterable[str] = DEFAULT_SESSION_HEADERS,
        grace_s: float = 10.0,
    ) -> None:
        if block_size < 1:
            raise UsageError(f"--block-size {block_size}: use a whole number of tokens, >= 1")
        self.upstream = upstream_base(upstream)
        self._origin = self.upstream.origin()
        self._prefix = self.upstream.raw_path.rstrip("/")
        self.out = out
        self.host = host
        self.port = port
        self.block_size = block_size
        self.keep_text = keep_text
        self.session_headers = tuple(session_headers)
        self.grace_s = grace_s
        self.recorder: Recorder | None = None
        self._client: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None

    @property
    def base_url(self) -> str:
        """Where clients point instead of the upstream: its URL, host and port swapped."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self._prefix}"

    async def start(self) -> None:
        """Check the trace can be written, listen, then start the trace (its header)."""
        try:
            writer = TraceWriter(self.out, self.block_size, source="agentload record")
        except OSError as exc:
            raise UsageError(f"--out {self.out}: cannot write it ({exc.strerror or exc})") from None
        self.recorder = Recorder(writer, block_size=self.block_size, keep_text=self.keep_text)
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=self.grace_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        try:
            await site.start()
        except OSError:
            await self.stop()  # an earlier trace at --out is left as it was
            raise
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        # Calls relayed before this wait in the recorder's queue: none is lost.
        writer.begin()
        self.recorder.start()

    async def stop(self) -> None:
        """Stop listening, let calls in flight finish (up to grace_s), write the rest, close."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self.recorder is not None:
            await self.recorder.close()

    def _api_of(self, request: web.BaseRequest) -> str | None:
        if request.method != "POST":
            return None
        path = request.path.rstrip("/")
        for suffix, api in API_OF_PATH.items():
            if path.endswith("/" + suffix):
                return api
        return None

    def _url(self, request: web.BaseRequest) -> URL:
        # The path and query go as they came (still percent-encoded): the proxy's base URL
        # is the upstream's with only the scheme, host and port swapped.
        return URL(str(self._origin) + request.raw_path, encoded=True)

    def _key(self, headers: CIMultiDictProxy[str]) -> str | None:
        for name in self.session_headers:
            value = headers.get(name)
            if value:
                return value
        return None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        arrival = time.perf_counter_ns()
        api = self._api_of(request)
        recorder = self.recorder
        assert recorder is not None
        assert self._client is not None
        if api is not None:
            recorder.arrived(arrival)
        flowing = recorder.relay_waiting()
        try:
            return await self._forward(request, api, arrival, flowing)
        finally:
            flowing()  # nothing, where its first reply bytes went out already

    async def _forward(
        self, request: web.BaseRequest, api: str | None, arrival: int, flowing: Callable[[], None]
    ) -> web.StreamResponse:
        recorder = self.recorder
        assert recorder is not None
        assert self._client is not None
        body = await _read_body(request)
        if body is None:
            return _error(413, f"request body over {MAX_BODY_BYTES} bytes", "body_too_large")
        dropped = _dropped(request.headers, _REQUEST_DROPPED)
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in dropped
        )
        headers["Accept-Encoding"] = "identity"
        try:
            upstream = await self._send(request, headers, body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if api is not None:
                recorder.stats.unreachable += 1
            reason = f"the upstream {self._origin} is unreachable ({exc or type(exc).__name__})"
            return _error(502, reason, "upstream_unreachable")
        exchange = None
        if api is not None:
            exchange = Exchange(
                api=api,
                body=body,
                key=self._key(request.headers),
                arrival_ns=arrival,
                end_ns=arrival,
                status=upstream.status,
                stream=upstream.content_type == "text/event-stream",
                content_encoding=upstream.headers.get("Content-Encoding", ""),
                complete=False,
            )
        try:
            return await self._relay(request, upstream, exchange, flowing)
        finally:
            if exchange is not None:
                exchange.end_ns = time.perf_counter_ns()
                recorder.submit(exchange)
            if exchange is None or not exchange.complete:
                upstream.close()
            else:
                upstream.release()

    async def _send(
        self, request: web.BaseRequest, headers: CIMultiDict[str], body: bytes
    ) -> aiohttp.ClientResponse:
        """The upstream's response to the request; sent again once on a fresh connection when
        a pooled one turns out closed before any response came back."""
        assert self._client is not None
        data = body if body or request.method not in ("GET", "HEAD") else None
        for attempt in (0, 1):
            try:
                return await self._client.request(
                    request.method, self._url(request), headers=headers, data=data,
                    allow_redirects=False,
                )  # fmt: skip
            # llama-server closes a keep-alive connection after each streamed reply (as idle
            # servers do at their timeout); the pool only finds out on the next request sent
            # on it, which the upstream then never answered: it is sent again, once.
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _relay(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        ex: Exchange | None,
        flowing: Callable[[], None],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        dropped = _dropped(upstream.headers, _RESPONSE_DROPPED)
        for name, value in upstream.headers.items():
            if name.lower() not in dropped:
                resp.headers.add(name, value)
        if upstream.content_length is not None and "Transfer-Encoding" not in upstream.headers:
            resp.content_length = upstream.content_length
        await resp.prepare(request)
        reader = upstream.content
        while True:
            try:
                chunk = await reader.readany()
            except (aiohttp.ClientError, OSError, TimeoutError):
                # The upstream broke the reply: break the client's the same way.
                if request.transport is not None:
                    request.transport.close()
                return resp
            if not chunk:
                break
            read_at = time.perf_counter_ns()
            try:
                await resp.write(chunk)
            except ConnectionError:
                return resp  # the client left
            flowing()
            if ex is not None:
                ex.chunks.append(chunk)
                ex.times.append(read_at)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
            if ex is not None:
                ex.complete = True
        return resp


async def _read_body(request: web.BaseRequest) -> bytes | None:
    """The whole request body (None past MAX_BODY_BYTES): agents send multi-megabyte prompts."""
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _error(status: int, reason: str, kind: str) -> web.Response:
    """The proxy's own error, in OpenAI's error shape."""
    return web.json_response(
        {"error": {"message": f"agentload record: {reason}", "type": kind, "code": status}},
        status=status,
    )
