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

    __slots__ = ("_buf", "_cr")

    def __init__(self) -> None:
        # Bytes of an event still arriving; a bytearray so appends and front deletes are cheap.
        self._buf = bytearray()
        # A chunk ended in "\r": if the next one starts with "\n" that is the same line break.
        self._cr = False

    @property
    def pending(self) -> bool:
        """True when bytes of an event that has not ended yet are buffered."""
        return bool(self._buf.strip(b"\n"))

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """The events that `chunk` completes, in order."""
        if self._cr:
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr = chunk[-1:] == b"\r"
            # Normalising to "\n" once per chunk keeps the hot path to one find and a split.
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        if not buf:
            end = chunk.rfind(b"\n\n")
            if end < 0:
                buf += chunk
                return []
            data = chunk[:end]
            buf += chunk[end + 2 :]
        else:
            # Only the new bytes (and one before them) can complete a separator.
            start = len(buf) - 1
            buf += chunk
            end = buf.rfind(b"\n\n", start)
            if end < 0:
                return []
            with memoryview(buf) as view:
                data = bytes(view[:end])
            del buf[: end + 2]
        events: list[tuple[bytes, bytes]] = []
        for block in data.split(b"\n\n"):
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
