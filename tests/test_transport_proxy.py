"""No proxy is taken from the environment: a load test goes where --target says.

Both POST paths (the kernel-stamped client for http://, aiohttp for https:// and when kernel
timestamps are off) are run with HTTP_PROXY, HTTPS_PROXY and ALL_PROXY naming a loopback
"proxy" that records every connection: the target must get the request and the proxy none.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from raw_servers import Handler, Serve

from loadgen.transport import TargetConfig, Transport

# A self-signed certificate and its key for 127.0.0.1, valid until 2126 (the client is told
# not to verify it: what is tested is where the connection goes, not the certificate).
LOOPBACK_TLS = Path(__file__).with_name("loopback_tls.pem")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest_asyncio.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[bytes]]:
    """A listening loopback "proxy" named by every proxy variable; yields what it was sent."""
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(4096) or b"(connected, sent nothing)")
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, url)
        monkeypatch.setenv(name.lower(), url)
    for name in ("NO_PROXY", "no_proxy"):  # nothing exempts the loopback target
        monkeypatch.delenv(name, raising=False)
    yield seen
    server.close()
    await server.wait_closed()


def _recording(seen: list[str]) -> Handler:
    """A handler that answers 200 and records each request's path in `seen`."""

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"ok": True})

    return answer


@pytest_asyncio.fixture
async def https_target() -> AsyncIterator[tuple[str, list[str]]]:
    """An https:// server on 127.0.0.1:0 that records each request's path."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(LOOPBACK_TLS)
    seen: list[str] = []
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _recording(seen))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}/v1", seen
    await runner.cleanup()


async def _http_target(serve: Serve) -> tuple[str, list[str]]:
    seen: list[str] = []
    return f"{await serve(_recording(seen))}/v1", seen


async def _post(url: str, *, kernel: bool) -> int:
    target = TargetConfig.from_url(url, verify_tls=False)
    async with (
        Transport(target, kernel_timestamps=kernel) as transport,
        transport.post("chat/completions", b"{}") as exchange,
    ):
        await exchange.read()
        return exchange.status


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "aiohttp"])
async def test_an_http_post_goes_to_the_target_not_the_proxy_in_the_environment(
    proxy: list[bytes], serve: Serve, kernel: bool
) -> None:
    url, seen = await _http_target(serve)
    assert await _post(url, kernel=kernel) == 200
    assert seen == ["/v1/chat/completions"]
    assert proxy == []


async def test_an_https_post_goes_to_the_target_not_the_proxy_in_the_environment(
    proxy: list[bytes], https_target: tuple[str, list[str]]
) -> None:
    url, seen = https_target
    assert await _post(url, kernel=False) == 200  # https:// always goes through aiohttp
    assert seen == ["/v1/chat/completions"]
    assert proxy == []


async def test_a_get_goes_to_the_target_not_the_proxy_in_the_environment(
    proxy: list[bytes], serve: Serve
) -> None:
    url, seen = await _http_target(serve)  # discovery and /metrics: always aiohttp
    async with Transport(TargetConfig.from_url(url)) as transport:
        status, _body = await transport.get("models")
    assert status == 200
    assert seen == ["/v1/models"]
    assert proxy == []


async def test_the_environment_does_divert_a_client_that_reads_it(
    proxy: list[bytes], serve: Serve
) -> None:
    # The control: the tests above pass because the transport ignores these variables, not
    # because they fail to name a proxy here.
    url, seen = await _http_target(serve)
    async with aiohttp.ClientSession(trust_env=True) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{url}/models") as resp:
                await resp.read()
    assert seen == []
    assert proxy  # aiohttp tries a proxy's closed connection again: once or twice
    assert all(sent.startswith(b"GET http://127.0.0.1:") for sent in proxy)
