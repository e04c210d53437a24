"""Agent state through whole sessions: truncated context, evicted cache, server-held chains,
overflow and compaction, sub-agents, session affinity and determinism.

Every test runs K complete sessions (not a timed run) against real simulators on
127.0.0.1:0, sometimes through a small test-only aiohttp proxy that records or rewrites
the requests on their way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from agent_sessions import MODEL, SMALL, Outcome, run_sessions
from aiohttp import web

from loadgen.agents import AssistantAgent, CodingAgent, ResearchAgent
from loadgen.observe import StepRecord
from loadgen.profile.schema import Profile
from loadgen.runtime.session import SessionRunner
from loadgen.runtime.sinks import MemorySink
from loadgen.sim import SimServer
from loadgen.transport import TargetConfig, Transport

StartSim = Callable[..., Awaitable[SimServer]]


# -- a test-only reverse proxy ---------------------------------------------------------------


@dataclass
class Seen:
    """One request that went through the proxy, and the status the simulator answered."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 0


@dataclass
class Proxy:
    base_url: str
    seen: list[Seen] = field(default_factory=list)

    def by_session(self, header: str = "x-session-id") -> dict[str, list[Seen]]:
        out: dict[str, list[Seen]] = defaultdict(list)
        for request in self.seen:
            out[request.headers.get(header, "")].append(request)
        return out


Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


