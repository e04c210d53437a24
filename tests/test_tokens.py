"""The stand-in tokenizer's documented rule."""

from __future__ import annotations

from loadgen.protocol import count_tokens, text_chunks, token_pieces, words_for_tokens


def test_a_token_is_at_most_four_non_whitespace_characters() -> None:
    assert token_pieces("Hello, world") == ["Hell", "o,", "worl", "d"]


def test_whitespace_costs_nothing() -> None:
    assert count_tokens("a b") == count_tokens("a\n\n   b") == 2
    assert count_tokens("   \n\t ") == 0


def test_text_chunks_rebuild_the_text_with_one_chunk_per_token() -> None:
    text = '{"path": "src/main.py", "line": 12}  \n'
    chunks = text_chunks(text)
    assert "".join(chunks) == text
    assert len(chunks) == count_tokens(text)


def test_words_for_tokens_produce_exactly_the_requested_count() -> None:
    for n in (0, 1, 7, 500):
        assert count_tokens(words_for_tokens(n, offset=n)) == n
