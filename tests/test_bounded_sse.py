"""An SSE event that never ends is cut off at a cap, on both transports; its connection closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

import loadgen.transport.exchange as exchange_module
import loadgen.transport.kernel_stream as kernel_module
from loadgen.transport import SSEParser, TargetConfig, Transport, TransportError
from loadgen.transport.kernel_clock import kernel_timestamps_available
from loadgen.transport.sse import MAX_EVENT_BYTES

LINE_BYTES = 64 * 1024 * 1024  # the endless line: four times the cap
WRITE_BYTES = 256 * 1024


def _held(parser: SSEParser) -> int:
    return sum(map(len, parser._pieces))


def test_the_default_cap_is_16_mib() -> None:
    assert MAX_EVENT_BYTES == 16 * 1024 * 1024
    assert SSEParser()._cap == MAX_EVENT_BYTES


def test_an_unfinished_event_past_the_cap_fails_as_stream_truncated_and_drops_its_bytes() -> None:
    parser = SSEParser(max_event_bytes=1000)
    assert parser.feed(b"data: ok\n\ndata: ") == [(b"", b"ok")]
    for _ in range(9):
        assert parser.feed(b"x" * 100) == []  # 6 + 900 bytes held
    assert _held(parser) == 906
    with pytest.raises(TransportError) as caught:
        parser.feed(b"x" * 100)
    assert caught.value.kind == "stream_truncated"
    assert "1000 bytes" in str(caught.value)
    assert _held(parser) == 0


def test_one_read_past_the_cap_with_no_event_end_fails_too() -> None:
    parser = SSEParser(max_event_bytes=1000)
    with pytest.raises(TransportError) as caught:
        parser.feed(b"data: ok\n\ndata: " + b"x" * 2000)
    assert caught.value.kind == "stream_truncated"


def test_an_event_of_exactly_the_cap_still_parses() -> None:
    parser = SSEParser(max_event_bytes=1000)
    event = b"data: " + b"x" * 994
    for i in range(0, 1000, 100):
        assert parser.feed(event[i : i + 100]) == []
    assert parser.feed(b"\n\n") == [(b"", b"x" * 994)]


def test_a_long_stream_of_small_events_never_counts_toward_the_cap() -> None:
    parser = SSEParser(max_event_bytes=1000)
    stream = b"".join(b"data: %d\n\n" % i for i in range(2000))  # about 20 kB
    out: list[tuple[bytes, bytes]] = []
    for i in range(0, len(stream), 7):
        out += parser.feed(stream[i : i + 7])
    assert len(out) == 2000
    assert out[-1] == (b"", b"1999")


async def _read_events(transport: Transport, into: list[bytes]) -> None:
    async with transport.post("s", b"{}") as exchange:
        async for event in exchange.events():
            into.append(event.data)


class _Recording(SSEParser):
    """An SSEParser that remembers the most bytes it ever held between feeds."""

    __slots__ = ()
    most = 0

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return super().feed(chunk)
        finally:
            _Recording.most = max(_Recording.most, _held(self))


@pytest_asyncio.fixture
async def endless_line() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A server whose stream is one 64 MiB line; `seen` says how much of it went out."""
    seen: dict[str, Any] = {"sent": 0, "ended": asyncio.Event()}

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await resp.write(b'data: {"a":1}\n\ndata: ')
            block = b"x" * WRITE_BYTES
            while seen["sent"] < LINE_BYTES:
                await resp.write(block)
                seen["sent"] += len(block)
            await resp.write(b"\n\ndata: [DONE]\n\n")
        finally:
            seen["ended"].set()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.mark.parametrize("kernel", [False, True], ids=["aiohttp", "kernel"])
async def test_an_endless_line_fails_the_stream_at_the_cap_and_closes_the_connection(
    endless_line: tuple[str, dict[str, Any]], kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kernel and not kernel_timestamps_available():
        pytest.skip("kernel receive timestamps are not available here")
    monkeypatch.setattr(exchange_module, "SSEParser", _Recording)
    monkeypatch.setattr(kernel_module, "SSEParser", _Recording)
    _Recording.most = 0
    url, seen = endless_line
    received: list[bytes] = []
    target = TargetConfig.from_url(url, request_timeout_s=60)
    async with Transport(target, kernel_timestamps=kernel) as transport:
        with pytest.raises(TransportError) as caught:
            await _read_events(transport, received)
        assert caught.value.kind == "stream_truncated"
        assert received == [b'{"a":1}']
        # The parser never held more than the cap, so memory stayed bounded by it.
        assert 0 < _Recording.most <= MAX_EVENT_BYTES
        # The connection was closed, not pooled or left open: the server's writes fail
        # long before the rest of the line has gone out (what is in flight in the socket
        # buffers is a few MiB at most).
        await asyncio.wait_for(seen["ended"].wait(), 20)
        assert seen["sent"] < LINE_BYTES
