"""What a recorded reply said and used: read from the bytes the proxy relayed, after the fact.

The proxy only keeps each chunk it relayed with the time it read it; everything here runs
afterwards, off the relay's path. Streams are read event by event (chat and completions
`data:` chunks, the Responses API's typed events); a JSON body is read whole. The first
event carrying a token (content, reasoning or a tool call) names the chunk that gives the
time to first token.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadgen.protocol.tokens import count_tokens
from loadgen.record.blocks import Pause, next_turn
from loadgen.record.prompts import render_tool_call

__all__ = ["ReplyFacts", "read_reply"]

_PAUSE_EVERY = 64  # events read between pauses (~0.1 ms)


@dataclass(slots=True)
class _Call:
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class ReplyFacts:
    """A reply's usage (when the server reported it), what it said, and where it started."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    first_token_chunk: int | None = None  # index of the chunk holding the first token
    response_id: str | None = None
    readable: bool = True  # False when the body could not be read (an unknown encoding)

    @property
    def text(self) -> str:
        """What the model said, as the transcript has it: text, then each tool call."""
        calls = (self.calls[i] for i in sorted(self.calls))
        return "".join(self.content) + "".join(render_tool_call(c.name, c.arguments) for c in calls)

    def counted_output(self) -> int:
        """Output tokens by the stand-in tokenizer (for servers that report no usage)."""
        calls = self.calls.values()
        return (
            count_tokens("".join(self.content))
            + count_tokens("".join(self.reasoning))
            + sum(count_tokens(render_tool_call(c.name, c.arguments)) for c in calls)
        )

    def take_usage(self, usage: Any) -> None:
        """Read an OpenAI usage object (either API's names)."""
        if not isinstance(usage, Mapping):
            return
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        output = usage.get("completion_tokens", usage.get("output_tokens"))
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        if isinstance(prompt, int):
            self.input_tokens = prompt
        if isinstance(output, int):
            self.output_tokens = output
        if isinstance(details, Mapping) and isinstance(details.get("cached_tokens"), int):
            self.cached_tokens = details["cached_tokens"]


def _decoder(encoding: str) -> Any:
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ValueError(encoding)


async def read_reply(
    api: str,
    chunks: Iterable[bytes],
    *,
    stream: bool,
    content_encoding: str = "",
    pause: Pause = next_turn,
) -> ReplyFacts:
    """The facts of a reply relayed as `chunks` (in order) for a request of `api`.

    The proxy asks for identity encoding; a server that compresses anyway is read through
    zlib (gzip, deflate), and one using another encoding gives an unreadable reply.
    """
    facts = ReplyFacts()
    try:
        decoder = _decoder(content_encoding.strip().lower())
    except ValueError:
        facts.readable = False
        return facts
    if not stream:
        data = b"".join(chunks)
        try:
            body = orjson.loads(decoder.decompress(data) if decoder else data)
        except (orjson.JSONDecodeError, zlib.error):
            facts.readable = False
            return facts
        if isinstance(body, Mapping):
            _read_body(api, body, facts)
        return facts
    buffer = b""
    events = 0
    for index, raw in enumerate(chunks):
        try:
            chunk = decoder.decompress(raw) if decoder else raw
        except zlib.error:
            facts.readable = False
            return facts
        buffer = (buffer + chunk).replace(b"\r\n", b"\n")
        *complete, buffer = buffer.split(b"\n\n")
        for event in complete:
            if _read_event(api, event, facts) and facts.first_token_chunk is None:
                facts.first_token_chunk = index
            events += 1
            if events % _PAUSE_EVERY == 0:
                await pause()
    if buffer.strip():
        _read_event(api, buffer, facts)  # a stream cut without its blank line
    return facts


def _read_event(api: str, event: bytes, facts: ReplyFacts) -> bool:
    """Read one SSE event into `facts`; True when it carried a token."""
    data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line[:5] == b"data:"]
    if not data:
        return False
    payload = b"\n".join(data)
    if payload.strip() == b"[DONE]":
        return False
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(obj, Mapping):
        return False
    if api == "responses":
        return _responses_event(obj, facts)
    facts.take_usage(obj.get("usage"))
    token = False
    for choice in obj.get("choices") or ():
        if isinstance(choice, Mapping):
            token = _chat_choice(choice, facts) or token
    return token


def _chat_choice(choice: Mapping[str, Any], facts: ReplyFacts) -> bool:
    """A chat or completions chunk's choice; True when it carried a token."""
    text = choice.get("text")  # completions
    if isinstance(text, str) and text:
        facts.content.append(text)
        return True
    delta = choice.get("delta")
    if not isinstance(delta, Mapping):
        return False
    token = False
    content = delta.get("content")
    if isinstance(content, str) and content:
        facts.content.append(content)
        token = True
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        facts.reasoning.append(reasoning)
        token = True
    for tool in delta.get("tool_calls") or ():
        if not isinstance(tool, Mapping):
            continue
        call = facts.calls.setdefault(int(tool.get("index") or 0), _Call())
        fn = tool.get("function")
        if isinstance(fn, Mapping):
            call.name += str(fn.get("name") or "")
            call.arguments += str(fn.get("arguments") or "")
        token = True
    return token


def _responses_event(obj: Mapping[str, Any], facts: ReplyFacts) -> bool:
    kind = str(obj.get("type", ""))
    if kind == "response.output_text.delta":
        facts.content.append(str(obj.get("delta", "")))
        return True
    if kind.startswith("response.reasoning") and kind.endswith(".delta"):
        facts.reasoning.append(str(obj.get("delta", "")))
        return True
    if kind == "response.function_call_arguments.delta":
        return True
    if kind == "response.output_item.added":
        item = obj.get("item")
        return isinstance(item, Mapping) and item.get("type") == "function_call"
    response = obj.get("response")
    if isinstance(response, Mapping):
        if isinstance(response.get("id"), str):
            facts.response_id = response["id"]
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            said = facts.reasoning
            _read_body("responses", response, facts)
            facts.reasoning = facts.reasoning or said  # final items may leave reasoning out
    return False


def _read_body(api: str, body: Mapping[str, Any], facts: ReplyFacts) -> None:
    """A whole (non-streamed) reply, or a Responses stream's final response object."""
    facts.take_usage(body.get("usage"))
    if api == "responses":
        if isinstance(body.get("id"), str):
            facts.response_id = body["id"]
        _responses_output(body.get("output"), facts)
        return
    facts.content, facts.calls, facts.reasoning = [], {}, []
    for choice in body.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        if isinstance(choice.get("text"), str):
            facts.content.append(choice["text"])
        message = choice.get("message")
        if isinstance(message, Mapping):
            _chat_message(message, facts)


def _chat_message(message: Mapping[str, Any], facts: ReplyFacts) -> None:
    if isinstance(message.get("content"), str):
        facts.content.append(message["content"])
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str):
        facts.reasoning.append(reasoning)
    for tool in message.get("tool_calls") or ():
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping):
            name, arguments = str(fn.get("name") or ""), str(fn.get("arguments") or "")
            facts.calls[len(facts.calls)] = _Call(name, arguments)


def _responses_output(output: Any, facts: ReplyFacts) -> None:
    if not isinstance(output, list):
        return
    facts.content, facts.calls, facts.reasoning = [], {}, []
    for item in output:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "function_call":
            call = _Call(str(item.get("name", "")), str(item.get("arguments", "")))
            facts.calls[len(facts.calls)] = call
        elif item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    facts.content.append(part["text"])
        elif item.get("type") == "reasoning":
            for part in item.get("summary") or ():
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    facts.reasoning.append(part["text"])
