"""A simulated fleet spread over processes (`agentload sim --replicas N --processes P`): one
router in the front process, the replicas in shard processes that take over each client's
connection. Real fronts and shard processes on 127.0.0.1:0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cli_runs import agentload_run, write_profile

from loadgen.sim.engine import chain_block_hashes
from loadgen.sim.fleet_front import FleetFront
from loadgen.sim.server import SimServer, sim_server
from tests.conftest import sim_config
from tests.test_sim_fleet import (
    TIMEOUT,
    admin,
    chat,
    long_text,
    metrics,
    respond,
    samples,
    status_of,
    total,
    until,
)

StartFront = Callable[..., Awaitable[FleetFront]]


@pytest_asyncio.fixture
async def start_front() -> AsyncIterator[StartFront]:
    """Start fleets over processes (config overrides of `fast`); all stopped afterwards."""
    fronts: list[FleetFront] = []

    async def start(**overrides: Any) -> FleetFront:
        front = FleetFront(sim_config(**{"replicas": 4, "processes": 2, **overrides}))
        fronts.append(front)
        await front.start()
        return front

    yield start
    for front in fronts:
        await front.stop()


def shard_pids(front: FleetFront) -> list[int]:
    return [shard.process.pid for shard in front.shards]


# -- serving ----------------------------------------------------------------------------------


async def test_sim_server_spreads_a_fleet_over_processes_only_when_asked() -> None:
    assert isinstance(sim_server(sim_config(replicas=4)), SimServer)
    assert isinstance(sim_server(sim_config(replicas=4, processes=2)), FleetFront)


async def test_round_robin_over_two_processes_reaches_every_replica_in_turn(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front(router="round-robin")

    answers = [await chat(http, front) for _ in range(8)]

    assert [a.status for a in answers] == [200] * 8
    assert [a.replica for a in answers] == ["r0", "r1", "r2", "r3"] * 2
    assert len(set(shard_pids(front))) == 2


async def test_each_replica_lives_in_the_shard_that_holds_it(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front(replicas=5, processes=2)

    status = await admin(http, front, "replicas")

    assert [r["name"] for r in status["replicas"]] == ["r0", "r1", "r2", "r3", "r4"]
    assert status["processes"] == 2
    owners = {r.name: r.shard.number for r in front.replicas}
    assert owners == {"r0": 0, "r1": 1, "r2": 0, "r3": 1, "r4": 0}


async def test_a_stream_is_served_whole_by_the_shard_and_its_connection_closed(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front()
    body = {
        "model": "agentload-sim",
        "messages": [{"role": "user", "content": "stream please"}],
        "max_tokens": 20,
        "min_tokens": 20,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async with http.post(f"{front.base_url}/chat/completions", json=body, timeout=TIMEOUT) as resp:
        events = [line async for line in resp.content if line.startswith(b"data: ")]
        connection = resp.headers.get("Connection")
        replica = resp.headers.get("x-agentload-replica")

    assert events[-1].strip() == b"data: [DONE]"
    assert b'"completion_tokens":20' in events[-2]
    assert connection == "close"  # the next request comes back to the router
    assert replica in {"r0", "r1", "r2", "r3"}


async def test_the_front_answers_expect_100_continue_and_hands_on_the_body(
    start_front: StartFront,
) -> None:
    front = await start_front()
    body = b'{"model": "agentload-sim", "messages": [{"role": "user", "content": "hi"}]}'
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(front.host, front.port)
    writer.write(head.encode())
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.write(body)
    reply = await asyncio.wait_for(reader.read(), 10)  # the shard closes after the reply
    writer.close()

    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert b'"finish_reason"' in reply


async def test_a_chunked_request_body_is_refused_with_411(start_front: StartFront) -> None:
    front = await start_front()
    reader, writer = await asyncio.open_connection(front.host, front.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()

    assert reply.startswith(b"HTTP/1.1 411 Length Required")
    assert b"Content-Length" in reply


async def test_models_and_health_are_answered_through_a_shard(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front()

    async with http.get(f"{front.base_url}/models", timeout=TIMEOUT) as resp:
        models = await resp.json()
    async with http.get(front.base_url.removesuffix("/v1") + "/health", timeout=TIMEOUT) as resp:
        health = resp.status

    assert models["data"][0]["id"] == "agentload-sim"
    assert health == 200


# -- the router's view --------------------------------------------------------------------------


async def test_session_routing_places_sessions_as_the_one_process_fleet_does(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front(router="session")
    single = SimServer(sim_config(replicas=4, router="session"))
    await single.start()
    try:
        placed: dict[str, set[str | None]] = {}
        for turn in range(2):
            for s in range(8):
                headers = {"x-session-id": f"s{s}"}
                answer = await chat(http, front, f"turn {turn}", headers)
                placed.setdefault(f"s{s}", set()).add(answer.replica)
        alone = {
            f"s{s}": (await chat(http, single, "x", {"x-session-id": f"s{s}"})).replica
            for s in range(8)
        }
    finally:
        await single.stop()

    assert {s: replicas.pop() for s, replicas in placed.items() if len(replicas) == 1} == alone


async def test_prefix_routing_follows_a_prefix_cached_in_another_process(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front(router="prefix")
    first = await chat(http, front, long_text("opening", 600))
    others = [await chat(http, front, long_text(f"other{i}", 600)) for i in range(3)]

    follow = await chat(http, front, long_text("opening", 600) + " and then more")

    assert len({a.replica for a in [first, *others]}) == 4  # no prefix yet: spread by load
    assert follow.replica == first.replica
    assert follow.cached >= 512  # the 600-word prefix's full blocks, served from that cache
    text = await metrics(http, front)
    assert total(text, "agentload_sim_router_decisions_total", reason="prefix") == 1


async def test_in_flight_counts_return_to_zero_when_the_shards_close_connections(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front(router="least-loaded")

    answers = await asyncio.gather(*(chat(http, front, max_tokens=30) for _ in range(12)))

    assert all(a.status == 200 for a in answers)
    await until("every replica idle", lambda: all(r.in_flight == 0 for r in front.replicas))
    assert {a.replica for a in answers} == {"r0", "r1", "r2", "r3"}


# -- metrics, removal, shards gone ----------------------------------------------------------------


async def test_metrics_merge_every_process_under_one_family_per_name(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front()
    for _ in range(4):
        await chat(http, front)

    text = await metrics(http, front)

    assert text.count("# TYPE vllm:num_requests_running gauge") == 1
    running = samples(text, "vllm:num_requests_running")
    assert sorted(dict(k)["engine"] for k in running) == ["0", "1", "2", "3"]
    assert total(text, "agentload_sim_router_decisions_total") == 4
    assert total(text, "vllm:request_success_total") == 4
    assert total(text, "agentload_sim_replica_up") == 4


async def test_a_removed_replica_gets_no_requests_and_loses_its_stored_responses(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front(router="session")
    headers = {"x-session-id": "chain"}
    stored = await respond(http, front, headers=headers)
    assert stored.replica is not None

    removed = await admin(http, front, f"replicas/{stored.replica}/remove")
    gone = next(r for r in front.replicas if r.name == stored.replica)
    await until("the front sees it out", lambda: not gone.up)
    chained = await respond(http, front, stored.body["id"], headers)
    later = [await chat(http, front, headers={"x-session-id": f"s{i}"}) for i in range(8)]

    assert removed["up"] is False
    assert chained.status == 404  # its store went with it; the session moved on
    assert chained.replica != stored.replica
    assert stored.replica not in {a.replica for a in later}
    status = await admin(http, front, "replicas")
    assert status_of(status, stored.replica)["up"] is False


async def test_a_shard_that_dies_takes_only_its_own_replicas(
    start_front: StartFront, http: aiohttp.ClientSession
) -> None:
    front = await start_front(router="round-robin")
    front.shards[1].process.kill()  # holds r1 and r3

    await until("its replicas out", lambda: not front.replicas[1].up and not front.replicas[3].up)
    answers = [await chat(http, front) for _ in range(6)]

    assert [a.status for a in answers] == [200] * 6
    assert {a.replica for a in answers} == {"r0", "r2"}


async def test_stopping_the_front_ends_every_shard_process(start_front: StartFront) -> None:
    front = await start_front()
    processes = [shard.process for shard in front.shards]

    await front.stop()

    assert all(p.returncode is not None for p in processes)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(front.host, front.port)


# -- what makes it possible, and what it refuses ---------------------------------------------------


def test_stable_block_hashes_are_the_same_in_another_process() -> None:
    pieces = [f"w{i}" for i in range(64)]
    here = chain_block_hashes(pieces, 16, stable=True)
    code = (
        "from loadgen.sim.engine import chain_block_hashes; "
        "print(chain_block_hashes([f'w{i}' for i in range(64)], 16, stable=True))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )

    assert len(here) == 4
    assert there.stdout.strip() == str(here)
    assert here != chain_block_hashes(pieces, 16)  # the fast kind is another hash


@pytest.mark.parametrize(
    ("overrides", "named"),
    [({"replicas": 2, "processes": 3}, "processes 3 exceeds replicas 2"),
     ({"replicas": 4, "processes": 2, "shared_store": True}, "drop --shared-store")],
)  # fmt: skip
def test_a_fleet_the_processes_cannot_hold_is_refused(
    overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        sim_config(**overrides)


def test_the_cli_refuses_more_processes_than_replicas_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "sim", "--replicas", "2", "--processes", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--processes" in lines[0]
    assert "exceeds replicas" in lines[0]


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(child) for child in f.read().split()]
    return found


async def test_agentload_sim_serves_a_fleet_over_processes_and_ctrl_c_ends_them_all(
    http: aiohttp.ClientSession,
) -> None:
    cmd = [sys.executable, "-m", "loadgen", "sim", "--port", "0", "--replicas", "2"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--processes", "2", stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        banner = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        base = banner.split(" on ", 1)[1].split()[0]
        shards = _children(proc.pid)
        replicas = []
        for _ in range(2):
            body = {"model": "agentload-sim", "messages": [{"role": "user", "content": "hi"}]}
            async with http.post(f"{base}/chat/completions", json=body, timeout=TIMEOUT) as resp:
                assert resp.status == 200
                replicas.append(resp.headers["x-agentload-replica"])
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert "fleet of 2 replicas" in banner
    assert "over 2 processes" in banner
    assert replicas == ["r0", "r1"]
    assert len(shards) == 2
    assert code == 0
    await until("the shards gone", lambda: not any(os.path.exists(f"/proc/{p}") for p in shards))


async def test_a_profiles_sim_runs_spread_over_processes(tmp_path: Path) -> None:
    profile = write_profile(
        tmp_path / "p.yaml",
        {
            "name": "spread",
            "seed": 1,
            "arrival": {"mode": "closed", "agents": 4},
            "agents": [{"kind": "coding", "params": {"turns": 1, "first_turn_steps": 3}}],
            "sim": {"replicas": 4, "processes": 2, "router": "session-load"},
            "time_scale": 0.02,
        },
    )

    run = await agentload_run(profile, tmp_path / "out", "--duration", "6s")

    assert run.summary["requests"]["failed"] == 0
    assert run.summary["requests"]["ok"] > 8
    assert set(run.summary["by_replica"]) == {"r0", "r1", "r2", "r3"}
