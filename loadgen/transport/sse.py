"""An incremental server-sent-events parser over raw byte chunks (WHATWG framing rules)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEEvent", "SSEParser"]


class SSEEvent(NamedTuple):
    """One dispatched event: when its last bytes arrived, its name (b"" if unnamed), its data."""

    t_ns: int
    event: bytes
    data: bytes


class SSEParser:
    """Feed chunks as they arrive; get back the (event, data) pairs each chunk completes."""

    __slots__ = ("_cr", "_pieces")

    def __init__(self) -> None:
        # Chunks of an event still arriving; joined once, when its end shows up, so an event
        # spread over many chunks costs one copy rather than one per chunk.
        self._pieces: list[bytes] = []
        # A chunk ended in "\r": if the next one starts with "\n" that is the same line break.
        self._cr = False

    @property
    def pending(self) -> bool:
        """True when bytes of an event that has not ended yet are buffered."""
        return any(piece.strip(b"\n") for piece in self._pieces)

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """The events that `chunk` completes, in order."""
        if self._cr:
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr = chunk[-1:] == b"\r"
            # Normalising to "\n" once per chunk keeps the hot path to one split.
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pieces = self._pieces
        if pieces:
            ends_here = b"\n\n" in chunk or (chunk[:1] == b"\n" and pieces[-1][-1:] == b"\n")
            pieces.append(chunk)
            if not ends_here:
                return []
            chunk = b"".join(pieces)
            pieces.clear()
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()  # after the last separator: the start of an unfinished event
        if rest:
            pieces.append(rest)
        events: list[tuple[bytes, bytes]] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                # The common case: one unnamed single-line data event.
                events.append((b"", block[6:]))
            elif block:
                event = _parse_block(block)
                if event is not None:
                    events.append(event)
        return events


def _parse_block(block: bytes) -> tuple[bytes, bytes] | None:
    """One event's lines; None when it carries no data (the spec says not to dispatch it)."""
    name = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue  # blank lines from runs of separators, and comments
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value
        # id and retry are accepted and ignored: nothing here reconnects.
    if not data:
        return None
    return name, b"\n".join(data)
