"""A huge request body does not stall the simulator's other streams while it is analysed."""

from __future__ import annotations

import asyncio
import random
import sys
import textwrap
import time

import aiohttp
import pytest

from loadgen.protocol.tokens import count_tokens
from loadgen.sim import SimServer
from loadgen.sim import prompt as prompt_module
from loadgen.sim.prompt import analyse_long_prompt, analyse_prompt, render_chat
from loadgen.sim.requests import ChatMessage
from tests.conftest import StartSim

# 60 MB of one-character tokens: 30 million of them, which took the whole simulator's loop
# 3 s or more to tokenize in one go (every other stream stalled for that long); analysed a
# slice at a time, the longest stall left is decoding and rendering the body (about 0.2 s).
BODY_TOKENS = 30_000_000
GAP_BOUND_S = 1.0

_POST = textwrap.dedent(
    """
    import http.client, json, sys
    port, model, tokens = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "a " * tokens}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    print(reply.status, reply.read().decode()[:300])
    """
)


@pytest.mark.slow
async def test_other_streams_keep_getting_tokens_while_a_60_mb_body_is_analysed(
    start_sim: StartSim,
) -> None:
    sim: SimServer = await start_sim(max_body_bytes=128 * 1024 * 1024)
    model = sim.config.served_model_name
    gaps: list[float] = []
    posting = asyncio.Event()

    async def stream(http: aiohttp.ClientSession) -> None:
        body = {
            "model": model, "stream": True, "max_tokens": 100_000, "min_tokens": 100_000,
            "ignore_eos": True, "messages": [{"role": "user", "content": "hi"}],
        }  # fmt: skip
        async with http.post(f"{sim.base_url}/chat/completions", json=body) as resp:
            last = time.perf_counter()
            async for _chunk in resp.content.iter_any():
                now = time.perf_counter()
                if posting.is_set():
                    gaps.append(now - last)
                last = now

    async with aiohttp.ClientSession() as http:
        reader = asyncio.create_task(stream(http))
        await asyncio.sleep(0.3)  # the stream is flowing
        # The big body comes from another process, so that only the server's work on it
        # runs on this loop (sending 60 MB from here would stall it too).
        post = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _POST, str(sim.port), model, str(BODY_TOKENS),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        posting.set()
        out, _ = await asyncio.wait_for(post.communicate(), 120)
        posting.clear()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    status, _, message = out.decode().partition(" ")
    # The server did read and tokenize all of it: its refusal counts every token.
    assert status == "400", out
    template = count_tokens(render_chat([ChatMessage(role="user", content="")], None))
    assert f"your prompt contains {BODY_TOKENS + template} input tokens" in message
    assert len(gaps) > 10
    assert max(gaps) < GAP_BOUND_S, f"longest gap {max(gaps):.2f}s"


async def test_sliced_analysis_is_exactly_the_whole_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    alphabet = ["a", "b", "é", " ", "\n", "\t", "\u00a0", "xyz", "  ", "qqqqqqqqq"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        monkeypatch.setattr(prompt_module, "SLICE_CHARS", rng.randint(1, 40))
        monkeypatch.setattr(prompt_module, "_SLICE_TOKENS", rng.randint(1, 64))
        block_size = rng.choice([1, 2, 4, 16])
        whole = analyse_prompt(text, block_size)
        sliced = await analyse_long_prompt(text, block_size, 10**9)
        assert sliced == whole, text


async def test_past_the_window_tokens_are_counted_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prompt_module, "SLICE_CHARS", 1000)
    text = "ab " * 100_000
    info = await analyse_long_prompt(text, 16, max_tokens=5000)
    assert info.length == 100_000
    assert info.block_hashes == []
    assert info.tail == []
