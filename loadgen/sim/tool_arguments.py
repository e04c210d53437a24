"""Tool-call arguments for the server simulator: schema-valid, deliberately broken, and encoded."""

from __future__ import annotations

import copy
import math
import random
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

import orjson

__all__ = ["encode_arguments", "generate_arguments", "malformed_arguments"]

_Schema = Mapping[str, Any]

# Past this many nested $refs only what the schema demands is generated, so recursive
# definitions (trees, linked lists) bottom out instead of growing.
_MAX_REF_DEPTH = 4
_SOFT_DEPTH = 8
# Cycles the schema makes mandatory cannot be satisfied finitely; give up with null.
_HARD_DEPTH = 24

# Lowercase-only so a value has a fair chance of matching the `pattern`s we do not parse.
_WORDS = ("alpha", "build", "cache", "delta", "error", "fetch", "index", "login", "parse", "retry")
_PATHS = ("src/main.py", "tests/test_api.py", "README.md", "config/settings.yaml")
_IDENTIFIERS = ("user_id", "fetchOrders", "OrderService", "ls -la")
_QUERIES = ("how to retry failed requests", "TODO: handle timeout")
_VOCAB = (*_WORDS, *_PATHS, *_IDENTIFIERS, *_QUERIES)

_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date": lambda r: f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
    "date-time": lambda r: f"{_FORMATS['date'](r)}T{_FORMATS['time'](r)}",
    "uri": lambda r: f"https://example.com/{r.choice(_WORDS)}/{r.randint(1, 999)}",
    "email": lambda r: f"{r.choice(_WORDS)}@example.com",
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128), version=4)),
    "hostname": lambda r: f"{r.choice(_WORDS)}.example.com",
    "ipv4": lambda r: f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
}
_FORMATS["url"] = _FORMATS["uri"]

_KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"(\s*:)')


def generate_arguments(schema: Mapping[str, Any] | None, rng: random.Random) -> dict[str, Any]:
    """Return a JSON object satisfying the tool's `parameters` schema, drawn only from `rng`."""
    # Limits: `pattern` is not parsed (such strings are short lowercase words, which fit
    # identifier-style patterns only), and `oneOf` does not check that other branches fail.
    if not schema:
        return {}
    value = _Generator(schema, rng).value(schema, 0, 0)
    # OpenAI tool arguments are always an object, whatever the schema claims.
    return value if isinstance(value, dict) else {}


def malformed_arguments(valid_json: str, rng: random.Random) -> str:
    """Break `valid_json` the way buggy streaming tool parsers do; the result never parses."""
    text = valid_json.rstrip()
    candidates = []
    if len(text) >= 2:  # the stream stopped mid-value
        candidates.append(text[: rng.randint(1, len(text) - 1)])
    if text.endswith("}"):  # the final delta with the closing brace was lost
        candidates.append(text[:-1])
    if keys := list(_KEY.finditer(text)):  # a parser that re-emits keys as bare words
        hit = rng.choice(keys)
        candidates.append(f"{text[: hit.start()]}{hit[1]}{hit[2]}{text[hit.end() :]}")
    if text.endswith(("}", "]")):  # a parser that joins members with a separator after each
        candidates.append(f"{text[:-1]},{text[-1]}")
    rng.shuffle(candidates)
    for broken in candidates:
        try:
            orjson.loads(broken)
        except orjson.JSONDecodeError:
            return broken
    # No JSON text ends in a comma, so this fails for any input.
    return valid_json + ","


def encode_arguments(args: dict[str, Any]) -> str:
    """Return `args` as compact JSON text."""
    return orjson.dumps(args).decode()


