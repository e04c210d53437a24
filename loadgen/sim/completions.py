"""POST /v1/completions: a raw prompt in, text out (streaming too)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from loadgen.protocol.tokens import VOCABULARY
from loadgen.sim.api_errors import ApiError
from loadgen.sim.chat import usage_body
from loadgen.sim.fleet import sim_fleet
from loadgen.sim.prompt import START
from loadgen.sim.reply import ReplyRequest
from loadgen.sim.request_body import json_reply, parse_body
from loadgen.sim.requests import CompletionRequest
from loadgen.sim.streaming import DONE, open_stream, pump, sse_data

__all__ = ["completion_prompt_text", "handle_completions"]


def completion_prompt_text(prompt: str | list[str] | list[int]) -> str:
    """The prompt text of a completion request's `prompt` (text, or token ids)."""
    if isinstance(prompt, str):
        return START + prompt
    if len(prompt) != 1 and all(isinstance(p, str) for p in prompt):
        raise ApiError(400, "prompt: send one prompt per request (batched prompts unsupported).")
    if isinstance(prompt[0], str):
        return START + str(prompt[0])
    # Token ids: one one-token word per id, so the prompt counts exactly len(ids) tokens.
    return START + " ".join(VOCABULARY[int(i) % len(VOCABULARY)] for i in prompt)


async def handle_completions(request: web.Request) -> web.StreamResponse:
    """Text completions."""
    fleet = sim_fleet(request)
    body = await parse_body(request, CompletionRequest)
    fleet.check_model(body.model)
    text = completion_prompt_text(body.prompt)
    ctx, prompt = await fleet.route(request, text)
    await ctx.admission_faults()
    reply = ReplyRequest(
        max_tokens=0, min_tokens=body.min_tokens, ignore_eos=body.ignore_eos,
        stop=body.stop_strings(),
    )  # fmt: skip
    gen = await ctx.start(
        text,
        reply,
        body.max_tokens,
        temperature=body.temperature,
        seed=body.seed,
        stream=body.stream,
        prompt=prompt,
    )
    head = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": gen.created,
        "model": body.model,
    }

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    if not body.stream:
        try:
            await gen.run_to_end()
        finally:
            gen.abandon()
        full = {**head, "choices": [choice(gen.plan.content, gen.plan.finish_reason)]}
        return json_reply({**full, "usage": usage_body(gen)})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    extra = {"usage": None} if include_usage else {}
    resp = await open_stream(request)

    def render(batch: list[tuple[int, str]]) -> bytes:
        text = "".join(piece for _target, piece in batch)
        return sse_data({**head, "choices": [choice(text, None)], **extra}) if text else b""

    if not await pump(request, resp, gen, render):
        return resp
    await resp.write(sse_data({**head, "choices": [choice("", gen.plan.finish_reason)], **extra}))
    if include_usage:
        await resp.write(sse_data({**head, "choices": [], "usage": usage_body(gen)}))
    await resp.write(DONE)
    await resp.write_eof()
    return resp
