"""A fleet spread over processes: one router in front, the replicas in shard processes
(docs/fleets.md, "Larger fleets").

One process streams about 55k tokens/s (bench/sim_fleet.py); a larger fleet needs more cores.
With `processes` P > 1 the replicas r0..r{N-1} are dealt over P shard processes
(fleet_shard.py), replica i to shard i mod P, and this process is the front: it listens on
the fleet's address, reads each request (head and body, never the reply), lets the same
router as the one-process fleet choose among all live replicas, and hands the client's
connection itself to the shard holding that replica (SCM_RIGHTS over a Unix socket,
fleet_channel.py). The shard serves the request on it and closes it after the reply, so the
client's next request comes back here to be routed. Streams never pass through the front,
so its cost is per request, not per token.

What the router knows is the front's own: requests in flight per replica (routed here, ended
when the shard says the connection closed), replicas up (the shards say when one is removed,
crashes or is restored), and for the prefix routers each live replica's cached prefix of the
request, asked of the shards with block hashes that are the same in every process
(chain_block_hashes' `stable`). /metrics merges every shard's families under one name each,
with the router's decisions counted here; GET /admin/replicas lists every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from loadgen.errors import AgentloadError
from loadgen.sim.api_errors import error_body
from loadgen.sim.config import SimConfig
from loadgen.sim.fleet import (
    ROUTED_HEADER,
    ReplicaRows,
    merge_families,
    render_families,
    router_decisions,
    token_replica,
)
from loadgen.sim.fleet_channel import Channel, Frame
from loadgen.sim.fleet_requests import ClientConnection, FrontRequest, prompt_text, routed
from loadgen.sim.prompt import analyse_long_prompt
from loadgen.sim.router import SESSION_HEADER, TOKEN_HEADER, RouteRequest, make_router

__all__ = ["FleetFront", "ShardStartError"]

log = logging.getLogger("agentload.sim")

_SHARD_START_S = 60.0
_SHARD_STOP_S = 5.0
_DROPPED_HEADERS = {ROUTED_HEADER, "expect"}  # the front's to set; the front answers Expect


class ShardStartError(AgentloadError):
    """A shard process of a fleet spread over processes did not start."""


@dataclass(eq=False)
class _RemoteReplica:
    """What the front knows of a replica in a shard: where it is, whether up, its load."""

    index: int
    name: str
    shard: _Shard
    up: bool = True
    in_flight: int = 0


@dataclass(eq=False)
class _Shard:
    """A shard process, its replicas and the channel to it."""

    number: int
    process: asyncio.subprocess.Process
    channel: Channel
    ready: asyncio.Future[None]  # done when the shard says it serves
    replicas: list[_RemoteReplica] = field(default_factory=list)


@dataclass(slots=True)
class _View:
    """A replica as the router sees it for one request: with that request's cached prefix."""

    replica: _RemoteReplica
    cached: int

    @property
    def name(self) -> str:
        return self.replica.name

    @property
    def in_flight(self) -> int:
        return self.replica.in_flight

    def cached_blocks(self, hashes: Sequence[int]) -> int:
        return self.cached


