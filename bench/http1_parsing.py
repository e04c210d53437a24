"""CPU per streamed token of the http:// path's HTTP/1.1 parsing: hand-written against httptools.

Builds one streamed chat reply as a server sends it (a uvicorn-style head, then --events
`data: {...}` chat.completion.chunk events of about 150 bytes, one chunk each, then
`data: [DONE]` and the last chunk), cuts it into the reads a client gets (the head alone,
then the body), gives every read its own stamp, and parses it --loops times per sample with
each parser:

  hand-written  what the kernel-stamped transport runs (kernel_stream): ResponseHead.parse
                over the first reads, body_decoder(head), then per read decoder.feed(data)
  httptools     httptools.HttpResponseParser.feed_data(data) per read; on_header fills the
                same CIMultiDict head, on_body collects the read's body bytes

at two depths: "framing" ends at the body bytes of each read; "+ SSE" also feeds them to
loadgen's SSEParser and makes each event an SSEEvent with the stamp of the read that
completed it, as KernelExchange.events() does. Both must yield the same stamped events
(checked before timing). Reads, per --modes:

  event   one chunk (one event) per read: a loop that keeps up with the server
  1-4k    random 1-4 KiB reads (seeded), cutting events and chunk framing anywhere
  64k     64 KiB reads: a loop a long way behind

CPU is time.process_time_ns() per sample, pinned to core 0, garbage collection off while
timing, the parsers taking turns; each figure is the median over --repeats samples, per
event. httptools is not a dependency: without it only the hand-written parser is timed.

    python bench/http1_parsing.py                     # event and 1-4k reads, ~10 s
    pip install httptools && python bench/http1_parsing.py --modes event,1-4k,64k
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from collections.abc import Callable
from itertools import chain
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from loadgen.transport.http1_body import body_decoder
from loadgen.transport.http1_head import ResponseHead, keep_alive_idle_s
from loadgen.transport.sse import SSEEvent, SSEParser

try:
    import httptools
except ImportError:  # optional: the transport does not depend on it
    httptools = None

Reads = list[tuple[int, bytes]]
Parse = Callable[[Reads, bool], list[Any]]
MODES = ("event", "1-4k", "64k")

HEAD = (
    b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Dec 2026 10:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\nx-request-id: 5c2a7e0f9d3b4e61\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def reply(events: int) -> tuple[list[bytes], bytes]:
    """The chunked body, one frame per event (as uvicorn writes them), and its decoded bytes."""
    payloads = [
        b'data: {"id":"chatcmpl-9b1f","object":"chat.completion.chunk","created":1796546400,'
        b'"model":"sim","choices":[{"index":0,"delta":{"content":" t%04d"}}]}\n\n' % i
        for i in range(events)
    ]
    payloads.append(b"data: [DONE]\n\n")
    return [*map(_frame, payloads), b"0\r\n\r\n"], b"".join(payloads)


def cut(frames: list[bytes], mode: str, rng: random.Random) -> Reads:
    """The reply's reads, each with its own stamp: the head alone first, then the body."""
    if mode == "event":
        pieces = frames
    else:
        body = b"".join(frames)
        pieces, at = [], 0
        while at < len(body):
            size = 64 * 1024 if mode == "64k" else rng.randint(1024, 4096)
            pieces.append(body[at : at + size])
            at += size
    return [(1_000 * (i + 1), piece) for i, piece in enumerate([HEAD, *pieces])]


def handwritten(reads: Reads, sse: bool) -> list[Any]:
    """kernel_stream's _read_head and KernelExchange._next / events(), without the awaits."""
    it = iter(reads)
    buf, t_ns = b"", 0
    while True:
        parsed = ResponseHead.parse(buf) if buf else None
        if parsed is not None:
            head, body_at = parsed
            buf = buf[body_at:]
            if 100 <= head.status < 200 and head.status != 101:
                continue
            break
        t_ns, data = next(it)
        buf = buf + data if buf else data
    decoder = body_decoder(head)
    out: list[Any] = []
    feed = SSEParser().feed
    rest = [(t_ns, buf)] if buf else []  # body bytes that came in the head's read
    for stamp, data in chain(rest, it):
        if decoder.done:
            break
        pieces = decoder.feed(data)
        if not sse:
            out += pieces
            continue
        for piece in pieces:
            for event, payload in feed(piece):
                out.append(SSEEvent(stamp, event, payload))
    return out


