"""Pooled connections the server closed: never a failure of the server, on both POST paths."""

from __future__ import annotations

import asyncio
from time import perf_counter_ns

import pytest
from raw_servers import RawServe, frame, kernel_socketpairs, numbered, read_request, reset

from loadgen.transport import TargetConfig, Transport, TransportError
from loadgen.transport.kernel_pool import IDLE_S

# llama-server's reply head: it promises keep-alive, then closes after the streamed reply.
LLAMA_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Keep-Alive: timeout=5, max=100\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@pytest.fixture(params=[True, False], ids=["kernel", "aiohttp"])
def kernel(request: pytest.FixtureRequest) -> bool:
    """Which POST path: the kernel-stamped client, or aiohttp."""
    value: bool = request.param
    return value


def _reply(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n%bContent-Length: %d\r\n\r\n%b" % (extra, len(body), body)


async def _read(transport: Transport) -> bytes:
    async with transport.post("s", b"{}") as exchange:
        return await exchange.read()


async def test_a_server_closing_after_every_streamed_reply_fails_no_request(
    raw_serve: RawServe, kernel: bool
) -> None:
    async def llama(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if await read_request(reader):
            writer.write(LLAMA_HEAD + frame(b"data: %d\n\n" % n) + frame(b"data: [DONE]\n\n"))
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    url = await raw_serve(numbered(llama))
    events = []
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        for _ in range(40):  # back to back, as an agent's next step follows its reply
            async with transport.post("s", b"{}") as exchange:
                events.append([event.data async for event in exchange.events()])
    assert events == [[b"%d" % n, b"[DONE]"] for n in range(1, 41)]


async def test_a_connection_dropped_at_an_unannounced_1s_idle_timeout_is_retried(
    raw_serve: RawServe, kernel: bool
) -> None:
    # The worst moment of a server's idle timeout: its timer fires as the request arrives,
    # so the client cannot see the close coming and its request meets a reset.
    loop = asyncio.get_running_loop()
    dropped = 0

    async def idle_1s(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        nonlocal dropped
        idle_since = loop.time()
        while await reader.read(1):
            if loop.time() - idle_since >= 1.0:
                dropped += 1
                reset(writer)
                return
            await read_request(reader)
            writer.write(_reply(b"%d" % n))
            await writer.drain()
            idle_since = loop.time()

    url = await raw_serve(numbered(idle_1s))
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        served = [await _read(transport)]
        for pause in (0.9, 1.1, 0.95, 1.05):
            await asyncio.sleep(pause)
            served.append(await _read(transport))
    assert dropped >= 1  # and not one request failed for it
    assert len(served) == 5


async def test_a_new_connection_closed_before_the_reply_is_a_connection_error_not_retried(
    raw_serve: RawServe, kernel: bool
) -> None:
    connections = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        nonlocal connections
        connections = n
        writer.close()

    url = await raw_serve(numbered(hang_up))
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        with pytest.raises(TransportError) as caught:
            await _read(transport)
    assert caught.value.kind == "connection_error"
    assert connections == 1


async def test_a_reused_connection_is_retried_at_most_once(
    raw_serve: RawServe, kernel: bool
) -> None:
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        nonlocal connections
        connections = n
        if n == 1 and await read_request(reader):
            writer.write(_reply(b"1"))
            await writer.drain()
        await read_request(reader)  # every later request: closed unanswered

    url = await raw_serve(numbered(once))
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        assert await _read(transport) == b"1"
        with pytest.raises(TransportError) as caught:
            await _read(transport)
    assert caught.value.kind == "connection_error"
    assert connections == 2  # the reused one, then one retry


async def test_a_retried_request_is_timed_from_its_retry(raw_serve: RawServe, kernel: bool) -> None:
    async def slow_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for turn in range(2):
            if not await read_request(reader):
                return
            if n == 1 and turn == 1:
                await asyncio.sleep(0.5)  # then closed unanswered
                return
            writer.write(_reply(b"%d" % n))
            await writer.drain()

    url = await raw_serve(numbered(slow_drop))
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        assert await _read(transport) == b"1"
        started = perf_counter_ns()
        async with transport.post("s", b"{}") as exchange:
            assert await exchange.read() == b"2"
    assert exchange.t_sent_ns - started >= 500_000_000
    assert exchange.t_headers_ns - exchange.t_sent_ns < 250_000_000


async def test_keep_alive_timeout_shortens_the_idle_life_of_its_connection(
    raw_serve: RawServe, kernel: bool
) -> None:
    async def announce(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader):  # kept open: only the header says 2 s
            writer.write(_reply(b"%d" % n, b"Keep-Alive: timeout=2\r\n"))
            await writer.drain()

    url = await raw_serve(numbered(announce))
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        served = [await _read(transport), await _read(transport)]
        await asyncio.sleep(1.2)  # under the server's 2 s, over the second it leaves it
        served.append(await _read(transport))
    assert served == [b"1", b"1", b"2"]


async def test_a_connection_close_reply_is_not_reused(raw_serve: RawServe, kernel: bool) -> None:
    async def say_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader):  # kept open: only the header says close
            writer.write(_reply(b"%d" % n, b"Connection: close\r\n"))
            await writer.drain()

    url = await raw_serve(numbered(say_close))
    async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
        served = [await _read(transport) for _ in range(3)]
    assert served == [b"1", b"2", b"3"]


@pytest.mark.slow
async def test_idle_connections_are_dropped_before_the_common_5s_server_timeout(
    raw_serve: RawServe,
) -> None:
    async def forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader):
            writer.write(_reply(b"%d" % n))
            await writer.drain()

    url = await raw_serve(numbered(forever))

    async def connections(kernel: bool) -> list[bytes]:
        async with Transport(TargetConfig.from_url(url), kernel_timestamps=kernel) as transport:
            first = await _read(transport)
            await asyncio.sleep(IDLE_S + 0.25)
            return [first, await _read(transport)]

    assert IDLE_S < 5  # uvicorn's (vLLM, SGLang, LiteLLM) and Node's default
    served = await asyncio.gather(connections(True), connections(False))
    assert all(first != second for first, second in served)


async def test_an_idle_connection_is_quiet_until_its_peer_closes_or_writes() -> None:
    with kernel_socketpairs(3) as (conns, peers, _sweeper):
        peers[1].close()
        peers[2].send(b"x")
        assert [conn.quiet() for conn in conns] == [True, False, False]
        assert conns[0].quiet()  # peeking consumed nothing
