"""Prompt text for a replayed request: its hash ids become blocks of deterministic text.

Equal ids (in one namespace) give equal text, different ids different text, so a target's
prefix cache sees the trace's sharing. Each block opens with a marker made from its id and
is filled with one-token words (loadgen.protocol.tokens), so under the simulator's tokenizer
a block is exactly `block_size` tokens and the prompt exactly the request's length.
"""

from __future__ import annotations

import functools
import hashlib

from loadgen.protocol import words_for_tokens

__all__ = ["MARKER_TOKENS", "block_text", "prompt_text"]

MARKER_TOKENS = 3  # twelve hex digits, four per token


@functools.lru_cache(maxsize=65536)
def block_text(namespace: str, hash_id: int, tokens: int) -> str:
    """The text of block `hash_id` in `namespace`, `tokens` tokens long (or a prefix of it)."""
    digest = hashlib.blake2b(f"{namespace}\x1f{hash_id}".encode(), digest_size=6).hexdigest()
    marker = " ".join(digest[i : i + 4] for i in range(0, 12, 4))
    if tokens <= MARKER_TOKENS:
        return " ".join(marker.split()[:tokens])
    return f"{marker} {words_for_tokens(tokens - MARKER_TOKENS, offset=hash_id)}"


def prompt_text(
    hash_ids: tuple[int, ...], tokens: int, block_size: int, namespace: str, unique: str
) -> str:
    """`tokens` tokens of prompt: the blocks of `hash_ids` in order, then (where the ids do
    not cover the length) text of this request's own, named by `unique`."""
    parts: list[str] = []
    left = tokens
    for h in hash_ids:
        if left <= 0:
            break
        take = min(block_size, left)
        parts.append(block_text(namespace, h, take))
        left -= take
    if left > 0:
        parts.append(block_text(f"{namespace}\x1e{unique}", -1, left))
    return " ".join(parts)
