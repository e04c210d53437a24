"""A shard of a fleet spread over processes: some of its replicas, served in a process of
their own (the front, fleet_front.py, routes; docs/fleets.md, "Larger fleets").

The front starts it as `python -m loadgen.sim.fleet_shard FD INDEXES` with the fleet's
config as JSON on stdin, FD being its end of the channel (fleet_channel.py). Over it the
shard takes clients' connections, each with the request the front read from it and the
replica it chose, and serves that request there as the one-process fleet would, closing the
connection after the reply so that the client's next request comes back to the router. It
tells the front when a connection ends (the router's in-flight count) and when a replica goes
or comes, and answers its questions: prefix-cache contents, metrics, replica status.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import signal
import socket
import sys
from typing import Any

from aiohttp import web

from loadgen.event_loop import run_main
from loadgen.sim.config import SimConfig
from loadgen.sim.fleet import Fleet, Replica
from loadgen.sim.fleet_channel import Channel, Frame
from loadgen.sim.server import build_app, tune_collector

__all__ = ["serve_shard"]


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol for one handed-over connection, saying when the connection ends."""

    def __init__(self, inner: Any, on_lost: Any) -> None:
        self._inner = inner
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return bool(self._inner.eof_received())

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._on_lost()


async def _close_after_reply(request: web.Request, response: web.StreamResponse) -> None:
    # One request per connection: the next one goes through the front's router again. The
    # hook runs after aiohttp chose the Connection header, so it is set here too.
    response.force_close()
    response.headers["Connection"] = "close"


class _Shard:
    def __init__(self, fleet: Fleet, runner: web.AppRunner, sock: socket.socket) -> None:
        self.fleet = fleet
        self.runner = runner
        self.channel = Channel(sock, self.on_frame)
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _tell(self, header: dict[str, Any]) -> None:
        if not self.channel.closed.is_set():
            self._spawn(self._send(header))

    async def _send(self, header: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.channel.send(header)

    def up_changed(self, replica: Replica) -> None:
        self._tell({"op": "up", "replica": replica.name, "up": replica.up})

    def on_frame(self, frame: Frame) -> None:
        op = frame.header.get("op")
        if op == "conn":
            self._spawn(self._serve(frame))
        elif op == "stop":
            self.stopping.set()
        else:
            self._spawn(self._answer(frame))

    async def _serve(self, frame: Frame) -> None:
        assert frame.fd is not None
        sock = socket.socket(fileno=frame.fd)
        replica = frame.header.get("replica")

        def lost() -> None:
            if replica is not None:
                self._tell({"op": "done", "replica": replica})

        server = self.runner.server
        assert server is not None
        try:
            sock.setblocking(False)
            _transport, protocol = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: _Tracked(server(), lost), sock
            )
        except OSError:
            sock.close()
            lost()  # the client had gone already
            return
        protocol.data_received(frame.payload)

    async def _answer(self, frame: Frame) -> None:
        op = frame.header.get("op")
        fleet = self.fleet
        payload = b""
        header: dict[str, Any] = {}
        if op == "cached":
            hashes = frame.header["hashes"]
            header["cached"] = {r.name: r.cached_blocks(hashes) for r in fleet.live()}
        elif op == "metrics":
            payload = pickle.dumps((fleet.families(), fleet.text_rows()))
        elif op == "status":
            header["replicas"] = [r.status() for r in fleet.replicas]
        with contextlib.suppress(ConnectionError, OSError):
            await self.channel.answer(frame, header, payload)


async def serve_shard(sock: socket.socket, config: SimConfig, indexes: list[int]) -> None:
    """Serve the replicas numbered `indexes` of `config`'s fleet until told to stop or until
    the front goes (its end of the channel closes)."""
    fleet = Fleet(config, indexes, front_routed=True)
    app = build_app(config, fleet)
    app.on_response_prepare.append(_close_after_reply)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    shard = _Shard(fleet, runner, sock)
    channel = shard.channel
    fleet.on_up_change = shard.up_changed
    try:
        await channel.send({"op": "ready"})
        closed = asyncio.ensure_future(channel.closed.wait())
        stopping = asyncio.ensure_future(shard.stopping.wait())
        await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        stopping.cancel()
    finally:
        await fleet.stop()
        await runner.cleanup()
        channel.close()


def main(argv: list[str]) -> int:
    """`python -m loadgen.sim.fleet_shard FD INDEXES`, the config as JSON on stdin."""
    fd, indexes = int(argv[0]), [int(i) for i in argv[1].split(",")]
    config = SimConfig.model_validate_json(sys.stdin.buffer.read())
    # The front owns Ctrl-C: it stops the shards in order, or they see its end close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_collector()  # as agentload sim's own process
    run_main(serve_shard(socket.socket(fileno=fd), config, indexes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
