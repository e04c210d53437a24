"""One TCP connection driven by hand: sendmsg out, recvmsg in, every read kernel-stamped."""

# aiohttp cannot supply kernel receive timestamps: uvloop's and asyncio's transports read
# with recv(), and both loops refuse add_reader on a socket a transport owns. So this owns
# the socket. The reader callback stays registered for the connection's whole life, idle
# time in the pool included, so a server closing an idle connection is noticed at once
# (the connection closes itself) and a request costs no epoll_ctl calls.

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque

from loadgen.transport.kernel_clock import ANCILLARY_BYTES, receive_time_ns
from loadgen.transport.kernel_sweep import ReadSweeper

__all__ = ["KernelConnection", "PeerClosedError"]

_READ_BYTES = 64 * 1024  # below glibc's mmap threshold, so each read's buffer is cheap
_PAUSE_BYTES = 4 * 1024 * 1024  # unread bytes at which the socket stops being read
_RESUME_BYTES = 1024 * 1024
try:
    _IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 16  # POSIX's minimum
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)  # EPIPE as an error, never SIGPIPE


class PeerClosedError(ConnectionError):
    """The server closed the connection (an orderly FIN) while a reply was still due."""


class KernelConnection:
    """A connected non-blocking socket; `receive()` yields (kernel stamp, bytes) per read."""

    __slots__ = (
        "__weakref__",
        "_buffered",
        "_chunks",
        "_deadline",
        "_eof",
        "_error",
        "_expired",
        "_fd",
        "_last_ns",
        "_loop",
        "_paused",
        "_reading",
        "_sweeper",
        "_waiter",
        "busy",
        "closed",
        "idle_until",
        "reused",
        "sock",
    )

    def __init__(
        self, sock: socket.socket, loop: asyncio.AbstractEventLoop, sweeper: ReadSweeper
    ) -> None:
        """`sock`: connected, non-blocking, with SO_TIMESTAMPNS on."""
        self.sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._sweeper = sweeper
        self._chunks: deque[tuple[int, bytes]] = deque()
        self._buffered = 0
        self._paused = False  # stopped reading because too much is buffered
        self._reading = True
        self._eof = False
        self._error: OSError | None = None
        self._expired = False
        self._deadline: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last_ns = 0  # stamps never run backwards on one connection
        self.busy = True  # an exchange owns it; False while idle in the pool
        self.closed = False
        self.idle_until = 0.0  # loop time after which the pool no longer hands it out
        # It has carried a reply before, so the server may have closed it meanwhile: a
        # request that then fails before any reply byte deserves one retry elsewhere.
        self.reused = False
        loop.add_reader(self._fd, self._on_readable)
        sweeper.add(self._fd, self._on_readable)

    @property
    def clean(self) -> bool:
        """Open, and no byte is waiting that the last exchange did not consume."""
        return not (self.closed or self._chunks or self._eof or self._error)

    @property
    def has_unread(self) -> bool:
        """Bytes have arrived that receive() has not returned yet."""
        return bool(self._chunks)

    def quiet(self) -> bool:
        """Nothing (no FIN, reset or stray byte) waits on the socket; a non-blocking peek."""
        # The reader callback closes an idle connection the server closed, but only once the
        # loop polls; a request queued behind the reply that emptied it runs before that.
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        return False  # b"" (the server closed it) or bytes nobody asked for

    def arm(self, deadline: float) -> None:
        """From `deadline` (loop time) on, send() and receive() raise TimeoutError."""
        self._expired = False
        self._deadline = self._loop.call_at(deadline, self._expire)

    def disarm(self) -> None:
        """Cancel the deadline set by arm()."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def receive(self) -> tuple[int, bytes] | None:
        """The next read's kernel receive time (perf_counter_ns) and bytes; None at EOF."""
        self._sweeper.sweep()  # other streams' sockets too: see kernel_sweep
        while True:
            if self._expired:
                raise TimeoutError("request deadline passed")
            if self._chunks:
                stamped = self._chunks.popleft()
                self._buffered -= len(stamped[1])
                if self._paused and self._buffered < _RESUME_BYTES and not self.closed:
                    self._paused = False
                    self._reading = True
                    self._loop.add_reader(self._fd, self._on_readable)
                    self._sweeper.add(self._fd, self._on_readable)
                return stamped
            if self._error is not None:
                raise self._error
            if self._eof:
                return None
            await self._wait()

    async def send(self, buffers: list[bytes]) -> None:
        """Write `buffers` back to back with sendmsg (no join), waiting out a full socket."""
        pending: list[bytes | memoryview] = list(buffers)
        at = 0
        while at < len(pending):
            if self._expired:
                raise TimeoutError("request deadline passed")
            if self._error is not None:
                raise self._error
            batch = pending[at : at + _IOV_MAX]
            try:
                sent = self.sock.sendmsg(batch, (), _MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                sent = 0
            full = True
            for buf in batch:
                if sent < len(buf):
                    if sent:
                        pending[at] = memoryview(buf)[sent:]
                    full = False
                    break
                sent -= len(buf)
                at += 1
            if not full:
                # The socket's send buffer is full: wait until the server has read some.
                self._loop.add_writer(self._fd, self._wake)
                try:
                    await self._wait()
                finally:
                    if not self.closed:
                        self._loop.remove_writer(self._fd)

    def close(self) -> None:
        """Stop reading, cancel the deadline and close the socket; waiters see an error."""
        if self.closed:
            return
        self.closed = True
        self.disarm()
        self._stop_reading()
        self._loop.remove_writer(self._fd)
        self.sock.close()
        if self._error is None:
            self._error = ConnectionAbortedError("connection closed by the client")
        self._wake()

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _expire(self) -> None:
        self._deadline = None
        self._expired = True
        self._wake()

    def _on_readable(self) -> None:
        if not self.busy:
            # Idle in the pool: a FIN, a reset or unasked-for bytes all end its usefulness.
            self.close()
            return
        try:
            data, ancillary, _flags, _address = self.sock.recvmsg(_READ_BYTES, ANCILLARY_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._error = exc
            self._stop_reading()
            self._wake()
            return
        if not data:
            self._eof = True
            self._stop_reading()
            self._wake()
            return
        self._last_ns = stamp = receive_time_ns(ancillary, self._last_ns)
        self._chunks.append((stamp, data))
        self._buffered += len(data)
        if self._buffered > _PAUSE_BYTES:
            # The reader is far behind: leave the rest in the kernel. Its stamps stay right.
            self._paused = True
            self._stop_reading()
        self._wake()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
            self._sweeper.remove(self._fd)
