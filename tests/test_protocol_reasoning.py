"""Reasoning models on the wire: thinking deltas, reasoning token counts and the first answer
token, for chat streams, Responses events and whole JSON bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web
from raw_servers import Serve

from loadgen.protocol import Api, Reply, ToolCall, Usage, chat_body, encode_message, send
from loadgen.protocol.assembly import ChoiceStream, parse_usage, read_choice_body
from loadgen.protocol.responses_assembly import ResponsesStream, read_response_body
from loadgen.transport import TargetConfig, Transport

MS = 1_000_000  # nanoseconds


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return orjson.dumps({"object": "chat.completion.chunk", "choices": [choice]})


def _usage(completion: int, reasoning: int | None = None) -> bytes:
    usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": completion}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return orjson.dumps({"choices": [], "usage": usage})


def _event(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields})


def _feed_chat(events: Sequence[bytes]) -> Reply:
    """Feed a chat stream's events 10 ms apart (the first at 10 ms) and finish it."""
    reply = Reply(api="chat", t_sent_ns=0)
    stream = ChoiceStream(reply)
    for i, data in enumerate(events, start=1):
        stream.feed(i * 10 * MS, data)
    stream.finish()
    # As send() sets it, from the token events.
    reply.t_first_token_ns = reply.token_times_ns[0] if reply.token_times_ns else None
    return reply


def _feed_responses(events: Sequence[bytes]) -> Reply:
    reply = Reply(api="responses", t_sent_ns=0)
    stream = ResponsesStream(reply)
    for i, data in enumerate(events, start=1):
        stream.feed(i * 10 * MS, data)
    stream.finish()
    # As send() sets it, from the token events.
    reply.t_first_token_ns = reply.token_times_ns[0] if reply.token_times_ns else None
    return reply


# -- usage ------------------------------------------------------------------------------------


def test_usage_reads_reasoning_tokens_in_either_apis_spelling() -> None:
    chat = {"prompt_tokens": 5, "completion_tokens": 9,
            "completion_tokens_details": {"reasoning_tokens": 7}}  # fmt: skip
    responses = {"input_tokens": 5, "output_tokens": 9,
                 "input_tokens_details": {"cached_tokens": 2},
                 "output_tokens_details": {"reasoning_tokens": 4}}  # fmt: skip
    assert parse_usage(chat) == Usage(5, 9, None, 7)
    assert parse_usage(responses) == Usage(5, 9, 2, 4)


def test_usage_without_details_says_nothing_of_reasoning() -> None:
    assert parse_usage({"prompt_tokens": 5, "completion_tokens": 9}) == Usage(5, 9)
    details_null = {"prompt_tokens": 5, "completion_tokens": 9, "completion_tokens_details": None}
    assert parse_usage(details_null) == Usage(5, 9, None, None)
    not_a_number = {"prompt_tokens": 5, "completion_tokens": 9,
                    "completion_tokens_details": {"reasoning_tokens": "7"}}  # fmt: skip
    assert parse_usage(not_a_number) == Usage(5, 9, None, None)


# -- chat streams -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_chat_reasoning_deltas_are_first_tokens_but_not_answer_tokens(field: str) -> None:
    reply = _feed_chat(
        [
            _chunk({"role": "assistant", "content": ""}),  # no token: an empty opener
            _chunk({field: "Let"}),
            _chunk({field: " me"}),
            _chunk({field: " think"}),
            _chunk({"content": "Hi"}),
            _chunk({"content": " there"}),
            _chunk(finish="stop"),
            b"[DONE]",
        ]
    )
    assert reply.text == "Hi there"  # reasoning text is not the answer
    assert reply.t_first_token_ns == 20 * MS
    assert reply.t_first_answer_ns == 50 * MS
    assert reply.ttft_s == pytest.approx(0.02)
    assert reply.ttfat_s == pytest.approx(0.05)
    assert reply.reasoning_tokens == 3  # no usage details: one token per reasoning delta
    assert len(reply.token_times_ns) == 5  # reasoning counts for ITL too


def test_chat_delta_naming_both_fields_is_one_reasoning_token() -> None:
    both = {"reasoning_content": "hm", "reasoning": "hm"}
    reply = _feed_chat(
        [_chunk(both), _chunk(both), _chunk({"content": "ok"}), _chunk(finish="stop")]
    )
    assert reply.reasoning_tokens == 2
    assert len(reply.token_times_ns) == 3


def test_chat_usage_details_outrank_the_count_of_deltas() -> None:
    # Servers may batch several thinking tokens in one delta: their own count is the truth.
    reply = _feed_chat(
        [_chunk({"reasoning_content": "a b c"}), _chunk({"content": "x"}), _chunk(finish="stop"),
         _usage(completion=9, reasoning=6), b"[DONE]"]
    )  # fmt: skip
    assert reply.reasoning_tokens == 6
    assert reply.usage == Usage(10, 9, None, 6)


