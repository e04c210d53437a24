"""http:// through the kernel-stamped client and through aiohttp follow the same rules."""

from __future__ import annotations

import pytest
import pytest_asyncio
from aiohttp import web
from raw_servers import Serve

from loadgen.transport import TargetConfig, Transport

# Set by each client for its own framing; everything else must match.
FRAMING = {"host", "content-length", "connection", "content-type", "accept"}


@pytest_asyncio.fixture
async def recorder(serve: Serve) -> tuple[str, list[dict[str, str]]]:
    """A server that records each POST's headers and answers with a redirect."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(status=307, headers={"Location": "/v1/elsewhere"})

    return f"{await serve(handler)}/v1", seen


async def _post(url: str, kernel: bool) -> int:
    target = TargetConfig.from_url(url, api_key="k", headers={"X-Team": "a"})
    async with (
        Transport(target, kernel_timestamps=kernel) as transport,
        transport.post("chat/completions", b"{}", {"x-session-id": "s1"}) as exchange,
    ):
        await exchange.read()
        return exchange.status


async def test_both_paths_send_the_same_headers(
    recorder: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = recorder
    await _post(url, kernel=True)
    await _post(url, kernel=False)
    kernel, via_aiohttp = ({k: v for k, v in h.items() if k not in FRAMING} for h in seen[:2])
    assert kernel == via_aiohttp
    assert kernel["accept-encoding"] == "identity"  # no compressed stream holding tokens back
    assert kernel["authorization"] == "Bearer k"


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "aiohttp"])
async def test_a_redirected_post_is_the_answer_not_followed(
    recorder: tuple[str, list[dict[str, str]]], kernel: bool
) -> None:
    url, seen = recorder
    assert await _post(url, kernel=kernel) == 307
    assert len(seen) == 1
