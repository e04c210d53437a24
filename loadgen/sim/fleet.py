"""A simulated fleet: N replicas behind one router, in one process (docs/fleets.md).

Each replica is a whole engine of its own (SimContext: batch, waiting queue, paged KV cache
with its prefix cache, metrics) with its own Responses store, or one store shared by all
(`shared_store`, as deployments with an external state store have). Every generation request
goes through the router (router.py), which picks a live replica; the response names it in
`x-agentload-replica`, and under the `session` and `session-load` routers carries the
`x-session-token` the client echoes.

A replica can be removed (POST /admin/replicas/{id}/remove, or the replica_crash fault) and
restored: removal loses what it held. Its queued and running requests fail (a 503 before the
reply starts; a stream already open is cut), its KV cache and prefix cache are emptied, and
its Responses store (unless shared) is dropped, so a chain continued anywhere later gets
"previous response not found". It comes back empty.

With one replica (the default) the simulator is a plain single server: no replica header,
no token, and /metrics exactly as before. With several, every engine metric carries
`engine="0"`.. (as vLLM labels its data-parallel engines) and `replica="r0"`.., and the
fleet's own families are added: the router's decisions, removals, lost requests, replicas
up. Each replica counts its previous_response_id lookups found or not (server_state_lost,
counted exactly), as a single server does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric

from loadgen.background import cancel_and_wait
from loadgen.sim.api_errors import ApiError
from loadgen.sim.config import SimConfig
from loadgen.sim.generation import SimContext
from loadgen.sim.metric_dialects import TextRow
from loadgen.sim.prompt import PromptInfo, analyse_long_prompt
from loadgen.sim.reply import reply_seed
from loadgen.sim.response_store import ResponseStore
from loadgen.sim.router import SESSION_HEADER, TOKEN_HEADER, RouteRequest, make_router

__all__ = [
    "FLEET",
    "REPLICA_HEADER",
    "ROUTED_HEADER",
    "Fleet",
    "Replica",
    "ReplicaRows",
    "merge_families",
    "render_families",
    "router_decisions",
    "session_token",
    "sim_fleet",
    "token_replica",
]

REPLICA_HEADER = "x-agentload-replica"


def session_token(replica: str) -> str:
    """The x-session-token naming `replica`: its name in base64, as llm-d encodes its pod's."""
    return base64.b64encode(replica.encode()).decode()


def token_replica(token: str | None) -> str | None:
    """The replica an echoed token names (a base64 name, or a bare one)."""
    if token is None:
        return None
    try:
        return base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return token


class Replica:
    """One engine of the fleet and what the router keeps about it."""

    def __init__(self, index: int, context: SimContext) -> None:
        self.index = index
        self.name = context.name
        self.context = context
        self.in_flight = 0
        self.restore_task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """In service (not removed)."""
        return self.context.up

    def cached_blocks(self, hashes: Sequence[int]) -> int:
        """Leading blocks of `hashes` in this replica's prefix cache."""
        return self.context.engine.kv.cached_prefix(hashes)

    def status(self) -> dict[str, Any]:
        """What GET /admin/replicas shows of it."""
        engine = self.context.engine
        return {
            "name": self.name,
            "engine": str(self.index),
            "up": self.up,
            "in_flight": self.in_flight,
            "running": len(engine.running),
            "waiting": len(engine.waiting),
            "kv_cache_usage": engine.kv.usage(),
            "cached_blocks": engine.kv.num_blocks - engine.kv.free_blocks,
            "stored_responses": len(self.context.store),
        }


def _reader(replica: Replica, attribute: str) -> Callable[[], float]:
    return lambda: float(getattr(replica, attribute))


def router_decisions(registry: CollectorRegistry) -> Counter:
    """The router's decisions family: requests sent to each replica, by reason."""
    return Counter(
        "agentload_sim_router_decisions",
        "Requests the router sent to each replica, by router and reason.",
        ["router", "engine", "replica", "reason"],
        registry=registry,
    )


class _FleetMetrics:
    """The fleet's own families, beside the replicas' engine metrics."""

    def __init__(self, router: str, replicas: Sequence[Replica]) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        labels = ["engine", "replica"]
        self._router = router
        self.decisions = router_decisions(r)
        self.removals = Counter(
            "agentload_sim_replica_removals",
            "Times a replica was taken out (admin) or crashed (fault), losing what it held.",
            [*labels, "cause"],
            registry=r,
        )
        self.lost = Counter(
            "agentload_sim_replica_lost_requests",
            "Requests that failed because their replica was removed while they ran.",
            labels,
            registry=r,
        )
        up = Gauge(
            "agentload_sim_replica_up", "1 while a replica is in service.", labels, registry=r
        )
        in_flight = Gauge(
            "agentload_sim_router_in_flight",
            "Requests the router has in flight on each replica.",
            labels,
            registry=r,
        )
        for replica in replicas:
            ids = (str(replica.index), replica.name)
            up.labels(*ids).set_function(_reader(replica, "up"))
            in_flight.labels(*ids).set_function(_reader(replica, "in_flight"))
            self.lost.labels(*ids)
            for cause in ("admin", "crash"):  # at 0 from the start: a first removal is a rate
                self.removals.labels(*ids, cause)

    def decision(self, replica: Replica, reason: str) -> None:
        self.decisions.labels(self._router, str(replica.index), replica.name, reason).inc()