def test_a_zero_in_usage_yields_to_streamed_reasoning() -> None:
    reply = _feed_chat(
        [_chunk({"reasoning": "a"}), _chunk({"reasoning": "b"}), _chunk({"content": "x"}),
         _chunk(finish="stop"), _usage(completion=3, reasoning=0)]
    )  # fmt: skip
    assert reply.reasoning_tokens == 2


def test_a_plain_model_answers_with_its_first_token_and_reports_no_reasoning() -> None:
    reply = _feed_chat([_chunk({"content": "Hi"}), _chunk(finish="stop"), _usage(1), b"[DONE]"])
    assert reply.t_first_answer_ns == reply.t_first_token_ns == 10 * MS
    assert reply.ttfat_s == reply.ttft_s
    assert reply.reasoning_tokens is None


def test_a_plain_model_reporting_zero_reasoning_tokens_reports_zero() -> None:
    reply = _feed_chat([_chunk({"content": "Hi"}), _chunk(finish="stop"), _usage(1, 0)])
    assert reply.reasoning_tokens == 0


def test_a_tool_call_is_an_answer_token() -> None:
    call = {"index": 0, "id": "c1", "type": "function",
            "function": {"name": "read", "arguments": '{"p":1}'}}  # fmt: skip
    reply = _feed_chat(
        [_chunk({"reasoning_content": "need a file"}), _chunk({"tool_calls": [call]}),
         _chunk(finish="tool_calls"), _usage(2, 1)]
    )  # fmt: skip
    assert reply.t_first_answer_ns == 20 * MS
    assert reply.tool_calls == [ToolCall("c1", "read", '{"p":1}')]
    assert reply.reasoning_tokens == 1


def test_reasoning_cut_by_the_length_limit_leaves_no_answer_token() -> None:
    reply = _feed_chat(
        [
            _chunk({"reasoning_content": "a"}),
            _chunk({"reasoning_content": "b"}),
            _chunk(finish="length"),
            _usage(2, 2),
            b"[DONE]",
        ]
    )
    assert reply.t_first_token_ns == 10 * MS
    assert reply.t_first_answer_ns is None
    assert reply.ttfat_s is None
    assert reply.reasoning_tokens == 2
    assert reply.finish_reason == "length"


def test_a_delta_with_reasoning_and_content_answers_and_counts_both() -> None:
    reply = _feed_chat(
        [_chunk({"reasoning_content": "so", "content": "Yes"}), _chunk(finish="stop")]
    )
    assert reply.t_first_answer_ns == 10 * MS
    assert reply.reasoning_tokens == 1
    assert len(reply.token_times_ns) == 1  # one event, one token time


def test_text_completions_answer_with_their_first_text() -> None:
    text = orjson.dumps({"choices": [{"index": 0, "text": "Hi", "finish_reason": None}]})
    reply = _feed_chat([text])
    assert reply.t_first_answer_ns == 10 * MS
    assert reply.reasoning_tokens is None


# -- Responses streams --------------------------------------------------------------------------


def _reasoning_item(deltas: Sequence[str], kind: str = "reasoning_text") -> list[bytes]:
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "content": []}
    return [
        _event("response.output_item.added", output_index=0, item=item),
        _event("response.content_part.added", item_id="rs_1", output_index=0, content_index=0,
               part={"type": kind, "text": ""}),
        *(_event(f"response.{kind}.delta", item_id="rs_1", output_index=0, content_index=0,
                 delta=d) for d in deltas),
        _event(f"response.{kind}.done", item_id="rs_1", output_index=0, content_index=0,
               text="".join(deltas)),
        _event("response.content_part.done", item_id="rs_1", output_index=0, content_index=0),
        _event("response.output_item.done", output_index=0,
               item={**item, "content": [{"type": kind, "text": "".join(deltas)}]}),
    ]  # fmt: skip


def _completed(output_tokens: int, reasoning: int | None = None) -> bytes:
    usage: dict[str, Any] = {"input_tokens": 10, "output_tokens": output_tokens}
    if reasoning is not None:
        usage["output_tokens_details"] = {"reasoning_tokens": reasoning}
    response = {"id": "resp_1", "status": "completed", "output": [], "usage": usage}
    return _event("response.completed", response=response)


def test_responses_reasoning_text_deltas_come_before_the_first_answer_token() -> None:
    reply = _feed_responses(
        [
            _event("response.created", response={"id": "resp_1"}),
            *_reasoning_item(["Let", " me", " see"]),  # events 2..9, deltas at 40-60 ms
            _event(
                "response.output_item.added",
                output_index=1,
                item={"type": "message", "id": "m1", "content": []},
            ),
            _event("response.output_text.delta", output_index=1, delta="Hi"),  # 110 ms
            _completed(5, 3),
        ]
    )
    assert reply.text == "Hi"
    assert reply.t_first_token_ns == 40 * MS
    assert reply.t_first_answer_ns == 110 * MS
    assert reply.reasoning_tokens == 3
    assert reply.usage == Usage(10, 5, None, 3)


