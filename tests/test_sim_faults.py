"""Specification of injected faults: what a client sees, and that /metrics counts each one.

Every test compares the faults the client observed with
agentload_sim_faults_injected_total{fault=...} on the same server.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from loadgen.sim import SimServer

MODEL = "agentload-sim"
StartSim = Callable[..., Awaitable[SimServer]]  # the conftest fixtures' types
Scrape = Callable[..., Awaitable[float]]
TIMEOUT = aiohttp.ClientTimeout(total=30)
FAULTS = "agentload_sim_faults_injected_total"

READ_FILE = {
    "type": "function",
    "function": {
        "name": "read_file",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["path"],
        },
    },
}


@dataclass
class Outcome:
    """What a client saw of one streamed chat completion."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    content: str = ""
    ttft: float = -1.0
    tool_arguments: dict[int, str] = field(default_factory=dict)
    finish_reason: str | None = None
    done: bool = False  # data: [DONE] arrived
    payload_error: bool = False  # the connection dropped mid-body

    @property
    def cut(self) -> bool:
        """The stream ended early: no finish_reason and no [DONE]."""
        return self.status == 200 and not self.done and self.finish_reason is None

    @property
    def kind(self) -> str:
        if self.status != 200:
            return str(self.status)
        return "cut" if self.cut else "ok"


