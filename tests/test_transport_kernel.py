"""The kernel-stamped HTTP/1.1 client against real servers: same replies, framing, reuse, errors."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from itertools import accumulate
from time import perf_counter_ns
from typing import Any

import orjson
import pytest
from aiohttp import web
from raw_servers import (
    RawServe,
    Serve,
    closed_port,
    frame,
    kernel_socketpairs,
    read_request,
    reset,
)

from loadgen.errors import ConfigError
from loadgen.protocol import (
    Api,
    FailureKind,
    Reply,
    ToolDefinition,
    chat_body,
    completions_body,
    encode_message,
    encode_tools,
    responses_body,
    send,
)
from loadgen.sim import PRESETS, SimServer
from loadgen.transport import (
    AiohttpExchange,
    KernelExchange,
    TargetConfig,
    Transport,
    TransportError,
)

StartSim = Callable[..., Awaitable[SimServer]]

MODEL = "agentload-sim"
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
READ = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
TOOLS = [ToolDefinition("read_file", READ, "Read a file")]


def _comparable(reply: Reply) -> dict[str, Any]:
    """What must not depend on the transport (ids and timestamps aside)."""
    return {
        "ok": reply.ok,
        "status": reply.status,
        "text": reply.text,
        "tool_calls": reply.tool_calls,
        "finish_reason": reply.finish_reason,
        "usage": reply.usage,
        "saw_done": reply.saw_done,
        "failures": reply.failures,
        "streamed": bool(reply.token_times_ns),
    }


BODIES: dict[str, tuple[Api, list[bytes]]] = {
    "chat-stream": ("chat", chat_body(MODEL, [encode_message("user", "hi")], max_tokens=60)),
    "chat-json": (
        "chat",
        chat_body(MODEL, [encode_message("user", "hi")], stream=False, max_tokens=30),
    ),
    "chat-tools": (
        "chat",
        chat_body(
            MODEL,
            [encode_message("user", "read")],
            tools=encode_tools(TOOLS, "chat"),
            tool_choice="required",
            seed=3,
        ),
    ),
    "responses-stream": ("responses", responses_body(MODEL, "hi", max_output_tokens=40)),
    "responses-tools": (
        "responses",
        responses_body(
            MODEL, "read", tools=encode_tools(TOOLS, "responses"), tool_choice="required"
        ),
    ),
    "completions-stream": ("completions", completions_body(MODEL, "hi", max_tokens=40)),
}


@pytest.mark.parametrize("case", list(BODIES))
async def test_replies_are_identical_through_both_paths(start_sim: StartSim, case: str) -> None:
    api, body = BODIES[case]
    replies = []
    for kernel in (True, False):
        server = await start_sim()  # one each, so prefix-cache state is the same
        target = TargetConfig.from_url(server.base_url)
        async with Transport(target, kernel_timestamps=kernel) as transport:
            assert transport.kernel_timestamps is kernel
            replies.append(await send(transport, api, body))
    kernel_reply, aiohttp_reply = replies
    assert kernel_reply.ok, kernel_reply.error
    assert _comparable(kernel_reply) == _comparable(aiohttp_reply)


async def test_the_kernel_path_is_the_default_for_http_and_can_be_switched_off(
    sim: SimServer,
) -> None:
    seen: dict[bool | None, type] = {}
    for choice in (None, False):
        async with (
            Transport(TargetConfig.from_url(sim.base_url), kernel_timestamps=choice) as transport,
            transport.post("models", b"{}") as exchange,
        ):
            await exchange.read()
            seen[choice] = type(exchange)
    assert seen == {None: KernelExchange, False: AiohttpExchange}
    off = TargetConfig.from_url(sim.base_url, kernel_timestamps=False)
    assert not Transport(off).kernel_timestamps
    assert Transport(off, kernel_timestamps=True).kernel_timestamps


def test_https_targets_stay_on_aiohttp() -> None:
    target = TargetConfig.from_url("https://api.example.com")
    assert not Transport(target).kernel_timestamps
    with pytest.raises(ConfigError, match="plain http://"):
        Transport(target, kernel_timestamps=True)


async def test_send_over_the_kernel_path_stamps_every_token_in_order(sim: SimServer) -> None:
    body = chat_body(MODEL, [encode_message("user", "hello")], max_tokens=80)
    async with Transport(TargetConfig.from_url(sim.base_url)) as transport:
        reply = await send(transport, "chat", body)
    assert reply.ok, reply.error
    times = reply.token_times_ns
    assert times
    assert times == sorted(times)
    assert reply.t_sent_ns < times[0] <= times[-1] <= reply.t_end_ns


async def test_event_stamps_are_monotonic_and_never_after_the_event_is_yielded(
    sim: SimServer,
) -> None:
    body = chat_body(MODEL, [encode_message("user", "hello")], max_tokens=200)
    async with (
        Transport(TargetConfig.from_url(sim.base_url)) as transport,
        transport.post("chat/completions", body) as exchange,
    ):
        stamps = [(event.t_ns, perf_counter_ns()) async for event in exchange.events()]
    assert len(stamps) > 20
    assert exchange.t_sent_ns <= exchange.t_headers_ns <= stamps[0][0]
    assert all(t <= yielded for t, yielded in stamps)
    assert [t for t, _ in stamps] == sorted(t for t, _ in stamps)


def _sse_thread(listener: socket.socket, sent_ns: list[int]) -> None:
    """Reply with two events 400 ms apart, noting perf_counter_ns just before each is sent."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(SSE_HEAD)
        time.sleep(0.05)
        sent_ns.append(perf_counter_ns())
        conn.sendall(frame(b"data: a\n\n"))
        time.sleep(0.4)
        sent_ns.append(perf_counter_ns())
        conn.sendall(frame(b"data: b\n\n") + b"0\r\n\r\n")
        conn.recv(1)  # until the client closes


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "aiohttp"])
async def test_stamps_are_when_the_bytes_arrived_not_when_the_busy_loop_read_them(
    kernel: bool,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    sent_ns: list[int] = []
    thread = threading.Thread(target=_sse_thread, args=(listener, sent_ns), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        target = TargetConfig.from_url(url)
        async with (
            Transport(target, kernel_timestamps=kernel) as transport,
            transport.post("s", b"{}") as exchange,
        ):
            time.sleep(0.3)  # a busy event loop: event a arrives meanwhile  # noqa: ASYNC251
            unblocked = perf_counter_ns()
            events = [event async for event in exchange.events()]
    finally:
        thread.join(5)
        listener.close()
    assert [e.data for e in events] == [b"a", b"b"]
    late_a, late_b = (e.t_ns - sent for e, sent in zip(events, sent_ns, strict=True))
    # Loose bounds (a loaded test machine can preempt the server thread between its stamp
    # and its send); the blocked loop makes event a's loop stamp about 250 ms late.
    if kernel:
        assert 0 <= late_a < 100_000_000 < unblocked - sent_ns[0]
    else:
        assert events[0].t_ns >= unblocked
    assert 0 <= late_b < 100_000_000


async def test_content_length_and_chunked_bodies_are_read_whole(serve: Serve) -> None:
    big = b"x" * 300_000

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/length"):
            return web.Response(body=big, content_type="application/json")
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(0, len(big), 70_000):
            await resp.write(big[i : i + 70_000])
        await resp.write_eof()
        return resp

    url = await serve(handler)
    async with Transport(TargetConfig.from_url(url)) as transport:
        for path, framing in (("length", "Content-Length"), ("chunked", "Transfer-Encoding")):
            async with transport.post(path, b"{}") as exchange:
                assert framing in exchange.headers
                assert await exchange.read() == big


async def test_close_delimited_and_gzip_bodies_are_read_whole(raw_serve: RawServe) -> None:
    import gzip

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"/gzip" in request:
            packed = gzip.compress(b"data: zipped\n\n" * 100)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: text/event-stream"
                b"\r\nContent-Length: %d\r\n\r\n%b" % (len(packed), packed)
            )
        else:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}")
        await writer.drain()
        writer.close()

    url = await raw_serve(handler)
    async with Transport(TargetConfig.from_url(url)) as transport:
        async with transport.post("plain", b"{}") as exchange:
            assert await exchange.read() == b"{}"
        async with transport.post("gzip", b"{}") as exchange:
            events = [event.data async for event in exchange.events()]
    assert events == [b"zipped"] * 100


