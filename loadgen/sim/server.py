"""The simulator's aiohttp application, and a server object that tests start on port 0."""

from __future__ import annotations

import gc
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from loadgen.sim.api_errors import ApiError, error_response
from loadgen.sim.chat import handle_chat
from loadgen.sim.completions import handle_completions
from loadgen.sim.config import SimConfig
from loadgen.sim.fleet import FLEET, Fleet, Replica, sim_fleet
from loadgen.sim.fleet_front import FleetFront
from loadgen.sim.generation import SimContext
from loadgen.sim.request_body import json_reply
from loadgen.sim.responses import handle_get_response, handle_responses

__all__ = ["SimServer", "build_app", "sim_server", "tune_collector"]

log = logging.getLogger("agentload.sim")

STARTED: web.AppKey[int] = web.AppKey("started", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status == 413:
            return error_response(ApiError(413, "Request body too large."))
        if exc.status < 400:
            raise
        return error_response(ApiError(exc.status, exc.reason))
    except ConnectionResetError:
        # The client left before the reply started: nothing to answer and nothing to log.
        return web.Response(status=499)
    except OSError:
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(ApiError(500, "Internal server error."))


@web.middleware
async def _in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The router counts a request in flight from its routing until its handler is done
    # (a stream until its last byte, or its client left).
    try:
        return await handler(request)
    finally:
        sim_fleet(request).answered(request)


async def _name_replica(request: web.Request, response: web.StreamResponse) -> None:
    fleet = request.app.get(FLEET)
    if fleet is not None:
        fleet.name_replica(request, response)


async def _models(request: web.Request) -> web.Response:
    cfg = sim_fleet(request).config
    model = {
        "id": cfg.served_model_name,
        "object": "model",
        "created": request.app[STARTED],
        "owned_by": "agentload-sim",
        "root": cfg.served_model_name,
        "parent": None,
        "max_model_len": cfg.max_model_len,
    }
    return json_reply({"object": "list", "data": [model]})


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=sim_fleet(request).exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def _admin_replica(request: web.Request) -> tuple[Fleet, Replica]:
    fleet = sim_fleet(request)
    remote = request.remote or ""
    try:
        loopback = ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = False
    if not (loopback or fleet.config.admin_remote):
        raise ApiError(403, "/admin answers loopback clients only (agentload sim --admin-remote).")
    ident = request.match_info.get("replica", "")
    replica = fleet.replica(ident)
    if replica is None and ident:
        names = ", ".join(r.name for r in fleet.replicas)
        raise ApiError(404, f"no replica {ident!r}; the fleet has {names}")
    return fleet, replica or fleet.replicas[0]


def _fleet_status(fleet: Fleet) -> dict[str, object]:
    return {
        "router": fleet.config.router,
        "shared_store": fleet.config.shared_store,
        "replicas": [r.status() for r in fleet.replicas],
    }


async def _admin_replicas(request: web.Request) -> web.Response:
    fleet, _replica = _admin_replica(request)
    return json_reply(_fleet_status(fleet))


async def _admin_remove(request: web.Request) -> web.Response:
    """Take a replica out, as an autoscaler or a crash does: what it held is lost."""
    fleet, replica = _admin_replica(request)
    changed = await fleet.remove(replica, "admin")
    return json_reply({"replica": replica.name, "up": replica.up, "changed": changed})


async def _admin_restore(request: web.Request) -> web.Response:
    """Put a replica back, empty."""
    fleet, replica = _admin_replica(request)
    changed = fleet.restore(replica)
    return json_reply({"replica": replica.name, "up": replica.up, "changed": changed})


def build_app(config: SimConfig, fleet: Fleet | None = None) -> web.Application:
    """The simulator as an aiohttp application (serving `fleet`, or a fleet of `config`'s
    own); its engines start with the app."""
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_errors, _in_flight])
    app[STARTED] = int(time.time())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        nonlocal fleet
        fleet = fleet or Fleet(config)
        app[FLEET] = fleet
        fleet.start()
        yield
        await fleet.stop()

    app.cleanup_ctx.append(lifecycle)
    app.on_response_prepare.append(_name_replica)
    app.router.add_get("/admin/replicas", _admin_replicas)
    app.router.add_post("/admin/replicas/{replica}/remove", _admin_remove)
    app.router.add_post("/admin/replicas/{replica}/restore", _admin_restore)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/v1/chat/completions", handle_chat)
    app.router.add_post("/v1/completions", handle_completions)
    app.router.add_post("/v1/responses", handle_responses)
    app.router.add_get("/v1/responses/{response_id}", handle_get_response)
    return app


class SimServer:
    """A running simulator on host:port (port 0 picks a free one); use as an async context."""

    def __init__(self, config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.app = build_app(config)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in /v1."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def fleet(self) -> Fleet:
        """The replicas and their router (for tests and benchmarks)."""
        return self.app[FLEET]

    @property
    def context(self) -> SimContext:
        """The (first) replica's live engine, metrics and store (for tests and benchmarks)."""
        return self.app[FLEET].replicas[0].context

    async def start(self) -> None:
        """Bind and serve; afterwards `port` holds the real port."""
        # handler_cancellation: a client that disconnects cancels its handler, which frees
        # the engine's work for it, as vLLM aborts requests whose client went away.
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving and end the engine."""
        if self._runner is not None:
            # End the engines first: open streams then finish at once instead of running on.
            await self.fleet.stop()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def tune_collector() -> None:
    """The garbage collector as a simulator process wants it, called once start-up is done.

    At 2,000 streams the collector's gen-2 passes took ~20% of the CPU, blocked the loop for
    90-180 ms and freed nothing: start-up's objects are frozen out and collections are rare.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def sim_server(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> SimServer | FleetFront:
    """The simulator `config` describes: one process, or a fleet spread over processes (a
    front routing to shard processes, fleet_front.py); both start, stop and name base_url."""
    if config.processes > 1:
        return FleetFront(config, host, port)
    return SimServer(config, host, port)