async def chat(
    http: aiohttp.ClientSession, server: SimServer, max_tokens: int = 20, **extra: Any
) -> Outcome:
    """Stream one chat completion and record everything that came back."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "please do the next step"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        **extra,
    }
    start = time.perf_counter()
    async with http.post(f"{server.base_url}/chat/completions", json=body, timeout=TIMEOUT) as r:
        out = Outcome(r.status, dict(r.headers))
        if r.status != 200:
            out.error = (await r.json())["error"]
            return out
        try:
            async for line in r.content:
                if line.strip() == b"data: [DONE]":
                    out.done = True
                elif line.startswith(b"data: "):
                    record(out, orjson.loads(line[6:]), time.perf_counter() - start)
        except aiohttp.ClientPayloadError:
            out.payload_error = True
    return out


def record(out: Outcome, chunk: dict[str, Any], elapsed: float) -> None:
    for choice in chunk["choices"]:
        delta = choice["delta"]
        if delta.get("content") or delta.get("tool_calls"):
            out.ttft = elapsed if out.ttft < 0 else out.ttft
        out.content += delta.get("content") or ""
        for call in delta.get("tool_calls") or ():
            index = call["index"]
            out.tool_arguments[index] = (
                out.tool_arguments.get(index, "") + call["function"]["arguments"]
            )
        out.finish_reason = choice["finish_reason"] or out.finish_reason


async def many(
    http: aiohttp.ClientSession, server: SimServer, count: int, **extra: Any
) -> list[Outcome]:
    async with asyncio.timeout(60):
        return await asyncio.gather(*(chat(http, server, **extra) for _ in range(count)))


def parses(arguments: str) -> bool:
    try:
        json.loads(arguments)
    except json.JSONDecodeError:
        return False
    return True


# -- each fault at rate 1.0 -------------------------------------------------------------------


async def test_http_5xx_answers_500_with_an_openai_error_body(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim(faults={"http_5xx": 1.0})

    outcomes = await many(http, server, 3)

    for out in outcomes:
        assert out.status == 500
        assert out.error is not None
        assert out.error["type"] == "InternalServerError"
        assert out.error["code"] == 500
        assert out.error["message"]
    assert await scrape(server, FAULTS, fault="http_5xx") == 3


async def test_rate_limit_answers_429_with_retry_after(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim(faults={"rate_limit": 1.0})

    outcomes = await many(http, server, 3)

    for out in outcomes:
        assert out.status == 429
        assert float(out.headers["Retry-After"]) > 0
        assert out.error is not None
        assert out.error["type"] == "RateLimitError"
    assert await scrape(server, FAULTS, fault="rate_limit") == 3


async def test_stream_cut_ends_the_stream_without_finish_reason_or_done(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim(faults={"stream_cut": 1.0})

    outcomes = await many(http, server, 5)

    for out in outcomes:
        assert out.status == 200
        assert out.finish_reason is None
        assert not out.done
        assert len(out.content.split()) < 20
    assert await scrape(server, FAULTS, fault="stream_cut") == 5
    assert await scrape(server, "vllm:request_success_total", finished_reason="abort") == 5
    assert await scrape(server, "vllm:num_requests_running") == 0


async def test_stream_cut_spares_non_streaming_requests(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim(faults={"stream_cut": 1.0})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    async with http.post(f"{server.base_url}/chat/completions", json=body, timeout=TIMEOUT) as r:
        reply = await r.json()

    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert await scrape(server, FAULTS, fault="stream_cut") == 0


async def test_malformed_tool_args_stream_arguments_that_are_not_json(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim(faults={"malformed_tool_args": 1.0})

    outcomes = await many(
        http, server, 5, max_tokens=500, tools=[READ_FILE], tool_choice="required"
    )

    for out in outcomes:
        assert out.finish_reason == "tool_calls"
        assert not parses(out.tool_arguments[0])
    assert await scrape(server, FAULTS, fault="malformed_tool_args") == 5


async def test_tool_args_parse_when_the_fault_is_off(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim()

    outcomes = await many(
        http, server, 5, max_tokens=500, tools=[READ_FILE], tool_choice="required"
    )

    assert all(parses(args) for out in outcomes for args in out.tool_arguments.values())
    assert await scrape(server, FAULTS, fault="malformed_tool_args") == 0


async def test_latency_spike_delays_the_first_token_by_the_spike(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    calm = await start_sim()
    spiky = await start_sim(faults={"latency_spike": 1.0, "latency_spike_ms": 300})

    baseline = statistics.median([(await chat(http, calm)).ttft for _ in range(3)])
    spiked = [(await chat(http, spiky)).ttft for _ in range(3)]

    assert min(spiked) >= 0.3
    assert baseline <= 0.3 / 5
    assert await scrape(spiky, FAULTS, fault="latency_spike") == 3
    assert await scrape(calm, FAULTS, fault="latency_spike") == 0


async def test_store_evict_makes_continuing_a_stored_response_404(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim(faults={"store_evict": 1.0})
    url = f"{server.base_url}/responses"
    first = {"model": MODEL, "input": "start a task", "store": True, "max_output_tokens": 5}
    async with http.post(url, json=first, timeout=TIMEOUT) as r:
        assert r.status == 200
        response_id = (await r.json())["id"]

    follow = {**first, "input": "continue", "previous_response_id": response_id}
    async with http.post(url, json=follow, timeout=TIMEOUT) as r:
        status, error = r.status, (await r.json())["error"]
    async with http.get(f"{url}/{response_id}", timeout=TIMEOUT) as r:
        fetched = r.status

    assert status == 404
    assert "not found" in error["message"]
    assert response_id in error["message"]
    assert error["param"] == "previous_response_id"
    assert fetched == 404  # evicted for good, not just for that one request
    assert await scrape(server, FAULTS, fault="store_evict") == 1


async def test_store_evict_at_zero_keeps_the_chain_intact(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim()
    url = f"{server.base_url}/responses"
    first = {"model": MODEL, "input": "start a task", "store": True, "max_output_tokens": 5}
    async with http.post(url, json=first, timeout=TIMEOUT) as r:
        response_id = (await r.json())["id"]

    follow = {**first, "input": "continue", "previous_response_id": response_id}
    async with http.post(url, json=follow, timeout=TIMEOUT) as r:
        assert r.status == 200
    assert await scrape(server, FAULTS, fault="store_evict") == 0


# -- intermediate rates: the client's count is the server's count ----------------------------


async def test_stream_cut_at_intermediate_rate_is_counted_exactly(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    server = await start_sim(faults={"stream_cut": 0.3})

    outcomes = await many(http, server, 50)

    cut = sum(out.cut for out in outcomes)
    assert 3 <= cut <= 30  # 0.3 x 50 = 15 expected; the bounds only rule out "never"/"always"
    assert all(out.kind in ("ok", "cut") for out in outcomes)
    assert await scrape(server, FAULTS, fault="stream_cut") == cut


async def test_mixed_fault_rates_are_each_counted_exactly(
    start_sim: StartSim, http: aiohttp.ClientSession, scrape: Scrape
) -> None:
    rates = {"http_5xx": 0.15, "rate_limit": 0.15, "stream_cut": 0.2}
    server = await start_sim(faults=rates)

    seen = Counter(out.kind for out in await many(http, server, 60))

    assert seen["500"] == await scrape(server, FAULTS, fault="http_5xx")
    assert seen["429"] == await scrape(server, FAULTS, fault="rate_limit")
    assert seen["cut"] == await scrape(server, FAULTS, fault="stream_cut")
    assert seen["ok"] + seen["500"] + seen["429"] + seen["cut"] == 60
    assert seen["ok"] > 0
