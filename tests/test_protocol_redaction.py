"""Credentials never reach what agentload writes, whatever a server echoes back."""

from __future__ import annotations

import orjson
from aiohttp import web

from loadgen.protocol import chat_body, encode_message, send
from loadgen.protocol.redaction import REDACTED, redact, secrets_of
from loadgen.transport import TargetConfig, Transport

KEY = "my-secret-key-1234567890"


def test_the_configured_key_is_masked_wherever_it_appears() -> None:
    text = f"Incorrect API key provided: {KEY}. Find yours at ..."
    assert (
        redact(text, secrets_of(KEY, {}))
        == f"Incorrect API key provided: {REDACTED}. Find yours at ..."
    )


def test_a_secret_header_value_is_masked() -> None:
    secrets = secrets_of(None, {"X-Api-Key": "header-secret-42", "X-Trace": "visible"})
    assert (
        redact("got header-secret-42, trace visible", secrets) == f"got {REDACTED}, trace visible"
    )


def test_bearer_tokens_and_vendor_key_shapes_are_masked_without_being_configured() -> None:
    text = "upstream said: Authorization: Bearer abc.def-ghi and key sk-proj-AAAAAAAAAAAA"
    masked = redact(text)
    assert "abc.def-ghi" not in masked
    assert "sk-proj-AAAAAAAAAAAA" not in masked
    assert masked.count(REDACTED) == 2


async def test_a_401_body_echoing_the_key_is_stored_redacted() -> None:
    async def handler(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        body = {"error": {"message": f"Incorrect API key provided: {key}", "code": 401}}
        return web.Response(status=401, body=orjson.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        async with Transport(TargetConfig.from_url(url, api_key=KEY)) as transport:
            reply = await send(transport, "chat", chat_body("m", [encode_message("user", "hi")]))
    finally:
        await runner.cleanup()
    assert reply.status == 401
    assert reply.error is not None
    assert KEY not in reply.error
    assert REDACTED in reply.error
