"""What the recorder works out from a call, away from any network: the prompt text it renders
(the simulator's own template, so its counts are the simulator's), the sliced tokenizer,
the chained block ids, the session placement rules and replies it reads after the fact."""

from __future__ import annotations

import gc
import gzip
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadgen.protocol.tokens import token_pieces, words_for_tokens
from loadgen.record.blocks import BlockTable, tokenize
from loadgen.record.prompts import render_prompt
from loadgen.record.recorder import Exchange, Recorder
from loadgen.record.replies import read_reply
from loadgen.record.sessions import SessionTracker
from loadgen.record.trace_file import TraceWriter
from loadgen.sim.prompt import render_chat, render_responses_input
from loadgen.sim.requests import ChatRequest, ResponsesRequest

CHAT_BODIES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "look at"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
                {"type": "text", "text": "this"},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "grep", "arguments": "{\"q\": \"x  y\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "ls", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "found\n  twice"},
            {"role": "assistant", "content": "done", "name": None},
        ],
        "tools": [
            {"type": "function", "function": {
                "name": "grep", "description": None, "strict": None, "extra": [1, None],
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                               "default": None},
            }},
            {"type": "function", "function": {"parameters": {}, "name": "ls"}},
        ],
        "temperature": 0,
    },
]  # fmt: skip


@pytest.mark.parametrize("body", CHAT_BODIES)
def test_chat_prompts_render_as_the_simulator_renders_them(body: dict[str, Any]) -> None:
    request = ChatRequest.model_validate({"model": "m", **body})
    assert render_prompt("chat", body) == render_chat(request.messages, request.tools)


def test_responses_prompts_render_as_the_simulator_renders_them() -> None:
    body: dict[str, Any] = {
        "instructions": "you are terse",
        "tools": [{"type": "function", "name": "f", "parameters": {"a": None}, "strict": True}],
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
            {"type": "function_call", "call_id": "x", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "x", "output": "42"},
            {"type": "reasoning", "summary": []},
        ],
    }
    request = ResponsesRequest.model_validate({"model": "m", **body})
    tools = [t.model_dump(exclude_none=True) for t in request.tools or ()]
    for history in (None, "<s>\n<|user|>\nbefore\n<|assistant|>\nsaid\n"):
        expected = render_responses_input(request.input, request.instructions, tools, history)
        assert render_prompt("responses", body, history) == expected
    assert render_prompt("responses", {"input": "plain"}) == render_responses_input(
        "plain", None, None, None
    )


async def test_sliced_tokenizing_equals_tokenizing_at_once() -> None:
    rng = random.Random(7)
    words = ["a", "bb", "ccccc", "dddddddddd", "\n", "\t\t", "  ", "é世界"]
    text = "".join(rng.choice(words) + rng.choice([" ", "", "\n"]) for _ in range(60_000))
    # Runs of non-space longer than a slice, too: a slice ends only at whitespace.
    text = text[:50_000] + "x" * 70_001 + text[50_000:] + " " + "y" * 40_003
    assert len(text) > 1 << 18
    assert await tokenize(text) == token_pieces(text)


async def test_equal_prefixes_get_equal_ids_and_ids_stay_small() -> None:
    table = BlockTable(8)
    base = words_for_tokens(40)
    first = await table.blocks(token_pieces(base))
    longer = await table.blocks(token_pieces(base + " " + words_for_tokens(30, offset=3)))
    other = await table.blocks(token_pieces("different " + base))
    assert first.tokens == 40
    assert first.hash_ids == (1, 2, 3, 4, 5)
    assert longer.hash_ids[:5] == first.hash_ids
    assert len(longer.hash_ids) == 70 // 8
    assert not set(other.hash_ids) & set(first.hash_ids)  # chained: no block is shared after
    assert len(table) == max(longer.hash_ids + other.hash_ids)


async def _place(
    tracker: SessionTracker, table: BlockTable, text: str, at: int, key: str | None = None
) -> str:
    pieces = token_pieces(text)
    blocks = await table.blocks(pieces)
    return tracker.place(
        key=key, previous_response_id=None, hash_ids=blocks.hash_ids, pieces=pieces,
        arrival_ns=at * 1_000_000_000, end_ns=at * 1_000_000_000 + 500_000_000,
    ).session_id  # fmt: skip


async def test_prefix_chains_and_keys_place_calls() -> None:
    table, tracker = BlockTable(4), SessionTracker(4)
    system = words_for_tokens(30)
    a1 = f"{system} task alpha"
    b1 = f"{system} task beta"
    assert await _place(tracker, table, a1, 0) == "s1"
    assert await _place(tracker, table, b1, 1) == "s2"  # shares blocks, extends no prompt
    assert await _place(tracker, table, f"{a1} reply one more", 2) == "s1"
    assert await _place(tracker, table, f"{b1} reply", 3) == "s2"
    # A compaction rewrites the history: without a key that is a new chain.
    assert await _place(tracker, table, f"{system} summary of alpha", 4) == "s3"
    # A key the server hands out after the first call: the chain takes it.
    assert await _place(tracker, table, f"{a1} reply one more and on", 5, key="tok") == "s1"
    assert await _place(tracker, table, "anything else entirely now", 6, key="tok") == "s1"
    # Another key never joins a keyed chain, even with the same prompt.
    assert await _place(tracker, table, f"{b1} reply", 7, key="k2") == "s2"
    assert await _place(tracker, table, f"{b1} reply", 8, key="k3") == "s4"
    # Shorter than a block: nothing to chain by.
    assert await _place(tracker, table, "hi", 9) == "s5"
    assert await _place(tracker, table, "hi there", 10) == "s6"