class _Families:
    """A collector yielding families already merged (for generate_latest)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class Fleet:
    """The replicas, the router, and the fault that crashes replicas.

    In a sharded fleet (fleet_front.py) a shard process holds the replicas numbered
    `indexes` and serves requests the front has routed (`front_routed`): each names its
    replica in ROUTED_HEADER, and `on_up_change` tells the front when one goes or comes.
    """

    def __init__(
        self,
        config: SimConfig,
        indexes: Sequence[int] | None = None,
        *,
        front_routed: bool = False,
    ) -> None:
        self.config = config
        self.labelled = config.replicas > 1
        self.front_routed = front_routed
        self.on_up_change: Callable[[Replica], None] | None = None
        shared = None
        if config.shared_store:
            shared = ResponseStore(
                config.responses_store_capacity, config.wall_s(config.responses_store_ttl_s)
            )
        self.shared_store = shared
        self.replicas: list[Replica] = []
        for i in range(config.replicas) if indexes is None else indexes:
            labels = {"engine": str(i), "replica": f"r{i}"} if self.labelled else None
            context = SimContext(config, name=f"r{i}", index=i, store=shared, labels=labels)
            self.replicas.append(Replica(i, context))
        self.router = make_router(config)
        self.metrics: _FleetMetrics | None = None
        if self.labelled:
            self.metrics = m = _FleetMetrics(config.router, self.replicas)
            for replica in self.replicas:
                replica.context.on_lost = m.lost.labels(str(replica.index), replica.name).inc
        self._crash_task: asyncio.Task[None] | None = None

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every engine (and the crash fault, when it is on)."""
        for replica in self.replicas:
            if replica.up:
                replica.context.engine.start()
        if self.config.faults.replica_crash > 0 and self._crash_task is None:
            first = self.replicas[0].index  # each shard its own draws; one process as before
            self._crash_task = asyncio.get_running_loop().create_task(
                self._crashes(first), name="sim-replica-crashes"
            )

    async def stop(self) -> None:
        """End the crash fault, pending restores and every engine."""
        task, self._crash_task = self._crash_task, None
        await cancel_and_wait(task)
        for replica in self.replicas:
            pending, replica.restore_task = replica.restore_task, None
            await cancel_and_wait(pending)
            await replica.context.engine.stop()

    def live(self) -> list[Replica]:
        """Replicas in service."""
        return [r for r in self.replicas if r.up]

    def replica(self, ident: str) -> Replica | None:
        """The replica called `ident` (r2) or numbered so (2)."""
        for replica in self.replicas:
            if ident in (replica.name, str(replica.index)):
                return replica
        return None

    # -- routing -------------------------------------------------------------------------------

    def check_model(self, model: str) -> None:
        """404 for a model the fleet does not serve."""
        self.replicas[0].context.check_model(model)

    async def route(
        self, request: web.Request, text: str | Callable[[], str]
    ) -> tuple[SimContext, PromptInfo | None]:
        """The replica that serves `request` (its prompt `text`, or a function making it), and
        the prompt analysed when the router needed its block hashes."""
        if self.front_routed:
            return self._routed_by_front(request), None
        prompt = None
        live = self.live()
        if live and self.router.needs_prefix and len(self.replicas) > 1:
            cfg = self.config
            prompt_text = text if isinstance(text, str) else text()
            prompt = await analyse_long_prompt(
                prompt_text, cfg.block_size, cfg.max_model_len, stable=cfg.stable_hashes
            )
            live = self.live()  # the analysis yields to the loop: a replica may have gone
        if not live:
            raise ApiError(503, "no healthy upstream: every replica is out of service.")
        if len(self.replicas) == 1:
            replica = live[0]
        else:
            headers = request.headers
            route = RouteRequest(
                session=headers.get(SESSION_HEADER),
                token=token_replica(headers.get(TOKEN_HEADER)),
                hashes=prompt.block_hashes if prompt is not None else [],
            )
            replica, reason = self.router.choose(live, route)
            if self.metrics is not None:
                self.metrics.decision(replica, reason)
        request[ROUTED] = replica
        replica.in_flight += 1
        return replica.context, prompt

    def _routed_by_front(self, request: web.Request) -> SimContext:
        replica = self.replica(request.headers.get(ROUTED_HEADER, ""))
        if replica is None or not replica.up:
            # Taken out between the front's choice and now, as a pod is under a gateway.
            raise ApiError(503, "no healthy upstream: the replica routed to is out of service.")
        request[ROUTED] = replica
        replica.in_flight += 1
        return replica.context

    def answered(self, request: web.Request) -> None:
        """The handler of a routed request returned (or failed): it is no longer in flight."""
        replica = request.get(ROUTED)
        if replica is not None:
            replica.in_flight -= 1

    def name_replica(self, request: web.Request, response: web.StreamResponse) -> None:
        """Headers naming the replica that served `request` (a fleet's only)."""
        replica = request.get(ROUTED)
        if replica is None or not self.labelled:
            return
        response.headers[REPLICA_HEADER] = replica.name
        if self.config.router in ("session", "session-load"):
            response.headers[TOKEN_HEADER] = session_token(replica.name)

    # -- removal -----------------------------------------------------------------------------

    async def remove(self, replica: Replica, cause: str = "admin") -> bool:
        """Take `replica` out: its requests fail, its KV and (own) store are lost; False if
        it was already out."""
        if not replica.up:
            return False
        replica.context.up = False
        if self.metrics is not None:
            self.metrics.removals.labels(str(replica.index), replica.name, cause).inc()
        await replica.context.engine.crash()
        if self.shared_store is None:
            replica.context.store = replica.context.new_store()
        if self.on_up_change is not None:
            self.on_up_change(replica)
        return True

    def restore(self, replica: Replica) -> bool:
        """Put `replica` back in service, empty; False if it was in service."""
        pending, replica.restore_task = replica.restore_task, None
        if pending is not None and pending is not asyncio.current_task():
            pending.cancel()
        if replica.up:
            return False
        replica.context.up = True
        replica.context.engine.start()
        if self.on_up_change is not None:
            self.on_up_change(replica)
        return True

    async def _crashes(self, first: int) -> None:
        """The replica_crash fault: each (modelled) second, each live replica crashes with its
        rate."""
        faults = self.config.faults
        seed = reply_seed("replica-crash", self.config.seed)
        rng = random.Random(seed if first == 0 else reply_seed("replica-crash", seed, first))
        while True:
            await asyncio.sleep(self.config.wall_s(1.0))
            for replica in self.replicas:
                if replica.up and rng.random() < faults.replica_crash:
                    replica.context.metrics.fault("replica_crash")
                    await self.remove(replica, "crash")
                    if faults.replica_restore_s > 0:
                        replica.restore_task = asyncio.get_running_loop().create_task(
                            self._restore_later(
                                replica, self.config.wall_s(faults.replica_restore_s)
                            )
                        )

    async def _restore_later(self, replica: Replica, delay: float) -> None:
        await asyncio.sleep(delay)
        self.restore(replica)

    # -- /metrics ------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """/metrics: a single server's as ever; a fleet's replicas merged, family by family."""
        if not self.labelled or self.metrics is None:
            replica = self.replicas[0]
            replica.context.metrics.scraped(replica.context.engine)
            return replica.context.metrics.exposition()
        return render_families(self.families(), self.text_rows())

    def families(self) -> list[Metric]:
        """A fleet's metric families, its replicas' samples merged under each name."""
        for replica in self.replicas:
            replica.context.metrics.scraped(replica.context.engine)
        registries = [r.context.metrics.registry for r in self.replicas]
        if self.metrics is not None:
            registries.append(self.metrics.registry)
        return merge_families(family for registry in registries for family in registry.collect())

    def text_rows(self) -> list[ReplicaRows]:
        """Each replica's samples that its dialect renders itself (llama.cpp's)."""
        return [(r.index, r.name, r.context.metrics.text_rows()) for r in self.replicas]


