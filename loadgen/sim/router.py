"""A simulated fleet's router: which live replica serves a request (docs/fleets.md, "Routers").

Seven policies, each what its name says:

- `round-robin`: the next live replica in turn.
- `random`: a seeded random live replica.
- `least-loaded`: the replica with the fewest requests in flight (the router's own count:
  routed and not yet answered, as a gateway knows it).
- `session`: an echoed `x-session-token` naming a live replica wins (llm-d's session
  affinity: the router sets the token on each response, the client sends it back); else the
  `x-session-id` header, hashed by rendezvous (highest random weight) hashing over the live
  replicas, so that removing a replica moves only its own sessions. A request without the
  header hashes as the empty session, as a consistent-hash balancer (nginx `hash`) does: all
  such requests go to one replica, so a client's start-up probes keep their own chain.
- `session-load`: llm-d's session-affinity scorer beside its load scorer: an echoed token
  naming a live replica wins; a request without one (a session's first) goes to the replica
  with the fewest in flight, and the token on its response pins the session there. Affinity
  without the hash's imbalance, for clients that echo the token (agentload's agents do); a
  client that does not gets none.
- `prefix`: the replica holding the longest cached prefix of the request's KV blocks (each
  replica's prefix cache is asked for the request's chained block hashes, the same hashes
  its engine uses); ties go to the fewest in flight.
- `prefix-load`: the highest `cached_fraction - weight x load_fraction`, where
  cached_fraction is the request's full blocks that replica holds cached over its full
  blocks, and load_fraction its requests in flight over max_num_seqs (1.0 = a full batch).
  With the default weight 1.0 a request leaves the replica holding its whole prefix only for
  one a full batch less loaded; weight 0 is `prefix`, a large weight `least-loaded`.

Every tie left is broken by a rotating start, so equal replicas share the load in turn.
Each decision has a reason, counted on /metrics (agentload_sim_router_decisions_total).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from loadgen.sim.config import RouterName, SimConfig
from loadgen.sim.reply import reply_seed

__all__ = ["RouteRequest", "RouteTarget", "Router", "make_router", "rendezvous_score"]

SESSION_HEADER = "x-session-id"
TOKEN_HEADER = "x-session-token"


class RouteTarget(Protocol):
    """What a router knows of a replica."""

    @property
    def name(self) -> str:
        """The replica's name, r0..r{N-1}."""

    @property
    def in_flight(self) -> int:
        """Requests routed to it and not yet answered."""

    def cached_blocks(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` its prefix cache holds."""


T = TypeVar("T", bound=RouteTarget)


@dataclass(slots=True)
class RouteRequest:
    """What the router reads from a request."""

    session: str | None = None  # the x-session-id header
    token: str | None = None  # the replica an echoed x-session-token names
    hashes: list[int] = field(default_factory=list)  # KV block hashes (prefix routers only)


def rendezvous_score(session: str, replica: str) -> int:
    """The weight of `replica` for `session`, stable across processes and runs."""
    digest = hashlib.blake2b(f"{session}\x1f{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Router:
    """Picks one of the live replicas for a request, and says why."""

    name: RouterName = "round-robin"
    needs_prefix = False  # True: the request's block hashes are needed

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._turn = 0

    def _rotation(self, live: Sequence[T]) -> list[T]:
        """The live replicas starting from the next one in turn (the turn advances)."""
        start = self._turn % len(live)
        self._turn += 1
        return [*live[start:], *live[:start]]

    def choose(self, live: Sequence[T], request: RouteRequest) -> tuple[T, str]:
        """The replica (one of `live`, never empty) and the reason for the choice."""
        return self._rotation(live)[0], "rotation"


class _Random(Router):
    name: RouterName = "random"

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self._rng = random.Random(reply_seed("router", config.seed))

    def choose(self, live: Sequence[T], request: RouteRequest) -> tuple[T, str]:
        return live[self._rng.randrange(len(live))], "random"


class _LeastLoaded(Router):
    name: RouterName = "least-loaded"

    def choose(self, live: Sequence[T], request: RouteRequest) -> tuple[T, str]:
        return min(self._rotation(live), key=lambda r: r.in_flight), "least-loaded"


def _named(live: Sequence[T], token: str | None) -> T | None:
    """The live replica an echoed token names, if any."""
    return next((replica for replica in live if replica.name == token), None)


class _Session(Router):
    name: RouterName = "session"

    def choose(self, live: Sequence[T], request: RouteRequest) -> tuple[T, str]:
        if (pinned := _named(live, request.token)) is not None:
            return pinned, "token"
        session = request.session or ""
        chosen = max(live, key=lambda r: rendezvous_score(session, r.name))
        if request.token is not None:
            # A token naming a replica that is gone: the session moves (its state stays behind).
            return chosen, "token-lost"
        return chosen, ("session-hash" if request.session else "no-session")


class _SessionLoad(Router):
    name: RouterName = "session-load"

    def choose(self, live: Sequence[T], request: RouteRequest) -> tuple[T, str]:
        if (pinned := _named(live, request.token)) is not None:
            return pinned, "token"
        chosen = min(self._rotation(live), key=lambda r: r.in_flight)
        return chosen, ("token-lost" if request.token is not None else "least-loaded")


class _Prefix(Router):
    name: RouterName = "prefix"
    needs_prefix = True

    def choose(self, live: Sequence[T], request: RouteRequest) -> tuple[T, str]:
        ordered = self._rotation(live)
        cached = [r.cached_blocks(request.hashes) for r in ordered]
        best = max(cached)
        i = min((i for i, c in enumerate(cached) if c == best), key=lambda i: ordered[i].in_flight)
        return ordered[i], ("prefix" if best > 0 else "no-prefix")


class _PrefixLoad(Router):
    name: RouterName = "prefix-load"
    needs_prefix = True

    def choose(self, live: Sequence[T], request: RouteRequest) -> tuple[T, str]:
        ordered = self._rotation(live)
        blocks = len(request.hashes)
        cached = [r.cached_blocks(request.hashes) for r in ordered]
        weight = self.config.prefix_load_weight
        slots = self.config.max_num_seqs

        def score(i: int) -> tuple[float, int]:
            fraction = cached[i] / blocks if blocks else 0.0
            return fraction - weight * ordered[i].in_flight / slots, -ordered[i].in_flight

        i = max(range(len(ordered)), key=score)
        best = max(cached)
        if best == 0:
            return ordered[i], "no-prefix"
        return ordered[i], ("prefix" if cached[i] == best else "load")


_ROUTERS: dict[RouterName, type[Router]] = {
    "round-robin": Router,
    "random": _Random,
    "least-loaded": _LeastLoaded,
    "session": _Session,
    "session-load": _SessionLoad,
    "prefix": _Prefix,
    "prefix-load": _PrefixLoad,
}


def make_router(config: SimConfig) -> Router:
    """The router `config.router` names."""
    return _ROUTERS[config.router](config)
