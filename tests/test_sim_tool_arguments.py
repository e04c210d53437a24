"""Specification of the simulator's tool-call arguments: valid, reproducible, or reliably broken."""

from __future__ import annotations

import random
import re
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from loadgen.sim.tool_arguments import encode_arguments, generate_arguments, malformed_arguments

SEEDS = range(50)

READ_FILE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "File to read"},
        "offset": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 1, "maximum": 2000},
    },
    "required": ["path"],
    "additionalProperties": False,
}
EDIT_FILE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "old_string": {"type": "string"},
        "new_string": {"type": "string"},
        "replace_all": {"type": "boolean", "default": False},
    },
    "required": ["path", "old_string", "new_string"],
    "additionalProperties": False,
}
RUN_SHELL: dict[str, Any] = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "minLength": 1, "maxLength": 200},
        "timeout_ms": {"type": "integer", "minimum": 1000, "maximum": 600000, "multipleOf": 1000},
        "cwd": {"type": ["string", "null"]},
        "cpu_limit": {"type": "number", "minimum": 0.5, "maximum": 8, "multipleOf": 0.1},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["command"],
}
SEARCH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 3},
        "max_results": {"type": "integer", "exclusiveMinimum": 0, "maximum": 50},
        "score_threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "filters": {
            "type": "object",
            "properties": {
                "language": {"enum": ["python", "rust", "go", "typescript"]},
                "path_glob": {"type": "string", "pattern": "^[a-z]+$"},
                "case_sensitive": {"type": "boolean"},
            },
            "required": ["language"],
        },
    },
    "required": ["query"],
}
CREATE_ISSUE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "author": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string", "format": "email"},
            },
            "required": ["name", "email"],
        },
        "labels": {
            "type": "array",
            "items": {"enum": ["bug", "feature", "docs"]},
            "uniqueItems": True,
            "maxItems": 3,
        },
        "priority": {"const": "high"},
    },
    "required": ["title", "author", "labels"],
}
APPLY_EDITS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "edits": {
            "type": "array",
            "minItems": 1,
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "line": {"type": "integer", "minimum": 1},
                    "text": {"type": "string"},
                },
                "required": ["path", "line", "text"],
            },
        },
        "dry_run": {"type": "boolean"},
    },
    "required": ["edits"],
}
SET_VALUE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "key": {"type": "string"},
        "value": {
            "anyOf": [
                {"type": "string"},
                {"type": "number", "minimum": -5, "maximum": 5},
                {"type": "boolean"},
                {"type": "null"},
            ]
        },
        "target": {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"file": {"type": "string"}},
                    "required": ["file"],
                },
                {"type": "integer", "minimum": 1},
            ]
        },
    },
    "required": ["key", "value", "target"],
}
SCHEDULE: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "slot": {
            "type": "object",
            "properties": {
                "start": {"type": "string", "format": "date-time"},
                "day": {"type": "string", "format": "date"},
                "room": {"$ref": "#/$defs/room"},
            },
            "required": ["start", "room"],
        },
        "room": {"type": "string", "enum": ["a", "b"]},
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                "parent": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
            },
            "required": ["name"],
        },
    },
    "properties": {
        "slots": {"type": "array", "items": {"$ref": "#/$defs/slot"}, "minItems": 1},
        "tree": {"$ref": "#/$defs/node"},
    },
    "required": ["slots", "tree"],
}
FETCH: dict[str, Any] = {
    "type": "object",
    "definitions": {"id": {"type": "string", "format": "uuid"}},
    "properties": {
        "request_id": {"$ref": "#/definitions/id"},
        "url": {"type": "string", "format": "uri"},
        "when": {"type": "string", "format": "date-time"},
        "options": {
            "allOf": [
                {"type": "object", "properties": {"retries": {"type": "integer", "maximum": 3}}},
                {"properties": {"retries": {"minimum": 1}}, "required": ["retries"]},
            ]
        },
    },
    "required": ["request_id", "url", "options"],
}
EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}

SCHEMAS: dict[str, dict[str, Any]] = {
    "read_file": READ_FILE,
    "edit_file": EDIT_FILE,
    "run_shell": RUN_SHELL,
    "search": SEARCH,
    "create_issue": CREATE_ISSUE,
    "apply_edits": APPLY_EDITS,
    "set_value": SET_VALUE,
    "schedule": SCHEDULE,
    "fetch": FETCH,
    "empty_object": EMPTY_OBJECT,
}


