"""Request bodies as byte segments: pre-encoded items are referenced, never copied or re-encoded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loadgen.protocol.messages import encode_json

__all__ = ["chat_body", "completions_body", "responses_body"]

ToolChoice = str | Mapping[str, Any] | None


def _head(fields: dict[str, Any], extra: Mapping[str, Any] | None) -> bytes:
    """The body's scalar fields as an unterminated JSON object: b'{"model":...'."""
    if extra:
        fields.update(extra)
    encoded = encode_json({k: v for k, v in fields.items() if v is not None})
    return encoded[:-1]


def _array(head: bytes, key: bytes, items: Sequence[bytes], tools: bytes | None) -> list[bytes]:
    """head, then `"key":[item,item,...]`, then tools and the closing brace, as segments."""
    out = [head, b',"' + key + b'":[']
    for i, item in enumerate(items):
        if i:
            out.append(b",")
        out.append(item)
    if tools is not None:
        out += (b'],"tools":', tools, b"}")
    else:
        out.append(b"]}")
    return out


def _sampling(
    stream: bool,
    min_tokens: int | None,
    ignore_eos: bool | None,
    temperature: float | None,
    seed: int | None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "stream": stream,
        # Usage arrives on streams only when asked for (OpenAI rejects the option otherwise).
        "stream_options": {"include_usage": True} if stream else None,
        "temperature": temperature,
        "seed": seed,
        # vLLM / SGLang extensions; left out unless set, since OpenAI rejects unknown fields.
        "min_tokens": min_tokens,
        "ignore_eos": ignore_eos,
    }
    return fields


def chat_body(
    model: str,
    messages: Sequence[bytes],
    *,
    stream: bool = True,
    max_tokens: int | None = None,
    min_tokens: int | None = None,
    ignore_eos: bool | None = None,
    tools: bytes | None = None,
    tool_choice: ToolChoice = None,
    temperature: float | None = None,
    seed: int | None = None,
    reasoning_effort: str | None = None,
    thinking_token_budget: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[bytes]:
    """A chat-completions body; `messages` from encode_message, `tools` from encode_tools.

    `reasoning_effort` (none|minimal|low|medium|high) and `thinking_token_budget` (vLLM's
    cap on reasoning tokens) are sent as top-level fields when given. `extra` adds top-level
    fields (max_completion_tokens, stop, ...); None values are dropped.
    """
    fields = {"model": model, "max_tokens": max_tokens, "tool_choice": tool_choice}
    fields.update(_sampling(stream, min_tokens, ignore_eos, temperature, seed))
    fields["reasoning_effort"] = reasoning_effort
    fields["thinking_token_budget"] = thinking_token_budget
    return _array(_head(fields, extra), b"messages", messages, tools)


def responses_body(
    model: str,
    input_items: Sequence[bytes] | str,
    *,
    previous_response_id: str | None = None,
    instructions: str | None = None,
    store: bool = True,
    stream: bool = True,
    max_output_tokens: int | None = None,
    min_tokens: int | None = None,
    ignore_eos: bool | None = None,
    tools: bytes | None = None,
    tool_choice: ToolChoice = None,
    temperature: float | None = None,
    seed: int | None = None,
    reasoning_effort: str | None = None,
    thinking_token_budget: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[bytes]:
    """A Responses-API body; `input_items` are encoded items, or one user text.

    `reasoning_effort` goes as `"reasoning": {"effort": ...}`, `thinking_token_budget` as
    the same top-level field as in chat; neither is sent unless given.
    """
    fields: dict[str, Any] = {
        "model": model,
        "previous_response_id": previous_response_id,
        "instructions": instructions,
        "store": store,
        "max_output_tokens": max_output_tokens,
        "tool_choice": tool_choice,
    }
    fields.update(_sampling(stream, min_tokens, ignore_eos, temperature, seed))
    # The Responses API streams usage in response.completed; it has no stream_options.
    fields["stream_options"] = None
    fields["reasoning"] = None if reasoning_effort is None else {"effort": reasoning_effort}
    fields["thinking_token_budget"] = thinking_token_budget
    if isinstance(input_items, str):
        fields["input"] = input_items
        head = _head(fields, extra)
        if tools is None:
            return [head + b"}"]
        return [head, b',"tools":', tools, b"}"]
    return _array(_head(fields, extra), b"input", input_items, tools)


def completions_body(
    model: str,
    prompt: str,
    *,
    stream: bool = True,
    max_tokens: int | None = None,
    min_tokens: int | None = None,
    ignore_eos: bool | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[bytes]:
    """A text-completions body (one segment: a raw prompt has no reusable parts)."""
    fields: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    fields.update(_sampling(stream, min_tokens, ignore_eos, temperature, seed))
    return [_head(fields, extra) + b"}"]
