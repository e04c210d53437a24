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
import ipaddress
import itertools
import logging
import pickle
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast

import orjson
from prometheus_client import CollectorRegistry

from loadgen.errors import AgentloadError
from loadgen.sim.api_errors import ApiError, error_body
from loadgen.sim.completions import completion_prompt_text
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
from loadgen.sim.prompt import analyse_long_prompt, render_chat, render_responses_input
from loadgen.sim.requests import ChatRequest, CompletionRequest, ResponsesRequest
from loadgen.sim.router import SESSION_HEADER, TOKEN_HEADER, RouteRequest, make_router

__all__ = ["FleetFront", "ShardStartError"]

log = logging.getLogger("agentload.sim")

_MAX_HEAD = 64 * 1024
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
    replicas: list[_RemoteReplica] = field(default_factory=list)
    channel: Channel | None = None
    ready: asyncio.Future[None] | None = None


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


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    lines: list[bytes]  # the request line and the header lines as received
    body: bytes


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str], list[bytes]]:
    lines = head.split(b"\r\n")
    try:
        method, target, _version = lines[0].decode("latin-1").split(" ", 2)
    except ValueError:
        raise _Refused(400, "Malformed request line.") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise _Refused(400, "Malformed header line.")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return method, target.split("?", 1)[0], headers, lines


