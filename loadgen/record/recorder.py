"""From relayed calls to trace lines: analysis and writing, one call at a time, off the relay.

The proxy hands over each finished LLM call as an Exchange (the request body, the reply's
chunks with the times it read them) and goes back to relaying. One task takes the calls in
the order they ended and, for each: renders and tokenizes the prompt, hashes its blocks,
reads the reply's usage, places the call in a session and writes its line.

The relay comes first. Analysis works in slices of about 0.2 ms, and between slices it
waits while any request is on its way to its first reply byte (up to 20 ms at a time), so
that it adds nothing to a time to first token; streams already flowing only ever wait for
one slice. When calls queue up faster than that (more than a few waiting), the slices run
back to back: the queue, which holds each call's body, must not grow without bound.

The garbage collector's passes are placed here too. Left to its thresholds, a pass starts
wherever allocations cross one, as often on a request's way to its first byte as anywhere
(here a young pass about every other call, ~0.2 ms, and a middle one every ~20 calls,
~2 ms, on a busy 2-core machine: bench/LOG.md). While the recorder runs, the automatic
young threshold is raised to a backstop, and each recorded call ends with a collection,
taken when no request awaits its first byte, of the generation the automatic schedule
would reach next.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadgen.background import cancel_and_wait
from loadgen.record.blocks import BlockTable, PromptBlocks, next_turn, tokenize
from loadgen.record.prompts import render_prompt
from loadgen.record.replies import ReplyFacts, read_reply
from loadgen.record.sessions import SessionTracker
from loadgen.record.trace_file import TraceWriter
from loadgen.record.units import TokenScale
from loadgen.traces.model import TraceRequest

__all__ = ["DEFAULT_SESSION_HEADERS", "Exchange", "RecordStats", "Recorder"]

log = logging.getLogger(__name__)

# Affinity headers that name a session, looked for in this order (agentload's own runs send
# x-session-id and echo x-session-token; Codex-style clients send session_id).
DEFAULT_SESSION_HEADERS = ("x-session-id", "session_id", "session-id", "x-session-token")

_TRANSCRIPTS_KEPT = 256  # Responses transcripts kept for previous_response_id chains
_TRANSCRIPT_CHARS = 64 << 20
_YIELD_WAIT_S = 0.02  # longest pause of analysis for a request awaiting its first byte
_YIELD_BACKLOG = 8  # calls waiting for analysis beyond which it no longer pauses
# Allocations that start a young collection on their own while the recorder runs: calls
# recorded make ~300 each and are collected after each; this bounds traffic that is only
# passed through (no LLM calls), whose cycles still need collecting.
_GC_BACKSTOP = 20_000


@dataclass(slots=True)
class Exchange:
    """One LLM call as the proxy relayed it (times from time.perf_counter_ns)."""

    api: str  # chat, responses or completions
    body: bytes
    key: str | None  # the first session header's value, if any
    arrival_ns: int
    end_ns: int
    status: int
    stream: bool  # the reply was an event stream
    content_encoding: str
    chunks: list[bytes] = field(default_factory=list)
    times: list[int] = field(default_factory=list)  # when each chunk was read
    complete: bool = True  # relayed to its end (False: the client left or the upstream broke)


@dataclass(slots=True)
class RecordStats:
    """What the recorder did, for the closing line."""

    recorded: int = 0
    refused: int = 0  # the upstream answered with an error status
    unreachable: int = 0  # the upstream could not be reached (the client got a 502)
    unfinished: int = 0  # the client left, or the upstream broke the reply
    unreadable: int = 0  # a request body that is not JSON
    counted: int = 0  # recorded with stand-in token counts (no usage reported)

    def skipped(self) -> int:
        """Calls that are not in the trace."""
        return self.refused + self.unreachable + self.unfinished + self.unreadable


class Recorder:
    """Analyses relayed calls and writes them as trace lines, in the order they ended."""

    def __init__(
        self,
        writer: TraceWriter,
        *,
        block_size: int = 64,
        keep_text: bool = False,
    ) -> None:
        self.writer = writer
        self.keep_text = keep_text
        self.stats = RecordStats()
        self.blocks = BlockTable(block_size)
        self.sessions = SessionTracker(block_size)
        self.scale = TokenScale()
        self._t0_ns: int | None = None
        self._queue: asyncio.Queue[Exchange] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._transcripts: OrderedDict[str, str] = OrderedDict()
        self._transcript_chars = 0
        self._awaiting_first_byte = 0
        self._relay_quiet = asyncio.Event()
        self._relay_quiet.set()
        self._gc_threshold: tuple[int, int, int] | None = None

    def start(self) -> None:
        """Start taking calls (call from the event loop that relays them)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="record-writer")
        young, middle, old = self._gc_threshold = gc.get_threshold()
        if young:  # 0: the collector is off, and stays off
            gc.set_threshold(max(young, _GC_BACKSTOP), middle, old)

    def arrived(self, arrival_ns: int) -> None:
        """An LLM call arrived: the first one sets the trace's time zero."""
        if self._t0_ns is None:
            self._t0_ns = arrival_ns

    def relay_waiting(self) -> Callable[[], None]:
        """A request is on its way to its first reply byte: analysis holds back until the
        returned function is called (its first reply bytes went out, or it ended)."""
        self._awaiting_first_byte += 1
        self._relay_quiet.clear()
        done = False

        def flowing() -> None:
            nonlocal done
            if done:
                return
            done = True
            self._awaiting_first_byte -= 1
            if self._awaiting_first_byte == 0:
                self._relay_quiet.set()

        return flowing

    async def pause(self) -> None:
        """Between slices of analysis: a turn of the loop, and room for waiting requests."""
        await next_turn()
        if self._relay_quiet.is_set() or self._queue.qsize() >= _YIELD_BACKLOG:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._relay_quiet.wait(), _YIELD_WAIT_S)

    def submit(self, exchange: Exchange) -> None:
        """Queue a finished call for analysis and writing (returns at once)."""
        self._queue.put_nowait(exchange)

    async def drain(self) -> None:
        """Wait until every submitted call is written."""
        await self._queue.join()

    async def close(self) -> None:
        """Write what is queued, then stop and close the file."""
        if self._task is not None:
            await self.drain()
            await cancel_and_wait(self._task)
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
        self.writer.close()

    async def _run(self) -> None:
        while True:
            exchange = await self._queue.get()
            try:
                await self.record(exchange)
                await self.pause()
                self._collect()
            except Exception:  # never let one odd call stop the recording
                log.exception("agentload record: could not record a %s call", exchange.api)
            finally:
                self._queue.task_done()

    def _collect(self) -> None:
        """A collection of the generation the automatic schedule would reach next."""
        # A full pass every ~100 calls (CPython's own would skip some while the old
        # generation grows by under a quarter): the start-up objects are frozen out of it by
        # the command, so it walks the recorder's own state (0.2 ms after 200 calls here).
        threshold = self._gc_threshold
        if threshold is None or not threshold[0] or not gc.isenabled():
            return
        _young, middle, old = gc.get_count()
        gc.collect(2 if old >= threshold[2] else 1 if middle >= threshold[1] else 0)

    async def record(self, ex: Exchange) -> None:
        """Analyse one call and write its line (or count why it is not written)."""
        if not ex.complete:
            self.stats.unfinished += 1
            return
        if ex.status >= 400:
            self.stats.refused += 1
            return
        await self.pause()
        try:
            body = orjson.loads(ex.body)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, Mapping):
            self.stats.unreadable += 1
            return
        previous = _str_or_none(body.get("previous_response_id"))
        history = self._transcripts.get(previous) if previous is not None else None
        prompt = render_prompt(ex.api, body, history)
        await self.pause()
        pieces = await tokenize(prompt, self.pause)
        blocks = await self.blocks.blocks(pieces, self.pause)
        facts = await read_reply(
            ex.api, ex.chunks, stream=ex.stream, content_encoding=ex.content_encoding,
            pause=self.pause,
        )  # fmt: skip
        user = _str_or_none(body.get("user"))
        placement = self.sessions.place(
            key=f"header:{ex.key}" if ex.key is not None else user and f"user:{user}",
            previous_response_id=previous,
            hash_ids=blocks.hash_ids,
            pieces=pieces,
            arrival_ns=ex.arrival_ns,
            end_ns=ex.end_ns,
            response_id=facts.response_id,
        )
        if ex.api == "responses" and facts.response_id and body.get("store") is not False:
            self._keep_transcript(facts.response_id, prompt + facts.text + "\n")
        model = _str_or_none(body.get("model")) or ""
        request, extra = self._line(ex, model, _output_limit(body), blocks, facts, placement.gap_s)
        if self.keep_text:
            extra["text"] = {"prompt": prompt, "reply": facts.text}
        self.writer.write(placement.session_id, request, extra)
        self.stats.recorded += 1
        self.stats.counted += bool(extra.get("counted"))

    def _line(
        self,
        ex: Exchange,
        model: str,
        limit: int | None,
        blocks: PromptBlocks,
        facts: ReplyFacts,
        gap_s: float | None,
    ) -> tuple[TraceRequest, dict[str, Any]]:
        t0 = self._t0_ns if self._t0_ns is not None else ex.arrival_ns
        counted_out = facts.counted_output()
        # Usage teaches the server's units; counts without it are put into them (units.py).
        self.scale.learn(
            model, (facts.input_tokens, blocks.tokens), (facts.output_tokens, counted_out)
        )
        scale: dict[str, float] = {}
        prompt = self.scale.prompt(model, blocks.tokens)
        prompt_tokens = facts.input_tokens
        if prompt_tokens is None:
            prompt_tokens = prompt.tokens
            if prompt.ratio is not None:
                scale["in"] = prompt.ratio
        output_tokens = facts.output_tokens
        if output_tokens is None:
            output = self.scale.output(model, counted_out)
            # A ratio learned on other replies can overshoot what this one was allowed.
            output_tokens = min(output.tokens, limit) if limit else output.tokens
            if output.ratio is not None:
                scale["out"] = output.ratio
        ttft = None
        if ex.stream and facts.first_token_chunk is not None:
            ttft = round((ex.times[facts.first_token_chunk] - ex.arrival_ns) / 1e9, 6)
        request = TraceRequest(
            at_s=max(0, ex.arrival_ns - t0) / 1e9,
            input_tokens=max(1, prompt_tokens),
            output_tokens=max(1, output_tokens),
            hash_ids=blocks.hash_ids,
            gap_s=gap_s,
            cached_tokens=facts.cached_tokens,
            ttft_s=ttft,
            duration_s=round((ex.end_ns - ex.arrival_ns) / 1e9, 6),
        )
        extra: dict[str, Any] = {"api": ex.api}
        if prompt.ratio is not None:
            # A hash id covers block_size stand-in tokens: this many of the server's, which
            # replay makes each id (read_agentload), so it shares what the recording shared.
            extra["block_in"] = round(self.blocks.block_size * prompt.ratio, 2)
        if facts.input_tokens is None or facts.output_tokens is None:
            extra["counted"] = True
            if scale:
                extra["scale"] = scale  # the server / stand-in ratios the counts were scaled by
        return request, extra

    def _keep_transcript(self, response_id: str, transcript: str) -> None:
        self._transcripts[response_id] = transcript
        self._transcript_chars += len(transcript)
        while self._transcripts and (
            len(self._transcripts) > _TRANSCRIPTS_KEPT or self._transcript_chars > _TRANSCRIPT_CHARS
        ):
            _id, dropped = self._transcripts.popitem(last=False)
            self._transcript_chars -= len(dropped)


def _output_limit(body: Mapping[str, Any]) -> int | None:
    """The most output tokens the request allowed (any API's name for it), if it said."""
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