class _Reply:
    """httptools' callbacks: the head's fields as the transport keeps them, and body bytes."""

    __slots__ = ("body", "complete", "head_done", "headers", "keep_alive", "parser", "reason")

    def __init__(self) -> None:
        self.parser: Any = None
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.reason = ""
        self.head_done = self.complete = self.keep_alive = False
        self.body: list[bytes] = []

    def on_status(self, reason: bytes) -> None:
        self.reason += reason.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.add(
            name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")
        )

    def on_headers_complete(self) -> None:
        self.head_done = True
        # Here, not later: once the message is complete the parser has reset and says False.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def with_httptools(reads: Reads, sse: bool) -> list[Any]:
    """The same reads through httptools.HttpResponseParser: same head, same stamped events."""
    assert httptools is not None
    reply = _Reply()
    parser = reply.parser = httptools.HttpResponseParser(reply)
    head: ResponseHead | None = None
    body = reply.body
    out: list[Any] = []
    feed = SSEParser().feed
    for t_ns, data in reads:
        parser.feed_data(data)
        if head is None:
            if not reply.head_done:
                continue
            keep_alive, idle_s = reply.keep_alive, None
            if keep_alive and (advertised := reply.headers.get("Keep-Alive")) is not None:
                idle_s = keep_alive_idle_s(advertised)
                keep_alive = idle_s != 0
            headers = CIMultiDictProxy(reply.headers)
            head = ResponseHead(parser.get_status_code(), reply.reason, headers, keep_alive, idle_s)
        if body:
            if not sse:
                out += body
            else:
                for piece in body:
                    for event, payload in feed(piece):
                        out.append(SSEEvent(t_ns, event, payload))
            body.clear()
        if reply.complete:
            break
    return out


def cpu_us_per_event(parse: Parse, reads: Reads, sse: bool, loops: int, events: int) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time_ns()
        for _ in range(loops):
            parse(reads, sse)
        spent = time.process_time_ns() - t0
    finally:
        gc.enable()
    return spent / 1_000 / loops / events


def check(parsers: dict[str, Parse], reads: Reads, payload: bytes, events: int) -> None:
    """Every parser yields the transport's events, with the same stamps, and the same body."""
    expected = handwritten(reads, True)
    assert len(expected) == events + 1  # the tokens, then [DONE]
    for name, parse in parsers.items():
        assert parse(reads, True) == expected, f"{name}: other events or stamps"
        assert b"".join(parse(reads, False)) == payload, f"{name}: another body"


def medians(
    parsers: dict[str, Parse], reads: Reads, sse: bool, args: argparse.Namespace
) -> dict[str, float]:
    """Each parser's median CPU µs per event; the parsers take turns, in alternating order."""
    samples: dict[str, list[float]] = {name: [] for name in parsers}
    for i in range(args.repeats):
        order = list(parsers.items())
        if i % 2:
            order.reverse()
        for name, parse in order:
            samples[name].append(cpu_us_per_event(parse, reads, sse, args.loops, args.events))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=2000, help="token events per reply (2000)")
    ap.add_argument("--loops", type=int, default=20, help="replies parsed per sample (20)")
    ap.add_argument("--repeats", type=int, default=15, help="samples per figure (15)")
    ap.add_argument("--modes", default="event,1-4k", help=f"read sizes, of {','.join(MODES)}")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        ap.error(f"unknown --modes {sorted(unknown)}")
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})  # as the other scripts pin the code under test
    parsers: dict[str, Parse] = {"hand-written": handwritten}
    if httptools is None:
        print("httptools is not installed: hand-written only (pip install httptools for both)")
    else:
        parsers["httptools"] = with_httptools
        print(f"httptools {httptools.__version__}")
    frames, payload = reply(args.events)
    print(
        f"{args.events} events of {len(payload) // (args.events + 1)} bytes, one chunk each; "
        f"CPU µs per event, median of {args.repeats} samples x {args.loops} replies"
    )
    rng = random.Random(6)
    for mode in modes:
        reads = cut(frames, mode, rng)
        check(parsers, reads, payload, args.events)
        for sse in (False, True):
            cost = medians(parsers, reads, sse, args)
            depth = "+ SSE  " if sse else "framing"
            line = f"{mode:>5} reads ({len(reads) - 1:>4} body reads) {depth}"
            line += "".join(f"  {name} {us:6.3f} µs" for name, us in cost.items())
            if len(cost) == 2:
                line += (
                    f"  httptools / hand-written {cost['httptools'] / cost['hand-written']:.2f}x"
                )
            print(line)


if __name__ == "__main__":
    main()
