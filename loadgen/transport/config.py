"""Where the endpoint under test is and how to talk to it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from loadgen.errors import ConfigError, UsageError

__all__ = ["BALANCES", "TargetConfig"]

# How a client spreads a fleet's load without a router: each request to the next replica
# in turn, or each session's requests to one replica (by a hash of the session's id).
BALANCES = ("round-robin", "session")


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """An OpenAI-compatible endpoint; `base_url` is stored in its /v1 form."""

    base_url: str
    api_key: str | None = None  # None: no Authorization header (local servers)
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    verify_tls: bool = True
    request_timeout_s: float = 600.0  # whole request, headers and body included
    connect_timeout_s: float = 10.0
    # POSTs read with kernel receive timestamps: None = wherever possible (http://, Linux).
    kernel_timestamps: bool | None = None
    # A fleet without a router, balanced by this client: each replica's (name, base_url),
    # base_url being the first one's; empty for a single endpoint.
    replicas: tuple[tuple[str, str], ...] = ()
    balance: str = "round-robin"  # one of BALANCES

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _normalise(self.base_url))
        object.__setattr__(self, "headers", dict(self.headers))
        if self.balance not in BALANCES:
            raise ConfigError(f"balance {self.balance!r}: use one of {', '.join(BALANCES)}")
        if self.replicas:
            replicas = tuple((str(name), _normalise(url)) for name, url in self.replicas)
            names = [name for name, _ in replicas]
            if len(set(names)) != len(names) or not all(names):
                raise ConfigError(f"replica names must be distinct and non-empty: {names}")
            object.__setattr__(self, "replicas", replicas)
            object.__setattr__(self, "base_url", replicas[0][1])
        for name in ("request_timeout_s", "connect_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        verify_tls: bool = True,
        request_timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        kernel_timestamps: bool | None = None,
    ) -> TargetConfig:
        """A target from a user-typed URL (with or without /v1); UsageError when not http(s)."""
        return cls(
            url,
            api_key=api_key,
            headers=dict(headers or {}),
            verify_tls=verify_tls,
            request_timeout_s=request_timeout_s,
            connect_timeout_s=connect_timeout_s,
            kernel_timestamps=kernel_timestamps,
        )

    @classmethod
    def fleet(
        cls, replicas: Sequence[tuple[str, str]], *, balance: str = "round-robin", **settings: Any
    ) -> TargetConfig:
        """Several (name, URL) endpoints balanced by the client; one alone is a plain target.

        `settings`: from_url's keyword arguments (key, headers, TLS, timeouts).
        """
        if not replicas:
            raise ConfigError("a fleet needs at least one (name, URL)")
        one = cls.from_url(replicas[0][1], **settings)
        if len(replicas) == 1:
            return one
        return dataclasses.replace(one, replicas=tuple(replicas), balance=balance)

    def replica_configs(self) -> tuple[TargetConfig, ...]:
        """One single-endpoint config per replica (just this one for a single endpoint)."""
        if not self.replicas:
            return (self,)
        return tuple(
            dataclasses.replace(self, base_url=url, replicas=()) for _, url in self.replicas
        )

    @property
    def root_url(self) -> str:
        """The server's root (base_url without /v1), where /metrics and /health live."""
        return self.base_url.removesuffix("/v1")

    def url(self, path: str) -> str:
        """An absolute URL: `path` relative to base_url, or returned as-is when absolute."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request_headers(self) -> dict[str, str]:
        """The headers every request carries: extra headers, then the bearer token."""
        # identity: a compressed stream would hold tokens back in the compressor's buffer and
        # distort every inter-token latency; both HTTP paths send it.
        out = {"User-Agent": "agentload", "Accept-Encoding": "identity", **self.headers}
        if self.api_key is not None:
            out["Authorization"] = f"Bearer {self.api_key}"
        return out


def _normalise(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"target URL {url!r} is not an http(s) URL; "
            "write it like http://localhost:8000/v1 or https://api.example.com/v1"
        )
    if parts.query or parts.fragment:
        raise UsageError(f"target URL {url!r} has a query or fragment; drop everything after ?/#")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"
