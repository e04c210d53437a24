"""The kernel client's HTTP/1.1 framing, byte by byte: request heads, response heads, bodies."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest

from loadgen.transport.http1_body import BodyDecoder, IncompleteBodyError, body_decoder
from loadgen.transport.http1_head import (
    ProtocolError,
    RequestTemplate,
    ResponseHead,
    keep_alive_idle_s,
    origin,
)
from loadgen.transport.kernel_clock import receive_time_ns

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def _head(raw: bytes) -> ResponseHead:
    parsed = ResponseHead.parse(raw)
    assert parsed is not None
    return parsed[0]


def _decode_all(decoder: BodyDecoder, data: bytes, step: int) -> bytes:
    out = b"".join(p for i in range(0, len(data), step) for p in decoder.feed(data[i : i + step]))
    assert decoder.done
    return out


def test_origin_splits_host_port_and_target() -> None:
    where = origin("http://127.0.0.1:8000/v1/chat/completions")
    assert (where.host, where.port, where.host_header) == ("127.0.0.1", 8000, "127.0.0.1:8000")
    assert where.target == b"/v1/chat/completions"
    assert origin("http://gw.example/openai/v1/responses").host_header == "gw.example"
    assert origin("http://[::1]:9/v1/x").host_header == "[::1]:9"
    with pytest.raises(ValueError, match="http://"):
        origin("https://gw.example/v1/x")


def test_request_head_carries_host_length_defaults_and_overrides() -> None:
    template = RequestTemplate("h:1", {"User-Agent": "agentload", "Authorization": "Bearer k"})
    head = template.head(b"/v1/chat/completions", 42, {"X-Session": "s1", "accept": "text/x"})
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert head.endswith(b"Content-Length: 42\r\n\r\n")
    fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    assert fields["host"] == "h:1"
    assert fields["authorization"] == "Bearer k"
    assert fields["content-type"] == "application/json"
    assert fields["accept-encoding"] == "identity"
    assert fields["x-session"] == "s1"
    assert fields["accept"] == "text/x"  # a per-request header replaces the default
    assert template.head(b"/", 0, None).count(b"Accept: */*") == 1


def test_request_headers_cannot_inject_lines_or_override_framing() -> None:
    with pytest.raises(ValueError, match="line break"):
        RequestTemplate("h", {"X-Evil": "a\r\nX-Injected: 1"})
    head = RequestTemplate("h", {"Content-Length": "1", "Transfer-Encoding": "chunked"}).head(
        b"/", 5, None
    )
    assert b"chunked" not in head
    assert head.count(b"Content-Length") == 1


def test_response_head_is_none_until_complete_then_parsed() -> None:
    raw = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody"
    for cut in range(len(raw) - 4):
        assert ResponseHead.parse(raw[:cut]) is None
    parsed = ResponseHead.parse(raw)
    assert parsed is not None
    head, body_at = parsed
    assert raw[body_at:] == b"body"
    assert (head.status, head.reason) == (429, "Too Many Requests")
    assert head.headers["retry-after"] == "3"
    assert head.headers.getall("X-A") == ["1", "2"]
    assert head.keep_alive


def test_response_head_accepts_bare_newlines() -> None:
    parsed = ResponseHead.parse(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi")
    assert parsed is not None
    assert parsed[0].headers["Content-Length"] == "2"
    assert parsed[1] == len(b"HTTP/1.1 200 OK\nContent-Length: 2\n\n")


@pytest.mark.parametrize(
    ("raw", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", True),
    ],
)
def test_keep_alive_follows_version_and_connection_header(raw: bytes, keep_alive: bool) -> None:
    assert _head(raw).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("value", "idle_s"),
    [
        ("timeout=5, max=100", 4.0),  # llama-server, Apache: a second left for transit
        ("timeout=60", 59.0),
        ("Timeout = 2", 1.0),
        ('timeout="3"', 2.0),
        ("timeout=1", 0.5),  # under 2 s: half
        ("timeout=0", 0.0),
        ("timeout=5, max=0", 0.0),  # no further request allowed
        ("max=100", None),
        ("timeout=soon, max=x", None),
        ("", None),
    ],
)
def test_keep_alive_header_sets_the_idle_allowance(value: str, idle_s: float | None) -> None:
    assert keep_alive_idle_s(value) == idle_s


def test_a_keep_alive_header_that_allows_no_further_request_ends_keep_alive() -> None:
    head = _head(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=0\r\n\r\n")
    assert (head.keep_alive, head.idle_s) == (False, 0.0)
    head = _head(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\n\r\n")
    assert (head.keep_alive, head.idle_s) == (True, 4.0)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nName : spaced\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n",
    ],
)
def test_malformed_response_heads_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseHead.parse(raw)


def test_an_endless_head_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="longer than"):
        ResponseHead.parse(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 50_000)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_chunked_body_decodes_however_it_is_split(step: int) -> None:
    wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"
    decoder = body_decoder(_head(CHUNKED))
    assert _decode_all(decoder, wire, step) == b"hello 0123456789"
    assert decoder.reusable


def test_bytes_after_the_last_chunk_make_the_connection_unreusable() -> None:
    decoder = body_decoder(_head(CHUNKED))
    assert decoder.feed(b"2\r\nhi\r\n0\r\n\r\nHTTP/1.1") == [b"hi"]
    assert decoder.done
    assert not decoder.reusable


@pytest.mark.parametrize("wire", [b"zz\r\n", b"-1\r\n", b"0x5\r\nhello\r\n", b"9" * 9000])
def test_bad_chunk_framing_is_a_protocol_error(wire: bytes) -> None:
    decoder = body_decoder(_head(CHUNKED))
    with pytest.raises(ProtocolError):
        decoder.feed(wire)


def test_bad_framing_after_good_bytes_returns_them_first_then_fails() -> None:
    decoder = body_decoder(_head(CHUNKED))
    assert decoder.feed(b"2\r\nhello\r\n") == [b"he"]
    assert isinstance(decoder.error, ProtocolError)
    with pytest.raises(ProtocolError, match="longer than its size"):
        decoder.feed(b"")


def test_a_cut_chunked_body_is_incomplete() -> None:
    decoder = body_decoder(_head(CHUNKED))
    assert decoder.feed(b"5\r\nhel") == [b"hel"]
    with pytest.raises(IncompleteBodyError, match="last chunk"):
        decoder.end_of_stream()


def test_content_length_body_ends_at_its_length() -> None:
    decoder = body_decoder(_head(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"))
    assert _decode_all(decoder, b"0123456789", 3) == b"0123456789"
    assert decoder.reusable
    short = body_decoder(_head(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"))
    short.feed(b"0123")
    with pytest.raises(IncompleteBodyError, match="6 bytes short"):
        short.end_of_stream()


def test_bodies_without_framing_end_at_close_and_are_never_reused() -> None:
    decoder = body_decoder(_head(b"HTTP/1.1 200 OK\r\n\r\n"))
    assert decoder.feed(b"all of it") == [b"all of it"]
    assert not decoder.done
    assert decoder.end_of_stream() == []
    assert decoder.done
    assert not decoder.reusable


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_empty_bodies_are_done_at_once(raw: bytes) -> None:
    decoder = body_decoder(_head(raw))
    assert decoder.done
    assert decoder.reusable


@pytest.mark.parametrize(
    "field",
    [
        b"Content-Length: 1, 2",
        b"Content-Length: -1",
        b"Content-Length: 1e3",
        b"Transfer-Encoding: gzip",
    ],
)
def test_conflicting_or_unsupported_framing_is_a_protocol_error(field: bytes) -> None:
    with pytest.raises(ProtocolError):
        body_decoder(_head(b"HTTP/1.1 200 OK\r\n" + field + b"\r\n\r\n"))


@pytest.mark.parametrize(
    ("coding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_compressed_bodies_are_inflated(coding: str, compress: Callable[[bytes], bytes]) -> None:
    plain = b"data: " + b"x" * 5000 + b"\n\n"
    packed = compress(plain)
    framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(packed), packed)
    raw = CHUNKED[:-2] + f"Content-Encoding: {coding}\r\n\r\n".encode()
    assert _decode_all(body_decoder(_head(raw)), framed, 100) == plain


def test_receive_time_without_a_kernel_stamp_is_now_and_never_before_the_floor() -> None:
    assert receive_time_ns([], 0) > 0
    assert receive_time_ns([], 1 << 62) == 1 << 62
