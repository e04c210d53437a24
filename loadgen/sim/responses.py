"""POST /v1/responses: the Responses API with stored state and previous_response_id chains."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from loadgen.sim.api_errors import ApiError
from loadgen.sim.chat import tool_choice_name
from loadgen.sim.fleet import sim_fleet
from loadgen.sim.generation import Generation, SimContext
from loadgen.sim.prompt import render_responses_input, render_tool_call
from loadgen.sim.reply import CONTENT, ReplyRequest, ToolSpec
from loadgen.sim.request_body import json_reply, parse_body
from loadgen.sim.requests import ResponsesRequest
from loadgen.sim.streaming import open_stream, pump, sse_event

__all__ = ["handle_get_response", "handle_responses"]


def _history(ctx: SimContext, previous_id: str | None) -> str | None:
    if previous_id is None:
        return None
    transcript = ctx.lookup(previous_id)
    if transcript is None:
        raise ApiError(
            404, f"Response with id '{previous_id}' not found.", param="previous_response_id"
        )
    return transcript


class _ResponseBuilder:
    """Builds the response object and its output items as the reply is produced."""

    def __init__(self, body: ResponsesRequest, gen: Generation) -> None:
        self.body = body
        self.gen = gen
        self.id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.call_item_ids = [f"fc_{uuid.uuid4().hex}" for _ in gen.plan.tool_calls]
        self.created_at = time.time()

    def items(self, status: str) -> list[dict[str, Any]]:
        plan = self.gen.plan
        if not plan.tool_calls:
            return [self.message(status, plan.content)]
        return [self.call_item(i, status, c.arguments) for i, c in enumerate(plan.tool_calls)]

    def message(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [self.text_part(text)]
        return {
            "id": self.message_id, "type": "message", "status": status, "role": "assistant",
            "content": content,
        }  # fmt: skip

    @staticmethod
    def text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def call_item(self, index: int, status: str, arguments: str) -> dict[str, Any]:
        call = self.gen.plan.tool_calls[index]
        return {
            "id": self.call_item_ids[index], "type": "function_call", "status": status,
            "call_id": call.id, "name": call.name, "arguments": arguments,
        }  # fmt: skip

    def response(self, status: str) -> dict[str, Any]:
        gen, body = self.gen, self.body
        finished = status != "in_progress"
        incomplete = finished and gen.plan.finish_reason == "length"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "incomplete" if incomplete else status,
            "model": body.model,
            "output": self.items("completed") if finished else [],
            "previous_response_id": body.previous_response_id,
            "instructions": body.instructions,
            "store": body.store,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
            "tool_choice": tool_choice_name(body.tool_choice),
            "parallel_tool_calls": body.parallel_tool_calls,
            "temperature": body.temperature,
            "text": {"format": {"type": "text"}},
            "metadata": {},
            "usage": self.usage() if finished else None,
        }

    def usage(self) -> dict[str, Any]:
        gen = self.gen
        return {
            "input_tokens": gen.prompt_tokens,
            "input_tokens_details": {"cached_tokens": gen.cached_tokens},
            "output_tokens": gen.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        }

    def transcript(self) -> str:
        """The conversation a follow-up continues: prompt, then this reply as the model said it."""
        plan = self.gen.plan
        said = "".join(render_tool_call(c.name, c.arguments) for c in plan.tool_calls)
        return self.gen.prompt.text + plan.content + said + "\n"


async def handle_responses(request: web.Request) -> web.StreamResponse:
    """Create a response (optionally continuing a stored one)."""
    fleet = sim_fleet(request)
    body = await parse_body(request, ResponsesRequest)
    fleet.check_model(body.model)
    tool_dicts = [t.model_dump(exclude_none=True) for t in body.tools or ()]
    # A router sees the request as sent: a chained request's stored history is not in it.
    ctx, _seen = await fleet.route(
        request,
        lambda: render_responses_input(body.input, body.instructions, tool_dicts, None),
    )
    history = _history(ctx, body.previous_response_id)
    await ctx.admission_faults()
    reply = ReplyRequest(
        max_tokens=0,
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        stop=body.stop_strings(),
        tools=[ToolSpec(t.name, t.parameters) for t in body.tools or ()],
        tool_choice=tool_choice_name(body.tool_choice),
        parallel_tool_calls=body.parallel_tool_calls,
    )
    gen = await ctx.start(
        render_responses_input(body.input, body.instructions, tool_dicts, history),
        reply,
        body.max_output_tokens,
        temperature=body.temperature,
        seed=body.seed,
        stream=body.stream,
    )
    builder = _ResponseBuilder(body, gen)
    if not body.stream:
        try:
            await gen.run_to_end()
        finally:
            gen.abandon()
        final = builder.response("completed")
        if body.store:
            ctx.store.put(builder.id, final, builder.transcript())
        return json_reply(final)
    return await _stream(request, ctx, builder)


async def _stream(
    request: web.Request, ctx: SimContext, builder: _ResponseBuilder
) -> web.StreamResponse:
    resp = await open_stream(request)
    gen = builder.gen
    seq_no = 0

    def event(event_type: str, /, **fields: Any) -> bytes:
        nonlocal seq_no
        seq_no += 1
        return sse_event(event_type, {"type": event_type, "sequence_number": seq_no - 1, **fields})

    def opened(target: int) -> bytes:
        if target == CONTENT:
            return event(
                "response.output_item.added", output_index=0,
                item=builder.message("in_progress", None),
            ) + event(
                "response.content_part.added", item_id=builder.message_id, output_index=0,
                content_index=0, part=builder.text_part(""),
            )  # fmt: skip
        item = builder.call_item(target, "in_progress", "")
        return event("response.output_item.added", output_index=target, item=item)

    def closed(target: int) -> bytes:
        if target == CONTENT:
            text = gen.plan.content
            return (
                event("response.output_text.done", item_id=builder.message_id, output_index=0,
                      content_index=0, text=text, logprobs=[])
                + event("response.content_part.done", item_id=builder.message_id, output_index=0,
                        content_index=0, part=builder.text_part(text))
                + event("response.output_item.done", output_index=0,
                        item=builder.message("completed", text))
            )  # fmt: skip
        call = gen.plan.tool_calls[target]
        item_id = builder.call_item_ids[target]
        return event(
            "response.function_call_arguments.done", item_id=item_id, output_index=target,
            name=call.name, arguments=call.arguments,
        ) + event(
            "response.output_item.done", output_index=target,
            item=builder.call_item(target, "completed", call.arguments),
        )  # fmt: skip

    current: list[int] = []

    def render(batch: list[tuple[int, str]]) -> bytes:
        out = []
        for target, piece in batch:
            if not current or current[-1] != target:
                if current:
                    out.append(closed(current[-1]))
                current.append(target)
                out.append(opened(target))
            if not piece:
                continue
            if target == CONTENT:
                out.append(
                    event(
                        "response.output_text.delta", item_id=builder.message_id,
                        output_index=0, content_index=0, delta=piece, logprobs=[],
                    )
                )  # fmt: skip
            else:
                out.append(
                    event(
                        "response.function_call_arguments.delta",
                        item_id=builder.call_item_ids[target], output_index=target, delta=piece,
                    )
                )  # fmt: skip
        return b"".join(out)

    await resp.write(event("response.created", response=builder.response("in_progress")))
    await resp.write(event("response.in_progress", response=builder.response("in_progress")))
    if not await pump(request, resp, gen, render):
        return resp
    tail = closed(current[-1]) if current else b""
    final = builder.response("completed")
    if builder.body.store:
        ctx.store.put(builder.id, final, builder.transcript())
    done_name = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    await resp.write(tail + event(done_name, response=final))
    await resp.write_eof()
    return resp


async def handle_get_response(request: web.Request) -> web.Response:
    """GET /v1/responses/{id}: a stored response, or vLLM's 404 (on the replica routed to)."""
    ctx, _prompt = await sim_fleet(request).route(request, "")
    response_id = request.match_info["response_id"]
    stored = ctx.store.get(response_id)
    if stored is None:
        raise ApiError(404, f"Response with id '{response_id}' not found.")
    return json_reply(stored.body)
