"""Error replies mapped onto failure kinds, as real servers word them."""

from __future__ import annotations

import orjson
import pytest

from loadgen.protocol import FailureKind, classify_error, error_message, retry_after_seconds
from loadgen.protocol.classify import refuses_previous_response, window_facts


def _openai_error(message: str, code: object = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "BadRequestError", "code": code}})


@pytest.mark.parametrize(
    "body",
    [
        _openai_error(
            "This model's maximum context length is 4096 tokens. However, your prompt contains "
            "5000 input tokens"
        ),
        _openai_error("Input is too long for requested model.", "context_length_exceeded"),
        _openai_error("the request exceeds the available context size, try increasing it"),
        orjson.dumps({"error": "Input validation error: `inputs` must have less than 4096 tokens"}),
    ],
    ids=["vllm", "openai", "llama.cpp", "tgi"],
)
def test_prompt_too_long_is_context_overflow(body: bytes) -> None:
    assert classify_error(400, body, "chat", False) == FailureKind.CONTEXT_OVERFLOW


def test_unknown_previous_response_is_server_state_lost() -> None:
    body = _openai_error("Response with id 'resp_x' not found.")
    assert classify_error(404, body, "responses", True) == FailureKind.SERVER_STATE_LOST
    assert classify_error(400, body, "responses", True) == FailureKind.SERVER_STATE_LOST


def test_not_found_without_a_chain_is_http_error() -> None:
    body = _openai_error("The model `x` does not exist / not found.")
    assert classify_error(404, body, "responses", False) == FailureKind.HTTP_ERROR
    assert classify_error(404, body, "chat", True) == FailureKind.HTTP_ERROR


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, FailureKind.RATE_LIMITED), (500, FailureKind.HTTP_ERROR), (503, FailureKind.HTTP_ERROR)],
)
def test_status_classes(status: int, kind: FailureKind) -> None:
    assert classify_error(status, _openai_error("too long"), "chat", False) == kind


def test_plain_bad_request_is_http_error() -> None:
    assert classify_error(400, _openai_error("temperature: too big"), "chat", False) == (
        FailureKind.HTTP_ERROR
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_openai_error("bad  thing\nhere"), "bad thing here"),
        (orjson.dumps({"error": "tgi says no"}), "tgi says no"),
        (orjson.dumps({"detail": "Not Found"}), "Not Found"),
        (b"<html>502 Bad Gateway</html>", "<html>502 Bad Gateway</html>"),
    ],
    ids=["openai", "tgi", "fastapi", "html"],
)
def test_error_message_reads_every_shape_onto_one_line(body: bytes, message: str) -> None:
    assert error_message(body) == message


def test_error_message_is_kept_short() -> None:
    assert len(error_message(b"x" * 10_000)) <= 300


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None


@pytest.mark.parametrize(
    ("message", "window", "prompt"),
    [
        (
            "This model's maximum context length is 4096 tokens. However, your prompt contains "
            "5000 input tokens, which leaves no room for output.",
            4096,
            5000,
        ),
        (
            "request (2210 tokens) exceeds the available context size (512 tokens), try "
            "increasing it",
            512,
            2210,
        ),
        (
            "This model's maximum context length is 2048 tokens. However, you requested 2100 "
            "tokens (2000 in the messages, 100 in the completion).",
            2048,
            2000,
        ),
        ("Input validation error: `inputs` must have less than 4096 tokens", 4096, None),
        ("Input is too long for requested model.", None, None),
    ],
    ids=["vllm", "llama.cpp", "vllm-requested", "tgi", "openai"],
)
def test_overflow_messages_give_the_window_and_the_counted_prompt(
    message: str, window: int | None, prompt: int | None
) -> None:
    assert window_facts(message) == (window, prompt)


def test_llama_cpp_refusing_previous_response_id_is_an_unsupported_capability() -> None:
    message = "llama.cpp does not support 'previous_response_id'."
    assert refuses_previous_response(400, message)


def test_a_previous_response_id_not_found_is_not_an_unsupported_capability() -> None:
    assert not refuses_previous_response(404, "Response with id 'resp_1' not found.")
