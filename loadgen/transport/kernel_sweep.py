"""Reads ready kernel-stamped sockets between the event loop's own polls."""

# The loop polls its sockets only between batches of callbacks. After a burst (a decode
# step's tokens reaching 1,000 streams at once) it runs every woken stream's parsing
# before it polls again, ~20-30 ms at 1,000 streams. Should that backlog, plus a GC pass
# or a preemption, outlast one decode step, the next token reaches a socket whose last one
# is still unread; the kernel then merges the two into one segment that keeps only the
# later receive stamp, and the earlier token's time is lost for good. So, at most once a
# millisecond while streams are being consumed, this polls a private epoll set holding
# the same sockets (timeout 0) and reads whatever is ready into the connections' buffers.
# The loop's own poll re-checks readiness, so a socket drained here is not reported twice.

from __future__ import annotations

import select
from collections.abc import Callable
from time import perf_counter_ns

__all__ = ["ReadSweeper"]

_INTERVAL_NS = 1_000_000


class ReadSweeper:
    """A private epoll set over open connections, polled by sweep() at most once per ms."""

    __slots__ = ("_epoll", "_next_ns", "_readers")

    def __init__(self) -> None:
        # select.epoll is Linux-only, as SO_TIMESTAMPNS is; elsewhere sweeping is a no-op.
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._readers: dict[int, Callable[[], None]] = {}
        self._next_ns = 0

    def add(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Sweep `fd`, calling `on_readable` when it has bytes (or EOF, or an error)."""
        if self._epoll is not None and fd not in self._readers:
            self._epoll.register(fd, select.EPOLLIN)
            self._readers[fd] = on_readable

    def remove(self, fd: int) -> None:
        """Stop sweeping `fd` (before it is closed, or while its reader is paused)."""
        if self._readers.pop(fd, None) is not None and self._epoll is not None:
            self._epoll.unregister(fd)

    def sweep(self) -> None:
        """Read every ready socket now, unless the last sweep was under a millisecond ago."""
        now = perf_counter_ns()
        if now < self._next_ns or self._epoll is None:
            return
        self._next_ns = now + _INTERVAL_NS
        readers = self._readers
        for fd, _events in self._epoll.poll(0):
            on_readable = readers.get(fd)
            if on_readable is not None:
                on_readable()

    def close(self) -> None:
        """Release the epoll descriptor."""
        self._readers.clear()
        if self._epoll is not None:
            self._epoll.close()
