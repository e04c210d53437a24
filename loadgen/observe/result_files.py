"""The run directory: steps.jsonl and sessions.jsonl as they happen, summary.json at the end."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from io import FileIO
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from loadgen.errors import UsageError
from loadgen.observe.records import SessionRecord, StepRecord

__all__ = ["CEILING_FILE", "SESSIONS_FILE", "STEPS_FILE", "SUMMARY_FILE", "ResultFiles"]

STEPS_FILE = "steps.jsonl"
SESSIONS_FILE = "sessions.jsonl"
SUMMARY_FILE = "summary.json"
CEILING_FILE = "ceiling.json"  # written by `agentload ceiling`, read by the report

_LINE = orjson.OPT_APPEND_NEWLINE
_DOCUMENT = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


class ResultFiles:
    """Writes one run's result files into `out_dir`, created if missing.

    Each record is one unbuffered write, so the line is in the OS the moment it is written
    and a crashed or killed run keeps everything it measured. Existing steps.jsonl and
    sessions.jsonl are started afresh: a run directory belongs to one run. With
    `records=False` (a swarm's master, whose workers write the records in their own
    folders) only summary.json is written.

    A record file that cannot be written (a full disk, an I/O error) stops taking records
    at its first failed write, and the run goes on measuring: `incomplete` says which file
    stopped, why and after how many records, for summary.json's `results_incomplete`.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, records: bool = True) -> None:
        self.path = Path(out_dir)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._steps = _Records(self.path / STEPS_FILE) if records else None
            try:
                self._sessions = _Records(self.path / SESSIONS_FILE) if records else None
            except BaseException:
                self.close()
                raise
        except OSError as exc:
            raise UsageError(
                f"cannot write results to {self.path}: {exc.strerror or exc}; "
                "choose an output directory that can be created and written to"
            ) from exc

    @property
    def steps_path(self) -> Path:
        """Where step records go."""
        return self.path / STEPS_FILE

    @property
    def sessions_path(self) -> Path:
        """Where session records go."""
        return self.path / SESSIONS_FILE

    @property
    def summary_path(self) -> Path:
        """Where `write_summary()` puts the summary."""
        return self.path / SUMMARY_FILE

    @property
    def incomplete(self) -> str | None:
        """Why record files stopped taking records ("steps.jsonl: [Errno 28] ..."), or None."""
        errors = [f.error for f in (self._steps, self._sessions) if f is not None and f.error]
        return "; ".join(errors) or None

    def write_step(self, rec: StepRecord) -> None:
        """Append one step as a steps.jsonl line (nothing, once the file has failed)."""
        assert self._steps is not None, "ResultFiles(records=False) writes no records"
        self._steps.append(orjson.dumps(rec.to_json(), option=_LINE))

    def write_session(self, rec: SessionRecord) -> None:
        """Append one session as a sessions.jsonl line (nothing, once the file has failed)."""
        assert self._sessions is not None, "ResultFiles(records=False) writes no records"
        self._sessions.append(orjson.dumps(rec.to_json(), option=_LINE))

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write summary.json atomically: readers see the old file or the new one, never half."""
        data = orjson.dumps(dict(summary), option=_DOCUMENT)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{SUMMARY_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as tmp_file:
                tmp_file.write(data)
                tmp_file.flush()
                # Durable before the rename, or a power cut could leave an empty summary.
                os.fsync(tmp_file.fileno())
            os.replace(tmp, self.summary_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return self.summary_path

    def close(self) -> None:
        """Close the record files; calling it again does nothing."""
        for records in (getattr(self, "_steps", None), getattr(self, "_sessions", None)):
            if records is not None:
                records.file.close()

    def __enter__(self) -> ResultFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _open_raw(path: Path) -> FileIO:
    return open(path, "wb", buffering=0)


class _Records:
    """One JSON-lines file taking a record per write, until a write fails."""

    __slots__ = ("count", "error", "file", "name", "size")

    def __init__(self, path: Path) -> None:
        self.name = path.name
        # buffering=0: a raw file whose write() is a system call, never held in Python.
        # It stays on the event loop: one step's line (~400 bytes) measured 1 us to write
        # into the page cache, far below a thread hand-off, which would also leave queued
        # lines for a kill -9 to lose. (Building the line, StepRecord.to_json, costs ~50.)
        self.file = _open_raw(path)  # closed by ResultFiles.close()
        self.count = 0  # records written whole
        self.size = 0  # bytes written whole
        self.error: str | None = None

    def append(self, line: bytes) -> None:
        """Write `line` whole; on an OSError, stop for good and say why in `error`."""
        if self.error is not None:
            return
        try:
            written = self.file.write(line)
            while written < len(line):  # a short write: the disk filled up mid-line
                written += self.file.write(line[written:])
        except OSError as exc:
            self.error = f"{self.name}: {exc} after {self.count} records"
            # A torn line is cut off, so that the file holds whole records only (/dev/full
            # and pipes cannot be truncated: nothing was written to them anyway).
            with contextlib.suppress(OSError):
                os.ftruncate(self.file.fileno(), self.size)
            return
        self.count += 1
        self.size += written