def test_responses_reasoning_summary_deltas_count_without_usage_details() -> None:
    reply = _feed_responses(
        [*_reasoning_item(["a", "b"], kind="reasoning_summary_text"),
         _event("response.output_text.delta", output_index=1, delta="Hi"), _completed(3)]
    )  # fmt: skip
    assert reply.reasoning_tokens == 2
    assert reply.t_first_answer_ns is not None
    assert reply.t_first_answer_ns > reply.token_times_ns[0]


def test_responses_function_call_item_is_the_first_answer_token() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "grep", "arguments": ""}
    reply = _feed_responses(
        [*_reasoning_item(["hm"]),  # the delta at 30 ms
         _event("response.output_item.added", output_index=1, item=call),  # 70 ms
         _event("response.function_call_arguments.delta", output_index=1, delta='{"q":1}'),
         _completed(4, 1)]
    )  # fmt: skip
    assert reply.t_first_answer_ns == 70 * MS
    assert reply.tool_calls == [ToolCall("c1", "grep", '{"q":1}')]
    assert reply.reasoning_tokens == 1


def test_responses_without_reasoning_say_nothing_of_it() -> None:
    reply = _feed_responses(
        [_event("response.output_text.delta", output_index=0, delta="Hi"), _completed(1)]
    )
    assert reply.t_first_answer_ns == 10 * MS
    assert reply.reasoning_tokens is None


# -- whole JSON bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_chat_body_takes_reasoning_tokens_from_usage_and_has_no_times(field: str) -> None:
    reply = Reply(api="chat")
    body = {
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hi", field: "thinking..."}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 8,
                  "completion_tokens_details": {"reasoning_tokens": 6}},
    }  # fmt: skip
    read_choice_body(reply, body)
    assert reply.text == "Hi"
    assert reply.reasoning_tokens == 6
    assert reply.t_first_answer_ns is None
    assert reply.ttfat_s is None


def test_a_chat_body_without_usage_details_says_nothing_of_reasoning() -> None:
    reply = Reply(api="chat")
    body = {
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"content": "Hi", "reasoning_content": "thinking..."}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 8},
    }  # fmt: skip
    read_choice_body(reply, body)
    assert reply.reasoning_tokens is None


def test_a_response_body_takes_reasoning_tokens_from_usage() -> None:
    reply = Reply(api="responses")
    response = {
        "id": "resp_1", "status": "completed",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [],
             "content": [{"type": "reasoning_text", "text": "thinking"}]},
            {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]},
        ],
        "usage": {"input_tokens": 4, "output_tokens": 8,
                  "output_tokens_details": {"reasoning_tokens": 6}},
    }  # fmt: skip
    read_response_body(reply, response)
    assert reply.text == "Hi"  # the reasoning item is not the answer
    assert reply.reasoning_tokens == 6
    assert reply.ttfat_s is None


# -- over HTTP: send() times the first token and the first answer token apart ----------------------


async def _send_to(url: str, api: Api) -> Reply:
    async with Transport(TargetConfig.from_url(url)) as transport:
        return await send(transport, api, chat_body("m", [encode_message("user", "hi")]))


async def test_send_times_ttfat_after_the_thinking_ttft_before(serve: Serve) -> None:
    think_s = 0.2

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("I", " think"):
            await resp.write(b"data: " + _chunk({"reasoning_content": piece}) + b"\n\n")
        await asyncio.sleep(think_s)
        await resp.write(b"data: " + _chunk({"content": "Hi"}) + b"\n\n")
        await resp.write(b"data: " + _chunk(finish="stop") + b"\n\n")
        await resp.write(b"data: " + _usage(3, 2) + b"\n\ndata: [DONE]\n\n")
        return resp

    reply = await _send_to(await serve(handler), "chat")
    assert reply.ok, reply.error
    assert reply.ttft_s is not None
    assert reply.ttfat_s is not None
    assert reply.ttfat_s - reply.ttft_s >= think_s * 0.9
    assert reply.reasoning_tokens == 2


async def test_send_of_a_whole_body_has_reasoning_tokens_and_no_ttfat(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        body = {
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"content": "Hi", "reasoning": "hm"}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 3,
                      "completion_tokens_details": {"reasoning_tokens": 2}},
        }  # fmt: skip
        return web.json_response(body)

    reply = await _send_to(await serve(handler), "chat")
    assert reply.ok, reply.error
    assert reply.reasoning_tokens == 2
    assert reply.ttft_s is None
    assert reply.ttfat_s is None