class FleetFront:
    """A fleet of `config.replicas` replicas over `config.processes` shard processes,
    served on host:port (port 0 picks a free one); use as an async context."""

    def __init__(self, config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.router = make_router(config)
        self.registry = CollectorRegistry(auto_describe=True)
        self._decisions = router_decisions(self.registry)
        self.shards: list[_Shard] = []
        self.replicas: list[_RemoteReplica] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unrouted = itertools.count()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in /v1."""
        return f"http://{self.host}:{self.port}/v1"

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the shards, then listen; afterwards `port` holds the real port."""
        try:
            count = self.config.processes
            for number in range(count):
                await self._start_shard(number, list(range(number, self.config.replicas, count)))
            await asyncio.gather(*(self._wait_ready(shard) for shard in self.shards))
            self.replicas.sort(key=lambda r: r.index)
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: ClientConnection(self.config.max_body_bytes, self.dispatch),
                self.host,
                self.port,
                backlog=4096,
            )
        except BaseException:
            await self.stop()
            raise
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def _start_shard(self, number: int, indexes: list[int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "loadgen.sim.fleet_shard",
                str(theirs.fileno()),
                ",".join(map(str, indexes)),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        # The channel reads on the loop's later turns, by when `shard` is bound.
        channel = Channel(ours, lambda frame: self._on_frame(shard, frame))
        shard = _Shard(number, process, channel, loop.create_future())
        self.shards.append(shard)  # from here stop() reaps it, whatever fails next
        shard.replicas = [_RemoteReplica(i, f"r{i}", shard) for i in indexes]
        self.replicas += shard.replicas
        watch = loop.create_task(self._watch(shard))
        self._tasks.add(watch)
        watch.add_done_callback(self._tasks.discard)
        assert process.stdin is not None
        process.stdin.write(self.config.model_dump_json().encode())
        await process.stdin.drain()
        process.stdin.close()

    async def _watch(self, shard: _Shard) -> None:
        """A shard whose channel closed is gone, and its replicas with it."""
        await shard.channel.closed.wait()
        for replica in shard.replicas:
            replica.up = False

    async def _wait_ready(self, shard: _Shard) -> None:
        ended: asyncio.Future[Any] = asyncio.ensure_future(shard.process.wait())
        done, _ = await asyncio.wait(
            [shard.ready, ended], timeout=_SHARD_START_S, return_when=asyncio.FIRST_COMPLETED
        )
        ended.cancel()
        if shard.ready not in done:
            code = shard.process.returncode
            why = f"not ready in {_SHARD_START_S:g} s" if code is None else f"exited with {code}"
            raise ShardStartError(f"the fleet's shard process {shard.number} {why}")

    async def stop(self) -> None:
        """Stop listening, then stop every shard (killed if it does not end in 5 s)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for shard in self.shards:
            with contextlib.suppress(ConnectionError, OSError):
                await shard.channel.send({"op": "stop"})
        for shard in self.shards:
            try:
                await asyncio.wait_for(shard.process.wait(), _SHARD_STOP_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    shard.process.kill()
                await shard.process.wait()
            shard.channel.close()
        self.shards = []
        self.replicas = []

    async def __aenter__(self) -> FleetFront:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what the shards say -------------------------------------------------------------------

    def _on_frame(self, shard: _Shard, frame: Frame) -> None:
        op = frame.header.get("op")
        if op == "done":
            replica = self._replica(frame.header["replica"])
            if replica is not None and replica.in_flight > 0:
                replica.in_flight -= 1
        elif op == "up":
            replica = self._replica(frame.header["replica"])
            if replica is not None:
                replica.up = bool(frame.header["up"])
        elif op == "ready" and not shard.ready.done():
            shard.ready.set_result(None)

    def _replica(self, ident: str) -> _RemoteReplica | None:
        return next((r for r in self.replicas if ident in (r.name, str(r.index))), None)

    # -- requests ------------------------------------------------------------------------------

    def dispatch(self, client: ClientConnection, request: FrontRequest) -> None:
        """Answer `request` or hand it on, in a task of its own."""
        task = asyncio.get_running_loop().create_task(self._dispatch_or_500(client, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch_or_500(self, client: ClientConnection, request: FrontRequest) -> None:
        try:
            await self._dispatch(client, request)
        except Exception:
            # As the one-process fleet's error middleware: logged, answered, serving on.
            log.exception("unexpected error routing %s %s", request.method, request.path)
            client.reply(500, error_body(500, "Internal server error."))

    async def _dispatch(self, client: ClientConnection, request: FrontRequest) -> None:
        path = request.path
        if path.startswith("/admin/") and not (client.loopback() or self.config.admin_remote):
            message = "/admin answers loopback clients only (agentload sim --admin-remote)."
            client.reply(403, error_body(403, message))
        elif request.method == "GET" and path == "/metrics":
            body = await self._exposition()
            client.reply(200, body, "text/plain; version=0.0.4; charset=utf-8")
        elif request.method == "GET" and path == "/admin/replicas":
            client.reply(200, orjson.dumps(await self._status()))
        elif path.startswith("/admin/replicas/"):
            ident = path.split("/")[3]
            replica = self._replica(ident)
            if replica is None:
                names = ", ".join(r.name for r in self.replicas)
                message = f"no replica {ident!r}; the fleet has {names}"
                client.reply(404, error_body(404, message))
            else:
                await self._hand_over(client, request, replica.shard, None)
        elif routed(request):
            chosen = await self._route(request)
            if chosen is None:
                message = "no healthy upstream: every replica is out of service."
                client.reply(503, error_body(503, message))
            else:
                await self._hand_over(client, request, chosen.shard, chosen)
        else:  # /v1/models, /health, and what no route serves: any shard answers as one would
            live = [s for s in self.shards if not s.channel.closed.is_set()]
            if not live:
                client.reply(503, error_body(503, "no healthy upstream: every shard is gone."))
            else:
                await self._hand_over(client, request, live[next(self._unrouted) % len(live)])

    async def _route(self, request: FrontRequest) -> _RemoteReplica | None:
        hashes: list[int] = []
        if self.router.needs_prefix and self.replicas:
            cfg = self.config
            prompt = await analyse_long_prompt(
                prompt_text(request), cfg.block_size, cfg.max_model_len, stable=cfg.stable_hashes
            )
            hashes = prompt.block_hashes
        cached = await self._cached(hashes) if hashes else {}
        live = [r for r in self.replicas if r.up]  # after the questions: one may have gone
        if not live:
            return None
        route = RouteRequest(
            session=request.headers.get(SESSION_HEADER),
            token=token_replica(request.headers.get(TOKEN_HEADER)),
            hashes=hashes,
        )
        view, reason = self.router.choose([_View(r, cached.get(r.name, 0)) for r in live], route)
        replica = view.replica
        self._decisions.labels(self.config.router, str(replica.index), replica.name, reason).inc()
        replica.in_flight += 1
        return replica

    async def _cached(self, hashes: list[int]) -> dict[str, int]:
        """Each live replica's cached prefix of `hashes` (its shard's prefix cache asked)."""
        shards = {r.shard.number: r.shard for r in self.replicas if r.up}
        answers = await asyncio.gather(
            *(self._ask(shard, {"op": "cached", "hashes": hashes}) for shard in shards.values())
        )
        cached: dict[str, int] = {}
        for answer in answers:
            if answer is not None:
                cached.update(answer.header.get("cached", {}))
        return cached

    async def _ask(self, shard: _Shard, question: dict[str, Any]) -> Frame | None:
        if shard.channel.closed.is_set():
            return None
        try:
            return await shard.channel.ask(question)
        except (ConnectionError, OSError, TimeoutError):
            return None

    async def _hand_over(
        self,
        client: ClientConnection,
        request: FrontRequest,
        shard: _Shard,
        replica: _RemoteReplica | None = None,
    ) -> None:
        """Give the client's connection and the request read from it to `shard`."""
        lines = [request.lines[0]]
        lines += [
            line
            for line in request.lines[1:]
            if line.partition(b":")[0].strip().lower().decode("latin-1") not in _DROPPED_HEADERS
        ]
        if replica is not None:
            lines.append(f"{ROUTED_HEADER}: {replica.name}".encode())
        raw = b"\r\n".join(lines) + b"\r\n\r\n" + request.body
        transport = client.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        try:
            if sock is None:
                raise ConnectionError("no connection to hand over")
            await shard.channel.send(
                {"op": "conn", "replica": replica.name if replica else None}, raw, sock.fileno()
            )
        except (ConnectionError, OSError):
            if replica is not None:
                replica.in_flight -= 1
            client.reply(503, error_body(503, "no healthy upstream: the replica's shard is gone."))
            return
        # Only this process's copy closes: the connection lives on in the shard.
        assert transport is not None
        transport.abort()

    async def _exposition(self) -> bytes:
        answers = await asyncio.gather(*(self._ask(s, {"op": "metrics"}) for s in self.shards))
        families = list(self.registry.collect())
        rows: list[ReplicaRows] = []
        for answer in answers:
            if answer is not None:
                shard_families, shard_rows = pickle.loads(answer.payload)
                families += shard_families
                rows += shard_rows
        return render_families(merge_families(families), sorted(rows))

    async def _status(self) -> dict[str, Any]:
        answers = await asyncio.gather(*(self._ask(s, {"op": "status"}) for s in self.shards))
        replicas = [r for a in answers if a is not None for r in a.header.get("replicas", [])]
        return {
            "router": self.config.router,
            "shared_store": False,
            "processes": self.config.processes,
            "replicas": sorted(replicas, key=lambda r: int(r["engine"])),
        }
