"""Record, then replay, on llama-server: its tokenizer counts about twice agentload's
stand-in tokenizer, so the trace must be in its tokens throughout (calls without usage
scaled by what calls with usage showed) and the replay must size its text in them too."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from real_servers import LlamaServer, write_tiny_gguf

from loadgen.record import RecordProxy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


async def _record(base_url: str, model: str, trace: Path) -> None:
    """Two conversations of the openai SDK, streamed calls (no usage) between plain ones."""
    proxy = RecordProxy(base_url, trace)
    await proxy.start()
    try:
        async with AsyncOpenAI(base_url=proxy.base_url, api_key="k", max_retries=0) as client:

            async def converse(task: str, turns: int) -> None:
                messages: list[Any] = [
                    {"role": "system", "content": "You are a coding agent. " * 40},
                    {"role": "user", "content": task},
                ]
                for turn in range(turns):
                    if turn % 2 == 0:
                        stream = await client.chat.completions.create(
                            model=model, messages=messages, max_tokens=16, stream=True
                        )
                        text = "".join(
                            [c.choices[0].delta.content or "" async for c in stream if c.choices]
                        )
                    else:
                        reply = await client.chat.completions.create(
                            model=model, messages=messages, max_tokens=16
                        )
                        text = reply.choices[0].message.content or ""
                    messages += [
                        {"role": "assistant", "content": text},
                        {"role": "user", "content": "tool output: line 42 expected token " * 10},
                    ]

            await asyncio.gather(
                converse("Fix the parser bug please.", 5),
                converse("Refactor logging to structured logs.", 4),
            )
    finally:
        await proxy.stop()


def test_a_recording_replays_on_llama_server_in_its_own_tokens(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    trace = tmp_path / "trace.jsonl"
    with LlamaServer(model, ctx=4 * 8192, parallel=4) as llama:
        asyncio.run(_record(llama.base_url, llama.model, trace))
    with LlamaServer(model, ctx=4 * 8192, parallel=4) as llama:
        run = subprocess.run(
            [sys.executable, "-m", "loadgen", "replay", str(trace), "--target", llama.base_url,
             "--out", str(tmp_path / "run"), "--quiet"],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(x) for x in trace.read_text().splitlines()[1:]]
    steps = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == len(rows) == 9
    recorded: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        recorded.setdefault(row["session"], []).append(row)
    replayed: dict[str, list[dict[str, Any]]] = {}
    for step in sorted(steps, key=lambda s: s["step"]):
        replayed.setdefault(step["session_id"], []).append(step)
    assert sorted(map(len, recorded.values())) == sorted(map(len, replayed.values())) == [4, 5]
    server_block = statistics.median(row["block_in"] for row in rows if "block_in" in row)
    assert 110 < server_block < 150  # 64 stand-in tokens, about twice as many of llama's
    for session, calls in recorded.items():
        prompts = [row["in"] for row in calls]
        # One unit throughout: each prompt holds the one before it (a session only grows),
        # the streamed calls' included, which the stand-in would count at half.
        assert prompts == sorted(prompts), prompts
        # Streamed calls carry no usage: the first of each session came before any usage
        # was seen and keeps the stand-in count; later ones are scaled and say by what.
        assert calls[0].get("counted")
        assert "scale" not in calls[0]
        for row in calls[2::2]:
            assert row["counted"]
            assert 1.5 < row["scale"]["in"] < 3, row
        for i, (row, step) in enumerate(zip(calls, replayed[session], strict=True)):
            # llama-server's own counts replay within 2%; scaled ones within 4% (the ratio
            # is an average over other prompts); both are the target's tokens. The first
            # call's stand-in count is put into them on reading, by the ids' ratio.
            stand_in = row.get("counted") and "scale" not in row
            expected = row["in"] * (server_block / 64 if stand_in else 1)
            bound = 0.04 if row.get("counted") else 0.02
            assert abs(step["prompt_tokens"] - expected) <= bound * expected, (row, step)
            if i > 0:  # a later call of a session hits the cache, as it did when recorded
                assert step["cached_tokens"] > 0, (row, step)
            if row["cached"] is not None:
                # Each id is as many of the server's tokens as the recording's ids covered,
                # so the replay shares what the recording shared, to within two ids.
                assert abs(step["cached_tokens"] - row["cached"]) <= 2 * server_block, (row, step)
