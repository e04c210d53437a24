"""Server-sent events: framing, and the loop that pumps a generation's tokens to the client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from loadgen.sim.generation import Generation, ReplicaLost

__all__ = ["DONE", "open_stream", "pump", "sse_data", "sse_event"]

DONE = b"data: [DONE]\n\n"


def sse_data(payload: Any) -> bytes:
    """One `data:` event holding `payload` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(name: str, payload: Any) -> bytes:
    """One named event (the Responses API's framing)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def open_stream(request: web.Request) -> web.StreamResponse:
    """Start a text/event-stream reply."""
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    return resp


async def pump(
    request: web.Request,
    resp: web.StreamResponse,
    generation: Generation,
    render: Callable[[list[tuple[int, str]]], bytes],
) -> bool:
    """Write each batch of new tokens as it is produced; False if the stream was cut (the
    stream_cut fault, or its fleet replica was removed)."""
    try:
        while not generation.should_cut():
            batch = await generation.next_deltas()
            if batch is None:
                return True
            if batch:
                await resp.write(render(batch))
        # The fault: drop the connection mid-stream, no finish_reason, no [DONE].
        generation.abandon()
        if request.transport is not None:
            request.transport.close()
        return False
    except ReplicaLost:
        # The replica went away mid-stream: the connection drops as a crashed engine's does.
        if request.transport is not None:
            request.transport.close()
        return False
    except ConnectionResetError:
        # The client went away while we wrote: nothing to log, just free the engine's work.
        _client_gone(generation)
        return False
    except BaseException:
        # Cancelled (the client disconnected while we waited) or shutting down.
        _client_gone(generation)
        raise


def _client_gone(generation: Generation) -> None:
    if not generation.done:
        generation.context.metrics.disconnects.inc()
    generation.abandon()
