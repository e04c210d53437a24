"""The incremental SSE parser: framing rules under every way a stream can be cut into chunks."""

from __future__ import annotations

import random

import pytest

from loadgen.transport import SSEParser

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a":1}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"delta":"x"}\n\n'
    b"data: line one\n"
    b"data: line two\n\n"
    b"id: 7\n"
    b"retry: 100\n"
    b"data:no-space\n\n"
    b"event: named-only\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    (b"", b'{"a":1}'),
    (b"response.output_text.delta", b'{"delta":"x"}'),
    (b"", b"line one\nline two"),
    (b"", b"no-space"),
    (b"", b"[DONE]"),
]


def _parse(chunks: list[bytes]) -> list[tuple[bytes, bytes]]:
    parser = SSEParser()
    out: list[tuple[bytes, bytes]] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


def _random_cuts(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def test_whole_stream_in_one_chunk_parses_every_event() -> None:
    assert _parse([STREAM]) == EXPECTED


def test_one_byte_chunks_parse_the_same_events() -> None:
    assert _parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_every_two_way_split_parses_the_same_events() -> None:
    for cut in range(1, len(STREAM)):
        assert _parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_random_chunkings_parse_the_same_events() -> None:
    rng = random.Random(7)
    for _ in range(300):
        assert _parse(_random_cuts(STREAM, rng)) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_crlf_and_cr_line_endings_parse_like_lf_under_any_split(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    assert _parse([stream]) == EXPECTED
    for cut in range(1, len(stream)):
        assert _parse([stream[:cut], stream[cut:]]) == EXPECTED, cut


def test_cr_then_lf_in_the_next_chunk_is_one_line_break() -> None:
    assert _parse([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [(b"", b"a"), (b"", b"b")]


def test_event_without_blank_line_is_not_dispatched_and_stays_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: partial") == [(b"", b"a")]
    assert parser.pending


def test_extra_blank_lines_between_events_are_ignored() -> None:
    assert _parse([b"data: a\n\n\n\n\ndata: b\n\n"]) == [(b"", b"a"), (b"", b"b")]


def test_only_one_space_after_the_colon_is_stripped() -> None:
    assert _parse([b"data:  two spaces\n\n"]) == [(b"", b" two spaces")]


def test_large_event_across_many_chunks_is_reassembled() -> None:
    payload = b"x" * 200_000
    stream = b"data: " + payload + b"\n\n"
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    assert _parse(chunks) == [(b"", payload)]
