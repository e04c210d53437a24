"""Reading a finished run back: summary.json, and the step and session records of every worker."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loadgen.errors import UsageError
from loadgen.observe.result_files import SESSIONS_FILE, STEPS_FILE, SUMMARY_FILE
from loadgen.observe.summary import SUMMARY_SCHEMA

__all__ = ["RunResults", "load_results", "save_summary"]


@dataclass(frozen=True)
class RunResults:
    """One run's results folder and its summary; records are read on demand."""

    path: Path  # the results folder
    summary: dict[str, Any]

    def record_files(self, name: str) -> list[Path]:
        """`name` (steps.jsonl or sessions.jsonl) at the top and in every worker-*/ folder."""
        found = [self.path / name] if (self.path / name).is_file() else []
        found += sorted(p for p in self.path.glob(f"worker-*/{name}") if p.is_file())
        return found

    @property
    def has_records(self) -> bool:
        """True when step records were written (summary-only baselines have none)."""
        return bool(self.record_files(STEPS_FILE))

    def steps(self) -> Iterator[dict[str, Any]]:
        """Every step record (steps.jsonl lines), workers' included."""
        return _records(self.record_files(STEPS_FILE))

    def sessions(self) -> Iterator[dict[str, Any]]:
        """Every session record (sessions.jsonl lines), workers' included."""
        return _records(self.record_files(SESSIONS_FILE))

    def extra_json(self, name: str) -> Any:
        """Another JSON document of the folder (e.g. ceiling.json), or None when absent."""
        path = self.path / name
        if not path.is_file():
            return None
        return _read_json(path)


def _records(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with path.open("rb") as lines:
            for line in lines:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    # A run killed mid-write leaves a partial last line; what came before counts.
                    continue
                if isinstance(record, dict):
                    yield record


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); was the run interrupted?") from exc


def load_results(where: str | os.PathLike[str]) -> RunResults:
    """A results folder, or a summary.json file (its folder holds the records, if any)."""
    path = Path(where)
    if path.is_dir():
        folder, summary_path = path, path / SUMMARY_FILE
    elif path.is_file():
        folder, summary_path = path.parent, path
    else:
        raise UsageError(f"{path}: no such results folder or summary.json; check the path")
    if not summary_path.is_file():
        raise UsageError(f"{path}: no {SUMMARY_FILE} in it; did the run finish?")
    summary = _read_json(summary_path)
    if not isinstance(summary, Mapping) or summary.get("schema") != SUMMARY_SCHEMA:
        found = summary.get("schema") if isinstance(summary, Mapping) else type(summary).__name__
        raise UsageError(f"{summary_path}: not an agentload summary ({SUMMARY_SCHEMA}): {found!r}")
    return RunResults(folder, dict(summary))


def save_summary(folder: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Rewrite FOLDER/summary.json atomically (e.g. with gate verdicts added), records untouched."""
    path = Path(folder) / SUMMARY_FILE
    data = orjson.dumps(dict(summary), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{SUMMARY_FILE}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # durable before the rename replaces the old summary
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
