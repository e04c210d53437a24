"""The deterministic stand-in tokenizer shared by the simulator and synthetic prompt builders.

Rule: a token is a run of at most four consecutive non-whitespace characters; whitespace
separates tokens and costs nothing. "Hello, world" is ["Hell", "o,", "worl", "d"]: 4 tokens.
Whitespace-blindness is deliberate: a reply re-sent as history re-tokenizes to the same
pieces whatever spacing the client puts around it, so prefix caching behaves like a real
server's when a session resends its conversation.
"""

from __future__ import annotations

import re

__all__ = [
    "TOKEN_PATTERN",
    "VOCABULARY",
    "count_tokens",
    "text_chunks",
    "token_pieces",
    "words_for_tokens",
]

TOKEN_PATTERN = re.compile(r"\S{1,4}")
_CHUNK_PATTERN = re.compile(r"\s*\S{1,4}")

# Words of at most four characters are exactly one token each, so generated text
# re-tokenizes to exactly the count that was generated.
_WORDS = (
    "the of and to in is it for on that with as was at by be this are from or an not but "
    "all can had her one our out day get has him his how man new now old see two way who "
    "boy did its let put say she too use code test run file edit read tool call data "
    "load fix bug plan step next done make list find path line diff task node sync lock "
    "wait time fast slow pass fail keep user goal note todo flag map set key "
)
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())


def token_pieces(text: str) -> list[str]:
    """The tokens of `text` under the documented rule."""
    return TOKEN_PATTERN.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens `text` holds under the documented rule."""
    return len(TOKEN_PATTERN.findall(text))


_CYCLE = [VOCABULARY[(i * 7) % len(VOCABULARY)] for i in range(len(VOCABULARY))]
_INVERSE_STRIDE = pow(7, -1, len(VOCABULARY))
_TEXT_WORDS = 8192 + len(_CYCLE)
_TEXT = " ".join(_CYCLE[i % len(_CYCLE)] for i in range(_TEXT_WORDS))
_STARTS = [0]
for _word in (_CYCLE[i % len(_CYCLE)] for i in range(_TEXT_WORDS)):
    _STARTS.append(_STARTS[-1] + len(_word) + 1)


def words_for_tokens(count: int, offset: int = 0) -> str:
    """Plain text of exactly `count` tokens (space-separated one-token words)."""
    if count <= 0:
        return ""
    # Agents append thousands of tokens per step: slice a precomputed text instead of joining
    # word by word (0.3-0.4 us per token, enough to stall the event loop on big tool results).
    start = (offset * _INVERSE_STRIDE) % len(_CYCLE)  # the word VOCABULARY[offset] opens it
    parts = []
    while count > 0:
        take = min(count, _TEXT_WORDS - start)
        parts.append(_TEXT[_STARTS[start] : _STARTS[start + take] - 1])
        count -= take
        start = 0
    return " ".join(parts)


def text_chunks(text: str) -> list[str]:
    """`text` cut into one chunk per token, whitespace kept, so that "".join() gives it back."""
    chunks = _CHUNK_PATTERN.findall(text)
    if chunks:
        consumed = sum(map(len, chunks))
        if consumed < len(text):
            chunks[-1] += text[consumed:]
    return chunks
