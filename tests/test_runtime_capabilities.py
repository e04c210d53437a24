"""The start-up probe of server-held state: what it concludes, and what it leaves alone."""

from __future__ import annotations

from conftest import StartSim

from loadgen.runtime.capabilities import TargetCapabilities
from loadgen.runtime.probes import detect_server_state
from loadgen.transport import TargetConfig, Transport


async def test_a_server_that_chains_responses_is_found_to_keep_state(start_sim: StartSim) -> None:
    sim = await start_sim()
    caps = TargetCapabilities()
    async with Transport(TargetConfig.from_url(sim.base_url)) as transport:
        await detect_server_state(transport, "agentload-sim", caps)
    assert caps.server_state is True
    assert caps.label()["server_state"] == "supported"


async def test_a_response_lost_at_the_probe_is_left_to_the_sessions_to_count(
    start_sim: StartSim,
) -> None:
    # Every stored response is evicted: the chained probe gets a 404 "not found". That is
    # the very loss a run counts (server_state_lost), not a refusal of the capability, and
    # never a reason to stop the run before it starts.
    sim = await start_sim(faults={"store_evict": 1.0})
    caps = TargetCapabilities()
    async with Transport(TargetConfig.from_url(sim.base_url)) as transport:
        await detect_server_state(transport, "agentload-sim", caps)
    assert caps.server_state is None
    assert caps.label()["server_state"] == "untested"
