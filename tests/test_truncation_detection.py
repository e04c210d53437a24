"""context_truncated sees the trims real gateways make: a sliding window that drops the oldest
exchange as the history grows, even when the drop is smaller than what the step appended.

A test-only gateway sits between the agents and a real server (the simulator, and
llama-server where it is installed) and drops, now and then, the oldest user-to-user
exchange still forwarded, but only when that exchange is smaller than what the session
appended since its previous request: the case a comparison with "previous prompt + previous
reply" alone cannot see. Every drop is recorded, so the test counts how many were caught.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from real_servers import LlamaServer, installed, write_tiny_gguf

from loadgen.agents import CodingAgent
from loadgen.observe import RunStats
from loadgen.profile.schema import Profile
from loadgen.protocol import count_tokens
from loadgen.runtime.engine import StatsSink
from loadgen.runtime.session import SessionRunner
from loadgen.runtime.sinks import FanOut, MemorySink
from loadgen.sim import SimServer
from loadgen.transport import TargetConfig, Transport

# Sessions whose steps append more (a reply and a large tool result) than the oldest
# exchange holds (a short user turn and a short reply).
PARAMS: dict[str, Any] = {
    "system_prompt_tokens": 300,
    "turns": 3,
    "steps_per_turn": 4,
    "user_tokens": 80,
    "output_tokens": 48,
    "tool_result_tokens": 240,
    "tool_latency_s": 1,
    "think_time_s": 0,
}
SESSIONS = 8


def _tokens(messages: list[dict[str, Any]]) -> int:
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)


@dataclass
class SlidingWindow:
    """Per session: how many leading messages (after the system one) it cuts, and a log of
    whether each request it forwarded had a new exchange dropped."""

    enabled: bool = True
    cut: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    previous: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))

    def rewrite(self, session: str, body: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = body["messages"]
        cut = self.cut[session]
        appended = messages[self.previous.get(session, len(messages)) :]
        self.previous[session] = len(messages)
        start = 1 + cut
        nxt = next(
            (i for i in range(start + 1, len(messages)) if messages[i]["role"] == "user"), None
        )
        drop = (
            self.enabled
            and nxt is not None
            and nxt < len(messages) - 2  # keep the newest exchange whole
            and 0 < _tokens(messages[start:nxt]) < _tokens(appended)
        )
        if drop:
            assert nxt is not None
            self.cut[session] = cut = nxt - 1
        self.dropped[session].append(drop)
        return {**body, "messages": [messages[0], *messages[1 + cut :]]}


@contextlib.asynccontextmanager
async def gateway(upstream: str, window: SlidingWindow) -> AsyncIterator[str]:
    """Forward POST /v1/* to `upstream` with the sliding window applied; stream replies back."""
    # A fresh connection per request: llama-server closes its own after each streamed reply,
    # and this gateway is not what is under test.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:

        async def forward(request: web.Request) -> web.StreamResponse:
            body = orjson.loads(await request.read())
            body = window.rewrite(request.headers.get("x-session-id", ""), body)
            url = f"{upstream}/{request.match_info['tail']}"
            headers = {"Content-Type": "application/json"}
            async with client.post(url, data=orjson.dumps(body), headers=headers) as up:
                resp = web.StreamResponse(
                    status=up.status,
                    headers={"Content-Type": up.headers.get("Content-Type", "application/json")},
                )
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp

        app = web.Application()
        app.router.add_post("/v1/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        finally:
            await runner.cleanup()


@dataclass
class Caught:
    drops: int
    caught: int
    false_alarms: int
    steps: int


async def run_through(upstream: str, model: str, window: SlidingWindow) -> Caught:
    """SESSIONS whole coding sessions through the sliding-window gateway."""
    profile = Profile.model_validate(
        {
            "agents": [{"kind": "coding"}],
            "arrival": {"mode": "closed", "agents": SESSIONS},
            "time_scale": 0.001,
            "force_output_length": "always",
        }
    )
    params = CodingAgent.Params.model_validate(PARAMS)
    recorder = MemorySink()
    async with (
        gateway(upstream, window) as url,
        Transport(TargetConfig.from_url(url)) as transport,
    ):
        runner = SessionRunner(transport, profile, FanOut([StatsSink(RunStats()), recorder]))
        agents = [CodingAgent(f"c{i}", params, model=model, seed=i) for i in range(SESSIONS)]
        async with asyncio.timeout(120):
            await asyncio.gather(
                *(runner.run_session(a, "coding", f"s{i}") for i, a in enumerate(agents))
            )
    drops = caught = false_alarms = steps = 0
    for session, flags in window.dropped.items():
        records = sorted(
            (s for s in recorder.steps if s.session_id == session), key=lambda s: s.step
        )
        assert len(records) == len(flags), "one step record per forwarded request"
        for dropped, record in zip(flags, records, strict=True):
            steps += 1
            flagged = "context_truncated" in record.failures
            drops += dropped
            caught += dropped and flagged
            false_alarms += flagged and not dropped
    return Caught(drops, caught, false_alarms, steps)


async def test_sliding_window_drops_smaller_than_the_append_are_caught_on_the_simulator(
    start_sim: Any,
) -> None:
    sim: SimServer = await start_sim()
    result = await run_through(sim.base_url, "agentload-sim", SlidingWindow())
    assert result.drops >= 20, result
    assert result.caught >= 0.9 * result.drops, result
    assert result.false_alarms == 0, result


async def test_the_same_gateway_dropping_nothing_raises_no_alarm_on_the_simulator(
    start_sim: Any,
) -> None:
    sim: SimServer = await start_sim()
    result = await run_through(sim.base_url, "agentload-sim", SlidingWindow(enabled=False))
    assert result.steps >= 100
    assert (result.drops, result.false_alarms) == (0, 0), result


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if installed("llama-server") is None:
        pytest.skip("llama-server is not installed (.ci/install-real-servers)")
    model = write_tiny_gguf(tmp_path_factory.mktemp("model") / "tiny.gguf")
    with LlamaServer(model, ctx=8192 * SESSIONS, parallel=SESSIONS) as server:
        yield server


async def test_sliding_window_drops_smaller_than_the_append_are_caught_on_llama_server(
    llama_server: LlamaServer,
) -> None:
    result = await run_through(llama_server.base_url, llama_server.model, SlidingWindow())
    assert result.drops >= 20, result
    assert result.caught >= 0.9 * result.drops, result
    assert result.false_alarms == 0, result


async def test_the_same_gateway_dropping_nothing_raises_no_alarm_on_llama_server(
    llama_server: LlamaServer,
) -> None:
    result = await run_through(
        llama_server.base_url, llama_server.model, SlidingWindow(enabled=False)
    )
    assert result.steps >= 100
    assert (result.drops, result.false_alarms) == (0, 0), result
