"""The asyncio engine inside a gevent (Locust) process: a uvloop loop on a native OS thread.

Measured on a 2-core machine at 1,000 streams, a native-thread uvloop loop costs about the
same CPU as a pure asyncio client, while an asyncio loop inside a greenlet costs 1.45x with
long hand-off tails. The pitfalls this module exists for:

- gevent patches `threading.Thread` into a greenlet, so the loop thread is started with the
  original `_thread.start_new_thread`;
- a stdlib loop on that thread would still pick gevent's selector, so the loop is uvloop,
  imported with the original socket classes restored (uvloop snapshots them at import);
- sockets the engine opens must be native ones (see `native_socket_factory`);
- the loop thread never touches gevent objects: results travel back through a hub `async_`
  watcher (thread-safe `send`, drained on the hub) into AsyncResults;
- a bridge is created lazily in each process, after any fork, never at import;
- nothing joins a thread started that way, so the bridge stops and joins it at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.monkey

__all__ = ["LoopBridge", "native_socket_factory", "process_bridge"]

T = TypeVar("T")

_NativeSocket: type[socket.socket] = gevent.monkey.get_original("socket", "socket")
_start_new_thread = gevent.monkey.get_original("_thread", "start_new_thread")
_allocate_lock = gevent.monkey.get_original("_thread", "allocate_lock")


def native_socket_factory(addr_info: Any) -> socket.socket:
    """aiohttp's socket_factory hook: an OS socket, not gevent's cooperative one."""
    family, type_, proto, _canonname, _sockaddr = addr_info
    sock = _NativeSocket(family=family, type=type_, proto=proto)
    sock.setblocking(False)
    return sock


def _import_uvloop() -> Any:
    patched = socket.socket
    socket.socket = _NativeSocket  # type: ignore[misc]
    try:
        import uvloop

        return uvloop
    finally:
        socket.socket = patched  # type: ignore[misc]


class LoopBridge:
    """Runs coroutines on the engine's loop thread; greenlets wait for them without blocking."""

    def __init__(self) -> None:
        self._hub = gevent.get_hub()
        self._inbox: deque[Callable[[], None]] = deque()  # filled by the loop thread
        self._watcher = self._hub.loop.async_()
        self._watcher.start(self._drain)
        self._tasks: set[asyncio.Task[Any]] = set()
        uvloop = _import_uvloop()
        ready, self._done = _allocate_lock(), _allocate_lock()
        ready.acquire()
        self._done.acquire()  # released by the loop thread as its very last step
        self._closing = False
        holder: dict[str, asyncio.AbstractEventLoop] = {}

        def thread_main() -> None:
            loop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            holder["loop"] = loop
            ready.release()
            try:
                loop.run_forever()
                _cancel_remaining(loop)
            finally:
                loop.close()
                self._done.release()

        _start_new_thread(thread_main, ())
        # Bounded wait with the original lock: the thread needs microseconds to start.
        if not ready.acquire(True, 10):
            raise RuntimeError("the engine's event-loop thread did not start within 10 s")
        self.loop = holder["loop"]

    # -- from greenlets ----------------------------------------------------------------------

    def submit(
        self, coro: Coroutine[Any, Any, T]
    ) -> tuple[gevent.event.AsyncResult, Callable[[], None]]:
        """Start `coro` on the loop; returns an AsyncResult and a function that cancels it."""
        result = gevent.event.AsyncResult()
        box: dict[str, asyncio.Task[T]] = {}

        def start() -> None:
            task = self.loop.create_task(coro)
            box["task"] = task
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._finished(t, result))

        def cancel() -> None:
            def do_cancel() -> None:
                task = box.get("task")
                if task is not None:
                    task.cancel()

            self.loop.call_soon_threadsafe(do_cancel)

        self.loop.call_soon_threadsafe(start)
        return result, cancel

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for it in this greenlet; a killed greenlet cancels it."""
        result, cancel = self.submit(coro)
        try:
            value: T = result.get(timeout=timeout)
        except BaseException:
            cancel()
            raise
        return value

    def wait_idle(self, timeout: float) -> bool:
        """Wait (cooperatively) until every coroutine started through the bridge has ended."""
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            gevent.sleep(0.05)
        return not self._tasks

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the loop thread, cancelling what still runs there; False if it outlived `timeout`.

        Called at interpreter exit: a native thread still inside uvloop while the interpreter
        is torn down can crash the process after its results were written.
        """
        if not self._closing:
            self._closing = True
            self.loop.call_soon_threadsafe(self.loop.stop)
        ended: bool = self._done.acquire(True, timeout)
        if ended:
            self._done.release()  # a second close() finds it ended too
            self._watcher.stop()
        return ended

    # -- from the loop thread ------------------------------------------------------------------

    def to_hub(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the gevent hub soon (thread-safe; the loop thread's only way back)."""
        self._inbox.append(fn)
        self._watcher.send()

    def _finished(self, task: asyncio.Task[Any], result: gevent.event.AsyncResult) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            self.to_hub(lambda: result.set_exception(asyncio.CancelledError()))
        elif (exc := task.exception()) is not None:
            self.to_hub(lambda: result.set_exception(exc))
        else:
            value = task.result()
            self.to_hub(lambda: result.set(value))

    # -- on the hub ----------------------------------------------------------------------------

    def _drain(self) -> None:
        inbox = self._inbox
        while inbox:
            fn = inbox.popleft()
            try:
                fn()
            except Exception:  # a failing callback must not stop the others
                gevent.get_hub().handle_error(None, *sys.exc_info())


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still on a stopped loop and give them a moment to run their cleanup."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=_CLEANUP_S))
    loop.run_until_complete(loop.shutdown_asyncgens())


# How long tasks cancelled at exit get to close their connections and files.
_CLEANUP_S = 2.0
_BRIDGE: LoopBridge | None = None


def process_bridge() -> LoopBridge:
    """This process's bridge, made on first use (so after any fork, never at import)."""
    global _BRIDGE
    if _BRIDGE is None:
        _BRIDGE = LoopBridge()
        atexit.register(_BRIDGE.close)
    return _BRIDGE
