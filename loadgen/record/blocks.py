"""A prompt's blocks: stand-in tokens cut into `block_size` blocks, each hash chained to the last.

A block's hash covers its own tokens and the hash of the block before it (as the simulator's
KV cache and vLLM's prefix cache hash them), so two prompts have equal block hashes exactly
as far as they are equal from their start. The trace writes each hash as a small integer
from a table (1, 2, 3... in order of first appearance), which keeps the file small and says
nothing about the text. Tokenizing a long prompt takes ~9 ms per 100K tokens, so it is done
a slice at a time (~0.2 ms each), pausing between slices: the proxy's streams go on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loadgen.protocol.tokens import TOKEN_PATTERN

__all__ = ["BlockTable", "Pause", "PromptBlocks", "next_turn", "tokenize"]

_SLICE_CHARS = 1 << 13  # ~2K tokens, ~0.2 ms of regex work
_SLICE_BLOCKS = 128  # ~0.15 ms of hashing
_SPACE = re.compile(r"\s")

# What analysis awaits between slices: at least a turn of the event loop.
Pause = Callable[[], Awaitable[None]]


async def next_turn() -> None:
    """Let every other ready task run once."""
    await asyncio.sleep(0)


async def tokenize(text: str, pause: Pause = next_turn) -> list[str]:
    """The stand-in tokens of `text` (loadgen.protocol.tokens), yielding between slices.

    Each slice ends at whitespace, so no token is cut in two and the result equals
    token_pieces(text).
    """
    if len(text) <= _SLICE_CHARS:
        return TOKEN_PATTERN.findall(text)
    pieces: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        space = _SPACE.search(text, min(pos + _SLICE_CHARS, end))
        stop = space.start() if space else end
        pieces += TOKEN_PATTERN.findall(text, pos, stop)
        pos = stop
        if pos < end:
            await pause()
    return pieces


@dataclass(frozen=True, slots=True)
class PromptBlocks:
    """A prompt's full blocks as the trace's ids, and its length in stand-in tokens."""

    tokens: int
    hash_ids: tuple[int, ...]


class BlockTable:
    """Chained block hashes of prompts, numbered 1, 2, 3... in order of first appearance.

    The table holds one entry per distinct block seen (about 100 bytes each: a recording
    of 10M distinct prompt tokens at 64 tokens a block keeps ~16 MB).
    """

    def __init__(self, block_size: int) -> None:
        if block_size < 1:
            raise ValueError("block_size must be at least 1 token")
        self.block_size = block_size
        self._ids: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    async def blocks(self, pieces: list[str], pause: Pause = next_turn) -> PromptBlocks:
        """The ids of every full block of `pieces`, yielding to the loop between slices."""
        size = self.block_size
        ids = self._ids
        out: list[int] = []
        parent = 0
        full = len(pieces) // size * size
        for number, start in enumerate(range(0, full, size), 1):
            parent = hash((parent, *pieces[start : start + size]))
            found = ids.get(parent)
            if found is None:
                found = ids[parent] = len(ids) + 1
            out.append(found)
            if number % _SLICE_BLOCKS == 0:
                await pause()
        return PromptBlocks(len(pieces), tuple(out))
