"""Sending one request and turning whatever comes back into a Reply; failures never raise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from time import perf_counter_ns

import orjson

from loadgen.protocol.assembly import ChoiceStream, read_choice_body
from loadgen.protocol.classify import (
    classify_error,
    error_message,
    mentions_previous_response,
    refuses_previous_response,
    retry_after_seconds,
    window_facts,
)
from loadgen.protocol.failures import FailureKind
from loadgen.protocol.redaction import redact, secrets_of
from loadgen.protocol.reply import Api, Reply
from loadgen.protocol.responses_assembly import ResponsesStream, read_response_body
from loadgen.transport import HttpExchange, Transport, TransportError

__all__ = ["API_PATHS", "send"]

API_PATHS: dict[str, str] = {
    "chat": "chat/completions",
    "responses": "responses",
    "completions": "completions",
}

_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError)

# A replica's name is kept to this length: a header is free text, a name is a label.
_REPLICA_CHARS = 120

# Finish reasons that mean the server gave up on the request rather than completing it.
_ABNORMAL_FINISH = frozenset({"abort", "error"})


async def send(
    transport: Transport,
    api: Api,
    body: bytes | Sequence[bytes],
    *,
    headers: Mapping[str, str] | None = None,
    capture_headers: Sequence[str] = (),
    replica: int = 0,
    replica_headers: Sequence[str] = (),
) -> Reply:
    """POST `body` to `api`'s endpoint and assemble the reply, streamed or not.

    `capture_headers`: response headers to keep in `Reply.headers` (router session tokens).
    `replica`: which of the transport's replicas to send to (Transport.pick);
    `replica_headers`: response headers naming the replica that served it, the first
    present wins (`Reply.replica`).
    """
    segments = (body,) if isinstance(body, bytes) else body
    reply = Reply(api=api, t_sent_ns=perf_counter_ns())
    streamed = False
    try:
        async with transport.post(API_PATHS[api], segments, headers, replica) as exchange:
            reply.t_sent_ns = exchange.t_sent_ns
            reply.status = exchange.status
            for name in capture_headers:
                value = exchange.headers.get(name)
                if value is not None:
                    reply.headers[name] = value
            reply.replica = replica_name(exchange.headers, replica_headers)
            if exchange.status >= 400:
                await _read_error(exchange, reply, segments)
            elif "text/event-stream" in exchange.headers.get("Content-Type", ""):
                streamed = True
                await _read_stream(exchange, reply)
            else:
                _read_json(await exchange.read(), reply)
    except TransportError as exc:
        reply.fail(FailureKind(exc.kind), str(exc))
    reply.t_end_ns = perf_counter_ns()
    if reply.token_times_ns:
        reply.t_first_token_ns = reply.token_times_ns[0]
    _check_ending(reply, streamed=streamed)
    if reply.error is not None:
        # Error bodies may echo the key (a 401 quoting it): nothing written may carry it.
        target = transport.target
        reply.error = redact(reply.error, secrets_of(target.api_key, target.headers))
    return reply


# A gateway may name a deployment by different headers on different replies: LiteLLM sends
# x-litellm-model-api-base with a reply but only x-litellm-model-id with an error. A reply
# carrying both teaches that the later header's value is the earlier one's replica, so a
# deployment keeps one name (errors seen before any such reply keep the later header's).
# Learned per list of header names, as a profile orders them.
_ALIASES: dict[tuple[tuple[str, ...], str, str], str] = {}
_MAX_ALIASES = 4096


def replica_name(headers: Mapping[str, str], names: Sequence[str]) -> str | None:
    """The replica the response headers name: the first of `names` present, aliases learned."""
    found = [(name, v[:_REPLICA_CHARS]) for name in names if (v := headers.get(name, "").strip())]
    if not found:
        return None
    order = tuple(names)
    first = found[0][1]
    if len(found) == 1:
        return _ALIASES.get((order, *found[0]), first)
    if len(_ALIASES) < _MAX_ALIASES:
        for name, value in found[1:]:
            _ALIASES.setdefault((order, name, value), first)
    return first


async def _read_error(exchange: HttpExchange, reply: Reply, segments: Sequence[bytes]) -> None:
    raw = await exchange.read()
    chained = reply.api == "responses" and mentions_previous_response(segments)
    message = error_message(raw)
    if chained and refuses_previous_response(exchange.status, message):
        reply.unsupported = "previous_response_id"
    kind = classify_error(exchange.status, raw, reply.api, chained)
    if kind == FailureKind.CONTEXT_OVERFLOW:
        reply.window_tokens, reply.counted_prompt_tokens = window_facts(message)
    reply.retry_after_s = retry_after_seconds(exchange.headers.get("Retry-After"))
    reply.fail(kind, f"HTTP {exchange.status}: {message}")


async def _read_stream(exchange: HttpExchange, reply: Reply) -> None:
    assembler = ResponsesStream(reply) if reply.api == "responses" else ChoiceStream(reply)
    try:
        async for event in exchange.events():
            try:
                assembler.feed(event.t_ns, event.data)
            except _SHAPE_ERRORS as exc:
                # Valid JSON of the wrong shape (a server bug): recorded, never raised.
                reply.fail(
                    FailureKind.HTTP_ERROR, f"malformed stream event ({exc!r}): {event.data[:80]!r}"
                )
    finally:
        # A stream cut mid-way still leaves its partial text and calls on the reply.
        assembler.finish()


def _read_json(raw: bytes, reply: Reply) -> None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        reply.fail(FailureKind.HTTP_ERROR, f"unparseable reply body: {raw[:80]!r}")
        return
    if not isinstance(obj, dict):
        reply.fail(FailureKind.HTTP_ERROR, f"reply body is not a JSON object: {raw[:80]!r}")
        return
    try:
        if reply.api == "responses":
            read_response_body(reply, obj)
        else:
            read_choice_body(reply, obj)
    except _SHAPE_ERRORS as exc:
        reply.fail(FailureKind.HTTP_ERROR, f"malformed reply body ({exc!r}): {raw[:80]!r}")
        return
    reply.saw_done = True


def _check_ending(reply: Reply, *, streamed: bool) -> None:
    """A reply that arrived but ended wrongly: cut short, or stopped by the server."""
    if reply.failures:
        return
    # A finish_reason and the usage we asked for, then a clean close: nothing was cut
    # (transformers serve ends its streams so, without [DONE]).
    closed_after_end = (
        streamed and reply.api != "responses" and bool(reply.finish_reason) and bool(reply.usage)
    )
    if not (reply.saw_done or closed_after_end):
        end = "response.completed" if reply.api == "responses" else "[DONE]"
        reply.fail(FailureKind.STREAM_TRUNCATED, f"stream ended without {end}")
    elif reply.finish_reason is None:
        # A stream without one was cut before its last chunk; a whole body without one is odd.
        kind = FailureKind.STREAM_TRUNCATED if streamed else FailureKind.ABNORMAL_FINISH
        reply.fail(kind, "reply ended without a finish_reason")
    elif reply.finish_reason in _ABNORMAL_FINISH:
        reply.fail(FailureKind.ABNORMAL_FINISH, f"finish_reason {reply.finish_reason!r}")
