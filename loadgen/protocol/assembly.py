"""Assembling chat-completions and text-completions replies from stream chunks or a JSON body."""

from __future__ import annotations

from typing import Any

import orjson

from loadgen.protocol.failures import FailureKind
from loadgen.protocol.reply import Reply, ToolCall, Usage

__all__ = [
    "ChoiceStream",
    "parse_usage",
    "read_choice_body",
    "reasoning_tokens",
    "stream_error_message",
]

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
    details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt,
        completion,
        cached if isinstance(cached, int) else None,
        reasoning if isinstance(reasoning, int) else None,
    )


def reasoning_tokens(usage: Usage | None, events: int) -> int | None:
    """A reply's reasoning tokens: the usage's count, else `events` (reasoning deltas streamed).

    None when neither says anything. A usage that reports 0 while reasoning was streamed is
    a gateway's placeholder, not a count: the events win then.
    """
    reported = usage.reasoning_tokens if usage is not None else None
    if reported is not None and (reported > 0 or not events):
        return reported
    return events or None


def stream_error_message(obj: dict[str, Any]) -> str:
    """The message of an error object a server put in a stream."""
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


class ChoiceStream:
    """Chat and text completions: choices[0] deltas, a usage chunk, then [DONE]."""

    __slots__ = ("_calls", "_parts", "_reasoning", "_reply")

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._parts: list[str] = []
        # Tool calls by index: [id, name, argument pieces].
        self._calls: dict[int, tuple[list[str], list[str]]] = {}
        self._reasoning = 0  # reasoning delta events: one token each, as vLLM streams them

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
                    self._answered(t_ns)
            elif delta:
                self._delta(t_ns, delta)
            finish = choice.get("finish_reason")
            if finish is not None:
                reply.finish_reason = finish
        usage = obj.get("usage")
        if usage:
            reply.usage = parse_usage(usage)
        if obj.get("error"):
            reply.fail(FailureKind.ABNORMAL_FINISH, stream_error_message(obj))

    def _delta(self, t_ns: int, delta: dict[str, Any]) -> None:
        content = delta.get("content")
        calls = delta.get("tool_calls")
        if content and isinstance(content, str):
            self._parts.append(content)
        if calls:
            self._add_calls(calls)
        # vLLM < 0.10, SGLang and llama.cpp name it reasoning_content, newer vLLM reasoning; a
        # server sending both in one delta streamed one token. Reasoning tokens are output
        # tokens too: they count for TTFT and ITL, not for the first answer token.
        reasoning = _text(delta.get("reasoning_content")) or _text(delta.get("reasoning"))
        if reasoning:
            self._reasoning += 1
        if content or calls:
            self._answered(t_ns)
        elif reasoning:
            self._reply.token_times_ns.append(t_ns)

    def _answered(self, t_ns: int) -> None:
        reply = self._reply
        if reply.t_first_answer_ns is None:
            reply.t_first_answer_ns = t_ns
        reply.token_times_ns.append(t_ns)

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
        reply.reasoning_tokens = reasoning_tokens(reply.usage, self._reasoning)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def read_choice_body(reply: Reply, obj: dict[str, Any]) -> None:
    """A complete (non-streaming) chat or text completion."""
    reply.usage = parse_usage(obj.get("usage"))
    reply.reasoning_tokens = reasoning_tokens(reply.usage, 0)
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