def generate(schema: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    return generate_arguments(schema, random.Random(seed))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_generated_arguments_satisfy_the_schema(name: str) -> None:
    schema = SCHEMAS[name]
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for seed in SEEDS:
        args = generate(schema, seed)
        errors = [error.message for error in validator.iter_errors(args)]
        assert not errors, f"seed {seed}: {args} -> {errors}"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_generated_arguments_survive_a_json_round_trip(name: str) -> None:
    for seed in SEEDS:
        args = generate(SCHEMAS[name], seed)
        assert orjson.loads(encode_arguments(args)) == args


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_same_seed_gives_same_arguments(name: str) -> None:
    for seed in SEEDS:
        assert encode_arguments(generate(SCHEMAS[name], seed)) == encode_arguments(
            generate(SCHEMAS[name], seed)
        )


@pytest.mark.parametrize("name", ["read_file", "run_shell", "search", "set_value", "schedule"])
def test_different_seeds_give_varied_arguments(name: str) -> None:
    outputs = {encode_arguments(generate(SCHEMAS[name], seed)) for seed in SEEDS}
    assert len(outputs) >= 10


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_required_properties_are_always_present(name: str) -> None:
    required = SCHEMAS[name].get("required", [])
    for seed in SEEDS:
        assert set(required) <= generate(SCHEMAS[name], seed).keys()


def test_optional_properties_are_sometimes_included_and_sometimes_left_out() -> None:
    seen = [generate(READ_FILE, seed).keys() for seed in SEEDS]
    assert any("offset" in keys for keys in seen)
    assert any("offset" not in keys for keys in seen)


def test_no_keys_beyond_the_declared_properties_are_added() -> None:
    for seed in SEEDS:
        assert generate(READ_FILE, seed).keys() <= READ_FILE["properties"].keys()


@pytest.mark.parametrize(
    "schema",
    [None, {}, EMPTY_OBJECT, {"type": "object"}, {"type": "object", "additionalProperties": True}],
)
def test_missing_or_property_less_schema_yields_an_empty_object(schema: Any) -> None:
    assert generate(schema, 0) == {}


@pytest.mark.parametrize(
    "schema",
    [
        *SCHEMAS.values(),
        {"type": "string"},
        {"type": "array", "items": {"type": "integer"}},
        {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        {"description": "no parameters"},
    ],
)
def test_top_level_is_always_a_dict(schema: dict[str, Any]) -> None:
    for seed in SEEDS:
        assert isinstance(generate(schema, seed), dict)


def test_strings_are_plain_ascii_without_control_characters() -> None:
    for name in SCHEMAS:
        for seed in SEEDS:
            text = encode_arguments(generate(SCHEMAS[name], seed))
            assert text.isascii()
            assert not re.search(r"[\x00-\x1f\x7f]", text)


def test_pattern_strings_are_short_lowercase_words() -> None:
    slug = {"type": "string", "pattern": "^[a-z0-9-]+$"}
    schema = {"type": "object", "properties": {"slug": slug}, "required": ["slug"]}
    for seed in SEEDS:
        assert re.fullmatch(r"[a-z]{1,10}", generate(schema, seed)["slug"])


def test_formats_produce_valid_looking_strings() -> None:
    formats = {
        "date-time": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        "date": r"\d{4}-\d\d-\d\d",
        "uri": r"https://[a-z.]+/\S+",
        "email": r"[a-z]+@[a-z.]+",
        "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    }
    properties = {name: {"type": "string", "format": name} for name in formats}
    schema = {"type": "object", "properties": properties, "required": list(formats)}
    for seed in SEEDS:
        args = generate(schema, seed)
        for name, shape in formats.items():
            assert re.fullmatch(shape, args[name]), (name, args[name])


def test_recursive_refs_stay_small() -> None:
    for seed in SEEDS:
        assert len(encode_arguments(generate(SCHEDULE, seed))) < 20_000


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"x": {"$ref": "#"}}, "required": ["x"]},
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "properties": {"x": {"$ref": "#/$defs/a"}}},
        {"properties": {"x": {"allOf": [{"$ref": "#/properties/x"}]}}, "required": ["x"]},
        {"properties": {"x": {"$ref": "#/$defs/missing"}}, "required": ["x"]},
    ],
)
def test_pathological_schemas_terminate(schema: dict[str, Any]) -> None:
    for seed in SEEDS:
        assert isinstance(generate(schema, seed), dict)


@pytest.mark.parametrize(
    "valid_json",
    [
        "{}",
        '{"path":"src/main.py"}',
        '{"a":1,"b":[true,null],"c":{"d":"x y"}}',
        '{ "spaced" : "key" }',
        "[]",
        "0",
        '""',
    ],
)
def test_malformed_arguments_never_parse(valid_json: str) -> None:
    for seed in range(200):
        broken = malformed_arguments(valid_json, random.Random(seed))
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(broken)


def test_malformed_arguments_never_parse_for_generated_arguments() -> None:
    for name in SCHEMAS:
        for seed in range(200):
            valid = encode_arguments(generate(SCHEMAS[name], seed))
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(malformed_arguments(valid, random.Random(seed)))


def test_malformed_arguments_are_reproducible_for_a_seed() -> None:
    valid = '{"path":"src/main.py","limit":20}'
    for seed in range(50):
        assert malformed_arguments(valid, random.Random(seed)) == malformed_arguments(
            valid, random.Random(seed)
        )


def test_malformed_arguments_break_in_the_ways_streaming_parsers_do() -> None:
    valid = '{"path":"src/main.py","limit":20}'
    outputs = {malformed_arguments(valid, random.Random(seed)) for seed in range(200)}
    assert any(valid.startswith(out) and len(out) < len(valid) - 1 for out in outputs)
    assert valid[:-1] in outputs
    assert any(re.search(r"[{,](path|limit):", out) for out in outputs)
    assert valid[:-1] + ",}" in outputs


def test_encode_arguments_is_compact_json_text() -> None:
    text = encode_arguments({"path": "src/main.py", "lines": [1, 2], "opts": {}})
    assert text == '{"path":"src/main.py","lines":[1,2],"opts":{}}'
