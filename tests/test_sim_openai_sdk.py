"""Specification of the simulator as seen by the official `openai` SDK, a real client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest
import pytest_asyncio
from jsonschema import Draft202012Validator
from openai import AsyncOpenAI

from loadgen.protocol import count_tokens
from loadgen.protocol.tokens import words_for_tokens
from loadgen.sim import SimServer

StartSim = Callable[..., Awaitable[SimServer]]

EDIT_FILE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "old_string": {"type": "string"},
        "new_string": {"type": "string"},
        "replace_all": {"type": "boolean"},
    },
    "required": ["path", "old_string", "new_string"],
    "additionalProperties": False,
}
READ_FILE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "offset": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 1, "maximum": 2000},
    },
    "required": ["path", "offset", "limit"],
    "additionalProperties": False,
}
SCHEMAS = {"edit_file": EDIT_FILE, "read_file": READ_FILE}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": name, "description": name, "parameters": schema}}
    for name, schema in SCHEMAS.items()
]
USER: list[Any] = [{"role": "user", "content": "Please fix the failing test in the repository."}]


def client_for(server: SimServer) -> AsyncOpenAI:
    """An SDK client for `server` that never retries, so every error surfaces at once."""
    return AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)


@pytest_asyncio.fixture
async def client(sim: SimServer) -> AsyncIterator[AsyncOpenAI]:
    async with client_for(sim) as c:
        yield c


def model_of(server: SimServer) -> str:
    return server.config.served_model_name


def assert_valid_arguments(name: str, arguments: str) -> None:
    """The arguments are JSON that validates against the named tool's parameter schema."""
    Draft202012Validator(SCHEMAS[name]).validate(json.loads(arguments))


# --- chat completions ---------------------------------------------------------------------


async def test_streamed_chat_delivers_content_over_many_chunks_and_usage_last(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    stream = await client.chat.completions.create(
        model=model_of(sim),
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=200,
        seed=3,
    )
    pieces: list[str] = []
    finish: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        (choice,) = chunk.choices
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason is not None:
            finish.append(choice.finish_reason)

    assert len(pieces) > 1
    assert finish in (["stop"], ["length"])
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == count_tokens("".join(pieces))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streamed_named_tool_call_arguments_arrive_in_pieces_and_validate(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    stream = await client.chat.completions.create(
        model=model_of(sim),
        messages=USER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "edit_file"}},
        stream=True,
    )
    names: list[str] = []
    argument_chunks: list[str] = []
    finish: list[str] = []
    async for chunk in stream:
        (choice,) = chunk.choices
        for call in choice.delta.tool_calls or ():
            assert call.index == 0
            if call.function and call.function.name:
                names.append(call.function.name)
            if call.function and call.function.arguments:
                argument_chunks.append(call.function.arguments)
        if choice.finish_reason is not None:
            finish.append(choice.finish_reason)

    assert names == ["edit_file"]
    assert len(argument_chunks) > 1
    assert_valid_arguments("edit_file", "".join(argument_chunks))
    assert finish == ["tool_calls"]


async def test_streamed_required_tool_calls_each_validate_against_their_tool(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    stream = await client.chat.completions.create(
        model=model_of(sim), messages=USER, tools=TOOLS, tool_choice="required", stream=True
    )
    names: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    finish: list[str] = []
    async for chunk in stream:
        (choice,) = chunk.choices
        for call in choice.delta.tool_calls or ():
            if call.function and call.function.name:
                names[call.index] = call.function.name
            arguments.setdefault(call.index, []).append(call.function.arguments or "")
        if choice.finish_reason is not None:
            finish.append(choice.finish_reason)

    assert names
    assert names.keys() == arguments.keys()
    for index, name in names.items():
        assert_valid_arguments(name, "".join(arguments[index]))
    assert finish == ["tool_calls"]


async def test_non_streamed_tool_call_has_valid_arguments_and_no_content(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    reply = await client.chat.completions.create(
        model=model_of(sim),
        messages=USER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "read_file"}},
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.id
    assert call.function.name == "read_file"
    assert_valid_arguments("read_file", call.function.arguments)
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0


async def test_second_chat_turn_finds_first_turn_in_prefix_cache(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    history: list[Any] = [{"role": "user", "content": words_for_tokens(400)}]
    first = await client.chat.completions.create(
        model=model_of(sim),
        messages=history,
        max_tokens=40,
        extra_body={"ignore_eos": True},
    )
    assert first.usage is not None
    assert first.usage.prompt_tokens > 400
    history += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "Now run the tests again."},
    ]
    second = await client.chat.completions.create(
        model=model_of(sim), messages=history, max_tokens=8
    )
    assert second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None
    assert details.cached_tokens is not None
    assert details.cached_tokens >= first.usage.prompt_tokens
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens


