"""Specification of the simulator's reasoning models: how long they think, how the thinking is
streamed and counted, what it costs in time and batch slots, and what the prefix cache keeps."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from loadgen.cli.main import build_parser
from loadgen.cli.sim_command import config_from_args
from loadgen.protocol import count_tokens
from loadgen.sim import SimServer
from loadgen.sim.config import profile_sim_config

StartSim = Callable[..., Awaitable[SimServer]]
Scrape = Callable[..., Awaitable[float]]

# Small, distinct means so every effort is told apart and a test takes milliseconds.
TOKENS = {"minimal": 3, "low": 7, "medium": 12, "high": 20}
EXPECTED = {"none": 0, **TOKENS}


def reasoning(**fields: Any) -> dict[str, Any]:
    """The `reasoning` config section: TOKENS with spread 0 (exact lengths), plus `fields`."""
    return {"tokens": TOKENS, "spread": 0.0, **fields}


async def reasoning_sim(start_sim: StartSim, **overrides: Any) -> SimServer:
    """A `fast` simulator whose answers are exactly 10 tokens, thinking per TOKENS."""
    settings: dict[str, Any] = {
        "reasoning": reasoning(),
        "output_tokens_median": 10,
        "output_tokens_sigma": 0.0,
        **overrides,
    }
    return await start_sim(**settings)


def root(server: SimServer) -> str:
    return server.base_url.removesuffix("/v1")


def chat_body(server: SimServer, content: str = "Fix the bug.", **fields: Any) -> dict[str, Any]:
    return {
        "model": server.config.served_model_name,
        "messages": [{"role": "user", "content": content}],
        **fields,
    }


def responses_body(server: SimServer, text: str = "Fix the bug.", **fields: Any) -> dict[str, Any]:
    return {"model": server.config.served_model_name, "input": text, **fields}


async def post(
    http: aiohttp.ClientSession, server: SimServer, path: str, body: dict[str, Any]
) -> tuple[int, Any]:
    async with http.post(f"{server.base_url}{path}", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def chat(http: aiohttp.ClientSession, server: SimServer, **fields: Any) -> dict[str, Any]:
    """A successful non-streaming chat completion's body."""
    status, body = await post(http, server, "/chat/completions", chat_body(server, **fields))
    assert status == 200, body
    return dict(body)


async def respond(http: aiohttp.ClientSession, server: SimServer, **fields: Any) -> dict[str, Any]:
    """A successful non-streaming Responses body."""
    status, body = await post(http, server, "/responses", responses_body(server, **fields))
    assert status == 200, body
    return dict(body)


