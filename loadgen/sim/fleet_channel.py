"""The link between a sharded fleet's front and one of its shard processes (fleet_front.py).

A Unix stream socket carrying frames: a JSON header and a byte payload, each frame
optionally with one file descriptor (a client's connection, handed over as SCM_RIGHTS).
The front sends connections and questions; the shard sends answers and events. Frames of
one sender never interleave; a question's answer is matched by its `id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["Channel", "Frame"]

_PREFIX = struct.Struct(">II")  # header length, payload length
_READ = 1 << 18
_MAX_FDS = 16
_ANSWER_S = 10.0  # Linux hands at most one sendmsg's descriptors to one recvmsg


class Frame:
    """One message: its header, its payload and the descriptor it carried (or None)."""

    __slots__ = ("fd", "header", "payload")

    def __init__(self, header: dict[str, Any], payload: bytes, fd: int | None) -> None:
        self.header = header
        self.payload = payload
        self.fd = fd


class Channel:
    """Frames over a connected Unix stream socket, on the running loop."""

    def __init__(self, sock: socket.socket, on_frame: Callable[[Frame], None]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._on_frame = on_frame
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._fds: deque[int] = deque()
        self._send_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[Frame]] = {}
        self.closed = asyncio.Event()
        self._loop.add_reader(sock.fileno(), self._readable)

    # -- sending -------------------------------------------------------------------------------

    async def send(
        self, header: dict[str, Any], payload: bytes = b"", fd: int | None = None
    ) -> None:
        """Send one frame; `fd` (kept open here: the caller closes its copy) goes with it."""
        head = orjson.dumps({**header, "fd": fd is not None})
        data = memoryview(_PREFIX.pack(len(head), len(payload)) + head + payload)
        async with self._send_lock:
            if fd is not None:
                data = data[await self._send_with_fd(data, fd) :]
            if data:
                await self._loop.sock_sendall(self._sock, data)

    async def _send_with_fd(self, data: memoryview, fd: int) -> int:
        while True:
            try:
                return socket.send_fds(self._sock, [data], [fd])
            except BlockingIOError:
                writable = self._loop.create_future()
                self._loop.add_writer(self._sock.fileno(), writable.set_result, None)
                try:
                    await writable
                finally:
                    self._loop.remove_writer(self._sock.fileno())

    async def ask(self, header: dict[str, Any]) -> Frame:
        """Send a question and wait (up to 10 s) for the frame answering it (same `id`)."""
        ident = next(self._ids)
        answer: asyncio.Future[Frame] = self._loop.create_future()
        self._answers[ident] = answer
        try:
            await self.send({**header, "id": ident})
            return await asyncio.wait_for(answer, _ANSWER_S)
        finally:
            self._answers.pop(ident, None)

    async def answer(self, question: Frame, header: dict[str, Any], payload: bytes = b"") -> None:
        """Send the answer to `question`."""
        await self.send({**header, "answer": question.header["id"]}, payload)

    # -- receiving -----------------------------------------------------------------------------

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self._sock, _READ, _MAX_FDS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data, fds = b"", []
            self._fds.extend(fds)
            if not data:
                self.close()
                return
            self._buffer += data
        self._deliver()

    def _deliver(self) -> None:
        buffer = self._buffer
        start = 0
        while len(buffer) - start >= _PREFIX.size:
            head_len, payload_len = _PREFIX.unpack_from(buffer, start)
            end = start + _PREFIX.size + head_len + payload_len
            if len(buffer) < end:
                break
            head_end = start + _PREFIX.size + head_len
            header = orjson.loads(buffer[start + _PREFIX.size : head_end])
            # A descriptor arrives with its frame's first byte, so it is here by now.
            fd = self._fds.popleft() if header.get("fd") else None
            frame = Frame(header, bytes(buffer[head_end:end]), fd)
            start = end
            if "answer" not in header:
                self._on_frame(frame)
                continue
            waiting = self._answers.pop(header["answer"], None)
            if waiting is not None and not waiting.done():  # else it was given up on
                waiting.set_result(frame)
        del buffer[:start]

    def close(self) -> None:
        """Stop reading and close the socket; questions waiting fail."""
        if self.closed.is_set():
            return
        self.closed.set()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        while self._fds:
            with contextlib.suppress(OSError):
                socket.close(self._fds.popleft())
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(ConnectionError("the fleet's shard channel closed"))
