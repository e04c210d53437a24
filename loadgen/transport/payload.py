"""A request body made of byte segments, sent without building one contiguous copy in Python."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

__all__ = ["SegmentsPayload"]

# Segments at least this big go out as they are; smaller neighbours are batched up to it,
# because every writer.write() is a transport write and usually a send() syscall.
_BATCH_BYTES = 64 * 1024


class SegmentsPayload(Payload):
    """The concatenation of `segments`, with a known size (so Content-Length, not chunked)."""

    _value: Sequence[bytes]
    _autoclose = True  # nothing to close: the segments are plain bytes in memory

    def __init__(self, segments: Sequence[bytes], **kwargs: Any) -> None:
        kwargs.setdefault("content_type", "application/json")
        super().__init__(segments, **kwargs)
        self._total = sum(map(len, segments))
        self._size = self._total

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The whole body as text (debugging and logging only: this one does copy)."""
        return b"".join(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Write every segment."""
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        """Write the segments, stopping after `content_length` bytes when it is given."""
        left = self._total if content_length is None else min(content_length, self._total)
        batch: list[bytes] = []
        batched = 0
        for segment in self._value:
            if left <= 0:
                break
            if len(segment) > left:
                segment = segment[:left]
            left -= len(segment)
            if len(segment) >= _BATCH_BYTES:
                if batch:
                    await writer.write(b"".join(batch))
                    batch.clear()
                    batched = 0
                await writer.write(segment)
                continue
            batch.append(segment)
            batched += len(segment)
            if batched >= _BATCH_BYTES:
                await writer.write(b"".join(batch))
                batch.clear()
                batched = 0
        if batch:
            await writer.write(b"".join(batch))
