"""Prompt text for a replayed request: its hash ids become blocks of deterministic text.

Equal ids (in one namespace) give equal text, different ids different text, so a target's
prefix cache sees the trace's sharing. Each block opens with a marker made from its id and
is filled with one-token words (loadgen.protocol.tokens), so under the simulator's tokenizer
a block is exactly its length in tokens and the prompt exactly the request's length.

Every block has the same filler after its marker, and a request's own text past its ids is
cut into blocks of the same shape: another tokenizer then counts every block alike, so one
measured ratio (target tokens per stand-in token, loadgen.runtime.probes) sizes any prompt.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from loadgen.protocol import words_for_tokens

__all__ = ["MARKER_TOKENS", "TextScale", "block_text", "block_tokens", "prompt_text"]

MARKER_TOKENS = 3  # twelve hex digits, four per token


def _block_text(namespace: str, hash_id: int, tokens: int) -> str:
    digest = hashlib.blake2b(f"{namespace}\x1f{hash_id}".encode(), digest_size=6).hexdigest()
    marker = " ".join(digest[i : i + 4] for i in range(0, 12, 4))
    if tokens <= MARKER_TOKENS:
        return " ".join(marker.split()[:tokens])
    return f"{marker} {words_for_tokens(tokens - MARKER_TOKENS)}"


@functools.lru_cache(maxsize=65536)  # shared blocks recur; a request's own text does not
def block_text(namespace: str, hash_id: int, tokens: int) -> str:
    """The text of block `hash_id` in `namespace`, `tokens` tokens long (or a prefix of it)."""
    return _block_text(namespace, hash_id, tokens)


@dataclass(frozen=True, slots=True)
class TextScale:
    """How replayed text is sized for a target: the target's tokens per stand-in token, as
    measured on blocks of `block` stand-in tokens (0: the trace's own block size)."""

    ratio: float = 1.0
    block: int = 0

    def prompt_tokens(self, target_tokens: int) -> int:
        """Stand-in tokens of text the target counts as `target_tokens`."""
        return max(1, round(target_tokens / self.ratio))


def block_tokens(block_size: int, ratio: float) -> int:
    """Stand-in tokens of one block of `block_size` target tokens, at `ratio` target tokens
    per stand-in token."""
    return max(1, round(block_size / ratio))


def prompt_text(
    hash_ids: tuple[int, ...], tokens: int, block_size: int, namespace: str, unique: str
) -> str:
    """`tokens` tokens of prompt: the blocks of `hash_ids` in order, then (where the ids do
    not cover the length) blocks of this request's own, named by `unique`."""
    parts: list[str] = []
    left = tokens
    for h in hash_ids:
        if left <= 0:
            break
        take = min(block_size, left)
        parts.append(block_text(namespace, h, take))
        left -= take
    own = f"{namespace}\x1e{unique}"
    number = 0
    while left > 0:
        take = min(block_size, left)
        number += 1
        parts.append(_block_text(own, -number, take))
        left -= take
    return " ".join(parts)