# --- responses API ------------------------------------------------------------------------


async def test_response_chain_carries_history_and_hits_prefix_cache(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    first = await client.responses.create(
        model=model_of(sim), input=words_for_tokens(300), store=True
    )
    second = await client.responses.create(
        model=model_of(sim),
        input="And what comes next?",
        previous_response_id=first.id,
        store=True,
    )
    assert first.usage is not None
    assert second.usage is not None
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens > 0


async def test_streamed_response_events_arrive_in_documented_order(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    async with client.responses.stream(
        model=model_of(sim), input="Summarise the plan.", max_output_tokens=500
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()

    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = [i for i, t in enumerate(types) if t == "response.output_text.delta"]
    assert len(deltas) > 1
    assert types.index("response.output_item.added") < deltas[0]
    assert deltas[-1] < types.index("response.output_text.done")
    assert types.index("response.output_item.done") < len(types) - 1
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)

    last_delta = events[deltas[-1]]
    assert last_delta.type == "response.output_text.delta"
    assert last_delta.snapshot == final.output_text
    assert "".join(events[i].delta for i in deltas) == final.output_text
    assert final.status == "completed"


async def test_unknown_previous_response_id_is_not_found(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    with pytest.raises(openai.NotFoundError, match="not found"):
        await client.responses.create(
            model=model_of(sim), input="hi", previous_response_id="resp_doesnotexist"
        )
    with pytest.raises(openai.NotFoundError, match="not found"):
        await client.responses.retrieve("resp_doesnotexist")


async def test_response_evicted_by_store_capacity_is_not_found(start_sim: StartSim) -> None:
    server = await start_sim(responses_store_capacity=1)
    async with client_for(server) as client:
        a = await client.responses.create(model=model_of(server), input="first", store=True)
        await client.responses.create(model=model_of(server), input="second", store=True)
        with pytest.raises(openai.NotFoundError, match="not found") as caught:
            await client.responses.create(
                model=model_of(server), input="continue", previous_response_id=a.id
            )
    assert caught.value.status_code == 404
    assert a.id in str(caught.value)


async def test_response_older_than_store_ttl_is_not_found(start_sim: StartSim) -> None:
    server = await start_sim(responses_store_ttl_s=0.2)
    async with client_for(server) as client:
        a = await client.responses.create(model=model_of(server), input="first", store=True)
        await asyncio.sleep(0.6)
        with pytest.raises(openai.NotFoundError, match="not found"):
            await client.responses.create(
                model=model_of(server), input="continue", previous_response_id=a.id
            )


# --- completions and models ---------------------------------------------------------------


async def test_completion_returns_text_and_matching_usage(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    reply = await client.completions.create(
        model=model_of(sim), prompt="def add(a, b):", max_tokens=24
    )
    (choice,) = reply.choices
    assert choice.text
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.completion_tokens == count_tokens(choice.text) <= 24


async def test_streamed_completion_joins_to_text_with_final_usage(
    client: AsyncOpenAI, sim: SimServer
) -> None:
    stream = await client.completions.create(
        model=model_of(sim),
        prompt="def add(a, b):",
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    pieces: list[str] = []
    finish: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            continue
        (choice,) = chunk.choices
        pieces.append(choice.text)
        if choice.finish_reason is not None:
            finish.append(choice.finish_reason)

    assert len([p for p in pieces if p]) > 1
    assert finish == ["length"]
    assert usage is not None
    assert usage.completion_tokens == count_tokens("".join(pieces)) == 30


async def test_models_list_names_the_served_model(start_sim: StartSim) -> None:
    server = await start_sim(served_model_name="my-org/agent-model")
    async with client_for(server) as client:
        models = [m async for m in client.models.list()]
    assert [m.id for m in models] == ["my-org/agent-model"]