@contextlib.asynccontextmanager
async def proxy(upstream: SimServer, rewrite: Rewrite | None = None) -> AsyncIterator[Proxy]:
    """Forward POST /v1/* to `upstream`, optionally rewriting the JSON body, and stream the
    reply back unchanged (status, content type and every byte)."""
    state = Proxy("")

    async with aiohttp.ClientSession() as client:

        async def forward(request: web.Request) -> web.StreamResponse:
            body = orjson.loads(await request.read())
            seen = Seen(request.path, dict(request.headers), body)
            state.seen.append(seen)
            if rewrite is not None:
                body = rewrite(body)
            url = f"{upstream.base_url}/{request.match_info['tail']}"
            headers = {"Content-Type": "application/json"}
            async with client.post(url, data=orjson.dumps(body), headers=headers) as up:
                seen.status = up.status
                content_type = up.headers.get("Content-Type", "application/json")
                resp = web.StreamResponse(status=up.status, headers={"Content-Type": content_type})
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp

        app = web.Application()
        app.router.add_post("/v1/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        state.base_url = f"http://{host}:{port}/v1"
        try:
            yield state
        finally:
            await runner.cleanup()


def drop_old_messages(body: dict[str, Any]) -> dict[str, Any]:
    """A context-trimming gateway: beyond 6 messages, keep the system one and the last 2."""
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > 6:
        body = {**body, "messages": [messages[0], *messages[-2:]]}
    return body


# Long enough sessions that the history passes 6 messages early.
LONG_HISTORY = {"turns": 2, "steps_per_turn": 4}


# -- context_truncated -------------------------------------------------------------------------


async def test_proxy_that_drops_old_messages_is_counted_as_context_truncated(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    async with proxy(server, rewrite=drop_old_messages) as gateway:
        outcome = await run_sessions(gateway.base_url, CodingAgent, tmp_path, params=LONG_HISTORY)

    assert any(len(r.body["messages"]) > 6 for r in gateway.seen)  # the proxy did trim
    assert outcome.stats.failures["context_truncated"] > 0
    assert outcome.outcomes() == ["completed"] * 6  # degraded, not broken


async def test_same_sessions_straight_to_the_sim_count_no_context_truncated(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    outcome = await run_sessions(server.base_url, CodingAgent, tmp_path, params=LONG_HISTORY)

    assert outcome.stats.failures["context_truncated"] == 0


async def test_untouched_proxy_counts_no_context_truncated(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    async with proxy(server) as gateway:
        outcome = await run_sessions(gateway.base_url, CodingAgent, tmp_path, params=LONG_HISTORY)

    assert len(gateway.seen) == outcome.stats.requests_total
    assert outcome.stats.failures["context_truncated"] == 0


# -- cache_miss --------------------------------------------------------------------------------

# A shared system prompt keeps part of every prompt warm (as in real deployments, and what
# hid misses when the check compared with half the previous prompt); each session's own
# history is what gets evicted.
CACHE_SESSIONS = {"system_prompt_tokens": 300, "shared_system_prompt": True, "turns": 2}


async def test_tiny_kv_cache_under_concurrent_sessions_reports_cache_miss(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # 96 blocks x 16 = 1536 tokens of KV for 8 sessions of ~600 tokens each: prefixes are
    # evicted between a session's steps, all but the shared system prompt.
    server = await start_sim(num_kv_blocks=96, max_model_len=1536)

    outcome = await run_sessions(server.base_url, CodingAgent, tmp_path, params=CACHE_SESSIONS, k=8)

    assert server.context.engine.kv.evictions > 0
    assert outcome.stats.failures["cache_miss"] > 0


async def test_roomy_kv_cache_reports_no_cache_miss_for_the_same_sessions(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    outcome = await run_sessions(server.base_url, CodingAgent, tmp_path, params=CACHE_SESSIONS, k=8)

    assert outcome.stats.cached_tokens > 0
    assert outcome.stats.failures["cache_miss"] == 0


# -- server-held state -------------------------------------------------------------------------

CHAINS = {"turns": 4}


async def test_server_held_sessions_chain_on_previous_response_id_and_complete(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    async with proxy(server) as gateway:
        outcome = await run_sessions(gateway.base_url, AssistantAgent, tmp_path, params=CHAINS)

    assert outcome.outcomes() == ["completed"] * 6
    assert {k: n for k, n in outcome.stats.failures.items() if n} == {}
    for requests in gateway.by_session().values():
        assert "previous_response_id" not in requests[0].body
        assert all(r.body.get("previous_response_id") for r in requests[1:])
        assert all(r.path == "/v1/responses" for r in requests)


async def test_store_evict_falls_back_to_client_history_and_every_session_completes(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim(faults={"store_evict": 0.3})

    outcome = await run_sessions(server.base_url, AssistantAgent, tmp_path, params=CHAINS)

    assert outcome.stats.failures["server_state_lost"] > 0
    assert [(s.outcome, s.error) for s in outcome.sessions] == [("completed", None)] * 6
    assert outcome.stats.recoveries["server_state_lost"] > 0


async def test_fallback_resends_the_whole_history_without_previous_response_id(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim(faults={"store_evict": 0.3})
    # Two attempts: the one that found its state gone, and the one after falling back.
    fallback = {"server_state_lost": {"action": "fallback", "max_attempts": 2}}

    async with proxy(server) as gateway:
        outcome = await run_sessions(
            gateway.base_url,
            AssistantAgent,
            tmp_path,
            params=CHAINS,
            profile={"reactions": fallback},
        )

    retried = 0
    for requests in gateway.by_session().values():
        for lost, after in itertools.pairwise(requests):
            if lost.status == 404:
                retried += 1
                assert "previous_response_id" not in after.body
                assert after.body["input"][0]["role"] == "system"
                assert len(after.body["input"]) > len(lost.body["input"])
    assert retried == outcome.stats.failures["server_state_lost"] > 0
    assert outcome.outcomes() == ["completed"] * 6


# -- context_overflow and compaction -----------------------------------------------------------

# Histories that pass 1024 tokens within a session: 200 system + ~8 steps of ~100 tokens.
GROWING = {"turns": 1, "steps_per_turn": 10, "tool_result_tokens": 120, "compact_to_tokens": 32}


async def test_prompt_beyond_the_servers_window_is_counted_as_context_overflow(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim(max_model_len=1024)

    outcome = await run_sessions(server.base_url, CodingAgent, tmp_path, params=GROWING, k=3)

    overflowed = [s for s in outcome.steps if "context_overflow" in s.failures]
    assert outcome.stats.failures["context_overflow"] == len(overflowed) > 0
    assert {s.http_status for s in overflowed} == {400}


async def test_compact_reaction_summarises_an_overflowing_history_and_the_session_goes_on(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim(max_model_len=1024)

    outcome = await run_sessions(server.base_url, CodingAgent, tmp_path, params=GROWING, k=3)

    assert outcome.stats.failures["context_overflow"] > 0
    ended = [(s.outcome, s.error, s.compactions > 0) for s in outcome.sessions]
    assert ended == [("completed", None, True)] * 3


async def test_agent_compacts_before_its_own_window_fills_and_the_session_goes_on(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()
    window = {**GROWING, "context_budget_tokens": 1024, "compact_at": 0.6}

    outcome = await run_sessions(server.base_url, CodingAgent, tmp_path, params=window, k=3)

    ended = [(s.outcome, s.error, s.compactions > 0) for s in outcome.sessions]
    assert ended == [("completed", None, True)] * 3
    assert any(s.kind == "compaction" for s in outcome.steps)
    assert outcome.stats.failures["context_overflow"] == 0


async def test_overflow_of_the_agents_own_window_is_counted_in_run_stats(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()
    no_compaction = {**GROWING, "context_budget_tokens": 768, "compaction": False}

    outcome = await run_sessions(server.base_url, CodingAgent, tmp_path, params=no_compaction, k=3)

    per_session = sum(s.failures.get("context_overflow", 0) for s in outcome.sessions)
    assert [s.outcome for s in outcome.sessions] == ["failed"] * 3
    assert per_session == 3
    assert outcome.stats.failures["context_overflow"] == per_session


# -- sub-agents --------------------------------------------------------------------------------

FAN_OUT = {
    "turns": 1,
    "steps_per_turn": 3,
    "subagent_probability": 1.0,
    "subagents": 2,
    "subagent_steps": 2,
}


class ToolRecorder(MemorySink):
    """Keeps the steps and sessions, and how each tool call ended."""

    def __init__(self) -> None:
        super().__init__()
        self.tool_outcomes: list[str] = []
        self.asked_for_tools = asyncio.Event()  # a recorded step asked for tool calls

    def step(self, record: StepRecord) -> None:
        super().step(record)
        if record.tool_calls:
            self.asked_for_tools.set()

    def tool_call(self, agent: str, tool: str, outcome: str, latency_s: float | None) -> None:
        self.tool_outcomes.append(outcome)


async def test_tool_calls_a_stopped_session_cut_off_are_counted_as_aborted(
    start_sim: StartSim,
) -> None:
    server = await start_sim()
    profile = Profile.model_validate(
        {"agents": [{"kind": "coding"}], "arrival": {"mode": "closed", "agents": 1}}
    )
    # Tools that take a minute: the session is stopped while its first calls run.
    params = CodingAgent.Params.model_validate({**SMALL, "tool_latency_s": 60})
    recorder = ToolRecorder()
    async with Transport(TargetConfig.from_url(server.base_url)) as transport:
        runner = SessionRunner(transport, profile, recorder)
        agent = CodingAgent("coding-0", params, model=MODEL, seed=profile.seed)
        session = asyncio.create_task(runner.run_session(agent, "coding", "s0"))
        async with asyncio.timeout(30):
            await recorder.asked_for_tools.wait()
        session.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await session
    asked_for = sum(step.tool_calls for step in recorder.steps)
    assert asked_for > 0
    # Every call its recorded steps asked for is counted once: none finished, all aborted.
    assert recorder.tool_outcomes == ["aborted"] * asked_for
    assert [s.outcome for s in recorder.sessions] == ["aborted"]


async def test_research_agent_forks_subagents_recorded_as_subagent_steps(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    outcome = await run_sessions(server.base_url, ResearchAgent, tmp_path, params=FAN_OUT, k=3)

    for session in outcome.sessions:
        children = [s for s in outcome.steps if s.session_id.startswith(f"{session.session_id}.")]
        assert session.outcome == "completed"
        assert session.subagents > 0
        assert children
        assert {s.kind for s in children} == {"subagent"}
    assert any(s.kind == "subagent_result" for s in outcome.steps)


async def test_every_subagent_gets_a_session_id_of_its_own(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # Three steps per turn: the agent fans out after the first and again after the second.
    server = await start_sim()

    outcome = await run_sessions(server.base_url, ResearchAgent, tmp_path, params=FAN_OUT, k=3)

    for session in outcome.sessions:
        children = {
            s.session_id for s in outcome.steps if s.session_id.startswith(f"{session.session_id}.")
        }
        assert session.subagents >= 4  # two fan-outs of two
        assert len(children) == session.subagents


# -- session affinity --------------------------------------------------------------------------


async def test_every_request_carries_its_session_id_in_the_session_header(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    async with proxy(server) as gateway:
        outcome = await run_sessions(gateway.base_url, CodingAgent, tmp_path, k=3)

    sent = Counter(r.headers.get("x-session-id") for r in gateway.seen)
    recorded = Counter(s.session_id for s in outcome.steps)
    assert sent == recorded


async def test_subagent_requests_carry_their_parent_sessions_header(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    async with proxy(server) as gateway:
        outcome = await run_sessions(gateway.base_url, ResearchAgent, tmp_path, params=FAN_OUT, k=2)

    sent = Counter(r.headers.get("x-session-id") for r in gateway.seen)
    recorded = Counter(s.session_id.split(".")[0] for s in outcome.steps)
    assert any(s.kind == "subagent" for s in outcome.steps)
    assert sent == recorded


async def test_profile_session_header_names_the_affinity_header(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()

    async with proxy(server) as gateway:
        await run_sessions(
            gateway.base_url, CodingAgent, tmp_path, k=2, profile={"session_header": "x-affinity"}
        )

    assert {r.headers.get("x-affinity") for r in gateway.seen} == {"s0", "s1"}
    assert all("x-session-id" not in r.headers for r in gateway.seen)


# -- determinism -------------------------------------------------------------------------------


def step_sequences(outcome: Outcome) -> dict[str, list[tuple[Any, ...]]]:
    """Per session, what each step was: its kind, the prompt it sent and what came back."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for session in sorted({s.session_id for s in outcome.steps}):
        out[session] = [
            (s.step, s.kind, s.prompt_tokens, s.completion_tokens, s.tool_calls)
            for s in outcome.steps_of(session)
        ]
    return out


async def test_same_seed_and_profile_give_identical_step_sequences(
    start_sim: StartSim, tmp_path: Path
) -> None:
    first_sim = await start_sim(seed=5)
    second_sim = await start_sim(seed=5)

    first = await run_sessions(
        first_sim.base_url, CodingAgent, tmp_path / "1", profile={"seed": 11}
    )
    second = await run_sessions(
        second_sim.base_url, CodingAgent, tmp_path / "2", profile={"seed": 11}
    )

    assert len(first.steps) > 6
    assert step_sequences(first) == step_sequences(second)


async def test_another_seed_gives_other_step_sequences(start_sim: StartSim, tmp_path: Path) -> None:
    first_sim = await start_sim(seed=5)
    second_sim = await start_sim(seed=5)

    first = await run_sessions(
        first_sim.base_url, CodingAgent, tmp_path / "1", profile={"seed": 11}
    )
    second = await run_sessions(
        second_sim.base_url, CodingAgent, tmp_path / "2", profile={"seed": 12}
    )

    assert step_sequences(first) != step_sequences(second)
