"""OpenAI wire protocol, client side: request bodies, reply assembly, failure classification."""

from loadgen.protocol.bodies import chat_body, completions_body, responses_body
from loadgen.protocol.classify import classify_error, error_message, retry_after_seconds
from loadgen.protocol.failures import STATE_FAILURES, TRANSPORT_FAILURES, FailureKind
from loadgen.protocol.messages import (
    ToolDefinition,
    encode_function_call,
    encode_function_call_output,
    encode_input_message,
    encode_message,
    encode_tools,
)
from loadgen.protocol.reply import Api, Reply, ToolCall, Usage
from loadgen.protocol.send import API_PATHS, send
from loadgen.protocol.tokens import (
    VOCABULARY,
    count_tokens,
    text_chunks,
    token_pieces,
    words_for_tokens,
)
from loadgen.protocol.tool_validation import validate_tool_calls

__all__ = [
    "API_PATHS",
    "STATE_FAILURES",
    "TRANSPORT_FAILURES",
    "VOCABULARY",
    "Api",
    "FailureKind",
    "Reply",
    "ToolCall",
    "ToolDefinition",
    "Usage",
    "chat_body",
    "classify_error",
    "completions_body",
    "count_tokens",
    "encode_function_call",
    "encode_function_call_output",
    "encode_input_message",
    "encode_message",
    "encode_tools",
    "error_message",
    "responses_body",
    "retry_after_seconds",
    "send",
    "text_chunks",
    "token_pieces",
    "validate_tool_calls",
    "words_for_tokens",
]