async def test_events_split_across_reads_are_reassembled_and_stamped_when_complete(
    raw_serve: RawServe,
) -> None:
    # Chunk-size lines, CRLFs and an event's data all cut between TCP reads.
    frames = frame(b"data: one\n\n") + frame(b"data: tw") + frame(b"o\n\ndata: three\n\n")
    pieces = [frames[:2], frames[2:9], frames[9:20], frames[20:27], frames[27:31], frames[31:]]
    pieces.append(b"0\r\n\r\n")
    written: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for piece in pieces:
            await asyncio.sleep(0.05)  # the client reads each piece on its own
            written.append(perf_counter_ns())
            writer.write(piece)
            await writer.drain()
        await read_request(reader)
        writer.close()

    url = await raw_serve(handler)
    async with (
        Transport(TargetConfig.from_url(url)) as transport,
        transport.post("s", b"{}") as exchange,
    ):
        events = [event async for event in exchange.events()]
    assert [e.data for e in events] == [b"one", b"two", b"three"]

    piece_ends = list(accumulate(map(len, pieces)))
    for event, needle in zip(events, (b"one\n\n", b"o\n\n", b"three\n\n"), strict=True):
        # Stamped by the read of the piece holding the event's last byte, not an earlier one.
        end = frames.index(needle) + len(needle)
        completing = next(i for i, piece_end in enumerate(piece_ends) if piece_end >= end)
        assert 0 <= event.t_ns - written[completing] < 40_000_000  # pieces are 50 ms apart


