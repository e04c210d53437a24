"""Readers for each supported trace format into loadgen.traces.Trace, and `load_trace`, which
picks one by name or by the keys of the file's first record (docs/traces.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loadgen.errors import ConfigError
from loadgen.traces.formats._common import json_values, open_text, read_text, trace_files
from loadgen.traces.formats.agentload import FORMAT_NAME, read_agentload
from loadgen.traces.formats.bailian import read_bailian
from loadgen.traces.formats.copilot import read_copilot
from loadgen.traces.formats.mooncake import read_mooncake
from loadgen.traces.formats.tracelab import read_tracelab
from loadgen.traces.formats.weka import read_weka
from loadgen.traces.model import Trace

__all__ = ["FORMATS", "detect_format", "load_trace"]

FORMATS = ("mooncake", "bailian", "weka", "tracelab", "copilot", "agentload")


def _read_agentload(path: Path) -> Trace:
    files = trace_files(path)
    if len(files) != 1:
        raise ConfigError(f"{path}: an agentload trace is one file, not a folder of them")
    return read_agentload(files[0], read_text(files[0]).splitlines())


READERS: dict[str, Callable[[Path], Trace]] = {
    "mooncake": read_mooncake,
    "bailian": read_bailian,
    "weka": read_weka,
    "tracelab": read_tracelab,
    "copilot": read_copilot,
    "agentload": _read_agentload,
}
# Those whose block size is not in the file: the publisher's (Mooncake, Bailian) or the one
# ids are made up at (TraceLab, Copilot), which a replay may change.
SIZED_READERS: dict[str, Callable[..., Trace]] = {
    "mooncake": read_mooncake,
    "bailian": read_bailian,
    "tracelab": read_tracelab,
    "copilot": read_copilot,
}


def load_trace(path: Path, format: str = "auto", *, block_size: int | None = None) -> Trace:
    """The trace in `path` (a file, gzipped or not, or a folder of shards) read as `format`,
    or as the format its first record shows when `format` is auto. `block_size` overrides
    the tokens per hash id of the formats whose files do not say it (mooncake, bailian) or
    that record no hash ids (tracelab, copilot: a larger block makes fewer ids to hold)."""
    if format == "auto":
        format = detect_format(path)
    reader = READERS.get(format)
    if reader is None:
        raise ConfigError(
            f"unknown trace format {format!r}; use auto or one of: {', '.join(FORMATS)}"
        )
    if block_size is None:
        return reader(path)
    if block_size < 1:
        raise ConfigError(f"block size must be a positive number of tokens, not {block_size}")
    if format not in SIZED_READERS:
        raise ConfigError(
            f"a {format} trace says its own block size; a block size applies to "
            f"{', '.join(SIZED_READERS)} traces"
        )
    return SIZED_READERS[format](path, block_size=block_size)


def detect_format(path: Path) -> str:
    """The format whose fields the first record of `path` (its first file, for a folder) has."""
    file = trace_files(path)[0]
    record = _first_record(file)
    found = _format_of(record) if isinstance(record, dict) else None
    if found is None:
        keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
        raise ConfigError(
            f"{file}: cannot tell the trace format from its first record ({keys or 'empty'}); "
            f"pass --format with one of: {', '.join(FORMATS)}"
        )
    return found


def _format_of(record: Mapping[str, Any]) -> str | None:
    keys = set(record)
    if record.get("format") == FORMAT_NAME:
        return "agentload"
    if "turns" in keys:
        return "copilot"
    if keys & {"prefix_tokens", "newly_append_tokens", "input_tokens_total"}:
        return "tracelab"
    if "requests" in keys:
        return "weka"
    if {"chat_id", "parent_chat_id"} & keys:
        return "bailian"
    if "input_length" in keys:
        return "mooncake"
    return None


def _first_record(file: Path) -> Any:
    """The first JSON value of `file`: its first line's, or (a pretty-printed document or
    array, as Weka traces are) the first value or element of the whole file."""
    line = _first_line(file)
    if line is None:
        raise ConfigError(f"{file}: the trace file is empty")
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return next((value for _where, value in json_values(file, "trace")), None)
    return value[0] if isinstance(value, list) and value else value


def _first_line(file: Path) -> str | None:
    with open_text(file) as lines:
        return next((text for text in lines if text.strip()), None)
