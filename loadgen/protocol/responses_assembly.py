"""Assembling Responses-API replies from its typed stream events or a complete response object."""

from __future__ import annotations

from typing import Any

import orjson

from loadgen.protocol.assembly import parse_usage, reasoning_tokens, stream_error_message
from loadgen.protocol.failures import FailureKind
from loadgen.protocol.reply import Reply, ToolCall

__all__ = ["ResponsesStream", "read_response_body"]

# Output-token events that are not message text or call arguments: reasoning models' thinking
# (reasoning_text: its raw text, as vLLM and open models stream it; reasoning_summary_text:
# OpenAI's summary of it), one token each.
_REASONING_EVENTS = frozenset(
    {"response.reasoning_text.delta", "response.reasoning_summary_text.delta"}
)


class ResponsesStream:
    """Typed events: output_text / function_call_arguments deltas, then response.completed."""

    __slots__ = ("_calls", "_parts", "_reasoning", "_reply")

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._parts: list[str] = []
        # Function calls by output_index: [call_id, name, final arguments], argument pieces.
        self._calls: dict[int, tuple[list[str], list[str]]] = {}
        self._reasoning = 0  # reasoning delta events

    def _call(self, index: int) -> tuple[list[str], list[str]]:
        entry = self._calls.get(index)
        if entry is None:
            entry = self._calls[index] = (["", "", ""], [])
        return entry

    def feed(self, t_ns: int, data: bytes) -> None:
        """Take one event's data (its `type` field names it, whatever the SSE event line says)."""
        reply = self._reply
        if data == b"[DONE]":
            # Gateways (LiteLLM) end Responses streams chat-style too; only the terminal
            # response.* event says whether the reply was complete.
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            reply.fail(FailureKind.HTTP_ERROR, f"unparseable stream event: {data[:80]!r}")
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "response.output_text.delta":
            delta = obj.get("delta")
            if delta and isinstance(delta, str):
                self._parts.append(delta)
                self._answered(t_ns)
        elif kind == "response.function_call_arguments.delta":
            delta = obj.get("delta")
            if delta and isinstance(delta, str):
                self._call(obj.get("output_index", 0))[1].append(delta)
                self._answered(t_ns)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = obj.get("item") or {}
            if item.get("type") == "function_call":
                head = self._call(obj.get("output_index", 0))[0]
                head[0] = item.get("call_id") or head[0]
                head[1] = item.get("name") or head[1]
                head[2] = item.get("arguments") or head[2]
                if kind == "response.output_item.added":
                    # The call's name is its first output tokens.
                    self._answered(t_ns)
        elif kind in _REASONING_EVENTS:
            self._reasoning += 1
            reply.token_times_ns.append(t_ns)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._finished(obj.get("response") or {})
        elif kind == "response.created":
            reply.response_id = (obj.get("response") or {}).get("id")
        elif kind == "error":
            reply.fail(FailureKind.ABNORMAL_FINISH, str(obj.get("message") or obj))

    def _answered(self, t_ns: int) -> None:
        reply = self._reply
        if reply.t_first_answer_ns is None:
            reply.t_first_answer_ns = t_ns
        reply.token_times_ns.append(t_ns)

    def _finished(self, response: dict[str, Any]) -> None:
        reply = self._reply
        reply.response_id = response.get("id") or reply.response_id
        reply.usage = parse_usage(response.get("usage"))
        reply.saw_done = True
        _set_finish(reply, response, has_calls=bool(self._calls))

    def finish(self) -> None:
        """Put the assembled text and function calls on the reply."""
        reply = self._reply
        reply.text = "".join(self._parts)
        # Argument deltas are what a streaming client sees; the done events' copy is a fallback
        # for servers that send arguments only there.
        reply.tool_calls = [
            ToolCall(head[0], head[1], "".join(pieces) if pieces else head[2])
            for _index, (head, pieces) in sorted(self._calls.items())
        ]
        reply.reasoning_tokens = reasoning_tokens(reply.usage, self._reasoning)


def _set_finish(reply: Reply, response: dict[str, Any], *, has_calls: bool) -> None:
    """Map the response status onto chat's finish_reason vocabulary."""
    status = response.get("status")
    if status == "completed":
        reply.finish_reason = "tool_calls" if has_calls else "stop"
    elif status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        reply.finish_reason = "length" if reason in (None, "max_output_tokens") else str(reason)
    else:
        reply.finish_reason = "error"
        if response.get("error"):
            reply.fail(FailureKind.ABNORMAL_FINISH, stream_error_message(response))


def read_response_body(reply: Reply, response: dict[str, Any]) -> None:
    """A complete (non-streaming) response object."""
    reply.response_id = response.get("id")
    reply.usage = parse_usage(response.get("usage"))
    reply.reasoning_tokens = reasoning_tokens(reply.usage, 0)
    texts = []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            texts += [p.get("text") or "" for p in item.get("content") or () if "text" in p]
        elif item.get("type") == "function_call":
            reply.tool_calls.append(
                ToolCall(
                    item.get("call_id") or "", item.get("name") or "", item.get("arguments") or ""
                )
            )
    reply.text = "".join(texts)
    _set_finish(reply, response, has_calls=bool(reply.tool_calls))
