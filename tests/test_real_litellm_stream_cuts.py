"""Streams cut upstream of the LiteLLM proxy: what reaches agentload, and what it can tell.

The simulator behind the proxy cuts a share of its streams mid-reply (`--fault-stream-cut`)
and counts each cut it made (agentload_sim_faults_injected_total{fault="stream_cut"}), so
what agentload reports through the gateway is compared with what really happened:

- Responses: LiteLLM ends the stream with `[DONE]` and no `response.completed`, and agentload
  counts each cut as `stream_truncated`, as many as the simulator made.
- Chat completions: LiteLLM closes the stream as if the reply were whole (a
  `finish_reason: "stop"` chunk, usage it counted itself, `[DONE]`), so nothing in the
  stream shows the cut and agentload counts none (README, "Real servers", says so).
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_sessions import MODEL, Outcome, run_sessions
from prometheus_client.parser import text_string_to_metric_families
from real_servers import LiteLLMProxy, SimProcess

from loadgen.agents import Agent, AssistantAgent, CodingAgent
from loadgen.profile.schema import default_reactions

pytestmark = pytest.mark.slow

CUT_RATE = 0.3
# The default reactions, except that retries back off for milliseconds rather than seconds.
QUICK_RETRIES = {
    kind.value: {**reaction.model_dump(), "backoff": 0.01, "max_backoff": 0.05}
    for kind, reaction in default_reactions().items()
    if reaction.action == "retry"
}


@pytest.fixture(scope="module")
def proxy_and_sim() -> Iterator[tuple[LiteLLMProxy, SimProcess]]:
    with (
        SimProcess(extra_args=["--fault-stream-cut", str(CUT_RATE)]) as sim,
        LiteLLMProxy([(sim.base_url, sim.model)], model=MODEL) as proxy,
    ):
        yield proxy, sim


def cuts_made(sim: SimProcess) -> float:
    """The simulator's own count of the streams it cut."""
    with urllib.request.urlopen(f"{sim.root_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "agentload_sim_faults_injected_total"
        and sample.labels.get("fault") == "stream_cut"
    )


def sessions_through(
    proxy_and_sim: tuple[LiteLLMProxy, SimProcess],
    agent: type[Agent],
    params: dict[str, Any],
    out: Path,
) -> tuple[Outcome, float]:
    """Six whole sessions of `agent` through the proxy; and how many streams the sim cut."""
    proxy, sim = proxy_and_sim
    before = cuts_made(sim)
    outcome = asyncio.run(
        run_sessions(
            proxy.base_url, agent, out, params=params, profile={"reactions": QUICK_RETRIES}, k=6
        )
    )
    return outcome, cuts_made(sim) - before


def test_a_responses_stream_cut_upstream_is_counted_truncated_as_often_as_it_was_cut(
    proxy_and_sim: tuple[LiteLLMProxy, SimProcess], tmp_path: Path
) -> None:
    outcome, cut = sessions_through(proxy_and_sim, AssistantAgent, {"turns": 4}, tmp_path)

    assert cut > 0, "no stream was cut: the sessions are too short to test anything"
    assert outcome.stats.failures["stream_truncated"] == cut
    truncated = [s for s in outcome.steps if "stream_truncated" in s.failures]
    assert {s.error for s in truncated} == {"stream ended without response.completed"}


def test_a_chat_stream_cut_upstream_reaches_agentload_as_a_whole_reply(
    proxy_and_sim: tuple[LiteLLMProxy, SimProcess], tmp_path: Path
) -> None:
    outcome, cut = sessions_through(proxy_and_sim, CodingAgent, {"output_tokens": 64}, tmp_path)

    assert cut > 0, "no stream was cut: too few requests to test anything"
    # LiteLLM ends each cut stream with finish_reason "stop", its own usage and [DONE]: the
    # cut is not in the stream, and agentload does not invent one.
    assert outcome.stats.failures["stream_truncated"] == 0
    assert all(s.ok for s in outcome.steps)
