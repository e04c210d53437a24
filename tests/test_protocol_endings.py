"""How a reply ended, judged from streams a real server scripts byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from loadgen.protocol import Api, FailureKind, Reply, ToolCall, chat_body, encode_message, send
from loadgen.transport import TargetConfig, Transport

Play = Callable[..., Awaitable[Reply]]


def _chunk(delta: dict[str, object] | None = None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return (
        b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"
    )


def _event(kind: str, **fields: object) -> bytes:
    payload = orjson.dumps({"type": kind, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'


@pytest_asyncio.fixture
async def play() -> AsyncIterator[Play]:
    """Serve `pieces` as one reply (an event stream unless content_type says otherwise)."""
    runners: list[web.AppRunner] = []
    transports: list[Transport] = []

    async def run(
        pieces: list[bytes], api: Api = "chat", content_type: str = "text/event-stream"
    ) -> Reply:
        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            resp = web.StreamResponse(headers={"Content-Type": content_type})
            await resp.prepare(request)
            for piece in pieces:
                await resp.write(piece)
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_post("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        transport = Transport(TargetConfig.from_url(f"http://127.0.0.1:{runner.addresses[0][1]}"))
        await transport.__aenter__()
        transports.append(transport)
        return await send(transport, api, chat_body("m", [encode_message("user", "hi")]))

    yield run
    for transport in transports:
        await transport.__aexit__(None, None, None)
    for runner in runners:
        await runner.cleanup()


async def test_complete_stream_is_ok(play: Play) -> None:
    reply = await play(
        [
            _chunk({"content": "Hi"}),
            _chunk({"content": " there"}),
            _chunk(finish="stop"),
            USAGE,
            DONE,
        ]
    )
    assert reply.ok, reply.error
    assert reply.text == "Hi there"
    assert len(reply.token_times_ns) == 2


async def test_finish_reason_abort_is_abnormal_finish(play: Play) -> None:
    reply = await play([_chunk({"content": "Hi"}), _chunk(finish="abort"), DONE])
    assert reply.failures == [FailureKind.ABNORMAL_FINISH]
    assert reply.text == "Hi"


async def test_done_without_finish_reason_is_stream_truncated(play: Play) -> None:
    reply = await play([_chunk({"content": "Hi"}), DONE])
    assert reply.failures == [FailureKind.STREAM_TRUNCATED]


async def test_finish_reason_without_done_is_stream_truncated(play: Play) -> None:
    reply = await play([_chunk({"content": "Hi"}), _chunk(finish="stop")])
    assert reply.failures == [FailureKind.STREAM_TRUNCATED]


async def test_error_object_in_the_stream_is_abnormal_finish(play: Play) -> None:
    error = b'data: {"error":{"message":"engine died","code":500}}\n\n'
    reply = await play([_chunk({"content": "Hi"}), error, DONE])
    assert reply.failures == [FailureKind.ABNORMAL_FINISH]
    assert reply.error == "engine died"


async def test_tool_call_deltas_are_joined_per_index(play: Play) -> None:
    def call(index: int, **fields: object) -> bytes:
        return _chunk({"tool_calls": [{"index": index, **fields}]})

    reply = await play(
        [
            call(0, id="a", type="function", function={"name": "read", "arguments": ""}),
            call(1, id="b", type="function", function={"name": "grep", "arguments": '{"q"'}),
            call(0, function={"arguments": '{"path":'}),
            call(1, function={"arguments": ':"x"}'}),
            call(0, function={"arguments": '"a"}'}),
            _chunk(finish="tool_calls"),
            DONE,
        ]
    )
    assert reply.ok, reply.error
    assert reply.tool_calls == [
        ToolCall("a", "read", '{"path":"a"}'),
        ToolCall("b", "grep", '{"q":"x"}'),
    ]


async def test_reasoning_deltas_count_as_token_events(play: Play) -> None:
    reply = await play(
        [
            _chunk({"reasoning_content": "hmm"}),
            _chunk({"content": "Hi"}),
            _chunk(finish="stop"),
            DONE,
        ]
    )
    assert reply.ok, reply.error
    assert reply.text == "Hi"
    assert len(reply.token_times_ns) == 2


async def test_whole_body_with_null_finish_reason_is_abnormal_finish(play: Play) -> None:
    body = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": None}
        ]
    }
    reply = await play([orjson.dumps(body)], content_type="application/json")
    assert reply.failures == [FailureKind.ABNORMAL_FINISH]


async def test_unparseable_body_is_http_error(play: Play) -> None:
    reply = await play([b"<html>oops</html>"], content_type="text/html")
    assert reply.failures == [FailureKind.HTTP_ERROR]


async def test_responses_stream_that_failed_is_abnormal_finish(play: Play) -> None:
    failed = {"id": "resp_1", "status": "failed", "error": {"message": "out of memory"}}
    reply = await play(
        [
            _event("response.created", response={"id": "resp_1", "status": "in_progress"}),
            _event("response.failed", response=failed),
        ],
        api="responses",
    )
    assert reply.failures == [FailureKind.ABNORMAL_FINISH]
    assert reply.response_id == "resp_1"


async def test_incomplete_response_finishes_with_length(play: Play) -> None:
    incomplete = {
        "id": "resp_1",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "usage": {
            "input_tokens": 5,
            "output_tokens": 1,
            "input_tokens_details": {"cached_tokens": 0},
        },
    }
    reply = await play(
        [
            _event("response.output_text.delta", delta="Hi"),
            _event("response.incomplete", response=incomplete),
        ],
        api="responses",
    )
    assert reply.ok, reply.error
    assert (reply.text, reply.finish_reason, reply.saw_done) == ("Hi", "length", True)


@pytest.mark.parametrize("split", [1, 7, 40])
async def test_events_split_across_writes_assemble_the_same(play: Play, split: int) -> None:
    stream = _chunk({"content": "Hi"}) + _chunk(finish="stop") + DONE
    pieces = [stream[i : i + split] for i in range(0, len(stream), split)]
    reply = await play(pieces)
    assert reply.ok, reply.error
    assert reply.text == "Hi"


async def test_finish_reason_and_usage_then_a_clean_close_is_complete(play: Play) -> None:
    # transformers serve ends every stream so: no [DONE] after the usage chunk.
    reply = await play([_chunk({"content": "Hi"}), _chunk(finish="stop"), USAGE])
    assert reply.ok, reply.error
    assert (reply.text, reply.finish_reason, reply.usage is not None) == ("Hi", "stop", True)


async def test_finish_reason_abort_then_a_clean_close_is_still_abnormal_finish(play: Play) -> None:
    reply = await play([_chunk({"content": "Hi"}), _chunk(finish="abort"), USAGE])
    assert reply.failures == [FailureKind.ABNORMAL_FINISH]


async def test_usage_then_a_close_before_any_finish_reason_is_stream_truncated(play: Play) -> None:
    reply = await play([_chunk({"content": "Hi"}), USAGE])
    assert reply.failures == [FailureKind.STREAM_TRUNCATED]


async def test_done_after_a_completed_responses_stream_is_fine(play: Play) -> None:
    # LiteLLM ends Responses streams with a chat-style [DONE] after response.completed.
    completed = {
        "id": "resp_1",
        "status": "completed",
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    reply = await play(
        [
            _event("response.output_text.delta", delta="Hi"),
            _event("response.completed", response=completed),
            DONE,
        ],
        api="responses",
    )
    assert reply.ok, reply.error
    assert (reply.text, reply.finish_reason) == ("Hi", "stop")


async def test_done_without_a_terminal_responses_event_is_stream_truncated(play: Play) -> None:
    reply = await play([_event("response.output_text.delta", delta="Hi"), DONE], api="responses")
    assert reply.failures == [FailureKind.STREAM_TRUNCATED]
