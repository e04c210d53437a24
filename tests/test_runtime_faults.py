"""Each simulator fault, seen through whole agent sessions: counted as its kind, recovered from.

Every test runs K complete sessions (not a timed run, so nothing is cut off at the end) at
an intermediate fault rate and compares what RunStats counted with
agentload_sim_faults_injected_total{fault=...} on the same simulator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from agent_sessions import Outcome, run_sessions

from loadgen.agents import Agent, AssistantAgent, CodingAgent
from loadgen.profile.schema import default_reactions
from loadgen.sim import SimServer

StartSim = Callable[..., Awaitable[SimServer]]
Scrape = Callable[..., Awaitable[float]]

FAULTS = "agentload_sim_faults_injected_total"
RATE = 0.25
SESSIONS = 8

# The default reactions, except that retries back off for milliseconds rather than seconds.
QUICK_RETRIES = {
    kind.value: {**reaction.model_dump(), "backoff": 0.01, "max_backoff": 0.05}
    for kind, reaction in default_reactions().items()
    if reaction.action == "retry"
}


async def run_faulty(
    server: SimServer, agent_cls: type[Agent], out_dir: Path, **kwargs: Any
) -> Outcome:
    """SESSIONS whole sessions against `server`, retries backing off for milliseconds."""
    kwargs.setdefault("k", SESSIONS)
    return await run_sessions(
        server.base_url, agent_cls, out_dir, profile={"reactions": QUICK_RETRIES}, **kwargs
    )


@dataclass(frozen=True)
class Case:
    """One simulator fault and how to provoke the client kind it maps to."""

    fault: str
    kind: str
    agent: type[Agent] = CodingAgent
    params: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    request_timeout_s: float = 600.0


CASES = [
    Case("http_5xx", "http_error"),
    Case("rate_limit", "rate_limited"),
    Case("stream_cut", "stream_truncated"),
    # Tools are offered (tool_mode model) and the sim always calls one where it may; replies
    # are long enough that a valid call is never cut by max_tokens.
    Case(
        "malformed_tool_args",
        "malformed_tool_call",
        params={"tool_mode": "model", "output_tokens": 300},
        sim={"tool_call_probability": 1.0},
    ),
    # A spike of 2.5 s against a 0.5 s request limit; a normal small request takes ~50 ms.
    Case(
        "latency_spike",
        "timeout",
        faults={"latency_spike_ms": 2500},
        request_timeout_s=0.5,
    ),
    # Server-held Responses chains over several turns; each follow-up may find its
    # previous response evicted.
    Case("store_evict", "server_state_lost", agent=AssistantAgent, params={"turns": 4}),
]


async def run_case(case: Case, start_sim: StartSim, out_dir: Path) -> tuple[Outcome, SimServer]:
    server = await start_sim(faults={case.fault: RATE, **case.faults}, **case.sim)
    outcome = await run_faulty(
        server,
        case.agent,
        out_dir,
        params=case.params,
        request_timeout_s=case.request_timeout_s,
    )
    return outcome, server


@pytest.mark.parametrize("case", CASES, ids=[f"{c.fault}-{c.kind}" for c in CASES])
async def test_injected_fault_is_counted_as_its_kind_exactly_as_often_as_injected(
    case: Case, start_sim: StartSim, scrape: Scrape, tmp_path: Path
) -> None:
    outcome, server = await run_case(case, start_sim, tmp_path)

    injected = await scrape(server, FAULTS, fault=case.fault)
    assert injected > 0, "the fault never fired; the sessions are too short to test anything"
    assert outcome.stats.failures[case.kind] == injected


@pytest.mark.parametrize("case", CASES, ids=[f"{c.fault}-{c.kind}" for c in CASES])
async def test_injected_fault_is_recovered_by_its_default_action(
    case: Case, start_sim: StartSim, tmp_path: Path
) -> None:
    outcome, _server = await run_case(case, start_sim, tmp_path)

    assert outcome.stats.failures[case.kind] > 0
    assert outcome.stats.recoveries[case.kind] > 0
    assert sum(s.outcome == "completed" for s in outcome.sessions) > 0


async def test_each_failed_attempt_is_an_unsuccessful_step_record_carrying_its_kind(
    start_sim: StartSim, scrape: Scrape, tmp_path: Path
) -> None:
    server = await start_sim(faults={"http_5xx": 0.3})

    outcome = await run_faulty(server, CodingAgent, tmp_path)

    failed = [s for s in outcome.steps if "http_error" in s.failures]
    assert len(failed) == await scrape(server, FAULTS, fault="http_5xx")
    assert {(s.ok, s.http_status) for s in failed} == {(False, 500)}


async def test_sessions_with_failures_are_written_to_sessions_jsonl_with_their_counts(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim(faults={"http_5xx": 0.3})

    outcome = await run_faulty(server, CodingAgent, tmp_path)

    lines = [orjson.loads(line) for line in (tmp_path / "sessions.jsonl").read_bytes().splitlines()]
    assert len(lines) == SESSIONS
    written = sum(line["failures"].get("http_error", 0) for line in lines)
    assert written == outcome.stats.failures["http_error"] > 0


async def test_recoveries_never_outnumber_the_failures_they_recovered(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim(faults={"http_5xx": 0.4, "stream_cut": 0.2})

    outcome = await run_faulty(server, CodingAgent, tmp_path)

    for kind in ("http_error", "stream_truncated"):
        assert 0 < outcome.stats.recoveries[kind] <= outcome.stats.failures[kind]


async def test_fault_free_sessions_count_no_failures_and_all_complete(
    start_sim: StartSim, scrape: Scrape, tmp_path: Path
) -> None:
    server = await start_sim()

    outcome = await run_faulty(server, CodingAgent, tmp_path)

    assert {k: n for k, n in outcome.stats.failures.items() if n} == {}
    assert [s.outcome for s in outcome.sessions] == ["completed"] * SESSIONS
    for fault in ("http_5xx", "rate_limit", "stream_cut", "latency_spike"):
        assert await scrape(server, FAULTS, fault=fault) == 0
