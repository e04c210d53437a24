"""Record, then replay: the openai SDK drives tool-calling conversations through the recording
proxy in front of the simulator, and `agentload replay` of the trace against a fresh
simulator makes as many calls, with the same prompt lengths and the same cached pattern."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from loadgen.record import RecordProxy
from tests.cli_runs import ROOT
from tests.conftest import StartSim
from tests.test_record_proxy import KEY, SIM, converse


@pytest.mark.slow
async def test_a_recorded_conversation_replays_with_its_lengths_and_cache_pattern(
    start_sim: StartSim, tmp_path: Path
) -> None:
    recorded_on = await start_sim(**SIM)
    proxy = RecordProxy(recorded_on.base_url, tmp_path / "trace.jsonl")
    await proxy.start()
    try:
        async with AsyncOpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0) as client:
            await asyncio.gather(
                converse(client, ["stream", "plain", "stream", "plain", "stream", "plain"]),
                converse(
                    client, ["plain", "stream+usage", "stream", "plain"],
                    task="Refactor the logging module to use structured logs everywhere.",
                ),
            )  # fmt: skip
    finally:
        await proxy.stop()
    replayed_on = await start_sim(**SIM)
    run = tmp_path / "run"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadgen", "replay", str(tmp_path / "trace.jsonl"),
        "--target", replayed_on.base_url, "--out", str(run), "--quiet",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, (out + err).decode()

    trace = [json.loads(x) for x in (tmp_path / "trace.jsonl").read_text().splitlines()[1:]]
    steps = [json.loads(x) for x in (run / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == len(trace) == 10
    recorded: dict[str, list[dict[str, Any]]] = {}
    for row in trace:
        recorded.setdefault(row["session"], []).append(row)
    replayed: dict[str, list[dict[str, Any]]] = {}
    for step in sorted(steps, key=lambda s: s["step"]):
        replayed.setdefault(step["session_id"], []).append(step)
    assert sorted(len(v) for v in recorded.values()) == [4, 6]
    assert sorted(len(v) for v in replayed.values()) == [4, 6]
    for rows in recorded.values():
        # The replayed session is the one with the same prompt lengths in the same order.
        match = next(s for s in replayed.values() if len(s) == len(rows))
        for i, (row, step) in enumerate(zip(rows, match, strict=True)):
            assert abs(step["prompt_tokens"] - row["in"]) <= 0.02 * row["in"]
            assert step["completion_tokens"] == row["out"]
            # A session's first call shares only the system prompt, with the other session:
            # whether that was cached depends on which first call the server took first.
            if row["cached"] is not None and i > 0:
                # Replayed prompts share text a 64-token block at a time, the recorded ones
                # shared it to the token (the simulator also caches the reply it generated).
                assert (step["cached_tokens"] > 0) == (row["cached"] > 0)
                assert row["cached"] - 2 * 64 <= step["cached_tokens"] <= row["cached"]
