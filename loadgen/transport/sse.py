"""An incremental server-sent-events parser over raw byte chunks (WHATWG framing rules)."""

from __future__ import annotations

from typing import NamedTuple

from loadgen.transport.errors import TransportError

__all__ = ["MAX_EVENT_BYTES", "SSEEvent", "SSEParser"]

# The most bytes one unfinished event may hold before the stream is abandoned. A server that
# never ends an event (one endless line, no blank line) would otherwise grow this buffer
# until the process runs out of memory (a 40 MB line took a generator to 1.13 GB), taking
# every other stream of the process down with it. 16 MiB is far above any real event: a
# token delta is tens of bytes, and the biggest (a Responses `response.completed` carrying
# the whole output, a tool call's arguments in one piece) are a few MiB at most.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEEvent(NamedTuple):
    """One dispatched event: when its last bytes arrived, its name (b"" if unnamed), its data."""

    t_ns: int
    event: bytes
    data: bytes


class SSEParser:
    """Feed chunks as they arrive; get back the (event, data) pairs each chunk completes."""

    __slots__ = ("_cap", "_cr", "_held", "_pieces")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        """`max_event_bytes`: the cap on one unfinished event (default MAX_EVENT_BYTES)."""
        self._cap = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        # Chunks of an event still arriving; joined once, when its end shows up, so an event
        # spread over many chunks costs one copy rather than one per chunk.
        self._pieces: list[bytes] = []
        self._held = 0  # their total length
        # A chunk ended in "\r": if the next one starts with "\n" that is the same line break.
        self._cr = False

    @property
    def pending(self) -> bool:
        """True when bytes of an event that has not ended yet are buffered."""
        return any(piece.strip(b"\n") for piece in self._pieces)

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """The events that `chunk` completes, in order.

        TransportError("stream_truncated") once an unfinished event holds more than the cap;
        the caller must then close the connection (its body was not read to the end).
        """
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
            if not ends_here:
                self._hold(chunk)
                return []
            pieces.append(chunk)
            chunk = b"".join(pieces)
            pieces.clear()
            self._held = 0
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()  # after the last separator: the start of an unfinished event
        if rest:
            self._hold(rest)
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

    def _hold(self, piece: bytes) -> None:
        """Buffer `piece` of the unfinished event, or give up on a stream past the cap."""
        held = self._held + len(piece)
        if held > self._cap:
            # stream_truncated, of the kinds the transport can report: the reply is cut off
            # here, by us, mid-stream, and what arrived before is all it will ever have, as
            # when the connection drops mid-body. Not connection_error (the server was
            # reached and answered) nor timeout (it was not slow). The buffer is dropped so
            # that nothing keeps the bytes alive while the failure is handled.
            self._pieces.clear()
            self._held = 0
            raise TransportError(
                "stream_truncated",
                f"server-sent event exceeded {self._cap} bytes without ending; stream abandoned",
            )
        self._pieces.append(piece)
        self._held = held


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