async def test_keep_alive_connections_are_reused(serve: Serve) -> None:
    async def peer(request: web.Request) -> web.Response:
        await request.read()
        port = request.transport.get_extra_info("peername")[1] if request.transport else 0
        return web.json_response({"port": port})

    url = await serve(peer)
    async with Transport(TargetConfig.from_url(url)) as transport:

        async def port() -> int:
            async with transport.post("p", b"{}") as exchange:
                value: int = orjson.loads(await exchange.read())["port"]
                return value

        first = await port()
        assert [await port() for _ in range(3)] == [first] * 3
        concurrent = await asyncio.gather(port(), port(), port())
        assert len(set(concurrent)) == 3
        assert first in concurrent


async def test_connection_close_and_idle_closes_open_new_connections(raw_serve: RawServe) -> None:
    accepted = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        request = await read_request(reader)
        close = b"/close" in request
        extra = b"Connection: close\r\n" if close else b""
        writer.write(b"HTTP/1.1 200 OK\r\n%bContent-Length: 2\r\n\r\nok" % extra)
        await writer.drain()
        writer.close()  # a keep-alive timeout right after the reply, for the others

    url = await raw_serve(handler)
    async with Transport(TargetConfig.from_url(url)) as transport:
        for path in ("close", "close", "idle", "idle", "idle"):
            async with transport.post(path, b"{}") as exchange:
                assert await exchange.read() == b"ok"
            await asyncio.sleep(0.05)  # the idle close reaches the pooled connection
    assert accepted == 5


async def test_interim_1xx_replies_are_skipped(raw_serve: RawServe) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)
        writer.close()

    url = await raw_serve(handler)
    async with (
        Transport(TargetConfig.from_url(url)) as transport,
        transport.post("s", b"{}") as exchange,
    ):
        assert exchange.status == 201
        assert await exchange.read() == b"ok"