async def sse_events(
    http: aiohttp.ClientSession, server: SimServer, path: str, body: dict[str, Any]
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Each SSE data payload of a streamed request with the perf_counter_ns it arrived at."""
    async with http.post(f"{server.base_url}{path}", json=body) as resp:
        assert resp.status == 200
        async for line in resp.content:
            now = time.perf_counter_ns()
            if line.startswith(b"data: {"):
                yield now, json.loads(line.removeprefix(b"data: "))


async def chat_deltas(
    http: aiohttp.ClientSession, server: SimServer, **fields: Any
) -> list[tuple[int, dict[str, Any]]]:
    """The (arrival ns, delta) of every choice chunk of a streamed chat completion."""
    body = chat_body(server, stream=True, **fields)
    return [
        (t, payload["choices"][0]["delta"])
        async for t, payload in sse_events(http, server, "/chat/completions", body)
        if payload["choices"]
    ]


def is_answer(delta: dict[str, Any]) -> bool:
    return bool(delta.get("content") or delta.get("tool_calls"))


def is_reasoning(delta: dict[str, Any]) -> bool:
    return "reasoning_content" in delta or "reasoning" in delta


# --- lengths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("effort", list(EXPECTED))
async def test_spread_zero_thinks_exactly_the_mean_of_the_requested_effort(
    start_sim: StartSim, http: aiohttp.ClientSession, effort: str
) -> None:
    sim = await reasoning_sim(start_sim)
    reply = await chat(http, sim, reasoning_effort=effort)
    message = reply["choices"][0]["message"]
    assert reply["usage"]["completion_tokens_details"] == {"reasoning_tokens": EXPECTED[effort]}
    assert count_tokens(message["reasoning_content"] or "") == EXPECTED[effort]
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert count_tokens(message["content"]) == 10


async def test_default_effort_applies_to_requests_that_name_none(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim, reasoning=reasoning(default_effort="medium"))
    chatted = await chat(http, sim)
    responded = await respond(http, sim)
    assert chatted["usage"]["completion_tokens_details"]["reasoning_tokens"] == TOKENS["medium"]
    assert responded["usage"]["output_tokens_details"]["reasoning_tokens"] == TOKENS["medium"]
    assert responded["reasoning"] == {"effort": "medium", "summary": None}


async def test_requests_without_effort_get_todays_bodies_when_the_default_is_none(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim)
    reply = await chat(http, sim)
    assert set(reply["choices"][0]["message"]) == {"role", "content"}
    assert "completion_tokens_details" not in reply["usage"]
    responded = await respond(http, sim)
    assert [item["type"] for item in responded["output"]] == ["message"]
    assert "reasoning" not in responded
    assert responded["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}


async def test_spread_draws_lengths_around_the_mean_and_a_seeded_request_repeats(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim, reasoning=reasoning(tokens={"high": 60}, spread=0.5))

    async def thought(**fields: Any) -> int:
        reply = await chat(http, sim, reasoning_effort="high", max_tokens=1000, **fields)
        return int(reply["usage"]["completion_tokens_details"]["reasoning_tokens"])

    lengths = await asyncio.gather(*(thought(content=f"task {i}") for i in range(40)))
    assert len(set(lengths)) > 10
    # The configured figure is the mean; 40 draws at sigma 0.5 land within ~8% of it.
    assert 60 * 0.7 < statistics.fmean(lengths) < 60 * 1.3
    assert await thought(seed=7) == await thought(seed=7)


async def test_thinking_token_budget_caps_reasoning_and_the_answer_follows(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim)
    reply = await chat(http, sim, reasoning_effort="high", thinking_token_budget=5)
    assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    assert reply["usage"]["completion_tokens"] == 5 + 10
    assert reply["choices"][0]["finish_reason"] == "stop"
    responded = await respond(
        http, sim, reasoning={"effort": "high"}, thinking_token_budget=4, max_output_tokens=100
    )
    assert responded["usage"]["output_tokens_details"]["reasoning_tokens"] == 4
    assert responded["status"] == "completed"


# --- max tokens ---------------------------------------------------------------------------------


async def test_reasoning_counts_toward_max_tokens_and_leaves_the_answer_the_rest(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim)
    reply = await chat(http, sim, reasoning_effort="high", max_completion_tokens=25)
    assert reply["usage"]["completion_tokens"] == 25
    assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] == 20
    assert count_tokens(reply["choices"][0]["message"]["content"]) == 5
    assert reply["choices"][0]["finish_reason"] == "length"


async def test_a_chat_limit_reached_while_reasoning_ends_with_length_and_no_answer(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim)
    reply = await chat(http, sim, reasoning_effort="high", max_tokens=8)
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None
    assert count_tokens(choice["message"]["reasoning_content"]) == 8
    assert reply["usage"]["completion_tokens"] == 8
    assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] == 8


async def test_a_responses_limit_reached_while_reasoning_is_incomplete_with_only_reasoning(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim)
    body = responses_body(sim, reasoning={"effort": "high"}, max_output_tokens=8, stream=True)
    events = [e async for _t, e in sse_events(http, sim, "/responses", body)]
    final = events[-1]
    assert final["type"] == "response.incomplete"
    response = final["response"]
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [item["type"] for item in response["output"]] == ["reasoning"]
    assert count_tokens(response["output"][0]["content"][0]["text"]) == 8
    assert response["usage"]["output_tokens"] == 8
    assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == 8
    assert not any(e["type"].startswith("response.output_text") for e in events)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/chat/completions", "reasoning_effort", "extreme"),
        ("/responses", "reasoning", {"effort": "extreme"}),
    ],
)
async def test_an_unknown_effort_is_a_400_naming_the_field(
    sim: SimServer, http: aiohttp.ClientSession, path: str, field: str, value: Any
) -> None:
    body = chat_body(sim) if path == "/chat/completions" else responses_body(sim)
    status, reply = await post(http, sim, path, {**body, field: value})
    assert status == 400
    assert reply["error"]["type"] == "BadRequestError"
    assert reply["error"]["code"] == 400
    assert "effort" in reply["error"]["message"]
    assert "'high'" in reply["error"]["message"]


# --- chat streaming -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "keys"),
    [
        ("reasoning_content", {"reasoning_content"}),
        ("reasoning", {"reasoning"}),
        ("both", {"reasoning_content", "reasoning"}),
    ],
)
async def test_chat_streams_one_reasoning_delta_per_token_under_the_configured_field(
    start_sim: StartSim, http: aiohttp.ClientSession, field: str, keys: set[str]
) -> None:
    sim = await reasoning_sim(start_sim, reasoning=reasoning(field=field))
    deltas = [d for _t, d in await chat_deltas(http, sim, reasoning_effort="medium")]
    thinking = [d for d in deltas if is_reasoning(d)]
    assert len(thinking) == TOKENS["medium"]
    assert all(set(d) == keys and len(set(d.values())) == 1 for d in thinking)
    assert all(count_tokens(next(iter(d.values()))) == 1 for d in thinking)
    first_answer = next(i for i, d in enumerate(deltas) if is_answer(d))
    assert all(i < first_answer for i, d in enumerate(deltas) if is_reasoning(d))

    reply = await chat(http, sim, reasoning_effort="medium")
    assert keys <= set(reply["choices"][0]["message"])


async def test_openai_client_streams_chat_reasoning_before_the_answer_and_counts_it(
    start_sim: StartSim,
) -> None:
    sim = await reasoning_sim(start_sim)
    async with AsyncOpenAI(base_url=sim.base_url, api_key="unused", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model=sim.config.served_model_name,
            messages=[{"role": "user", "content": "Plan the refactor."}],
            reasoning_effort="low",
            stream=True,
            stream_options={"include_usage": True},
        )
        order: list[str] = []
        thought, usage = "", None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                piece = getattr(choice.delta, "reasoning_content", None)
                if piece:
                    thought += piece
                    order.append("reasoning")
                elif choice.delta.content:
                    order.append("answer")
    assert order == ["reasoning"] * TOKENS["low"] + ["answer"] * (len(order) - TOKENS["low"])
    assert "answer" in order
    assert count_tokens(thought) == TOKENS["low"]
    assert usage is not None
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == TOKENS["low"]
    assert usage.completion_tokens == TOKENS["low"] + 10


# --- Responses --------------------------------------------------------------------------------


async def test_openai_client_responses_stream_a_reasoning_item_first_in_contract_order(
    start_sim: StartSim,
) -> None:
    sim = await reasoning_sim(start_sim)
    async with AsyncOpenAI(base_url=sim.base_url, api_key="unused", max_retries=0) as client:
        stream = await client.responses.create(
            model=sim.config.served_model_name,
            input="Plan the refactor.",
            reasoning={"effort": "minimal"},
            stream=True,
        )
        events = [event async for event in stream]
    r = TOKENS["minimal"]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * r,
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 10,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    indexes = [getattr(e, "output_index", None) for e in events[2:-1]]
    assert indexes == [0] * (r + 5) + [1] * (10 + 5)
    added = events[2].model_dump(exclude_unset=True)["item"]
    assert added == {"id": added["id"], "type": "reasoning", "summary": [], "content": []}
    assert added["id"].startswith("rs_")
    deltas = "".join(getattr(e, "delta", "") for e in events[4 : 4 + r])
    done = events[4 + r + 2].model_dump()["item"]
    assert done["content"] == [{"type": "reasoning_text", "text": deltas}]
    final = events[-1].model_dump()["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": r}
    assert final["usage"]["output_tokens"] == r + 10


async def test_responses_function_calls_follow_the_reasoning_item_one_index_later(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim)
    tool = {"type": "function", "name": "read_file", "parameters": {"type": "object"}}
    body = responses_body(
        sim, reasoning={"effort": "low"}, tools=[tool], tool_choice="required", stream=True
    )
    events = [e async for _t, e in sse_events(http, sim, "/responses", body)]
    added = [(e["output_index"], e["item"]["type"]) for e in events if "item" in e]
    assert added[:2] == [(0, "reasoning"), (0, "reasoning")]
    assert {kind for _i, kind in added[2:]} == {"function_call"}
    assert min(i for i, _kind in added[2:]) == 1
    final = events[-1]["response"]
    assert final["output"][0]["type"] == "reasoning"
    assert all(item["type"] == "function_call" for item in final["output"][1:])


async def test_a_non_streamed_response_carries_the_reasoning_item_and_its_usage(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(start_sim)
    responded = await respond(http, sim, reasoning={"effort": "medium"})
    first, message = responded["output"]
    assert first["type"] == "reasoning"
    assert count_tokens(first["content"][0]["text"]) == TOKENS["medium"]
    assert message["type"] == "message"
    usage = responded["usage"]
    assert usage["output_tokens"] == TOKENS["medium"] + 10
    assert usage["output_tokens_details"] == {"reasoning_tokens": TOKENS["medium"]}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


# --- the simulator's own count --------------------------------------------------------------


async def test_reasoning_counter_equals_the_reasoning_tokens_streamed(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    sim = await reasoning_sim(start_sim)
    chats = await asyncio.gather(
        *(chat_deltas(http, sim, reasoning_effort=e) for e in ("low", "high", "none"))
    )
    streamed = sum(is_reasoning(d) for deltas in chats for _t, d in deltas)
    body = responses_body(sim, reasoning={"effort": "medium"}, stream=True)
    events = [e async for _t, e in sse_events(http, sim, "/responses", body)]
    streamed += sum(e["type"] == "response.reasoning_text.delta" for e in events)
    await chat(http, sim)  # reasoning not in play: counts nothing
    assert streamed == TOKENS["low"] + TOKENS["high"] + TOKENS["medium"]
    assert await scrape(sim, "agentload_sim_reasoning_tokens_total") == streamed


async def test_a_fleet_counts_reasoning_tokens_per_replica(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    sim = await reasoning_sim(start_sim, replicas=2)  # round-robin: one request each
    await chat(http, sim, reasoning_effort="low")
    await chat(http, sim, reasoning_effort="high")
    counts = [
        await scrape(sim, "agentload_sim_reasoning_tokens_total", engine=str(i), replica=f"r{i}")
        for i in (0, 1)
    ]
    assert sorted(counts) == [TOKENS["low"], TOKENS["high"]]


# --- time and batch slots -------------------------------------------------------------------


async def test_first_answer_token_comes_reasoning_tokens_times_the_step_after_the_first_thought(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    step_s, thinking = 0.02, 25
    sim = await reasoning_sim(
        start_sim,
        perf={"kind": "analytical", "decode_step_ms": step_s * 1000},
        reasoning=reasoning(tokens={"high": thinking}),
    )
    deltas = await chat_deltas(http, sim, reasoning_effort="high")
    first_thought = next(t for t, d in deltas if is_reasoning(d))
    first_answer = next(t for t, d in deltas if is_answer(d))
    # Token 1 comes out of the prefill step; each later token takes one decode step.
    gap_s = (first_answer - first_thought) / 1e9
    expected = thinking * step_s
    assert abs(gap_s - expected) <= 0.3 * expected + 2 * step_s, gap_s


async def test_reasoning_tokens_hold_a_batch_slot_like_answer_tokens(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    step_s = 0.01
    sim = await reasoning_sim(
        start_sim,
        perf={"kind": "analytical", "decode_step_ms": step_s * 1000},
        max_num_seqs=1,
        reasoning=reasoning(tokens={"high": 40}),
    )
    thinking = asyncio.Event()
    first_thought: list[int] = []

    async def think() -> None:
        body = chat_body(sim, stream=True, reasoning_effort="high")
        async for t, payload in sse_events(http, sim, "/chat/completions", body):
            if payload["choices"] and is_reasoning(payload["choices"][0]["delta"]):
                first_thought.append(t)
                thinking.set()

    thinker = asyncio.create_task(think())
    await thinking.wait()  # the thinker holds the only slot
    waiter = await chat_deltas(http, sim, max_tokens=1)
    await thinker
    # The slot frees only after the thinker's 49 more steps: 39 reasoning, 10 answer tokens.
    waited_s = (next(t for t, d in waiter if is_answer(d)) - first_thought[0]) / 1e9
    assert waited_s >= 0.7 * (40 + 10 - 1) * step_s, waited_s


# --- the prefix cache ---------------------------------------------------------------------------


async def test_chat_history_without_reasoning_hits_cache_only_to_the_end_of_the_last_prompt(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    block = 16

    async def second_turn_cached(effort: str) -> tuple[int, int]:
        sim = await reasoning_sim(
            start_sim, reasoning=reasoning(tokens={"high": 40}), output_tokens_median=40
        )
        first = await chat(http, sim, reasoning_effort=effort)
        answer = first["choices"][0]["message"]["content"]
        # The client resends what it was answered, without the thinking, as chat clients do.
        history = [
            {"role": "user", "content": "Fix the bug."},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Now run the tests."},
        ]
        second = await chat(http, sim, messages=history, reasoning_effort=effort)
        return first["usage"]["prompt_tokens"], second["usage"]["prompt_tokens_details"][
            "cached_tokens"
        ]

    prompt, cached = await second_turn_cached("high")
    assert cached == prompt // block * block
    # Without thinking between them the same history hits on the answer's blocks as well.
    prompt, plain = await second_turn_cached("none")
    assert plain >= (prompt + 40 - 1) // block * block > cached


async def test_chained_responses_hit_cache_through_the_stored_reasoning(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    sim = await reasoning_sim(
        start_sim, reasoning=reasoning(tokens={"high": 40}), output_tokens_median=40
    )
    first = await respond(http, sim, reasoning={"effort": "high"})
    prompt = first["usage"]["input_tokens"]
    second = await respond(
        http,
        sim,
        text="Now run the tests.",
        previous_response_id=first["id"],
        reasoning={"effort": "high"},
    )
    cached = second["usage"]["input_tokens_details"]["cached_tokens"]
    # Prompt, 40 reasoning and 40 answer tokens: all in cache but the last, unfinished block.
    assert cached == (prompt + 40 + 40 - 1) // 16 * 16
    assert second["usage"]["input_tokens"] > prompt + 40 + 40


# --- configuration --------------------------------------------------------------------------


def test_profile_sim_reasoning_overrides_keep_the_presets_other_reasoning_values() -> None:
    config = profile_sim_config(
        {"preset": "gpt-oss-120b-2xh100", "reasoning": {"tokens": {"high": 9000}}}
    )
    assert config.reasoning.tokens.high == 9000
    assert config.reasoning.tokens.low == 256
    assert config.reasoning.default_effort == "medium"
    assert config.reasoning.spread == 0.6
    assert profile_sim_config({}).reasoning.default_effort == "none"


def test_sim_flags_set_the_reasoning_section() -> None:
    args = build_parser().parse_args(
        [
            "sim",
            "--reasoning-effort-default",
            "low",
            "--reasoning-tokens",
            "low=100,high=900",
            "--reasoning-spread",
            "0.4",
            "--reasoning-field",
            "both",
        ]
    )
    config = config_from_args(args).reasoning
    assert (config.default_effort, config.field, config.spread) == ("low", "both", 0.4)
    assert (config.tokens.low, config.tokens.medium, config.tokens.high) == (100, 1024, 900)
