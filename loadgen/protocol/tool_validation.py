"""Checking tool calls the way an agent runtime must: parseable, a known tool, schema-valid."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from loadgen.errors import ConfigError
from loadgen.protocol.reply import ToolCall

__all__ = ["validate_tool_calls"]

_CACHE_SIZE = 256


class _Validator(Protocol):
    def iter_errors(self, instance: Any) -> Any: ...


# Validators by id(schema). Each entry keeps its schema alive, so an id cannot be reused by
# another object while the entry exists; the identity check guards the window after eviction.
_validators: OrderedDict[int, tuple[Mapping[str, Any], _Validator]] = OrderedDict()


def _validator(name: str, schema: Mapping[str, Any]) -> _Validator:
    key = id(schema)
    hit = _validators.get(key)
    if hit is not None and hit[0] is schema:
        _validators.move_to_end(key)
        return hit[1]
    # Imported here: jsonschema costs ~75 ms to import and most processes never validate.
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped, unused-ignore]

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(
            f"tool {name!r}: parameters are not a valid JSON Schema: {exc.message}"
        ) from exc
    validator: _Validator = Draft202012Validator(schema)
    _validators[key] = (schema, validator)
    if len(_validators) > _CACHE_SIZE:
        _validators.popitem(last=False)
    return validator


def _problem(call: ToolCall, tools: Mapping[str, Mapping[str, Any] | None]) -> str:
    if call.name not in tools:
        offered = ", ".join(sorted(tools)) or "none"
        return f"unknown tool {call.name!r} (offered: {offered})"
    # Some servers send "" for a call without arguments; the schema still judges it as {}.
    text = call.arguments if call.arguments.strip() else "{}"
    try:
        arguments = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"{call.name}: arguments are not valid JSON ({exc})"
    if not isinstance(arguments, dict):
        return f"{call.name}: arguments are JSON {type(arguments).__name__}, not an object"
    schema = tools[call.name]
    if not schema:
        return ""
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

    error = best_match(_validator(call.name, schema).iter_errors(arguments))
    if error is None:
        return ""
    where = "/".join(map(str, error.absolute_path)) or "(root)"
    return f"{call.name}: arguments do not match the schema at {where}: {error.message}"


def validate_tool_calls(
    calls: Sequence[ToolCall], tools: Mapping[str, Mapping[str, Any] | None]
) -> list[str]:
    """Per call, what is wrong with it ("" when nothing); any problem means malformed_tool_call.

    `tools` maps each offered tool's name to its parameters schema (None: any object).
    """
    return [_problem(call, tools) for call in calls]
