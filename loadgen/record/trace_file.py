"""Writing an agentload trace a line at a time, so that a crash loses nothing already written.

The lines are loadgen.traces.formats.agentload's own (its header, then its request rows),
plus optional fields (its reader ignores all but `block_in`):

- header `source`: what wrote it ("agentload record" or "agentload export-trace");
- request `api`: chat, responses or completions (recordings);
- request `counted`: true when the server reported no usage, so `in`/`out` are the stand-in
  tokenizer's counts of the rendered prompt and the reply (loadgen.protocol.tokens);
- request `scale`: on counted rows, {"in": ..., "out": ...}, the server / stand-in token
  ratios (learned from calls with usage, loadgen.record.units) the counts were scaled by;
- request `text`: {"prompt": ..., "reply": ...}, only with `agentload record --keep-text`;
- request `block_in`: the server's tokens one hash id covers (block_size stand-in tokens
  times the server / stand-in prompt ratio), once calls of its model have carried usage;
  the reader takes the ids as that many tokens each.

Each line is flushed to the operating system as it is written (not fsynced: an fsync per
call would stall the proxy's event loop on a slow disk).
"""

from __future__ import annotations

import json
import os
from itertools import islice
from pathlib import Path
from typing import Any

from loadgen.traces.formats.agentload import trace_lines
from loadgen.traces.model import Trace, TraceRequest, TraceSession

__all__ = ["TraceWriter"]


class TraceWriter:
    """An agentload trace file: the header, then one flushed line per request.

    Opening checks the file can be written without touching what it holds; begin()
    empties it and writes the header (so a recorder that then fails to listen leaves an
    earlier trace of the same name as it was).
    """

    def __init__(self, path: str | os.PathLike[str], block_size: int, *, source: str) -> None:
        self.path = Path(path)
        self.block_size = block_size
        self.source = source
        self.requests = 0
        self.error: str | None = None  # why writing stopped (a full disk...), once it has
        self.existed = self.path.exists()
        self._file = self.path.open("a", encoding="utf-8")
        self._begun = False

    def begin(self) -> None:
        """Empty the file and write the header."""
        self._file.seek(0)
        self._file.truncate()
        self._begun = True
        header = next(trace_lines(Trace([], self.block_size)))
        self._write({**header, "source": self.source})

    def write(self, session_id: str, request: TraceRequest, extra: dict[str, Any]) -> None:
        """Append one request of `session_id`, with optional `extra` fields (after begin())."""
        trace = Trace([TraceSession(session_id, [request])], self.block_size)
        row = next(islice(trace_lines(trace), 1, None))
        self._write({**row, **extra})
        self.requests += 1

    def _write(self, line: dict[str, Any]) -> None:
        if self.error is not None:
            return
        try:
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror or exc}"

    def close(self) -> None:
        """Close the file (everything was flushed already); one never begun is left as it
        was found (a file it created is removed)."""
        try:
            self._file.close()
            if not self._begun and not self.existed:
                self.path.unlink(missing_ok=True)
        except OSError as exc:
            self.error = self.error or f"{self.path}: {exc.strerror or exc}"
