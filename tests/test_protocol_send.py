"""send() against the real simulator: replies assembled from the wire, failures as records."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from loadgen.protocol import (
    Api,
    FailureKind,
    Reply,
    ToolDefinition,
    chat_body,
    completions_body,
    count_tokens,
    encode_message,
    encode_tools,
    responses_body,
    send,
    validate_tool_calls,
    words_for_tokens,
)
from loadgen.sim import SimServer
from loadgen.transport import TargetConfig, Transport

StartSim = Callable[..., Awaitable[SimServer]]
Client = Callable[..., Awaitable[Transport]]

MODEL = "agentload-sim"
READ: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 500},
        "mode": {"enum": ["text", "bytes"]},
    },
    "required": ["path"],
    "additionalProperties": False,
}
TOOLS = [ToolDefinition("read_file", READ, "Read a file")]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[Client]:
    """Open Transports to servers (or plain URLs); all are closed afterwards."""
    opened: list[Transport] = []

    async def open_(server: SimServer | str, **target: Any) -> Transport:
        url = server if isinstance(server, str) else server.base_url
        transport = Transport(TargetConfig.from_url(url, **target))
        await transport.__aenter__()
        opened.append(transport)
        return transport

    yield open_
    for transport in opened:
        await transport.__aexit__(None, None, None)


def _user(text: str) -> list[bytes]:
    return [encode_message("user", text)]


def _assert_failed(reply: Reply, kind: FailureKind) -> None:
    assert not reply.ok
    assert reply.failures == [kind], reply.error
    assert reply.error


async def test_segmented_body_is_read_by_the_server_as_the_joined_body(
    sim: SimServer, client: Client
) -> None:
    transport = await client(sim)
    messages = [encode_message("user", words_for_tokens(20, i)) for i in range(30)]
    segments = chat_body(MODEL, messages, stream=False, max_tokens=4)
    split = await send(transport, "chat", segments)
    joined = await send(transport, "chat", b"".join(segments))
    assert split.ok, split.error
    assert split.usage is not None
    assert joined.usage is not None
    assert split.usage.prompt_tokens == joined.usage.prompt_tokens > 600


async def test_streamed_chat_reply_counts_and_times_every_token(
    sim: SimServer, client: Client
) -> None:
    reply = await send(await client(sim), "chat", chat_body(MODEL, _user("hello"), max_tokens=40))
    assert reply.ok, reply.error
    assert reply.status == 200
    assert reply.saw_done
    assert reply.finish_reason in ("stop", "length")
    assert reply.usage is not None
    completion = reply.usage.completion_tokens
    assert count_tokens(reply.text) == completion
    # One event per engine step, unless a step's chunks were coalesced on the way.
    assert completion // 2 <= len(reply.token_times_ns) <= completion
    assert reply.token_times_ns == sorted(reply.token_times_ns)
    assert reply.ttft_s is not None
    assert 0 < reply.ttft_s <= reply.e2e_s
    assert len(reply.itl_s()) == len(reply.token_times_ns) - 1


async def test_resent_history_reports_cached_prompt_tokens(sim: SimServer, client: Client) -> None:
    transport = await client(sim)
    history = [encode_message("system", words_for_tokens(200)), encode_message("user", "go")]
    first = await send(transport, "chat", chat_body(MODEL, history, max_tokens=16))
    history += [encode_message("assistant", first.text), encode_message("user", "more")]
    second = await send(transport, "chat", chat_body(MODEL, history, max_tokens=16))
    assert first.ok, first.error
    assert second.ok, second.error
    assert second.usage is not None
    assert second.usage.cached_tokens is not None
    assert second.usage.cached_tokens >= 192


async def test_streamed_tool_calls_are_assembled_and_pass_validation(
    sim: SimServer, client: Client
) -> None:
    transport = await client(sim)
    tools = encode_tools(TOOLS, "chat")
    for seed in range(5):
        body = chat_body(MODEL, _user("read"), tools=tools, tool_choice="required", seed=seed)
        reply = await send(transport, "chat", body)
        assert reply.ok, reply.error
        assert reply.finish_reason == "tool_calls"
        assert reply.tool_calls
        assert all(call.id and call.name == "read_file" for call in reply.tool_calls)
        assert validate_tool_calls(reply.tool_calls, {"read_file": READ}) == [""] * len(
            reply.tool_calls
        )
        assert reply.t_first_token_ns is not None


async def test_malformed_tool_arguments_are_flagged(start_sim: StartSim, client: Client) -> None:
    server = await start_sim(faults={"malformed_tool_args": 1.0})
    body = chat_body(
        MODEL, _user("read"), tools=encode_tools(TOOLS, "chat"), tool_choice="required"
    )
    reply = await send(await client(server), "chat", body)
    assert reply.ok, reply.error  # the reply arrived; judging its calls is the caller's step
    problems = validate_tool_calls(reply.tool_calls, {"read_file": READ})
    assert problems[0], reply.tool_calls[0].arguments


async def test_non_streaming_chat_reply_is_assembled(sim: SimServer, client: Client) -> None:
    body = chat_body(MODEL, _user("hi"), stream=False, max_tokens=12)
    reply = await send(await client(sim), "chat", body)
    assert reply.ok, reply.error
    assert reply.usage is not None
    assert count_tokens(reply.text) == reply.usage.completion_tokens
    assert reply.t_first_token_ns is None
    assert reply.token_times_ns == []


async def test_responses_chain_continues_on_previous_response_id(
    sim: SimServer, client: Client
) -> None:
    transport = await client(sim)
    first = await send(transport, "responses", responses_body(MODEL, words_for_tokens(100)))
    assert first.ok, first.error
    assert first.response_id
    assert first.usage is not None
    body = responses_body(MODEL, "and then?", previous_response_id=first.response_id)
    second = await send(transport, "responses", body)
    assert second.ok, second.error
    assert second.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens
    assert second.usage.cached_tokens
    assert count_tokens(second.text) == second.usage.completion_tokens
    assert second.token_times_ns


async def test_responses_function_calls_are_assembled(sim: SimServer, client: Client) -> None:
    tools = encode_tools(TOOLS, "responses")
    body = responses_body(MODEL, "read", tools=tools, tool_choice="required")
    reply = await send(await client(sim), "responses", body)
    assert reply.ok, reply.error
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls
    assert all(call.id.startswith("call_") for call in reply.tool_calls)
    assert validate_tool_calls(reply.tool_calls, {"read_file": READ}) == [""] * len(
        reply.tool_calls
    )


async def test_unknown_previous_response_id_is_server_state_lost(
    sim: SimServer, client: Client
) -> None:
    body = responses_body(MODEL, "hi", previous_response_id="resp_never_issued")
    reply = await send(await client(sim), "responses", body)
    _assert_failed(reply, FailureKind.SERVER_STATE_LOST)
    assert reply.status == 404


async def test_prompt_longer_than_the_context_is_context_overflow(
    start_sim: StartSim, client: Client
) -> None:
    server = await start_sim(max_model_len=256)
    body = chat_body(MODEL, _user(words_for_tokens(400)))
    reply = await send(await client(server), "chat", body)
    _assert_failed(reply, FailureKind.CONTEXT_OVERFLOW)
    assert reply.status == 400


async def test_429_is_rate_limited_with_retry_after(start_sim: StartSim, client: Client) -> None:
    server = await start_sim(faults={"rate_limit": 1.0})
    reply = await send(await client(server), "chat", chat_body(MODEL, _user("hi")))
    _assert_failed(reply, FailureKind.RATE_LIMITED)
    assert reply.retry_after_s == 1.0


async def test_5xx_is_http_error(start_sim: StartSim, client: Client) -> None:
    server = await start_sim(faults={"http_5xx": 1.0})
    reply = await send(await client(server), "chat", chat_body(MODEL, _user("hi")))
    _assert_failed(reply, FailureKind.HTTP_ERROR)
    assert reply.status == 500


@pytest.mark.parametrize(
    ("api", "body"),
    [
        ("chat", chat_body(MODEL, _user("hi"), max_tokens=64, ignore_eos=True)),
        ("responses", responses_body(MODEL, "hi", max_output_tokens=64, ignore_eos=True)),
        ("completions", completions_body(MODEL, "hi", max_tokens=64, ignore_eos=True)),
    ],
    ids=["chat", "responses", "completions"],
)
async def test_stream_cut_mid_way_is_stream_truncated(
    start_sim: StartSim, client: Client, api: Api, body: list[bytes]
) -> None:
    server = await start_sim(faults={"stream_cut": 1.0})
    reply = await send(await client(server), api, body)
    _assert_failed(reply, FailureKind.STREAM_TRUNCATED)
    assert not reply.saw_done


async def test_closed_port_is_connection_error(client: Client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reply = await send(
        await client(f"http://127.0.0.1:{port}"), "chat", chat_body(MODEL, _user("hi"))
    )
    _assert_failed(reply, FailureKind.CONNECTION_ERROR)
    assert reply.status is None
    assert reply.t_end_ns >= reply.t_sent_ns > 0


async def test_reply_slower_than_the_request_timeout_is_timeout(
    start_sim: StartSim, client: Client
) -> None:
    server = await start_sim(faults={"latency_spike": 1.0, "latency_spike_ms": 2000})
    transport = await client(server, request_timeout_s=0.3)
    reply = await send(transport, "chat", chat_body(MODEL, _user("hi")))
    _assert_failed(reply, FailureKind.TIMEOUT)
    assert reply.e2e_s < 1.5


async def test_streamed_completions_reply_is_assembled(sim: SimServer, client: Client) -> None:
    body = completions_body(MODEL, "once upon a time", max_tokens=10)
    reply = await send(await client(sim), "completions", body)
    assert reply.ok, reply.error
    assert reply.finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 10 == count_tokens(reply.text)
    assert reply.token_times_ns


async def test_non_streaming_completions_reply_is_assembled(sim: SimServer, client: Client) -> None:
    body = completions_body(MODEL, "once upon a time", max_tokens=10, stream=False)
    reply = await send(await client(sim), "completions", body)
    assert reply.ok, reply.error
    assert count_tokens(reply.text) == 10


async def test_one_transport_carries_many_concurrent_streams(
    sim: SimServer, client: Client
) -> None:
    transport = await client(sim)
    bodies = [chat_body(MODEL, _user(f"hello {i}"), max_tokens=16) for i in range(300)]
    replies = await asyncio.gather(*(send(transport, "chat", body) for body in bodies))
    assert all(reply.ok for reply in replies), {reply.error for reply in replies}
    assert all(reply.usage is not None for reply in replies)
