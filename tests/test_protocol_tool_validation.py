"""Tool-call checks: parseable JSON, a tool that was offered, arguments that fit its schema."""

from __future__ import annotations

from typing import Any

import pytest

from loadgen.errors import ConfigError
from loadgen.protocol import ToolCall, tool_validation, validate_tool_calls

READ: dict[str, Any] = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
    "required": ["path"],
    "additionalProperties": False,
}
TOOLS: dict[str, dict[str, Any] | None] = {"read": READ, "anything": None}


def test_valid_arguments_have_no_problem() -> None:
    calls = [ToolCall("1", "read", '{"path":"a.py","limit":3}'), ToolCall("2", "anything", "{}")]
    assert validate_tool_calls(calls, TOOLS) == ["", ""]


def test_arguments_that_are_not_json_are_a_problem() -> None:
    [problem] = validate_tool_calls([ToolCall("1", "read", '{"path":"a.py"')], TOOLS)
    assert "not valid JSON" in problem


def test_arguments_that_are_not_an_object_are_a_problem() -> None:
    [problem] = validate_tool_calls([ToolCall("1", "anything", "[1]")], TOOLS)
    assert "not an object" in problem


def test_arguments_that_break_the_schema_name_the_place() -> None:
    [problem] = validate_tool_calls([ToolCall("1", "read", '{"path":"a","limit":0}')], TOOLS)
    assert "at limit" in problem


def test_missing_required_argument_is_a_problem() -> None:
    [problem] = validate_tool_calls([ToolCall("1", "read", "{}")], TOOLS)
    assert "'path' is a required property" in problem


def test_empty_arguments_count_as_an_empty_object() -> None:
    assert validate_tool_calls([ToolCall("1", "anything", "")], TOOLS) == [""]


def test_unknown_tool_is_a_problem_listing_the_offered_ones() -> None:
    [problem] = validate_tool_calls([ToolCall("1", "write", "{}")], TOOLS)
    assert problem == "unknown tool 'write' (offered: anything, read)"


def test_an_invalid_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        validate_tool_calls([ToolCall("1", "bad", "{}")], {"bad": {"type": 12}})


def test_validator_cache_stays_bounded() -> None:
    for i in range(tool_validation._CACHE_SIZE + 50):
        schema = {"type": "object", "properties": {f"p{i}": {"type": "string"}}}
        assert validate_tool_calls([ToolCall("1", "t", "{}")], {"t": schema}) == [""]
    assert len(tool_validation._validators) <= tool_validation._CACHE_SIZE
