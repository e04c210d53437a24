"""Assembling chat-completions and text-completions replies from stream chunks or a JSON body."""

from __future__ import annotations

from typing import Any

import orjson

from loadgen.protocol.failures import FailureKind
from loadgen.protocol.reply import Reply, ToolCall, Usage

__all__ = ["ChoiceStream", "parse_usage", "read_choice_body", "stream_error_message"]

_DONE = b"[DONE]"


def parse_usage(usage: Any) -> Usage | None:
    """A usage object in either API's spelling (prompt/completion or input/output tokens)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(prompt, completion, cached if isinstance(cached, int) else None)


def stream_error_message(obj: dict[str, Any]) -> str:
    """The message of an error object a server put in a stream."""
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


class ChoiceStream:
    """Chat and text completions: choices[0] deltas, a usage chunk, then [DONE]."""

    __slots__ = ("_calls", "_parts", "_reply")

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._parts: list[str] = []
        # Tool calls by index: [id, name, argument pieces].
        self._calls: dict[int, tuple[list[str], list[str]]] = {}

    def feed(self, t_ns: int, data: bytes) -> None:
        """Take one event's data."""
        reply = self._reply
        if data == _DONE:
            reply.saw_done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            reply.fail(FailureKind.HTTP_ERROR, f"unparseable stream event: {data[:80]!r}")
            return
        if not isinstance(obj, dict):
            return
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta is None:  # text completions put the text on the choice itself
                text = choice.get("text")
                if text and isinstance(text, str):
                    self._parts.append(text)
                    reply.token_times_ns.append(t_ns)
            elif delta:
                content = delta.get("content")
                calls = delta.get("tool_calls")
                if content and isinstance(content, str):
                    self._parts.append(content)
                if calls:
                    self._add_calls(calls)
                # Reasoning tokens are output tokens too: they count for TTFT and ITL.
                if content or calls or delta.get("reasoning_content") or delta.get("reasoning"):
                    reply.token_times_ns.append(t_ns)
            finish = choice.get("finish_reason")
            if finish is not None:
                reply.finish_reason = finish
        usage = obj.get("usage")
        if usage:
            reply.usage = parse_usage(usage)
        if obj.get("error"):
            reply.fail(FailureKind.ABNORMAL_FINISH, stream_error_message(obj))

    def _add_calls(self, deltas: list[dict[str, Any]]) -> None:
        for position, call in enumerate(deltas):
            index = call.get("index", position)
            entry = self._calls.get(index)
            if entry is None:
                entry = self._calls[index] = (["", ""], [])
            if call.get("id"):
                entry[0][0] = call["id"]
            function = call.get("function") or {}
            if function.get("name"):
                entry[0][1] = function["name"]
            arguments = function.get("arguments")
            if arguments and isinstance(arguments, str):
                entry[1].append(arguments)

    def finish(self) -> None:
        """Put the assembled text and tool calls on the reply."""
        reply = self._reply
        reply.text = "".join(self._parts)
        reply.tool_calls = [
            ToolCall(head[0], head[1], "".join(pieces))
            for _index, (head, pieces) in sorted(self._calls.items())
        ]


def read_choice_body(reply: Reply, obj: dict[str, Any]) -> None:
    """A complete (non-streaming) chat or text completion."""
    reply.usage = parse_usage(obj.get("usage"))
    choices = obj.get("choices") or [{}]
    choice = choices[0]
    reply.finish_reason = choice.get("finish_reason")
    message = choice.get("message")
    if message is None:
        reply.text = choice.get("text") or ""
        return
    reply.text = message.get("content") or ""
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        reply.tool_calls.append(
            ToolCall(
                call.get("id") or "", function.get("name") or "", function.get("arguments") or ""
            )
        )
