"""POST /v1/responses: the Responses API with stored state and previous_response_id chains."""

from __future__ import annotations

from aiohttp import web

from loadgen.sim.api_errors import ApiError
from loadgen.sim.chat import tool_choice_name
from loadgen.sim.fleet import sim_fleet
from loadgen.sim.generation import SimContext
from loadgen.sim.prompt import render_responses_input
from loadgen.sim.reasoning import resolve_effort
from loadgen.sim.reply import ReplyRequest, ToolSpec
from loadgen.sim.request_body import json_reply, parse_body
from loadgen.sim.requests import ResponsesRequest
from loadgen.sim.response_events import ResponseEvents
from loadgen.sim.response_output import ResponseBuilder
from loadgen.sim.streaming import open_stream, pump

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
        reasoning_effort=resolve_effort(body.reasoning_effort(), ctx.config.reasoning),
        thinking_budget=body.thinking_token_budget,
    )
    gen = await ctx.start(
        render_responses_input(body.input, body.instructions, tool_dicts, history),
        reply,
        body.max_output_tokens,
        temperature=body.temperature,
        seed=body.seed,
        stream=body.stream,
    )
    builder = ResponseBuilder(body, gen)
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
    request: web.Request, ctx: SimContext, builder: ResponseBuilder
) -> web.StreamResponse:
    resp = await open_stream(request)
    events = ResponseEvents(builder)
    await resp.write(events.event("response.created", response=builder.response("in_progress")))
    await resp.write(events.event("response.in_progress", response=builder.response("in_progress")))
    if not await pump(request, resp, builder.gen, events.render):
        return resp
    tail = events.close_last()
    final = builder.response("completed")
    if builder.body.store:
        ctx.store.put(builder.id, final, builder.transcript())
    done_name = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    await resp.write(tail + events.event(done_name, response=final))
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
