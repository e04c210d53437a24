"""A recorded request's prompt as text: the same chat template the simulator renders.

The recorder never sees the upstream's tokenizer, so it renders each request the way
loadgen/sim/prompt.py does ("<s>", tool definitions, one "<|role|>" block per message, the
generation prompt) and tokenizes that with loadgen.protocol.tokens. Against the simulator
the counts are exact; against any other server they are the stand-in tokenizer's estimate,
used only where the server reports no usage and for the prompt's block hashes. The template
is repeated here, not imported: the recorder is a client-side layer and shares nothing
with the simulator but loadgen.protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from loadgen.protocol.tokens import VOCABULARY

__all__ = [
    "API_OF_PATH",
    "GENERATION_PROMPT",
    "START",
    "render_prompt",
    "render_tool_call",
]

START = "<s>\n"
GENERATION_PROMPT = "<|assistant|>\n"

# The last path segments that name an LLM call, and the API each speaks.
API_OF_PATH = {
    "chat/completions": "chat",
    "completions": "completions",
    "responses": "responses",
}


def render_tool_call(name: str, arguments: str) -> str:
    """How a tool call appears in the transcript (and so how it tokenizes)."""
    return f"<|tool_call|>{name} {arguments}\n"


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return str(content)
    texts = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif part.get("type") in ("image_url", "input_image"):
            texts.append("<|image|>")
    return "\n".join(texts)


def _without_none(fields: Mapping[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    """`fields` with top-level None values dropped, the named fields first (as pydantic dumps)."""
    out = {key: fields[key] for key in first if fields.get(key) is not None}
    out.update((k, v) for k, v in fields.items() if k not in out and v is not None)
    return out


def _render_tools(tools: list[dict[str, Any]]) -> str:
    return "<|tools|>\n" + orjson.dumps(tools).decode() + "\n"


def _chat_prompt(body: Mapping[str, Any]) -> str:
    out = [START]
    tools = [
        _without_none(t["function"], ("name", "description", "parameters"))
        for t in body.get("tools") or ()
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
    ]
    if tools:
        out.append(_render_tools(tools))
    for msg in body.get("messages") or ():
        if not isinstance(msg, Mapping):
            continue
        out.append(f"<|{msg.get('role', 'user')}|>\n{_content_text(msg.get('content'))}")
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(fn, Mapping):
                fn = {}
            out.append(render_tool_call(str(fn.get("name", "")), str(fn.get("arguments", ""))))
        out.append("\n")
    out.append(GENERATION_PROMPT)
    return "".join(out)


def _responses_prompt(body: Mapping[str, Any], history: str | None) -> str:
    out = [history if history is not None else START]
    tools = [
        _without_none({"type": "function", **t}, ("type", "name", "description", "parameters"))
        for t in body.get("tools") or ()
        if isinstance(t, Mapping)
    ]
    if tools:
        out.append(_render_tools(tools))
    if body.get("instructions"):
        out.append(f"<|system|>\n{body['instructions']}\n")
    items = body.get("input")
    if isinstance(items, str):
        out.append(f"<|user|>\n{items}\n")
    else:
        for item in items or ():
            if isinstance(item, Mapping):
                out.append(_responses_item(item))
    out.append(GENERATION_PROMPT)
    return "".join(out)


def _responses_item(item: Mapping[str, Any]) -> str:
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        return f"<|{item.get('role', 'user')}|>\n{_content_text(item.get('content'))}\n"
    if kind == "function_call":
        name, arguments = str(item.get("name", "")), str(item.get("arguments", ""))
        return "<|assistant|>\n" + render_tool_call(name, arguments)
    if kind == "function_call_output":
        return f"<|tool|>\n{item.get('output', '')}\n"
    return f"<|{kind}|>\n{orjson.dumps(item).decode()}\n"


def _completions_prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return START + prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return START + " ".join(VOCABULARY[p % len(VOCABULARY)] for p in prompt)
        return START + "\n".join(str(p) for p in prompt)
    return START


def render_prompt(api: str, body: Mapping[str, Any], history: str | None = None) -> str:
    """The prompt text of a request body of `api` (chat, responses or completions).

    `history` is the stored transcript a Responses request continues (previous_response_id),
    when the recorder saw the response it names.
    """
    if api == "chat":
        return _chat_prompt(body)
    if api == "responses":
        return _responses_prompt(body, history)
    return _completions_prompt(body)