class _Generator:
    """Walks one root schema; the root is kept so `$ref`s can be resolved against it."""

    def __init__(self, root: _Schema, rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, schema: Any, depth: int, refs: int) -> Any:
        """Return a value for `schema`; `depth` and `refs` bound the recursion."""
        if schema is False or depth >= _HARD_DEPTH:
            return None
        if not isinstance(schema, Mapping):
            return self.rng.choice(_WORDS)  # `true` or junk: anything is acceptable
        schema, refs = self._deref(schema, refs)
        minimal = refs >= _MAX_REF_DEPTH or depth >= _SOFT_DEPTH
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return copy.deepcopy(self.rng.choice(schema["enum"]))
        if isinstance(schema.get("allOf"), list):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for branch in schema["allOf"]:
                if isinstance(branch, Mapping):
                    resolved, refs = self._deref(branch, refs)
                    merged = _merge(merged, resolved)
            return self.value(merged, depth + 1, refs)
        for key in ("anyOf", "oneOf"):
            branches = [b for b in schema.get(key) or () if isinstance(b, Mapping)]
            if branches:
                plain = [b for b in branches if "$ref" not in b]
                branch = plain[0] if minimal and plain else self.rng.choice(branches)
                resolved, refs = self._deref(branch, refs)
                base = {k: v for k, v in schema.items() if k != key}
                return self.value(_merge(base, resolved), depth + 1, refs)
        kind = self._pick_type(schema, minimal)
        if kind == "object":
            return self._object(schema, depth, refs, minimal)
        if kind == "array":
            return self._array(schema, depth, refs, minimal)
        if kind in ("integer", "number"):
            return self._number(schema, integer=kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _deref(self, schema: _Schema, refs: int) -> tuple[_Schema, int]:
        """Follow `$ref` chains, keeping sibling keywords; cycles stop at the hard cap."""
        while isinstance(schema.get("$ref"), str) and refs < _HARD_DEPTH:
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = _merge(self._lookup(schema["$ref"]), siblings)
            refs += 1
        return schema, refs

    def _lookup(self, ref: str) -> _Schema:
        """Resolve a local JSON pointer such as `#/$defs/Name`; anything else means 'any'."""
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, Mapping) else None
        return node if isinstance(node, Mapping) else {}

    def _pick_type(self, schema: _Schema, minimal: bool) -> str:
        declared = schema.get("type")
        if isinstance(declared, str):
            return declared
        if isinstance(declared, list) and declared:
            # Null is the cheap way out of recursion, otherwise a real value is more useful.
            if minimal and "null" in declared:
                return "null"
            real = [t for t in declared if t != "null"]
            return str(self.rng.choice(real or declared))
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "minItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
            return "number"
        return "string"

    def _object(self, schema: _Schema, depth: int, refs: int, minimal: bool) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = [k for k in schema.get("required") or () if isinstance(k, str)]
        out: dict[str, Any] = {}
        for key, sub in properties.items():
            if key in required or (not minimal and self.rng.random() < 0.5):
                out[key] = self.value(sub, depth + 1, refs)
        for key in required:
            out.setdefault(key, self.rng.choice(_WORDS))
        return out

    def _array(self, schema: _Schema, depth: int, refs: int, minimal: bool) -> list[Any]:
        cap = schema.get("maxItems")
        low = int(schema.get("minItems", min(1, cap) if isinstance(cap, int) else 1))
        high = min(int(cap), max(low, 3)) if isinstance(cap, int) else max(low, 3)
        count = low if minimal else self.rng.randint(low, max(low, high))
        unique = schema.get("uniqueItems") is True
        out: list[Any] = []
        for _ in range(count * 5):  # spare attempts: small enums collide under uniqueItems
            if len(out) >= count:
                break
            item = self.value(schema.get("items", {}), depth + 1, refs)
            if not (unique and item in out):
                out.append(item)
        return out

    def _number(self, schema: _Schema, *, integer: bool) -> int | float:
        low, low_ex = _bound(schema, "minimum", lower=True)
        high, high_ex = _bound(schema, "maximum", lower=False)
        if low is None:
            low = 0.0 if high is None or high > 0 else high - 100
        if high is None:
            high = low + 100
        step = schema.get("multipleOf")
        if not _is_number(step) or step <= 0:
            step = 1 if integer else None
        if step is None:
            value = round(self.rng.uniform(low, high), 2)
            # The midpoint is inside even exclusive bounds; rounding may have pushed us onto one.
            if not low < value < high:
                value = (low + high) / 2
            return value
        k_low = math.floor(low / step) + 1 if low_ex else math.ceil(low / step)
        k_high = math.ceil(high / step) - 1 if high_ex else math.floor(high / step)
        for _ in range(8):  # fractional steps: keep a product that divides back exactly
            result = self.rng.randint(k_low, max(k_low, k_high)) * step
            if (result / step).is_integer():
                break
        return int(result) if integer else result

    def _string(self, schema: _Schema) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt](self.rng)
        patterned = "pattern" in schema
        text = self.rng.choice(_WORDS if patterned else _VOCAB)
        min_len = schema.get("minLength", 0)
        while len(text) < min_len:
            text += ("" if patterned else " ") + self.rng.choice(_WORDS)
        max_len = schema.get("maxLength")
        return text[:max_len] if isinstance(max_len, int) else text


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bound(schema: _Schema, key: str, *, lower: bool) -> tuple[float | None, bool]:
    """Return the tightest bound and whether it is exclusive, in draft-04 or 2020-12 spelling."""
    inc, exc = schema.get(key), schema.get("exclusive" + key.capitalize())
    if isinstance(exc, bool):  # draft-04: a flag on the inclusive bound
        return (inc, exc) if _is_number(inc) else (None, False)
    found: list[tuple[float, bool]] = [
        (v, flag) for v, flag in ((inc, False), (exc, True)) if _is_number(v)
    ]
    if not found:
        return None, False
    if lower:
        return max(found, key=lambda b: (b[0], b[1]))
    return min(found, key=lambda b: (b[0], not b[1]))


def _merge(base: _Schema, extra: _Schema) -> dict[str, Any]:
    """Combine two schemas that must both hold, as `allOf` and `$ref` siblings require."""
    out = dict(base)
    for key, value in extra.items():
        if key not in out:
            out[key] = value
        elif key == "properties" and isinstance(value, Mapping):
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out[key] = props
        elif key == "required" and isinstance(value, list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif _is_number(value) and _is_number(out[key]) and key.startswith(("min", "max")):
            out[key] = max(out[key], value) if key.startswith("min") else min(out[key], value)
        else:
            out[key] = value
    return out
