"""Turning an HTTP error reply into a canonical failure kind, a short message and a retry hint."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import orjson

from loadgen.protocol.failures import FailureKind
from loadgen.protocol.reply import Api

__all__ = [
    "WindowFacts",
    "classify_error",
    "error_message",
    "mentions_previous_response",
    "refuses_previous_response",
    "retry_after_seconds",
    "window_facts",
]

# How servers word a prompt that does not fit: vLLM and the simulator ("maximum context
# length"), OpenAI (code context_length_exceeded), llama.cpp ("exceeds the available context
# size"), TGI ("must have less than N tokens" / "too long"), Anthropic-style gateways
# ("prompt is too long").
_CONTEXT_WORDS = re.compile(
    r"context[ _]length|context size|context window|too long|input tokens exceed|"
    r"must have less than \d+ tokens",
    re.IGNORECASE,
)
_PREVIOUS_ID = re.compile(rb'"previous_response_id"\s*:\s*"')
# A server that has no response store at all says so about the parameter (llama.cpp: "does
# not support 'previous_response_id'"; FastAPI-style servers: "extra inputs are not
# permitted"); that is what the target can do, not a request that failed.
_UNSUPPORTED = re.compile(
    r"not support|unsupported|not implemented|not allowed|not permitted|unknown (?:field|param)|"
    r"unrecognized",
    re.IGNORECASE,
)
# The window a server states when it refuses a prompt (vLLM/OpenAI/the simulator: "maximum
# context length is N tokens"; llama.cpp: "available context size (N tokens)"; TGI: "must
# have less than N tokens") and the size it counted for our prompt, where it says.
_WINDOW = re.compile(
    r"(?:maximum context length is|context size \(|context window (?:is|of)|"
    r"context length (?:is|of)|must have less than)\s*(\d+)\s*tokens",
    re.IGNORECASE,
)
_COUNTED = re.compile(
    r"request \((\d+) tokens\)|prompt contains (\d+) (?:input )?tokens|"
    r"\((\d+) in the messages",
    re.IGNORECASE,
)
_MESSAGE_CHARS = 300


def error_message(body: bytes) -> str:
    """The human part of an error body, whatever the server's shape, on one short line."""
    text: Any = None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        # OpenAI/vLLM/llama.cpp: {"error": {"message"}}; TGI: {"error": "..."}; FastAPI: detail.
        err = data.get("error")
        if isinstance(err, dict):
            text = err.get("message") or err.get("code")
        elif err:
            text = err
        else:
            text = data.get("message") or data.get("detail")
    if text is None:
        text = body.decode("utf-8", "replace")
    line = " ".join(str(text).split())
    return line[:_MESSAGE_CHARS] if len(line) > _MESSAGE_CHARS else line


def classify_error(
    status: int, body: bytes, api: Api, has_previous_response_id: bool
) -> FailureKind:
    """The failure kind of an HTTP error reply (status >= 400)."""
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status not in (400, 404, 413, 422):
        return FailureKind.HTTP_ERROR
    message = error_message(body)
    # Chaining on a stored response exists only in the Responses API.
    if api == "responses" and has_previous_response_id and "not found" in message.lower():
        return FailureKind.SERVER_STATE_LOST
    if status != 404 and (_CONTEXT_WORDS.search(message) or b"context_length_exceeded" in body):
        return FailureKind.CONTEXT_OVERFLOW
    return FailureKind.HTTP_ERROR


class WindowFacts(NamedTuple):
    """What a context-overflow refusal says: the server's window and its count of our prompt."""

    window_tokens: int | None
    prompt_tokens: int | None


def window_facts(message: str) -> WindowFacts:
    """The window size and prompt size a context-length refusal states (None where it does not)."""
    window = _WINDOW.search(message)
    counted = _COUNTED.search(message)
    prompt = next((int(g) for g in counted.groups() if g), None) if counted else None
    return WindowFacts(int(window.group(1)) if window else None, prompt)


def refuses_previous_response(status: int, message: str) -> bool:
    """True when an error says the server does not support `previous_response_id` at all."""
    return (
        status in (400, 404, 422, 501)
        and "previous_response_id" in message
        and _UNSUPPORTED.search(message) is not None
    )


def mentions_previous_response(segments: Sequence[bytes]) -> bool:
    """True when a request body chains on a stored response (checked on error paths only)."""
    return any(_PREVIOUS_ID.search(segment) for segment in segments)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
