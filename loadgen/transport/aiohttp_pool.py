"""aiohttp's connection pool, told which connections are reused and how long each may idle."""

# aiohttp hands out a pooled connection as long as its event loop has not yet read the
# server's FIN, keeps it idle for one fixed time whatever the server's Keep-Alive header
# says, and retries a request that fails on a reused connection only for idempotent
# methods, never a POST. llama-server closes the connection after each streamed reply and
# uvicorn closes idle ones after 5 s, so a POST that follows would fail for no fault of
# the server. The connector below checks a pooled connection's socket before handing it
# out, keeps it no longer than IDLE_S or what the server advertised, and tells the request
# (through a context variable: the connector runs inside the request's own task) whether
# its connection had carried a reply before, so that PostExchange may retry it once.

from __future__ import annotations

import select
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from time import monotonic
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from loadgen.transport.http1_head import keep_alive_idle_s
from loadgen.transport.kernel_pool import IDLE_S

__all__ = ["Pooled", "ReuseAwareConnector", "begin_attempt", "honour_keep_alive", "unanswered"]


class Pooled:
    """What the connector knows of one connection: reused or not, and its idle allowance."""

    __slots__ = ("idle_s", "idle_since", "reused")

    def __init__(self) -> None:
        self.idle_s = IDLE_S
        self.idle_since = 0.0  # monotonic(), when its last reply was read to the end
        self.reused = False

    def released(self) -> None:
        """Its exchange has ended (Connection.add_callback)."""
        self.idle_since = monotonic()


_ATTEMPT: ContextVar[Pooled | None] = ContextVar("agentload_aiohttp_attempt", default=None)


def begin_attempt() -> None:
    """Forget the connection of this task's previous request; call before each POST."""
    _ATTEMPT.set(None)


def attempt() -> Pooled | None:
    """The connection this task's request got since begin_attempt(), from this connector."""
    return _ATTEMPT.get()


def honour_keep_alive(headers: Mapping[str, str]) -> None:
    """Apply a reply's Keep-Alive header to the connection of this task's request."""
    advertised = headers.get("Keep-Alive")
    if advertised is None:
        return
    pooled = _ATTEMPT.get()
    idle_s = keep_alive_idle_s(advertised)
    if pooled is not None and idle_s is not None:
        pooled.idle_s = min(idle_s, IDLE_S)


def unanswered(exc: BaseException) -> bool:
    """`exc` is the connection closing or resetting before a reply head (not a connect error).

    A reset after part of a head cannot be told apart here; a close after part of one can.
    """
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return isinstance(exc.message, str)  # otherwise the part of the head that came
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False
    return isinstance(exc, (aiohttp.ClientOSError, aiohttp.ClientConnectionResetError))


class ReuseAwareConnector(aiohttp.TCPConnector):
    """A TCPConnector that checks pooled connections and records which ones are reused."""

    def __init__(self, **kwargs: Any) -> None:
        """TCPConnector's arguments; keepalive_timeout is IDLE_S."""
        super().__init__(keepalive_timeout=IDLE_S, **kwargs)
        self._known: weakref.WeakKeyDictionary[ResponseHandler, Pooled] = (
            weakref.WeakKeyDictionary()
        )

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109  (aiohttp passes it by this name)
    ) -> Connection:
        """A pooled connection still fit for another request, or a new one."""
        known = self._known
        while True:
            conn = await super().connect(req, traces, timeout)
            proto = conn.protocol
            assert proto is not None
            pooled = known.get(proto)
            if pooled is None:
                pooled = known[proto] = Pooled()
                break
            if monotonic() - pooled.idle_since < pooled.idle_s and _quiet(proto):
                pooled.reused = True
                break
            conn.close()  # past the server's Keep-Alive timeout, or closed by it
        conn.add_callback(pooled.released)
        _ATTEMPT.set(pooled)
        return conn


def _quiet(proto: ResponseHandler) -> bool:
    """Nothing (no FIN, reset or stray byte) waits on the socket the loop has not read yet."""
    transport = proto.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return not poller.poll(0)
