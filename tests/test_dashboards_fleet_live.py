"""A real Prometheus scrapes a simulated fleet under load; every Fleet dashboard query answers.

A simulated fleet of three replicas (`agentload sim --replicas 3`, round robin, a Responses
store per replica, a short batch on each so requests queue) serves coding agents and
assistants that chain server-held state, through `agentload run` with its exporter; Debian's
`prometheus` scrapes both every second. r2 is taken out mid-run and put back, as an autoscaler
or a crash would. Then every query of the Fleet dashboard is run: each has data, and each
per-replica panel has exactly one line per replica, named as the fleet names them, from the
replicas' own metrics and from agentload's alike. The label shapes of real fleets (vLLM's
engine label alone, one target per server) are tests/test_dashboards_fleet.py's.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from loadgen.sim import PRESETS, SimConfig, SimServer
from tests.test_observe_prometheus_live import (
    ROOT,
    LiveRun,
    Prometheus,
    dashboard_queries,
    free_port,
    substituted,
)

pytestmark = pytest.mark.slow

REPLICAS = {"r0", "r1", "r2"}
RUN_S = 18.0  # a 4 s ramp to 15 agents, then 14 s at 15
REMOVED = "r2"
REMOVE_AT_S, RESTORE_AT_S = 6.0, 9.0  # after the agents started
PROFILE: dict[str, Any] = {
    "name": "fleet-live",
    "seed": 5,
    "time_scale": 0.01,
    "arrival": {"mode": "closed", "agents": 15},
    "stages": [
        {"kind": "ramp", "duration": "4s", "target": 15},
        {"kind": "hold", "duration": "14s"},
    ],
    "force_output_length": "always",
    "agents": [
        {
            "kind": "coding",
            "weight": 2,
            "params": {
                "system_prompt_tokens": 600,
                "turns": 2,
                "steps_per_turn": {"uniform": [3, 6]},
                "user_tokens": 60,
                "output_tokens": {"uniform": [24, 64]},
                "tool_result_tokens": {"uniform": [200, 400]},
                "think_time_s": 0,
            },
        },
        {
            "kind": "assistant",  # chains previous_response_id: round robin loses them
            "weight": 1,
            "params": {
                "turns": 3,
                "steps_per_turn": 1,
                "output_tokens": {"uniform": [24, 64]},
                "think_time_s": 0,
            },
        },
    ],
    "reactions": {
        # The removal fails what ran on r2 (503s and cut streams): retried elsewhere.
        "http_error": {"action": "retry", "max_attempts": 4, "backoff": "10ms"},
        "stream_truncated": {"action": "retry", "max_attempts": 4, "backoff": "10ms"},
        "server_state_lost": {"action": "fallback", "max_attempts": 2},
    },
}
# One sequence in each replica's batch for about five agents each: requests queue.
SIM = {"replicas": 3, "router": "round-robin", "max_num_seqs": 1, "num_kv_blocks": 1200,
       "max_model_len": 8192}  # fmt: skip

FLEET_QUERIES = dashboard_queries(fleet=True)
# The queries drawing one line per replica, named by the fleet: the replicas' own engine
# metrics and router gauges, and agentload's agentload_replica_* view.
ONE_LINE_PER_REPLICA = [
    f"fleet / {title} / A"
    for title in (
        "Running requests per replica",
        "Waiting requests per replica",
        "KV-cache usage per replica",
        "Prefix-cache hit ratio per replica (server)",
        "Generation tokens per second per replica",
        "Load relative to the mean replica",
        "Requests in flight per replica (router)",
        "Replicas in service and removals",
        "Requests per second by replica",
        "TTFT p95 by replica",
        "Prefix-cache hit ratio by replica",
    )
]
PER_REPLICA = [(name, expr) for name, expr in FLEET_QUERIES if name in ONE_LINE_PER_REPLICA]


async def _admin(sim: SimServer, action: str) -> None:
    base = sim.base_url.removesuffix("/v1")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/admin/replicas/{REMOVED}/{action}") as resp,
    ):
        assert resp.status == 200, await resp.text()


async def _fleet_run(tmp: Path, prometheus: Prometheus) -> LiveRun:
    profile = tmp / "profile.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    sim = SimServer(SimConfig.model_validate({**PRESETS["fast"].model_dump(), **SIM}))
    await sim.start()
    log = (tmp / "agentload.log").open("wb")
    try:
        port = free_port()
        prometheus.start({"agentload": [port], "target": [sim.port]})
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadgen", "run", str(profile), "--target", sim.base_url,
            "--prometheus-port", str(port), "--quiet", "--out", str(tmp / "results"),
            cwd=ROOT, stdout=log, stderr=log,
        )  # fmt: skip
        launched = time.time()
        await prometheus.wait_until("up", 1.0, timeout_s=60)
        await prometheus.wait_until("sum(agentload_users)", 1.0, count=1, timeout_s=60)
        await asyncio.sleep(REMOVE_AT_S)
        # A removal loses what the replica holds; on a loaded machine r2 may be between
        # requests at that instant (CI once counted no lost request), so wait until it holds one.
        r2 = sim.fleet.replica(REMOVED)
        assert r2 is not None
        for _ in range(1000):  # 10 s at most
            if r2.in_flight:
                break
            await asyncio.sleep(0.01)
        await _admin(sim, "remove")
        await asyncio.sleep(RESTORE_AT_S - REMOVE_AT_S)
        await _admin(sim, "restore")
        code = await asyncio.wait_for(run.wait(), timeout=120)
        assert code == 0, (tmp / "agentload.log").read_text()[-3000:]
        ended = time.time()
        await prometheus.wait_until("timestamp(up)", ended + 0.1)
        # The gauges are read at the last scrape that saw requests queued on the fleet.
        queued_at = prometheus.last_time("sum(vllm:num_requests_waiting) > 0", launched, ended)
    finally:
        log.close()
        await sim.stop()
    return LiveRun(
        prometheus=prometheus.url,
        summary=json.loads((tmp / "results" / "summary.json").read_text()),
        live_at=queued_at,
        window=f"{math.ceil(RUN_S + 5)}s",
        test_config=prometheus.config,
        final_at=ended,
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """The fleet's run, shared by every test of this module."""
    tmp = tmp_path_factory.mktemp("fleet-live")
    prometheus = Prometheus(tmp)
    try:
        yield asyncio.run(asyncio.wait_for(_fleet_run(tmp, prometheus), timeout=180))
    finally:
        prometheus.stop()