# A replica's index, name, and its rows in llama.cpp's names.
ReplicaRows = tuple[int, str, list[TextRow]]


def merge_families(families: Iterable[Metric]) -> list[Metric]:
    """One family per name, holding the samples of every family of that name."""
    merged: dict[str, Metric] = {}
    for family in families:
        into = merged.get(family.name)
        if into is None:
            into = merged[family.name] = Metric(
                family.name, family.documentation, family.type, family.unit
            )
        into.samples.extend(family.samples)
    return list(merged.values())


def render_families(families: Iterable[Metric], rows: Sequence[ReplicaRows]) -> bytes:
    """The exposition text of merged `families` and the self-rendered `rows`."""
    return _text_rows(rows) + generate_latest(_Families(families))


def _text_rows(per_replica: Sequence[ReplicaRows]) -> bytes:
    """The samples a dialect renders itself (llama.cpp's), merged under one HELP/TYPE."""
    if not per_replica or not per_replica[0][2]:
        return b""
    lines: list[str] = []
    for j, (kind, name, doc, _value) in enumerate(per_replica[0][2]):
        lines += [f"# HELP llamacpp:{name} {doc}", f"# TYPE llamacpp:{name} {kind}"]
        for index, replica, rows in per_replica:
            labels = f'{{engine="{index}",replica="{replica}"}}'
            lines.append(f"llamacpp:{name}{labels} {rows[j][3]!r}")
    return ("\n".join(lines) + "\n").encode()


FLEET: web.AppKey[Fleet] = web.AppKey("sim_fleet", Fleet)
# The replica a sharded fleet's front chose, on the request it hands to that replica's shard.
ROUTED_HEADER = "x-agentload-routed"
ROUTED: web.RequestKey[Replica] = web.RequestKey("sim_replica", Replica)


def sim_fleet(request: web.Request) -> Fleet:
    """The fleet serving `request`."""
    return request.app[FLEET]
