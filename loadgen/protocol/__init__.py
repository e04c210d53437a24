"""OpenAI wire protocol: constants, the stand-in tokenizer, and (later) request/response shapes."""

from loadgen.protocol.tokens import (
    VOCABULARY,
    count_tokens,
    text_chunks,
    token_pieces,
    words_for_tokens,
)

__all__ = ["VOCABULARY", "count_tokens", "text_chunks", "token_pieces", "words_for_tokens"]
