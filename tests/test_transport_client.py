"""The HTTP transport against real servers on loopback: bodies, headers, streams and failures."""

from __future__ import annotations

import asyncio
import socket
from time import perf_counter_ns
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from raw_servers import Serve, closed_port

from loadgen.errors import UsageError
from loadgen.sim import SimServer
from loadgen.transport import TargetConfig, Transport, TransportError


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    seen = {
        "path": request.path,
        "content_length": request.headers.get("Content-Length"),
        "transfer_encoding": request.headers.get("Transfer-Encoding"),
        "content_type": request.headers.get("Content-Type"),
        "authorization": request.headers.get("Authorization"),
        "custom": request.headers.get("X-Session"),
        "body": body.decode(),
    }
    return web.json_response(seen, dumps=lambda v: orjson.dumps(v).decode())


async def _read_events(transport: Transport, into: list[bytes]) -> None:
    async with transport.post("s", b"{}") as exchange:
        async for event in exchange.events():
            into.append(event.data)


@pytest.mark.parametrize(
    "url",
    [
        "http://host:8000",
        "http://host:8000/",
        "http://host:8000/v1",
        "http://host:8000/v1/",
        " http://host:8000/v1 ",
    ],
)
def test_base_url_is_stored_in_its_v1_form(url: str) -> None:
    assert TargetConfig.from_url(url).base_url == "http://host:8000/v1"


def test_base_url_keeps_a_gateway_path_prefix() -> None:
    assert TargetConfig.from_url("https://gw.example/openai").base_url == (
        "https://gw.example/openai/v1"
    )


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://host/v1", "http://", "host/v1"])
def test_non_http_url_is_a_usage_error_saying_how_to_write_it(url: str) -> None:
    with pytest.raises(UsageError, match="http://localhost:8000/v1"):
        TargetConfig.from_url(url)


def test_nonpositive_timeout_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="request_timeout_s"):
        TargetConfig.from_url("http://h", request_timeout_s=0)


def test_paths_resolve_against_v1_and_absolute_urls_pass_through() -> None:
    target = TargetConfig.from_url("http://h:1")
    assert target.url("chat/completions") == "http://h:1/v1/chat/completions"
    assert target.url("/models") == "http://h:1/v1/models"
    assert target.url(target.root_url + "/metrics") == "http://h:1/metrics"


async def test_segments_arrive_as_their_concatenation_with_content_length(serve: Serve) -> None:
    url = await serve(_echo)
    # Small segments get batched, big ones are written as they are: both must stay in order.
    segments = [b'{"k":"', b"a" * 100_000, *([b"b"] * 5000), b"c" * 70_000, b'"}']
    async with (
        Transport(TargetConfig.from_url(url)) as transport,
        transport.post("echo", segments) as exchange,
    ):
        seen = orjson.loads(await exchange.read())
    assert seen["body"] == b"".join(segments).decode()
    assert seen["content_length"] == str(sum(map(len, segments)))
    assert seen["transfer_encoding"] is None
    assert seen["content_type"] == "application/json"
    assert seen["path"] == "/v1/echo"


async def test_api_key_and_extra_headers_are_sent(serve: Serve) -> None:
    url = await serve(_echo)
    target = TargetConfig.from_url(url, api_key="sk-test", headers={"X-Session": "s1"})
    async with Transport(target) as transport, transport.post("echo", b"{}") as exchange:
        seen = orjson.loads(await exchange.read())
    assert seen["authorization"] == "Bearer sk-test"
    assert seen["custom"] == "s1"


async def test_no_api_key_sends_no_authorization_header(serve: Serve) -> None:
    url = await serve(_echo)
    async with (
        Transport(TargetConfig.from_url(url)) as transport,
        transport.post("echo", b"{}") as exchange,
    ):
        seen = orjson.loads(await exchange.read())
    assert seen["authorization"] is None


async def test_exchange_timestamps_are_ordered(serve: Serve) -> None:
    url = await serve(_echo)
    before = perf_counter_ns()
    async with (
        Transport(TargetConfig.from_url(url)) as transport,
        transport.post("echo", b"{}") as exchange,
    ):
        await exchange.read()
    assert before <= exchange.t_sent_ns <= exchange.t_headers_ns <= perf_counter_ns()
    assert exchange.status == 200


