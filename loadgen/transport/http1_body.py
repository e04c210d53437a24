"""HTTP/1.1 response body framing: chunked, Content-Length or until close, then content coding."""

from __future__ import annotations

import zlib

from loadgen.transport.http1_head import ProtocolError, ResponseHead

__all__ = ["BodyDecoder", "IncompleteBodyError", "body_decoder"]

_HEX = b"0123456789abcdefABCDEF"
_MAX_LINE = 8192  # a chunk-size or trailer line longer than this is not HTTP
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class IncompleteBodyError(ConnectionError):
    """The connection closed before the body's framing said it was complete."""


class BodyDecoder:
    """Feed the raw bytes after the head; get back body bytes. Base: read until close."""

    __slots__ = ("done", "error", "reusable")

    def __init__(self) -> None:
        self.done = False  # every body byte has arrived
        self.reusable = False  # done, and nothing else arrived after the body
        # Bad framing found after some good bytes of the same read: those are returned
        # first (as aiohttp delivers what it parsed before failing), and this raised next.
        self.error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """The body bytes in `data` (a close-delimited body is all of it)."""
        return [data]

    def end_of_stream(self) -> list[bytes]:
        """The peer closed: the last body bytes; IncompleteBodyError if the body was cut."""
        self.done = True
        return []


class _Empty(BodyDecoder):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.done = self.reusable = True

    def feed(self, data: bytes) -> list[bytes]:
        self.reusable = False  # bytes after a body that has ended: do not trust the connection
        return []


class _Length(BodyDecoder):
    __slots__ = ("_left",)

    def __init__(self, length: int) -> None:
        super().__init__()
        self._left = length

    def feed(self, data: bytes) -> list[bytes]:
        if self.done:
            self.reusable = False
            return []
        left = self._left
        if len(data) >= left:
            self._left = 0
            self.done = True
            self.reusable = len(data) == left
            return [data if len(data) == left else data[:left]]
        self._left = left - len(data)
        return [data]

    def end_of_stream(self) -> list[bytes]:
        raise IncompleteBodyError(f"connection closed {self._left} bytes short of Content-Length")


class _Chunked(BodyDecoder):
    __slots__ = ("_buf", "_left", "_state")

    def __init__(self) -> None:
        super().__init__()
        self._state = _SIZE
        self._left = 0  # bytes of the current chunk's data still to come
        self._buf = b""  # an unfinished size, CRLF or trailer line

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            self._feed(data, out)
        except ProtocolError as exc:
            if not out:
                raise
            self.error = exc
        return out

    def _feed(self, data: bytes, out: list[bytes]) -> None:
        if self.error is not None:
            raise self.error
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._left, end - pos)
                out.append(data if pos == 0 and take == end else data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
                continue
            if state == _DONE:
                self.reusable = False
                break
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._buf = data[pos:]
                if len(self._buf) > _MAX_LINE:
                    raise ProtocolError("chunk-size line too long")
                break
            line = data[pos:newline].removesuffix(b"\r")
            pos = newline + 1
            if state == _SIZE:
                size = line.split(b";", 1)[0].strip(b" \t")
                if not size or len(size) > 16 or size.lstrip(_HEX):
                    raise ProtocolError(f"bad chunk size {line[:40]!r}")
                self._left = int(size, 16)
                self._state = _DATA if self._left else _TRAILER
            elif state == _DATA_END:
                if line:
                    raise ProtocolError("chunk data longer than its size")
                self._state = _SIZE
            elif not line:  # _TRAILER: trailer fields are skipped until the empty line
                self._state = _DONE
                self.done = self.reusable = True  # until a byte shows up after the body

    def end_of_stream(self) -> list[bytes]:
        raise IncompleteBodyError("connection closed before the last chunk")


class _Decompressing(BodyDecoder):
    """A gzip or deflate Content-Encoding undone on top of the framing."""

    __slots__ = ("_inner", "_zlib")

    def __init__(self, inner: BodyDecoder, wbits: int) -> None:
        super().__init__()
        self._inner = inner
        self._zlib = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> list[bytes]:
        try:
            out = [self._zlib.decompress(piece) for piece in self._inner.feed(data)]
        except zlib.error as exc:
            raise ProtocolError(f"bad compressed body: {exc}") from exc
        self._sync()
        if self.done:
            out.append(self._flush())
        return out

    def _flush(self) -> bytes:
        try:
            return self._zlib.flush()
        except zlib.error as exc:
            raise ProtocolError(f"bad compressed body: {exc}") from exc

    def end_of_stream(self) -> list[bytes]:
        self._inner.end_of_stream()  # a framed body contributes nothing here
        self._sync()
        return [self._flush()]

    def _sync(self) -> None:
        inner = self._inner
        self.done, self.reusable, self.error = inner.done, inner.reusable, inner.error


def _content_length(head: ResponseHead) -> int | None:
    values = {
        v.strip() for field in head.headers.getall("Content-Length", []) for v in field.split(",")
    }
    if not values:
        return None
    if len(values) > 1 or not all(v.isdigit() for v in values):
        raise ProtocolError(f"bad Content-Length {sorted(values)!r}")
    return int(values.pop())


def body_decoder(head: ResponseHead) -> BodyDecoder:
    """The decoder for `head`'s body, framed as RFC 9112 section 6.3 says (POST replies)."""
    codings = [
        c.strip().lower()
        for f in head.headers.getall("Transfer-Encoding", [])
        for c in f.split(",")
    ]
    if head.status in (204, 304):
        decoder: BodyDecoder = _Empty()
    elif codings:
        if codings != ["chunked"]:
            raise ProtocolError(f"unsupported Transfer-Encoding {codings!r}")
        decoder = _Chunked()
    elif (length := _content_length(head)) is not None:
        decoder = _Length(length) if length else _Empty()
    else:
        decoder = BodyDecoder()
    coding = head.headers.get("Content-Encoding", "identity").strip().lower()
    if coding in ("gzip", "x-gzip"):
        return _Decompressing(decoder, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return _Decompressing(decoder, zlib.MAX_WBITS)
    return decoder  # identity, or a coding this client never asked for: passed through
