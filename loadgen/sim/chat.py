"""POST /v1/chat/completions, streaming and not, with tool calls and usage."""

from __future__ import annotations

import uuid
from itertools import groupby
from typing import Any

from aiohttp import web

from loadgen.sim.config import ReasoningField
from loadgen.sim.fleet import sim_fleet
from loadgen.sim.generation import Generation
from loadgen.sim.prompt import render_chat
from loadgen.sim.reasoning import resolve_effort
from loadgen.sim.reply import CONTENT, REASONING, ReplyRequest, ToolSpec
from loadgen.sim.request_body import json_reply, parse_body
from loadgen.sim.requests import ChatRequest, NamedToolChoice
from loadgen.sim.streaming import DONE, open_stream, pump, sse_data

__all__ = ["handle_chat", "reasoning_fields", "tool_choice_name", "usage_body"]


def tool_choice_name(choice: str | NamedToolChoice | None) -> str:
    """none / auto / required, or the forced tool's name."""
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    return choice.tool_name() or "required"


def usage_body(gen: Generation) -> dict[str, Any]:
    """OpenAI's usage object, cached prompt tokens (and reasoning tokens, when the request
    reasons) included."""
    usage = {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": gen.cached_tokens},
    }
    if gen.plan.reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": gen.reasoning_tokens}
    return usage


def reasoning_fields(field: ReasoningField, text: str | None) -> dict[str, str | None]:
    """The message or delta fields that carry reasoning text under the configured name."""
    if field == "both":
        return {"reasoning_content": text, "reasoning": text}
    return {field: text}


async def handle_chat(request: web.Request) -> web.StreamResponse:
    """Chat completions."""
    fleet = sim_fleet(request)
    body = await parse_body(request, ChatRequest)
    fleet.check_model(body.model)
    text = render_chat(body.messages, body.tools)
    ctx, prompt = await fleet.route(request, text)
    await ctx.admission_faults()
    tools = [ToolSpec(t.function.name, t.function.parameters) for t in body.tools or ()]
    reply = ReplyRequest(
        max_tokens=0,
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        stop=body.stop_strings(),
        tools=tools,
        tool_choice=tool_choice_name(body.tool_choice),
        parallel_tool_calls=body.parallel_tool_calls,
        reasoning_effort=resolve_effort(body.reasoning_effort, ctx.config.reasoning),
        thinking_budget=body.thinking_token_budget,
    )
    gen = await ctx.start(
        text,
        reply,
        body.requested_max_tokens(),
        temperature=body.temperature,
        seed=body.seed,
        stream=body.stream,
        prompt=prompt,
    )
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk" if body.stream else "chat.completion",
        "created": gen.created,
        "model": body.model,
    }
    if not body.stream:
        try:
            await gen.run_to_end()
        finally:
            gen.abandon()
        return json_reply(_full_body(head, gen, ctx.config.reasoning.field))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _stream(request, head, gen, include_usage, ctx.config.reasoning.field)


def _full_body(head: dict[str, Any], gen: Generation, field: ReasoningField) -> dict[str, Any]:
    plan = gen.plan
    message: dict[str, Any] = {"role": "assistant", "content": plan.content or None}
    if plan.reasoning_tokens is not None:
        message.update(reasoning_fields(field, plan.reasoning or None))
    if plan.tool_calls:
        message["content"] = None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in plan.tool_calls
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
    return {**head, "choices": [choice], "usage": usage_body(gen)}


async def _stream(
    request: web.Request,
    head: dict[str, Any],
    gen: Generation,
    include_usage: bool,
    field: ReasoningField,
) -> web.StreamResponse:
    resp = await open_stream(request)
    extra = {"usage": None} if include_usage else {}
    started: set[int] = set()
    calls = gen.plan.tool_calls

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse_data({**head, "choices": [choice], **extra})

    def render(batch: list[tuple[int, str]]) -> bytes:
        out: list[bytes] = []
        for target, group in groupby(batch, key=lambda d: d[0]):
            if target == REASONING:
                # One delta per reasoning token, as vLLM's reasoning parser streams them
                # (a client may count reasoning tokens by their deltas).
                out.extend(chunk(reasoning_fields(field, piece)) for _t, piece in group)
                continue
            text = "".join(piece for _t, piece in group)
            if target == CONTENT:
                if text:
                    out.append(chunk({"content": text}))
                continue
            call: dict[str, Any] = {"index": target, "function": {"arguments": text}}
            if target not in started:
                started.add(target)
                call.update(id=calls[target].id, type="function")
                call["function"]["name"] = calls[target].name
            elif not text:
                continue
            out.append(chunk({"tool_calls": [call]}))
        return b"".join(out)

    await resp.write(chunk({"role": "assistant", "content": ""}))
    if not await pump(request, resp, gen, render):
        return resp
    await resp.write(chunk({}, gen.plan.finish_reason))
    if include_usage:
        await resp.write(sse_data({**head, "choices": [], "usage": usage_body(gen)}))
    await resp.write(DONE)
    await resp.write_eof()
    return resp