async def test_events_are_parsed_and_stamped_as_their_bytes_arrive(serve: Serve) -> None:
    async def dribble(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in (b"data: one\n", b"\nevent: n", b"amed\ndata: two\n\n", b"data: three\n\n"):
            await resp.write(piece)
            await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp

    url = await serve(dribble)
    async with (
        Transport(TargetConfig.from_url(url)) as transport,
        transport.post("s", b"{}") as exchange,
    ):
        events = [event async for event in exchange.events()]
    assert [(e.event, e.data) for e in events] == [
        (b"", b"one"),
        (b"named", b"two"),
        (b"", b"three"),
    ]
    times = [e.t_ns for e in events]
    assert exchange.t_headers_ns <= times[0] < times[1] < times[2]


async def test_connection_dropped_mid_stream_is_stream_truncated(serve: Serve) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        await asyncio.sleep(0.02)
        assert request.transport is not None
        request.transport.close()
        return resp

    url = await serve(cut)
    received: list[bytes] = []
    async with Transport(TargetConfig.from_url(url)) as transport:
        with pytest.raises(TransportError) as caught:
            await _read_events(transport, received)
    assert caught.value.kind == "stream_truncated"
    assert received == [b"one"]


async def test_closed_port_is_a_connection_error() -> None:
    target = TargetConfig.from_url(f"http://127.0.0.1:{closed_port()}")
    async with Transport(target) as transport:
        with pytest.raises(TransportError) as caught:
            async with transport.post("chat/completions", b"{}"):
                pass
    assert caught.value.kind == "connection_error"
    assert isinstance(caught.value.__cause__, OSError)


async def test_no_headers_within_the_request_timeout_is_a_timeout(serve: Serve) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    url = await serve(slow)
    async with Transport(TargetConfig.from_url(url, request_timeout_s=0.3)) as transport:
        with pytest.raises(TransportError) as caught:
            async with transport.post("s", b"{}"):
                pass
    assert caught.value.kind == "timeout"


async def test_request_timeout_covers_a_stream_that_stalls_after_headers(serve: Serve) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        await asyncio.sleep(5)
        return resp

    url = await serve(stall)
    async with Transport(TargetConfig.from_url(url, request_timeout_s=0.3)) as transport:
        with pytest.raises(TransportError) as caught:
            await _read_events(transport, [])
    assert caught.value.kind == "timeout"


async def test_get_returns_status_and_body_for_v1_and_root_paths(sim: SimServer) -> None:
    async with Transport(TargetConfig.from_url(sim.base_url)) as transport:
        status, models = await transport.get("models")
        metrics_status, metrics = await transport.get(transport.target.root_url + "/metrics")
    assert status == 200
    assert orjson.loads(models)["data"][0]["id"] == sim.config.served_model_name
    assert metrics_status == 200
    assert b"vllm:num_requests_running" in metrics


async def test_get_on_a_closed_port_is_a_connection_error() -> None:
    target = TargetConfig.from_url(f"http://127.0.0.1:{closed_port()}")
    async with Transport(target) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.get("models")
    assert caught.value.kind == "connection_error"


async def test_transport_used_outside_async_with_says_how_to_open_it() -> None:
    transport = Transport(TargetConfig.from_url("http://127.0.0.1:1"))
    with pytest.raises(RuntimeError, match="async with"):
        await transport.get("models")


async def test_a_prebuilt_connector_is_used_and_left_open(sim: SimServer) -> None:
    connector = aiohttp.TCPConnector(limit=4)
    try:
        async with Transport(TargetConfig.from_url(sim.base_url), connector=connector) as t:
            status, _body = await t.get("models")
        assert status == 200
        assert not connector.closed
    finally:
        await connector.close()


async def test_socket_factory_makes_the_sockets(sim: SimServer) -> None:
    made: list[socket.socket] = []

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _name, _address = addr_info
        sock = socket.socket(family, kind, proto)
        made.append(sock)
        return sock

    async with Transport(TargetConfig.from_url(sim.base_url), socket_factory=factory) as t:
        status, _body = await t.get("models")
    assert status == 200
    assert len(made) == 1
