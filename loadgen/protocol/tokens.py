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


def words_for_tokens(count: int, offset: int = 0) -> str:
    """Plain text of exactly `count` tokens (space-separated one-token words)."""
    n = len(VOCABULARY)
    return " ".join(VOCABULARY[(offset + i * 7) % n] for i in range(count))


def text_chunks(text: str) -> list[str]:
    """`text` cut into one chunk per token, whitespace kept, so that "".join() gives it back."""
    chunks = _CHUNK_PATTERN.findall(text)
    if chunks:
        consumed = sum(map(len, chunks))
        if consumed < len(text):
            chunks[-1] += text[consumed:]
    return chunks
