"""Encoding conversation pieces once, as JSON bytes, so a growing history is never re-encoded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from loadgen.protocol.reply import Api, ToolCall

__all__ = [
    "ToolDefinition",
    "encode_function_call",
    "encode_function_call_output",
    "encode_input_message",
    "encode_json",
    "encode_message",
    "encode_tools",
]

Content = str | Sequence[Mapping[str, Any]] | None


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A function tool offered to the model; `parameters` is its JSON Schema."""

    name: str
    parameters: Mapping[str, Any] | None = None
    description: str | None = None


def _plain(value: Any) -> Any:
    # orjson encodes dicts, lists and tuples natively; read-only mappings arrive here.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(value: Any) -> bytes:
    """`value` as compact JSON bytes (any Mapping accepted, not only dict)."""
    return orjson.dumps(value, default=_plain)


def encode_message(
    role: str,
    content: Content = None,
    *,
    tool_calls: Sequence[ToolCall] | None = None,
    tool_call_id: str | None = None,
    name: str | None = None,
) -> bytes:
    """One chat-completions message as JSON bytes."""
    message: dict[str, Any] = {"role": role, "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in tool_calls
        ]
    if tool_call_id is not None:
        message["tool_call_id"] = tool_call_id
    if name is not None:
        message["name"] = name
    return encode_json(message)


def encode_input_message(role: str, content: Content) -> bytes:
    """One Responses-API input message item as JSON bytes."""
    return encode_json({"type": "message", "role": role, "content": content})


def encode_function_call(call: ToolCall) -> bytes:
    """A Responses-API function_call input item (replaying the model's call, stateless mode)."""
    return orjson.dumps(
        {
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        }
    )


def encode_function_call_output(call_id: str, output: str) -> bytes:
    """A Responses-API function_call_output input item: a tool's result."""
    return orjson.dumps({"type": "function_call_output", "call_id": call_id, "output": output})


def encode_tools(tools: Sequence[ToolDefinition], api: Api) -> bytes:
    """The `tools` JSON array in `api`'s shape (chat nests under "function"; responses is flat)."""
    out = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        if api == "responses":
            out.append({"type": "function", **function})
        else:
            out.append({"type": "function", "function": function})
    return encode_json(out)