def _at_live(fleet: LiveRun, expr: str) -> list[dict[str, Any]]:
    return fleet.query(substituted(expr, fleet.window), at=fleet.live_at)


@pytest.mark.parametrize(("panel", "expr"), FLEET_QUERIES, ids=[n for n, _ in FLEET_QUERIES])
def test_fleet_query_returns_data_from_a_simulated_fleet(
    fleet: LiveRun, panel: str, expr: str
) -> None:
    values = [float(r["value"][1]) for r in _at_live(fleet, expr)]
    assert values, f"{panel}: no series"
    assert any(math.isfinite(v) and v != 0 for v in values), f"{panel}: only {values}"


@pytest.mark.parametrize(("panel", "expr"), PER_REPLICA, ids=[n for n, _ in PER_REPLICA])
def test_per_replica_panel_draws_one_line_per_replica_named_as_the_fleet_names_them(
    fleet: LiveRun, panel: str, expr: str
) -> None:
    replicas = [r["metric"].get("replica") for r in _at_live(fleet, expr)]
    assert sorted(replicas, key=str) == sorted(REPLICAS), f"{panel}: {replicas}"


def test_the_per_replica_queries_named_here_are_on_the_dashboard() -> None:
    # A renamed panel would otherwise drop out of the test above without a word.
    assert [name for name, _ in PER_REPLICA] == ONE_LINE_PER_REPLICA


def test_the_removed_replica_is_named_by_the_removals_panel(fleet: LiveRun) -> None:
    (expr,) = [e for n, e in FLEET_QUERIES if n == "fleet / Replicas in service and removals / B"]
    found = fleet.query(substituted(expr, fleet.window), at=fleet.final_at)
    assert [(r["metric"]["replica"], r["metric"]["cause"]) for r in found] == [(REMOVED, "admin")]
    assert float(found[0]["value"][1]) >= 1


def test_agentloads_lost_state_and_the_fleets_own_count_agree(fleet: LiveRun) -> None:
    lost = fleet.value('sum(agentload_replica_state_failures_total{kind="server_state_lost"})')
    not_found = fleet.value('sum(agentload_sim_response_lookups_total{result="not_found"})')
    assert lost > 0
    # Every chain agentload counted lost is one the fleet could not find. The client's
    # start-up probe chains two Responses requests of its own, which round robin usually
    # puts on two replicas: at most one miss that is no session's (docs/fleets.md).
    assert lost <= not_found <= lost + 1
    assert lost == fleet.summary["state_failures"]["server_state_lost"]
