"""HTTP/1.1 message heads: a POST request head built from a template, a response head parsed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "MAX_HEAD_BYTES",
    "Origin",
    "ProtocolError",
    "RequestTemplate",
    "ResponseHead",
    "keep_alive_idle_s",
    "origin",
]

# aiohttp's own limit is 8 KiB per line; a whole head this big is a broken or hostile server.
MAX_HEAD_BYTES = 256 * 1024

# Set here, never taken from the caller: the client frames the body itself.
_FRAMING = frozenset({"content-length", "transfer-encoding", "host", "connection"})


class ProtocolError(Exception):
    """The server sent bytes that are not valid HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an http:// URL points, split once: socket address, Host header, request target."""

    host: str
    port: int
    host_header: str
    target: bytes


@lru_cache(maxsize=256)
def origin(url: str) -> Origin:
    """`url` split for a plain-HTTP request (cached: a run posts to a handful of URLs)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not a plain http:// URL: {url!r}")
    port = parts.port or 80
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    host_header = name if port == 80 else f"{name}:{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + parts.query
    return Origin(parts.hostname, port, host_header, path.encode("ascii"))


def _header_lines(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if name.lower() in _FRAMING:
            continue
        line = f"{name}: {value}\r\n"
        if "\n" in line[:-2] or "\r" in line[:-2]:
            # A line break in a header would let a value inject its own headers.
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(line)
    return "".join(lines).encode("utf-8")


class RequestTemplate:
    """The fixed lines of every POST to one Host, encoded once and reused by each request."""

    __slots__ = ("_base", "_fixed", "_host")

    def __init__(self, host_header: str, headers: Mapping[str, str]) -> None:
        base: CIMultiDict[str] = CIMultiDict(
            {"Accept": "*/*", "Accept-Encoding": "identity", "Content-Type": "application/json"}
        )
        base.update(headers)
        self._base = base
        self._host = f"Host: {host_header}\r\n".encode()
        self._fixed = self._host + _header_lines(base)

    def head(self, target: bytes, length: int, extra: Mapping[str, str] | None) -> bytes:
        """The head of a POST to `target` with a `length`-byte body; `extra` overrides headers."""
        fixed = self._fixed
        if extra:
            merged = self._base.copy()
            merged.update(extra)
            fixed = self._host + _header_lines(merged)
        return b"POST %b HTTP/1.1\r\n%bContent-Length: %d\r\n\r\n" % (target, fixed, length)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A parsed status line and header block."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    keep_alive: bool  # the server lets the connection carry another request afterwards
    idle_s: float | None = None  # how long it may then sit idle, from Keep-Alive: timeout=N

    @classmethod
    def parse(cls, buf: bytes) -> tuple[ResponseHead, int] | None:
        """The head at the start of `buf` and where its body starts; None if incomplete."""
        ends = [i for i in (buf.find(b"\n\r\n"), buf.find(b"\n\n")) if i >= 0]
        if not ends:
            if len(buf) > MAX_HEAD_BYTES:
                raise ProtocolError(f"response head longer than {MAX_HEAD_BYTES} bytes")
            return None
        end = min(ends)
        body_at = end + (3 if buf[end + 1 : end + 2] == b"\r" else 2)
        lines = buf[:end].decode("utf-8", "surrogateescape").split("\n")
        version, _, rest = lines[0].rstrip("\r").partition(" ")
        code, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, colon, value = line.rstrip("\r").partition(":")
            if not colon or not name or name != name.strip() or line[:1] in " \t":
                raise ProtocolError(f"bad header line {line[:80]!r}")
            headers.add(name, value.strip(" \t"))
        tokens = {t.strip().lower() for t in ",".join(headers.getall("Connection", [])).split(",")}
        keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        idle_s = None
        if keep_alive and (advertised := headers.get("Keep-Alive")) is not None:
            idle_s = keep_alive_idle_s(advertised)
            keep_alive = idle_s != 0
        return cls(int(code), reason, CIMultiDictProxy(headers), keep_alive, idle_s), body_at


def keep_alive_idle_s(value: str) -> float | None:
    """How long a `Keep-Alive: timeout=N, max=M` header lets the connection idle.

    None when it sets no timeout; 0 when the connection may carry no further request.
    """
    idle: float | None = None
    for param in value.split(","):
        name, _, number = param.partition("=")
        try:
            n = float(number.strip().strip('"'))
        except ValueError:
            continue
        name = name.strip().lower()
        if name == "timeout" and n >= 0:
            # The server's clock started when it sent the last byte, before the client saw it,
            # and the next request takes a while to reach it: leave it a second (half, below 2 s).
            limit = n - 1 if n >= 2 else n / 2
            idle = limit if idle is None else min(idle, limit)
        elif name == "max" and n < 1:  # requests it still allows on this connection
            idle = 0.0
    return idle