async def test_gaps_are_from_the_previous_end_and_never_negative() -> None:
    tracker = SessionTracker(4)
    common = {"previous_response_id": None, "hash_ids": (), "pieces": []}
    first = tracker.place(key="k", arrival_ns=0, end_ns=2_000_000_000, **common)
    later = tracker.place(key="k", arrival_ns=5_000_000_000, end_ns=6_000_000_000, **common)
    overlap = tracker.place(key="k", arrival_ns=5_500_000_000, end_ns=7_000_000_000, **common)
    assert first.gap_s is None
    assert later.gap_s == 3.0
    assert overlap.gap_s == 0.0


def _sse(*events: Any) -> list[bytes]:
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


async def test_replies_are_read_streamed_or_whole_and_gzipped() -> None:
    chunks = _sse(
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "c", "function": {"name": "grep", "arguments": ""}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4,
                                  "prompt_tokens_details": {"cached_tokens": 8}}},
    )  # fmt: skip
    # Split anywhere, with CRLF line ends: the same facts.
    raw = b"".join(chunks).replace(b"\n", b"\r\n")
    cut = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    # The first token (the tool call's name) is in the second event: the chunk ending it.
    first_token_ends = len(b"".join(chunks[:2]).replace(b"\n", b"\r\n"))
    for pieces, first in ((chunks, 1), (cut, (first_token_ends - 1) // 7)):
        facts = await read_reply("chat", pieces, stream=True)
        assert facts.text == "<|tool_call|>grep {}\n"
        assert (facts.input_tokens, facts.output_tokens, facts.cached_tokens) == (9, 4, 8)
        assert facts.first_token_chunk == first
    whole = {
        "choices": [{"message": {"content": "hello there", "tool_calls": None}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    body = gzip.compress(orjson.dumps(whole))
    facts = await read_reply("chat", [body[:5], body[5:]], stream=False, content_encoding="gzip")
    assert facts.text == "hello there"
    assert facts.output_tokens == 2
    assert facts.cached_tokens is None
    unknown = await read_reply("chat", [b"..."], stream=False, content_encoding="br")
    assert not unknown.readable


async def test_the_recorder_collects_garbage_after_each_call_not_mid_relay(tmp_path: Path) -> None:
    """While it runs, the automatic young threshold is only a backstop; each recorded call
    ends with a collection; closing puts the thresholds back."""
    before = gc.get_threshold()
    writer = TraceWriter(tmp_path / "trace.jsonl", 64, source="test")
    writer.begin()
    recorder = Recorder(writer)
    recorder.start()
    try:
        assert gc.get_threshold()[0] >= 20_000
        collections = sum(generation["collections"] for generation in gc.get_stats())
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        recorder.submit(
            Exchange(
                api="chat", body=orjson.dumps(body), key=None, arrival_ns=0, end_ns=1,
                status=200, stream=False, content_encoding="", chunks=[orjson.dumps(reply)],
                times=[1],
            )
        )  # fmt: skip
        await recorder.drain()
        assert recorder.stats.recorded == 1
        assert sum(generation["collections"] for generation in gc.get_stats()) > collections
    finally:
        await recorder.close()
    assert gc.get_threshold() == before


def _exchange(body: dict[str, Any], chunks: list[bytes], *, stream: bool) -> Exchange:
    return Exchange(
        api="chat", body=orjson.dumps(body), key="k", arrival_ns=0, end_ns=1, status=200,
        stream=stream, content_encoding="", chunks=chunks, times=[1] * len(chunks),
    )  # fmt: skip


async def test_counts_without_usage_are_scaled_to_the_servers_tokens_once_usage_taught_them(
    tmp_path: Path,
) -> None:
    """A server whose tokenizer counts twice the stand-in's prompt tokens and 1.5 times its
    output: calls without usage before any usage keep the stand-in counts, later ones are
    scaled by what usage showed (output never past the request's max_tokens), per model."""
    writer = TraceWriter(tmp_path / "trace.jsonl", 64, source="test")
    writer.begin()
    recorder = Recorder(writer)
    said = "the code runs fast now ok"  # 6 stand-in tokens

    def body(turns: int, model: str = "m", max_tokens: int = 100) -> dict[str, Any]:
        words = words_for_tokens(40 * turns)
        return {"model": model, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": words}]}  # fmt: skip

    def standin(b: dict[str, Any]) -> int:
        return len(token_pieces(render_prompt("chat", b)))

    streamed = _sse({"choices": [{"delta": {"content": said}}]})
    first, taught, later, capped, other = (
        body(1),
        body(2),
        body(3),
        body(4, max_tokens=7),
        body(3, "n"),
    )
    usage = {"prompt_tokens": 2 * standin(taught), "completion_tokens": 9}
    reply = {"choices": [{"message": {"content": said}}], "usage": usage}
    await recorder.record(_exchange(first, streamed, stream=True))
    await recorder.record(_exchange(taught, [orjson.dumps(reply)], stream=False))
    await recorder.record(_exchange(later, streamed, stream=True))
    await recorder.record(_exchange(capped, streamed, stream=True))
    await recorder.record(_exchange(other, streamed, stream=True))
    writer.close()
    rows = [orjson.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()[1:]]
    assert [(r["in"], r["out"], r.get("counted"), r.get("scale")) for r in rows] == [
        (standin(first), 6, True, None),
        (2 * standin(taught), 9, None, None),
        (2 * standin(later), 9, True, {"in": 2.0, "out": 1.5}),
        (2 * standin(capped), 7, True, {"in": 2.0, "out": 1.5}),
        (standin(other), 6, True, None),  # another model: its own tokenizer, not yet seen
    ]
    # The ids stay the stand-in tokenizer's blocks: the sharing, not the length.
    assert len(rows[2]["hash_ids"]) == standin(later) // 64