class _Client(asyncio.Protocol):
    """One client connection until its request is read and handed on (or answered here)."""

    def __init__(self, front: FleetFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: tuple[str, str, dict[str, str], list[bytes]] | None = None
        self._body_at = 0
        self._length = 0
        self._taken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._taken:
            return
        self._buffer += data
        try:
            request = self._request()
        except _Refused as refused:
            self._taken = True
            self.reply(refused.status, error_body(refused.status, refused.message))
            return
        if request is not None:
            self._taken = True
            assert self.transport is not None
            self.transport.pause_reading()
            self.front.dispatch(self, request)

    def _request(self) -> _Request | None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    raise _Refused(431, "Request header fields too large.")
                return None
            self._head = method, _path, headers, _lines = _parse_head(bytes(self._buffer[:end]))
            self._body_at = end + 4
            if "transfer-encoding" in headers:
                raise _Refused(411, "Send the body with a Content-Length (no chunked bodies).")
            try:
                self._length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _Refused(400, "Content-Length is not a number.") from None
            if self._length > self.front.config.max_body_bytes:
                raise _Refused(
                    413,
                    f"Request body is larger than the server's limit of "
                    f"{self.front.config.max_body_bytes} bytes (raise it with --max-body-bytes).",
                )
            waiting = len(self._buffer) < self._body_at + self._length
            if waiting and headers.get("expect", "").lower() == "100-continue":
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(self._buffer) < self._body_at + self._length:
            return None
        method, path, headers, lines = self._head
        body = bytes(self._buffer[self._body_at : self._body_at + self._length])
        return _Request(method, path, headers, lines, body)

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Answer from the front itself, and close."""
        if self.transport is None or self.transport.is_closing():
            return
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

    def loopback(self) -> bool:
        peer: Any = self.transport.get_extra_info("peername") if self.transport else None
        try:
            return ipaddress.ip_address(str(peer[0]).split("%", 1)[0]).is_loopback
        except (TypeError, ValueError, IndexError):
            return False


def _routed(request: _Request) -> bool:
    """The requests a fleet's router places: generation, and reading a stored response."""
    if request.method == "POST":
        return request.path in ("/v1/chat/completions", "/v1/completions", "/v1/responses")
    return request.method == "GET" and request.path.startswith("/v1/responses/")


def _prompt_text(request: _Request) -> str:
    """The prompt a prefix router hashes, rendered as the replica will render it; "" for a
    body the replica will refuse anyway (it answers the error)."""
    try:
        if request.path == "/v1/chat/completions":
            chat = ChatRequest.model_validate_json(request.body)
            return render_chat(chat.messages, chat.tools)
        if request.path == "/v1/responses" and request.method == "POST":
            body = ResponsesRequest.model_validate_json(request.body)
            tools = [t.model_dump(exclude_none=True) for t in body.tools or ()]
            return render_responses_input(body.input, body.instructions, tools, None)
        if request.path == "/v1/completions":
            completion = CompletionRequest.model_validate_json(request.body)
            return completion_prompt_text(completion.prompt)
    except (ValueError, ApiError):
        return ""
    return ""


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
                lambda: _Client(self), self.host, self.port, backlog=4096
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
        shard = _Shard(number, process, ready=loop.create_future())
        self.shards.append(shard)  # from here stop() reaps it, whatever fails next
        shard.replicas = [_RemoteReplica(i, f"r{i}", shard) for i in indexes]
        self.replicas += shard.replicas
        shard.channel = Channel(ours, lambda frame: self._on_frame(shard, frame))
        watch = loop.create_task(self._watch(shard))
        self._tasks.add(watch)
        watch.add_done_callback(self._tasks.discard)
        assert process.stdin is not None
        process.stdin.write(self.config.model_dump_json().encode())
        await process.stdin.drain()
        process.stdin.close()

    async def _watch(self, shard: _Shard) -> None:
        """A shard whose channel closed is gone, and its replicas with it."""
        assert shard.channel is not None
        await shard.channel.closed.wait()
        for replica in shard.replicas:
            replica.up = False

    async def _wait_ready(self, shard: _Shard) -> None:
        assert shard.ready is not None
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
            if shard.channel is not None:
                with contextlib.suppress(ConnectionError, OSError):
                    await shard.channel.send({"op": "stop"})
        for shard in self.shards:
            try:
                await asyncio.wait_for(shard.process.wait(), _SHARD_STOP_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    shard.process.kill()
                await shard.process.wait()
            if shard.channel is not None:
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
        elif op == "ready" and shard.ready is not None and not shard.ready.done():
            shard.ready.set_result(None)

    def _replica(self, ident: str) -> _RemoteReplica | None:
        return next((r for r in self.replicas if ident in (r.name, str(r.index))), None)

    # -- requests ------------------------------------------------------------------------------

    def dispatch(self, client: _Client, request: _Request) -> None:
        """Answer `request` or hand it on, in a task of its own."""
        task = asyncio.get_running_loop().create_task(self._dispatch_or_500(client, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch_or_500(self, client: _Client, request: _Request) -> None:
        try:
            await self._dispatch(client, request)
        except Exception:
            # As the one-process fleet's error middleware: logged, answered, serving on.
            log.exception("unexpected error routing %s %s", request.method, request.path)
            client.reply(500, error_body(500, "Internal server error."))

    async def _dispatch(self, client: _Client, request: _Request) -> None:
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
        elif _routed(request):
            chosen = await self._route(request)
            if chosen is None:
                message = "no healthy upstream: every replica is out of service."
                client.reply(503, error_body(503, message))
            else:
                await self._hand_over(client, request, chosen.shard, chosen)
        else:  # /v1/models, /health, and what no route serves: any shard answers as one would
            live = [s for s in self.shards if s.channel and not s.channel.closed.is_set()]
            if not live:
                client.reply(503, error_body(503, "no healthy upstream: every shard is gone."))
            else:
                await self._hand_over(client, request, live[next(self._unrouted) % len(live)])

    async def _route(self, request: _Request) -> _RemoteReplica | None:
        hashes: list[int] = []
        if self.router.needs_prefix and self.replicas:
            cfg = self.config
            prompt = await analyse_long_prompt(
                _prompt_text(request), cfg.block_size, cfg.max_model_len, stable=True
            )
            hashes = prompt.block_hashes
        live = [r for r in self.replicas if r.up]
        if not live:
            return None
        cached = await self._cached(hashes) if hashes else {}
        live = [r for r in self.replicas if r.up]  # the questions yielded: one may have gone
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
        if shard.channel is None or shard.channel.closed.is_set():
            return None
        try:
            return await shard.channel.ask(question)
        except (ConnectionError, OSError, TimeoutError):
            return None

    async def _hand_over(
        self,
        client: _Client,
        request: _Request,
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
            if sock is None or shard.channel is None:
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
