"""What a fleet's front reads of a client (fleet_front.py): the request's head and body, as
HTTP/1.1 frames them, without parsing more than routing needs; and the front's own replies.

A body must come with Content-Length (a chunked one is answered 411); `Expect:
100-continue` is answered here, since the shard that serves the request never sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from loadgen.sim.api_errors import ApiError, error_body
from loadgen.sim.completions import completion_prompt_text
from loadgen.sim.prompt import render_chat, render_responses_input
from loadgen.sim.requests import ChatRequest, CompletionRequest, ResponsesRequest

__all__ = ["ClientConnection", "FrontRequest", "prompt_text", "routed"]

_MAX_HEAD = 64 * 1024


@dataclass(slots=True)
class FrontRequest:
    """A request as the front read it."""

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


class ClientConnection(asyncio.Protocol):
    """One client connection until its request is read and handed on (or answered here)."""

    def __init__(
        self, max_body_bytes: int, dispatch: Callable[[ClientConnection, FrontRequest], None]
    ) -> None:
        self._max_body = max_body_bytes
        self._dispatch = dispatch
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
            self._dispatch(self, request)

    def _request(self) -> FrontRequest | None:
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
            if self._length > self._max_body:
                raise _Refused(
                    413,
                    f"Request body is larger than the server's limit of {self._max_body} "
                    "bytes (raise it with --max-body-bytes).",
                )
            waiting = len(self._buffer) < self._body_at + self._length
            if waiting and headers.get("expect", "").lower() == "100-continue":
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(self._buffer) < self._body_at + self._length:
            return None
        method, path, headers, lines = self._head
        body = bytes(self._buffer[self._body_at : self._body_at + self._length])
        return FrontRequest(method, path, headers, lines, body)

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


def routed(request: FrontRequest) -> bool:
    """The requests a fleet's router places: generation, and reading a stored response."""
    if request.method == "POST":
        return request.path in ("/v1/chat/completions", "/v1/completions", "/v1/responses")
    return request.method == "GET" and request.path.startswith("/v1/responses/")


def prompt_text(request: FrontRequest) -> str:
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
