"""Rendering requests into prompt text (a simple chat template) and hashing its KV blocks.

The template renders each message as "<|role|>\\n{content}\\n" after a "<s>" start token
and ends the prompt with the generation prompt "<|assistant|>\\n". A reply re-sent as an
assistant message therefore re-renders to the same tokens the engine generated, which is
what makes a resending client's history hit the prefix cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from loadgen.protocol.tokens import TOKEN_PATTERN, token_pieces
from loadgen.sim.engine import chain_block_hashes
from loadgen.sim.requests import ChatMessage, ToolDef

__all__ = [
    "GENERATION_PROMPT",
    "PromptInfo",
    "analyse_long_prompt",
    "analyse_prompt",
    "render_chat",
    "render_responses_input",
    "render_tool_call",
]

START = "<s>\n"
GENERATION_PROMPT = "<|assistant|>\n"


@dataclass(slots=True)
class PromptInfo:
    """What the engine needs to know about a prompt."""

    text: str
    length: int
    block_hashes: list[int]
    tail: list[str]  # tokens after the last full block


def analyse_prompt(text: str, block_size: int, *, stable: bool = False) -> PromptInfo:
    """Tokenize `text` and hash its full blocks (`stable`: chain_block_hashes's)."""
    pieces = token_pieces(text)
    full = len(pieces) // block_size * block_size
    return PromptInfo(
        text=text,
        length=len(pieces),
        block_hashes=chain_block_hashes(pieces, block_size, stable=stable),
        tail=pieces[full:],
    )


# A prompt longer than this is analysed a slice at a time (about 5 ms each), the event loop
# running other streams in between: tokenizing 60 MB of text in one go stalled every
# stream of the simulator for 1.5 to 2.5 s (a thread does not help: the regex holds the GIL).
SLICE_CHARS = 1 << 18
_SLICE_TOKENS = 1 << 16


async def analyse_long_prompt(
    text: str, block_size: int, max_tokens: int, *, stable: bool = False
) -> PromptInfo:
    """analyse_prompt(), yielding to the event loop between slices of a long `text`.

    Past `max_tokens` tokens (the context window) the rest is only counted: a prompt the
    server refuses keeps no pieces or hashes, so its memory stays bounded by the window.
    """
    if len(text) <= SLICE_CHARS:
        return analyse_prompt(text, block_size, stable=stable)
    pieces: list[str] = []
    counted = 0  # tokens past max_tokens, counted and dropped
    pos, end = 0, len(text)
    while pos < end:
        stop = min(pos + max(SLICE_CHARS, 4), end)
        found = TOKEN_PATTERN.findall(text, pos, stop)
        # Where a run of non-space goes on past the cut, its last token here ends at the cut:
        # one of 4 ends where an unsliced read would end it too; a shorter one was cut short
        # and is read again, whole, by the next slice.
        cut_inside_a_run = stop < end and not (text[stop - 1].isspace() or text[stop].isspace())
        if cut_inside_a_run and len(found[-1]) < 4:
            stop -= len(found.pop())
        pos = stop
        if len(pieces) < max_tokens:
            pieces += found
        else:
            counted += len(found)
        await asyncio.sleep(0)
    if len(pieces) >= max_tokens:
        return PromptInfo(text=text, length=len(pieces) + counted, block_hashes=[], tail=[])
    full = len(pieces) // block_size * block_size
    step = max(block_size, _SLICE_TOKENS // block_size * block_size)
    hashes: list[int] = []
    for start in range(0, full, step):
        hashes += chain_block_hashes(
            pieces[start : min(start + step, full)],
            block_size,
            hashes[-1] if hashes else 0,
            stable=stable,
        )
        await asyncio.sleep(0)
    return PromptInfo(text=text, length=len(pieces), block_hashes=hashes, tail=pieces[full:])


def render_tool_call(name: str, arguments: str) -> str:
    """How a tool call appears in the transcript (and so how it tokenizes)."""
    return f"<|tool_call|>{name} {arguments}\n"


def _content_text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif part.get("type") in ("image_url", "input_image"):
            texts.append("<|image|>")
    return "\n".join(texts)


def _render_tools(tools: Iterable[Mapping[str, Any]]) -> str:
    return "<|tools|>\n" + orjson.dumps(list(tools)).decode() + "\n"


def render_chat(messages: list[ChatMessage], tools: list[ToolDef] | None) -> str:
    """The chat-completions prompt text for `messages` (and tool definitions, if any)."""
    out = [START]
    if tools:
        out.append(_render_tools(t.function.model_dump(exclude_none=True) for t in tools))
    for msg in messages:
        out.append(f"<|{msg.role}|>\n{_content_text(msg.content)}")
        for call in msg.tool_calls or ():
            fn = call.get("function") or {}
            out.append(render_tool_call(str(fn.get("name", "")), str(fn.get("arguments", ""))))
        out.append("\n")
    out.append(GENERATION_PROMPT)
    return "".join(out)


def render_responses_input(
    items: str | list[dict[str, Any]],
    instructions: str | None,
    tools: Iterable[Mapping[str, Any]] | None,
    history: str | None,
) -> str:
    """The Responses-API prompt: stored history (if chained), then the new input items."""
    out = [history if history is not None else START]
    if tools:
        out.append(_render_tools(tools))
    if instructions:
        out.append(f"<|system|>\n{instructions}\n")
    if isinstance(items, str):
        out.append(f"<|user|>\n{items}\n")
    else:
        for item in items:
            kind = item.get("type", "message")
            if kind == "message" or "role" in item:
                out.append(
                    f"<|{item.get('role', 'user')}|>\n{_content_text(item.get('content'))}\n"
                )
            elif kind == "function_call":
                out.append(
                    "<|assistant|>\n"
                    + render_tool_call(str(item.get("name", "")), str(item.get("arguments", "")))
                )
            elif kind == "function_call_output":
                out.append(f"<|tool|>\n{item.get('output', '')}\n")
            else:
                out.append(f"<|{kind}|>\n{orjson.dumps(item).decode()}\n")
    out.append(GENERATION_PROMPT)
    return "".join(out)
