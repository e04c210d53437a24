"""The analytical model's request overhead (perf.request_overhead_ms): each request waits that
long before the engine admits it, so TTFT grows by it and ITL does not, and requests wait
side by side, not one after another. Observed as a client sees it, over streaming HTTP."""

from __future__ import annotations

import asyncio
import statistics

import aiohttp
import pytest

from loadgen.sim import SimServer
from tests.conftest import StartSim
from tests.test_sim_engine import Streamed, stream_chat

STEP_MS = 20.0
OVERHEAD_MS = 150.0
TOKENS = 12


def analytical(overhead_ms: float) -> dict[str, object]:
    perf: dict[str, object] = {"kind": "analytical", "decode_step_ms": STEP_MS}
    if overhead_ms:
        perf["request_overhead_ms"] = overhead_ms
    return {"perf": perf, "max_num_seqs": 8}


def itl(reply: Streamed) -> float:
    """The mean gap between a reply's tokens (seconds)."""
    times = reply.token_times
    return (times[-1] - times[0]) / (len(times) - 1)


async def lone_requests(
    http: aiohttp.ClientSession, server: SimServer, count: int = 3
) -> list[Streamed]:
    # One request at a time: a first one opens the connection, so TCP setup is not timed.
    await stream_chat(http, server, "warm", 1)
    return [await stream_chat(http, server, f"request {i} please", TOKENS) for i in range(count)]


async def test_request_overhead_adds_to_ttft_and_not_to_itl(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    plain = await start_sim(**analytical(0))
    slow = await start_sim(**analytical(OVERHEAD_MS))
    async with asyncio.timeout(60):
        before = await lone_requests(http, plain)
        after = await lone_requests(http, slow)
    assert all(r.tokens == TOKENS for r in before + after)
    added_ms = 1000 * (
        statistics.median(r.ttft for r in after) - statistics.median(r.ttft for r in before)
    )
    # 150 ms added; the margins are several times this machine's jitter (a few ms).
    assert 0.8 * OVERHEAD_MS < added_ms < 1.4 * OVERHEAD_MS, (before, after)
    itl_before = statistics.median(itl(r) for r in before) * 1000
    itl_after = statistics.median(itl(r) for r in after) * 1000
    assert itl_after == pytest.approx(STEP_MS, abs=0.25 * STEP_MS), after
    assert abs(itl_after - itl_before) < 0.25 * STEP_MS, (itl_before, itl_after)


async def test_requests_wait_their_overhead_side_by_side(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(**analytical(OVERHEAD_MS))
    async with asyncio.timeout(60):
        await asyncio.gather(*(stream_chat(http, server, "warm", 1) for _ in range(4)))
        replies = await asyncio.gather(
            *(stream_chat(http, server, f"request {i} please", TOKENS) for i in range(4))
        )
    # Waited one after another, the last would see 4 x 150 ms; side by side, all see ~one.
    slowest_ms = max(r.ttft for r in replies) * 1000
    assert OVERHEAD_MS < slowest_ms < 2 * OVERHEAD_MS, [r.ttft for r in replies]