async def test_many_segments_and_a_large_body_arrive_intact(serve: Serve) -> None:
    async def digest(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(0)
        return web.json_response({"n": len(body), "sha": hashlib.sha256(body).hexdigest()})

    # More segments than IOV_MAX, and more bytes than a socket buffer: partial sendmsg calls.
    segments = [bytes([65 + i % 26]) * (i % 7000) for i in range(3000)]
    joined = b"".join(segments)
    url = await serve(digest)
    async with (
        Transport(TargetConfig.from_url(url)) as transport,
        transport.post("d", segments) as exchange,
    ):
        seen = orjson.loads(await exchange.read())
    assert seen == {"n": len(joined), "sha": hashlib.sha256(joined).hexdigest()}


async def test_headers_api_key_and_per_request_headers_are_sent(serve: Serve) -> None:
    async def echo(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(dict(request.headers))

    url = await serve(echo)
    target = TargetConfig.from_url(url, api_key="sk-k", headers={"X-Team": "a"})
    async with (
        Transport(target) as transport,
        transport.post("e", b"{}", {"X-Session": "s1", "X-Team": "b"}) as exchange,
    ):
        seen = orjson.loads(await exchange.read())
    assert seen["Authorization"] == "Bearer sk-k"
    assert seen["X-Session"] == "s1"
    assert seen["X-Team"] == "b"
    assert seen["Host"] == url.removeprefix("http://")
    assert seen["Content-Length"] == "2"
    assert seen["User-Agent"] == "agentload"


async def test_socket_factory_makes_the_kernel_sockets(sim: SimServer) -> None:
    made: list[socket.socket] = []

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _name, _address = addr_info
        made.append(socket.socket(family, kind, proto))
        return made[-1]

    target = TargetConfig.from_url(sim.base_url)
    async with Transport(target, socket_factory=factory) as transport:
        reply = await send(transport, "chat", chat_body(MODEL, [encode_message("user", "x")]))
    assert reply.ok, reply.error
    assert len(made) == 1
    assert made[0].fileno() == -1  # closed with the transport


async def _consume(
    transport: Transport, path: str = "s", body: bytes | list[bytes] = b"{}", *, stream: bool
) -> list[bytes]:
    """POST and read the reply whole, or as events (their data returned)."""
    async with transport.post(path, body) as exchange:
        if stream:
            return [event.data async for event in exchange.events()]
        return [await exchange.read()]


async def _failure(transport: Transport, *, stream: bool = False) -> TransportError:
    with pytest.raises(TransportError) as caught:
        await _consume(transport, stream=stream)
    return caught.value


async def test_closed_port_is_a_connection_error() -> None:
    target = TargetConfig.from_url(f"http://127.0.0.1:{closed_port()}")
    async with Transport(target) as transport:
        error = await _failure(transport)
    assert error.kind == "connection_error"
    assert isinstance(error.__cause__, OSError)


@pytest.mark.parametrize(
    ("limits", "kind", "message"),
    [
        ({"connect_timeout_s": 0.2}, "connection_error", "connect timed out"),
        ({"request_timeout_s": 0.2}, "timeout", "no complete reply within 0.2s"),
    ],
)
async def test_a_connect_that_hangs_times_out(
    unanswering_address: tuple[str, int], limits: dict[str, float], kind: str, message: str
) -> None:
    host, port = unanswering_address
    async with Transport(TargetConfig.from_url(f"http://{host}:{port}", **limits)) as transport:
        error = await _failure(transport)
    assert error.kind == kind
    assert message in str(error)


@pytest.mark.parametrize("stalls", ["before-head", "after-head"])
async def test_a_stalled_reply_is_a_timeout(raw_serve: RawServe, stalls: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if stalls == "after-head":
            writer.write(SSE_HEAD + frame(b"data: one\n\n"))
        await read_request(reader)  # until the client gives up
        writer.close()

    url = await raw_serve(handler)
    async with Transport(TargetConfig.from_url(url, request_timeout_s=0.3)) as transport:
        started = perf_counter_ns()
        error = await _failure(transport, stream=True)
    assert error.kind == "timeout"
    assert 0.3 <= (perf_counter_ns() - started) / 1e9 < 2


@pytest.mark.parametrize("api", ["chat", "responses", "completions"])
async def test_simulator_stream_cut_is_stream_truncated(start_sim: StartSim, api: Api) -> None:
    server = await start_sim(faults={"stream_cut": 1.0})
    _, body = next(b for b in BODIES.values() if b[0] == api and b"stream" in b"".join(b[1]))
    async with Transport(TargetConfig.from_url(server.base_url)) as transport:
        reply = await send(transport, api, body)
        path = {"chat": "chat/completions", "responses": "responses"}.get(api, "completions")
        with pytest.raises(TransportError) as caught:
            await _consume(transport, path, body, stream=True)
    assert reply.failures == [FailureKind.STREAM_TRUNCATED]
    assert not reply.saw_done
    assert caught.value.kind == "stream_truncated"


@pytest.mark.parametrize("how", ["fin", "reset", "short-length", "bad-chunk"])
async def test_a_body_cut_short_is_stream_truncated(raw_serve: RawServe, how: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if how == "short-length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ndata: one\n\n")
        else:
            writer.write(SSE_HEAD + frame(b"data: one\n\n"))
        if how == "bad-chunk":
            writer.write(b"zz\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        if how == "reset":
            reset(writer)
        else:
            writer.close()

    url = await raw_serve(handler)
    received: list[bytes] = []

    async def read() -> None:
        async with transport.post("s", b"{}") as exchange:
            async for event in exchange.events():
                received.append(event.data)

    async with Transport(TargetConfig.from_url(url)) as transport:
        with pytest.raises(TransportError) as caught:
            await read()
    assert caught.value.kind == "stream_truncated"
    assert received == [b"one"]


@pytest.mark.parametrize(
    "reply", [b"", b"HTTP/1.1 200 OK\r\nContent-", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"]
)
async def test_no_valid_reply_head_is_a_connection_error(raw_serve: RawServe, reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    url = await raw_serve(handler)
    async with Transport(TargetConfig.from_url(url)) as transport:
        error = await _failure(transport)
    assert error.kind == "connection_error"


async def test_an_abandoned_or_cancelled_stream_closes_its_connection(
    raw_serve: RawServe,
) -> None:
    closes: asyncio.Queue[int] = asyncio.Queue()
    accepted = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        number = accepted
        while await read_request(reader):
            # The second stream's first event never comes: it is cancelled while waiting.
            writer.write(SSE_HEAD + (frame(b"data: one\n\n") if number == 1 else b""))
            await writer.drain()
        closes.put_nowait(number)

    url = await raw_serve(handler)
    async with Transport(TargetConfig.from_url(url)) as transport:

        async def first_event() -> bytes:
            async with transport.post("s", b"{}") as exchange:
                async for event in exchange.events():
                    return event.data
            return b""

        assert await first_event() == b"one"  # left mid-stream: must not go back to the pool
        assert await asyncio.wait_for(closes.get(), 2) == 1
        task = asyncio.create_task(first_event())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(closes.get(), 2) == 2
    assert accepted == 2


async def test_leaving_the_transport_closes_pooled_connections(raw_serve: RawServe) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        closed.set()
        writer.close()

    url = await raw_serve(handler)
    async with Transport(TargetConfig.from_url(url)) as transport:
        async with transport.post("s", b"{}") as exchange:
            assert await exchange.read() == b"ok"
        assert not closed.is_set()
    await asyncio.wait_for(closed.wait(), 2)


def test_the_kernel_path_runs_on_uvloop_as_the_engine_does() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> tuple[Reply, Reply]:
        server = SimServer(PRESETS["fast"])
        await server.start()
        try:
            api, body = BODIES["chat-tools"]
            async with Transport(TargetConfig.from_url(server.base_url)) as transport:
                first = await send(transport, api, body)
                again = await send(transport, api, body)  # over the pooled connection
        finally:
            await server.stop()
        return first, again

    first, again = uvloop.run(run())
    assert first.ok, first.error
    assert again.ok, again.error
    assert (first.text, first.tool_calls) == (again.text, again.tool_calls)
    assert first.token_times_ns == sorted(first.token_times_ns)


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "aiohttp"])
async def test_an_early_reply_to_an_unread_body_is_the_outcome(
    raw_serve: RawServe, kernel: bool
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the body is never read
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()  # with the body unread: a reset

    url = await raw_serve(handler)
    target = TargetConfig.from_url(url)
    async with (
        Transport(target, kernel_timestamps=kernel) as transport,
        transport.post("s", [b"x" * 1_000_000] * 16) as exchange,
    ):
        assert exchange.status == 413
        assert await exchange.read() == b"too large"


async def test_a_sweep_reads_ready_sockets_before_the_busy_loop_polls_them() -> None:
    with kernel_socketpairs(3) as (conns, peers, sweeper):
        for number, peer in enumerate(peers):
            peer.send(b"token %d" % number)
        time.sleep(0.01)  # noqa: ASYNC251  (the loop must not get a chance to poll)
        assert not any(conn.has_unread for conn in conns)
        sweeper.sweep()
        assert all(conn.has_unread for conn in conns)
        received = [await conn.receive() for conn in conns]
        assert [got[1] if got else None for got in received] == [b"token 0", b"token 1", b"token 2"]
