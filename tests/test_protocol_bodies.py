"""Request bodies built from segments: valid JSON when joined, messages referenced not copied."""

from __future__ import annotations

from types import MappingProxyType

import orjson

from loadgen.protocol import (
    ToolCall,
    ToolDefinition,
    chat_body,
    completions_body,
    encode_function_call,
    encode_function_call_output,
    encode_input_message,
    encode_message,
    encode_tools,
    responses_body,
)

MODEL = "m"


def _joined(segments: list[bytes]) -> dict[str, object]:
    data = orjson.loads(b"".join(segments))
    assert isinstance(data, dict)
    return data


def test_chat_body_joins_to_the_expected_json() -> None:
    messages = [encode_message("system", "be brief"), encode_message("user", "hi")]
    body = _joined(chat_body(MODEL, messages, max_tokens=8, temperature=0.0, seed=3))
    assert body == {
        "model": MODEL,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        "seed": 3,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    }


def test_chat_body_references_the_message_bytes_without_copying_them() -> None:
    messages = [encode_message("user", f"message {i}") for i in range(50)]
    segments = chat_body(MODEL, messages)
    for message in messages:
        assert any(segment is message for segment in segments)


def test_non_streaming_body_has_no_stream_options() -> None:
    body = _joined(chat_body(MODEL, [encode_message("user", "hi")], stream=False))
    assert body["stream"] is False
    assert "stream_options" not in body


def test_server_extensions_are_sent_only_when_set() -> None:
    plain = _joined(chat_body(MODEL, [encode_message("user", "hi")]))
    forced = _joined(
        chat_body(MODEL, [encode_message("user", "hi")], min_tokens=5, ignore_eos=True)
    )
    assert "min_tokens" not in plain
    assert "ignore_eos" not in plain
    assert (forced["min_tokens"], forced["ignore_eos"]) == (5, True)


def test_tools_and_tool_choice_and_extra_fields_land_in_the_body() -> None:
    tools = encode_tools([ToolDefinition("read", {"type": "object"}, "Read a file")], "chat")
    body = _joined(
        chat_body(
            MODEL,
            [encode_message("user", "hi")],
            tools=tools,
            tool_choice="required",
            extra={"max_completion_tokens": 4},
        )
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "read",
                "description": "Read a file",
                "parameters": {"type": "object"},
            },
        }
    ]
    assert body["tool_choice"] == "required"
    assert body["max_completion_tokens"] == 4


def test_responses_tools_are_flat() -> None:
    tools = orjson.loads(encode_tools([ToolDefinition("read", None)], "responses"))
    assert tools == [{"type": "function", "name": "read"}]


def test_assistant_tool_calls_and_tool_results_encode_like_openai() -> None:
    call = ToolCall("call_1", "read", '{"path":"a"}')
    assert orjson.loads(encode_message("assistant", tool_calls=[call])) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "read", "arguments": '{"path":"a"}'},
            }
        ],
    }
    assert orjson.loads(encode_message("tool", "42", tool_call_id="call_1")) == {
        "role": "tool",
        "content": "42",
        "tool_call_id": "call_1",
    }


def test_read_only_mappings_encode_as_objects() -> None:
    schema = MappingProxyType({"type": "object"})
    tools = orjson.loads(encode_tools([ToolDefinition("t", schema)], "chat"))
    assert tools[0]["function"]["parameters"] == {"type": "object"}


def test_responses_body_with_text_input_and_chain() -> None:
    body = _joined(
        responses_body(MODEL, "hello", previous_response_id="resp_1", max_output_tokens=9)
    )
    assert body == {
        "model": MODEL,
        "previous_response_id": "resp_1",
        "store": True,
        "max_output_tokens": 9,
        "stream": True,
        "input": "hello",
    }


def test_responses_body_with_items_and_tools() -> None:
    call = ToolCall("call_1", "read", "{}")
    items = [
        encode_input_message("user", "hi"),
        encode_function_call(call),
        encode_function_call_output("call_1", "done"),
    ]
    tools = encode_tools([ToolDefinition("read")], "responses")
    body = _joined(responses_body(MODEL, items, tools=tools, store=False, stream=False))
    assert body["input"] == [
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"},
    ]
    assert body["tools"] == [{"type": "function", "name": "read"}]
    assert body["store"] is False


def test_completions_body() -> None:
    body = _joined(completions_body(MODEL, "once upon", max_tokens=4, ignore_eos=True))
    assert body == {
        "model": MODEL,
        "prompt": "once upon",
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
