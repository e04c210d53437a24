"""The simulated fleet (`agentload sim --replicas N --router R`): routers, per-replica state,
removal, /metrics and the admin endpoints, against real fleets on 127.0.0.1:0.

tests/test_sim_fleet_runs.py runs agents against fleets (the issue's Must-show shapes).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.cli.main import build_parser
from loadgen.cli.sim_command import config_from_args, fleet_description
from loadgen.errors import ConfigError, UsageError
from loadgen.sim import SimServer
from loadgen.sim.config import profile_sim_config
from loadgen.sim.fleet import FLEET, session_token
from loadgen.sim.router import RouteRequest, make_router, rendezvous_score
from loadgen.sim.server import _admin_replica
from tests.conftest import StartSim, sim_config

MODEL = "agentload-sim"
TIMEOUT = aiohttp.ClientTimeout(total=30)
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


async def until(
    what: str, check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 15.0
) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        held = check()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def root(server: SimServer) -> str:
    return server.base_url.removesuffix("/v1")


def long_text(seed: str, words: int = 200) -> str:
    """A prompt of `words` words whose first one differs per seed (no shared KV blocks)."""
    return seed + " " + " ".join(WORDS[i % len(WORDS)] for i in range(words))


@dataclass
class Answer:
    status: int
    replica: str | None
    token: str | None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def cached(self) -> int:
        usage = self.body["usage"]
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        return int(details["cached_tokens"])


async def chat(
    http: aiohttp.ClientSession,
    server: SimServer,
    content: str = "next step",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> Answer:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
        **fields,
    }
    url = f"{server.base_url}/chat/completions"
    async with http.post(url, json=body, headers=headers or {}, timeout=TIMEOUT) as resp:
        return Answer(
            resp.status,
            resp.headers.get("x-agentload-replica"),
            resp.headers.get("x-session-token"),
            await resp.json(),
        )


async def respond(
    http: aiohttp.ClientSession,
    server: SimServer,
    previous: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    body: dict[str, Any] = {"model": MODEL, "input": "remember this", "max_output_tokens": 4}
    if previous is not None:
        body["previous_response_id"] = previous
    url = f"{server.base_url}/responses"
    async with http.post(url, json=body, headers=headers or {}, timeout=TIMEOUT) as resp:
        return Answer(
            resp.status,
            resp.headers.get("x-agentload-replica"),
            resp.headers.get("x-session-token"),
            await resp.json(),
        )


async def metrics(http: aiohttp.ClientSession, server: SimServer) -> str:
    async with http.get(f"{root(server)}/metrics", timeout=TIMEOUT) as resp:
        assert resp.status == 200
        return await resp.text()


def samples(text: str, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called `name` whose labels include `labels`, keyed by all its labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out[tuple(sorted(s.labels.items()))] = float(s.value)
    return out


def total(text: str, name: str, **labels: str) -> float:
    return sum(samples(text, name, **labels).values())


async def admin(http: aiohttp.ClientSession, server: SimServer, path: str) -> dict[str, Any]:
    method = http.get if path == "replicas" else http.post
    async with method(f"{root(server)}/admin/{path}", timeout=TIMEOUT) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def status_of(fleet_status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in fleet_status["replicas"] if r["name"] == name)


# -- routers, live ----------------------------------------------------------------------------


async def test_round_robin_spreads_requests_over_every_replica_in_turn(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=4)

    answers = [await chat(http, server) for _ in range(8)]

    assert [a.replica for a in answers] == ["r0", "r1", "r2", "r3"] * 2
    assert all(a.status == 200 and a.token is None for a in answers)
    text = await metrics(http, server)
    for i in range(4):
        decided = total(
            text, "agentload_sim_router_decisions_total", replica=f"r{i}", engine=str(i)
        )
        assert decided == 2
    assert total(text, "agentload_sim_router_decisions_total", reason="rotation") == 8


async def test_a_single_server_names_no_replica_and_keeps_its_metrics_unlabelled(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    answer = await chat(http, sim, headers={"x-session-id": "s1"})

    assert (answer.status, answer.replica, answer.token) == (200, None, None)
    text = await metrics(http, sim)
    for absent in ('engine="', "replica=", "agentload_sim_router", "agentload_sim_replica"):
        assert absent not in text
    # Its own count of previous_response_id lookups, unlabelled, as a fleet's replicas keep.
    assert 'agentload_sim_response_lookups_total{result="not_found"} 0.0' in text


async def test_session_router_keeps_each_session_on_one_replica(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=4, router="session")

    seen: dict[str, set[str | None]] = {}
    for turn in range(3):
        for s in range(12):
            answer = await chat(http, server, f"turn {turn}", headers={"x-session-id": f"s{s}"})
            assert answer.replica is not None
            assert answer.token == base64.b64encode(answer.replica.encode()).decode()
            seen.setdefault(f"s{s}", set()).add(answer.replica)

    assert all(len(replicas) == 1 for replicas in seen.values())
    assert len(set().union(*seen.values())) >= 2  # the sessions are spread


async def test_session_router_honours_an_echoed_token_and_moves_a_lost_one(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=3, router="session")
    first = await chat(http, server, headers={"x-session-id": "alice"})
    other = next(f"r{i}" for i in range(3) if f"r{i}" != first.replica)

    # The token wins over the session's hash, as llm-d's session affinity does.
    pinned = await chat(
        http, server, headers={"x-session-id": "alice", "x-session-token": session_token(other)}
    )
    assert pinned.replica == other
    assert pinned.token == session_token(other)

    # Its replica gone, the session moves to the hash's choice among those left.
    await admin(http, server, f"replicas/{other}/remove")
    moved = await chat(
        http, server, headers={"x-session-id": "alice", "x-session-token": session_token(other)}
    )
    assert moved.status == 200
    assert moved.replica not in (other, None)
    text = await metrics(http, server)
    assert total(text, "agentload_sim_router_decisions_total", reason="token") == 1
    assert total(text, "agentload_sim_router_decisions_total", reason="token-lost") == 1


async def test_session_load_spreads_new_sessions_evenly_and_keeps_each_where_its_token_says(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=4, router="session-load")

    tokens: dict[str, str] = {}
    seen: dict[str, set[str | None]] = {}
    for turn in range(3):
        for s in range(12):
            headers = {"x-session-id": f"s{s}"}
            if f"s{s}" in tokens:  # the client echoes the token, as agentload's agents do
                headers["x-session-token"] = tokens[f"s{s}"]
            answer = await chat(http, server, f"turn {turn}", headers=headers)
            assert answer.replica is not None
            assert answer.token is not None
            tokens[f"s{s}"] = answer.token
            seen.setdefault(f"s{s}", set()).add(answer.replica)

    assert all(len(replicas) == 1 for replicas in seen.values())
    # Placed where load is least (all idle here, so in turn): three sessions each, where a
    # hash of 12 sessions over 4 replicas is rarely even.
    placed = Counter(next(iter(replicas)) for replicas in seen.values())
    assert sorted(placed.values()) == [3, 3, 3, 3]
    text = await metrics(http, server)
    assert total(text, "agentload_sim_router_decisions_total", reason="least-loaded") == 12
    assert total(text, "agentload_sim_router_decisions_total", reason="token") == 24


async def test_prefix_router_sends_a_request_to_the_replica_holding_its_prefix(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=4, router="prefix")
    prompts = [long_text(f"task{i}") for i in range(4)]
    homes = [(await chat(http, server, p)).replica for p in prompts]
    assert homes == ["r0", "r1", "r2", "r3"]  # nothing cached anywhere: ties go in turn

    for i in (2, 0, 3, 1):
        follow = await chat(http, server, prompts[i] + " and now the next step")
        assert follow.replica == homes[i]
        assert follow.cached > 0
    text = await metrics(http, server)
    assert total(text, "agentload_sim_router_decisions_total", reason="prefix") == 4
    assert total(text, "agentload_sim_router_decisions_total", reason="no-prefix") == 4


async def test_round_robin_loses_the_prefix_that_prefix_routing_keeps(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=2)  # round robin
    prompt = long_text("task")
    first = await chat(http, server, prompt)
    follow = await chat(http, server, prompt + " and now the next step")

    assert follow.replica != first.replica
    assert follow.cached == 0  # each replica has a prefix cache of its own


async def test_prefix_load_moves_away_from_an_overloaded_replica(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    # Requests stay in flight for 2 s each (50 ms steps, 40 tokens), routing takes ms.
    server = await start_sim(
        replicas=2,
        router="prefix-load",
        max_num_seqs=4,
        perf={"kind": "analytical", "decode_step_ms": 50},
    )
    prompt = long_text("shared")
    home = (await chat(http, server, prompt)).replica
    fleet = server.fleet

    async def slow(n: int) -> Answer:
        return await chat(http, server, prompt + f" variant {n}", max_tokens=40, ignore_eos=True)

    def in_flight() -> int:
        return sum(r.in_flight for r in fleet.replicas)

    tasks: list[asyncio.Task[Answer]] = []
    for n in range(6):
        tasks.append(asyncio.create_task(slow(n)))
        await until("the request routed", lambda: in_flight() > len(tasks) - 1)
    answers = await asyncio.gather(*tasks)

    placed = [a.replica for a in answers]
    # While its load stays below a full batch's worth of prefix, the replica holding the
    # prefix keeps its requests; past that, they move to the idle one.
    assert placed[0] == home
    assert any(r != home for r in placed)
    text = await metrics(http, server)
    assert total(text, "agentload_sim_router_decisions_total", reason="load") >= 1


# -- routers, as functions --------------------------------------------------------------------


@dataclass
class FakeReplica:
    name: str
    in_flight: int = 0
    cached: int = 0

    def cached_blocks(self, hashes: Any) -> int:
        return min(self.cached, len(hashes))


def fakes(n: int) -> list[FakeReplica]:
    return [FakeReplica(f"r{i}") for i in range(n)]


def test_least_loaded_picks_the_fewest_in_flight_and_shares_ties_in_turn() -> None:
    router = make_router(sim_config(replicas=3, router="least-loaded"))
    live = fakes(3)
    live[0].in_flight, live[1].in_flight, live[2].in_flight = 5, 1, 1
    picks = [router.choose(live, RouteRequest())[0].name for _ in range(4)]
    assert set(picks) == {"r1", "r2"}
    live[2].in_flight = 9
    assert router.choose(live, RouteRequest())[0].name == "r1"


def test_random_router_is_seeded() -> None:
    def picks(seed: int) -> list[str]:
        router = make_router(sim_config(replicas=4, router="random", seed=seed))
        return [router.choose(fakes(4), RouteRequest())[0].name for _ in range(40)]

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)
    assert set(picks(1)) == {"r0", "r1", "r2", "r3"}


def test_removing_a_replica_moves_only_the_sessions_it_held() -> None:
    router = make_router(sim_config(replicas=4, router="session"))
    live = fakes(4)
    sessions = [f"s{i}" for i in range(400)]
    before = {s: router.choose(live, RouteRequest(session=s))[0].name for s in sessions}
    after = {
        s: router.choose([r for r in live if r.name != "r1"], RouteRequest(session=s))[0].name
        for s in before
    }

    moved = {s for s in before if before[s] != after[s]}
    assert moved == {s for s in before if before[s] == "r1"}
    assert 60 < len(moved) < 140  # about a quarter
    assert rendezvous_score("s1", "r0") == rendezvous_score("s1", "r0")


def test_session_router_sends_every_session_less_request_to_one_replica() -> None:
    router = make_router(sim_config(replicas=4, router="session"))
    picks = {router.choose(fakes(4), RouteRequest())[0].name for _ in range(10)}
    assert len(picks) == 1


def test_session_load_places_a_request_without_a_token_on_the_least_loaded_replica() -> None:
    router = make_router(sim_config(replicas=3, router="session-load"))
    live = fakes(3)
    live[0].in_flight, live[1].in_flight, live[2].in_flight = 4, 1, 6
    for session in ("a", "b", "c"):  # whatever the session id hashes to
        assert router.choose(live, RouteRequest(session=session)) == (live[1], "least-loaded")


def test_session_load_follows_a_token_even_to_a_busy_replica_and_moves_a_lost_one() -> None:
    router = make_router(sim_config(replicas=3, router="session-load"))
    live = fakes(3)
    live[0].in_flight, live[1].in_flight, live[2].in_flight = 9, 1, 2
    assert router.choose(live, RouteRequest(session="a", token="r0")) == (live[0], "token")
    gone = RouteRequest(session="a", token="r7")
    assert router.choose(live, gone) == (live[1], "token-lost")


def test_prefix_router_prefers_the_longest_prefix_then_the_least_loaded() -> None:
    router = make_router(sim_config(replicas=3, router="prefix"))
    live = fakes(3)
    hashes = list(range(10))
    live[0].cached, live[1].cached, live[2].cached = 3, 7, 7
    live[1].in_flight = 2
    assert router.choose(live, RouteRequest(hashes=hashes)) == (live[2], "prefix")


def test_prefix_load_trades_cached_fraction_against_load_with_its_weight() -> None:
    hashes = list(range(10))

    def choose(weight: float, in_flight: int) -> tuple[str, str]:
        router = make_router(
            sim_config(replicas=2, router="prefix-load", max_num_seqs=4, prefix_load_weight=weight)
        )
        holder, idle = FakeReplica("r0", in_flight=in_flight, cached=10), FakeReplica("r1")
        replica, reason = router.choose([holder, idle], RouteRequest(hashes=hashes))
        return replica.name, reason

    # score = cached fraction - weight x in flight / max_num_seqs
    assert choose(1.0, 3) == ("r0", "prefix")  # 1 - 0.75 > 0
    assert choose(1.0, 4) == ("r1", "load")  # 1 - 1.0 = 0: a tie goes to the less loaded
    assert choose(0.5, 7) == ("r0", "prefix")  # 1 - 0.875 > 0
    assert choose(0.0, 100) == ("r0", "prefix")  # weight 0: the prefix router
    assert choose(4.0, 1) == ("r1", "load")


# -- Responses stores ---------------------------------------------------------------------------


async def test_a_chain_routed_to_another_replica_finds_no_previous_response(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=2)  # round robin, a store each
    first = await respond(http, server)
    assert (first.status, first.replica) == (200, "r0")

    lost = await respond(http, server, first.body["id"])
    kept = await respond(http, server, first.body["id"])

    assert (lost.status, lost.replica) == (404, "r1")
    assert lost.body["error"]["param"] == "previous_response_id"
    assert "not found" in lost.body["error"]["message"]
    assert (kept.status, kept.replica) == (200, "r0")
    text = await metrics(http, server)
    lookups = "agentload_sim_response_lookups_total"
    assert total(text, lookups, replica="r1", result="not_found") == 1
    assert total(text, lookups, replica="r0", result="found") == 1
    assert total(text, lookups, result="not_found") == 1


async def test_a_shared_store_keeps_chains_whatever_replica_serves_them(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=3, shared_store=True)
    answer = await respond(http, server)
    replicas = {answer.replica}
    for _ in range(4):
        answer = await respond(http, server, answer.body["id"])
        assert answer.status == 200
        replicas.add(answer.replica)

    assert replicas == {"r0", "r1", "r2"}
    text = await metrics(http, server)
    assert total(text, "agentload_sim_response_lookups_total", result="not_found") == 0


async def test_session_routing_keeps_a_chain_on_the_replica_holding_it(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=4, router="session")
    headers = {"x-session-id": "bob"}
    answer = await respond(http, server, headers=headers)
    for _ in range(5):
        answer = await respond(http, server, answer.body["id"], headers=headers)
        assert answer.status == 200


# -- removal and restore --------------------------------------------------------------------------


async def test_removing_a_replica_loses_its_kv_and_store_and_restore_brings_it_back_empty(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=2, router="session")
    headers = {"x-session-id": "carol"}
    first = await respond(http, server, headers=headers)
    name = first.replica
    assert name is not None
    await chat(http, server, long_text("carol"), headers=headers)
    held = status_of(await admin(http, server, "replicas"), name)
    assert (held["up"], held["stored_responses"]) == (True, 1)
    assert held["cached_blocks"] > 0

    removed = await admin(http, server, f"replicas/{name}/remove")
    assert removed == {"replica": name, "up": False, "changed": True}
    assert (await admin(http, server, f"replicas/{name}/remove"))["changed"] is False
    out = status_of(await admin(http, server, "replicas"), name)
    assert (out["up"], out["stored_responses"], out["cached_blocks"]) == (False, 0, 0)

    # The session's next step lands on the replica left, which never held its chain.
    headers["x-session-token"] = first.token or ""
    lost = await respond(http, server, first.body["id"], headers=headers)
    assert lost.status == 404
    assert lost.replica != name

    restored = await admin(http, server, f"replicas/{name}/restore")
    assert restored == {"replica": name, "up": True, "changed": True}
    back = status_of(await admin(http, server, "replicas"), name)
    assert (back["up"], back["stored_responses"], back["cached_blocks"]) == (True, 0, 0)
    gone = await respond(
        http, server, first.body["id"], headers={"x-session-token": first.token or ""}
    )
    assert (gone.status, gone.replica) == (404, name)  # back, but empty
    text = await metrics(http, server)
    assert total(text, "agentload_sim_replica_removals_total", replica=name, cause="admin") == 1
    assert total(text, "agentload_sim_replica_up", replica=name) == 1


async def test_requests_in_flight_on_a_removed_replica_fail_as_a_crash_would(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(
        replicas=2, router="session", perf={"kind": "analytical", "decode_step_ms": 50}
    )
    target = (await chat(http, server, headers={"x-session-id": "dave"})).replica
    headers = {"x-session-id": "dave"}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "a long answer please"}],
        "max_tokens": 400,
        "ignore_eos": True,
    }
    url = f"{server.base_url}/chat/completions"

    async def stream() -> tuple[str | None, bool, bool]:
        async with http.post(
            url, json={**body, "stream": True}, headers=headers, timeout=TIMEOUT
        ) as resp:
            done, cut = False, False
            try:
                async for line in resp.content:
                    done = done or line.strip() == b"data: [DONE]"
            except aiohttp.ClientPayloadError:
                cut = True
            return resp.headers.get("x-agentload-replica"), done, cut

    async def whole() -> tuple[int, str | None]:
        async with http.post(url, json=body, headers=headers, timeout=TIMEOUT) as resp:
            return resp.status, resp.headers.get("x-agentload-replica")

    streaming, plain = asyncio.create_task(stream()), asyncio.create_task(whole())
    replica = server.fleet.replica(target or "")
    assert replica is not None
    engine = replica.context.engine
    await until("both requests running", lambda: engine.steps >= 3 and len(engine.running) == 2)
    await admin(http, server, f"replicas/{target}/remove")

    name, done, _cut = await streaming
    assert name == target
    assert not done  # cut before its end: no [DONE]
    assert await plain == (503, target)
    text = await metrics(http, server)
    assert total(text, "agentload_sim_replica_lost_requests_total", replica=target or "") == 2


async def test_with_every_replica_out_requests_get_503(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=2)
    for name in ("r0", "r1"):
        await admin(http, server, f"replicas/{name}/remove")
    answer = await chat(http, server)
    assert (answer.status, answer.replica) == (503, None)
    assert "no healthy upstream" in answer.body["error"]["message"]
    await admin(http, server, "replicas/1/restore")  # by number too
    assert (await chat(http, server)).replica == "r1"


async def test_the_crash_fault_removes_replicas_and_brings_them_back(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=2, faults={"replica_crash": 1.0, "replica_restore_s": 0.2})

    async def crashed_twice() -> bool:
        return total(await metrics(http, server), "agentload_sim_replica_removals_total") >= 2

    await until("two crashes", crashed_twice)
    await until("both back", lambda: all(r.up for r in server.fleet.replicas))
    text = await metrics(http, server)
    crashes = total(text, "agentload_sim_replica_removals_total", cause="crash")
    assert crashes == total(text, "agentload_sim_faults_injected_total", fault="replica_crash")
    assert total(text, "agentload_sim_replica_removals_total", cause="admin") == 0


class _Peer:
    def __init__(self, remote: str, app: Any) -> None:
        self.remote = remote
        self.app = app
        self.match_info = {"replica": "r0"}


async def test_admin_answers_loopback_clients_only_unless_told(start_sim: StartSim) -> None:
    server = await start_sim(replicas=2)
    app = {FLEET: server.fleet}
    for remote in ("127.0.0.1", "::1"):
        assert _admin_replica(_Peer(remote, app))[1].name == "r0"  # type: ignore[arg-type]
    with pytest.raises(Exception, match="loopback") as refused:
        _admin_replica(_Peer("10.1.2.3", app))  # type: ignore[arg-type]
    assert getattr(refused.value, "status", None) == 403

    remote_ok = await start_sim(replicas=2, admin_remote=True)
    assert _admin_replica(_Peer("10.1.2.3", {FLEET: remote_ok.fleet}))[1].name == "r0"  # type: ignore[arg-type]


# -- /metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["vllm", "sglang", "llamacpp"])
async def test_every_engine_metric_is_labelled_by_engine_and_replica(
    start_sim: StartSim, http: aiohttp.ClientSession, dialect: str
) -> None:
    server = await start_sim(replicas=3, metrics_dialect=dialect)
    for _ in range(3):
        await chat(http, server)
    text = await metrics(http, server)

    prefix = {"vllm": "vllm:", "sglang": "sglang:", "llamacpp": "llamacpp:"}[dialect]
    engine_samples = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    ]
    assert engine_samples
    for s in engine_samples:
        assert s.labels["replica"] == f"r{s.labels['engine']}", s
    engines = {s.labels["engine"] for s in engine_samples}
    assert engines == {"0", "1", "2"}
    # One HELP/TYPE per family: the replicas' samples are merged, not repeated.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    for name in ("agentload_sim_replica_up", "agentload_sim_router_in_flight"):
        assert total(text, name) == (3 if name.endswith("up") else 0)


async def test_token_counters_sum_over_the_engines_to_what_clients_saw(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(replicas=3)
    answers = [await chat(http, server, long_text(f"t{i}", 20 * i)) for i in range(1, 7)]
    text = await metrics(http, server)
    prompt = sum(a.body["usage"]["prompt_tokens"] for a in answers)
    assert total(text, "vllm:prompt_tokens_total") == prompt
    per_engine = samples(text, "vllm:prompt_tokens_total")
    assert len(per_engine) == 3
    assert all(v > 0 for v in per_engine.values())


# -- configuration ------------------------------------------------------------------------------


def test_fleet_flags_set_the_config() -> None:
    args = build_parser().parse_args(
        [
            "sim", "--replicas", "4", "--router", "prefix-load", "--shared-store",
            "--prefix-load-weight", "0.5", "--fault-replica-crash", "0.01",
            "--replica-restore", "10s", "--admin-remote", "--decode-step-ms", "20",
            "--max-num-seqs", "64",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.replicas, config.router, config.shared_store) == (4, "prefix-load", True)
    assert (config.prefix_load_weight, config.admin_remote) == (0.5, True)
    assert (config.faults.replica_crash, config.faults.replica_restore_s) == (0.01, 10.0)
    assert config.output_tokens_per_s_ceiling() == 4 * 64 / 0.02
    assert fleet_description(config) == (
        "fleet of 4 replicas behind the prefix-load router at weight 0.5, one shared Responses "
        "store, replicas crash at 0.01/s and come back after 10 s"
    )
    default = config_from_args(build_parser().parse_args(["sim"]))
    assert (default.replicas, default.router, default.shared_store) == (1, "round-robin", False)


def test_a_router_without_replicas_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--replicas"):
        config_from_args(build_parser().parse_args(["sim", "--router", "session"]))


def test_profiles_sim_mapping_takes_the_fleet_fields() -> None:
    config = profile_sim_config({"replicas": 4, "router": "session", "shared_store": True})
    assert (config.replicas, config.router, config.shared_store) == (4, "session", True)
    with pytest.raises(ConfigError, match=r"^profile sim\.router: "):
        profile_sim_config({"replicas": 4, "router": "sticky"})
    with pytest.raises(ConfigError, match=r"^profile sim\.replicas: "):
        profile_sim_config({"replicas": 0})
