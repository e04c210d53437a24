"""A trace as agentload replays it: sessions of LLM calls with their times, lengths and blocks.

Every supported format loads into this one shape (loadgen/traces/formats/); replay and the
recorder read and write it. Times are the trace's own, in seconds from its first request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["HashScope", "Trace", "TraceRequest", "TraceSession"]

# global: equal hash ids are equal blocks wherever they appear (Mooncake, Bailian);
# local: ids are numbered per trace file or session, so replay namespaces them (cc-traces).
HashScope = Literal["global", "local"]


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One LLM call: when it was sent, how long its prompt and reply were, its prompt's blocks."""

    at_s: float  # when the trace says it was sent, from the trace's start
    input_tokens: int
    output_tokens: int
    # One id per `block_size` tokens of the prompt, in order; equal ids are equal text.
    hash_ids: tuple[int, ...] = ()
    # Recorded time between the end of the session's previous request and this one (a user
    # thinking, tools running); None when the trace does not say (then only at_s counts).
    gap_s: float | None = None
    # Recorded on the original server, kept for comparison, never replayed.
    cached_tokens: int | None = None
    ttft_s: float | None = None
    duration_s: float | None = None


@dataclass(slots=True)
class TraceSession:
    """The requests one agent made in order, and the sub-agents it started.

    A sub-agent starts after its parent's request number `after` ended (-1: before its
    first); the parent's next request waits until every sub-agent started there has ended.
    """

    id: str
    requests: list[TraceRequest] = field(default_factory=list)
    subagents: list[tuple[int, TraceSession]] = field(default_factory=list)  # (after, session)
    hash_namespace: str = ""  # local-scope ids are namespaced by this (the file or session)

    def all_requests(self) -> Iterator[TraceRequest]:
        """This session's requests, then its sub-agents', depth first."""
        yield from self.requests
        for _after, sub in self.subagents:
            yield from sub.all_requests()


@dataclass(slots=True)
class Trace:
    """A whole trace: top-level sessions in order of their first request."""

    sessions: list[TraceSession]
    block_size: int
    hash_scope: HashScope = "global"
    source: str = ""  # the file and format it was read from, for messages and the summary

    def requests(self) -> Iterator[TraceRequest]:
        """Every request of every session, sub-agents included."""
        for session in self.sessions:
            yield from session.all_requests()

    def request_count(self) -> int:
        """How many LLM calls replaying the whole trace makes."""
        return sum(1 for _ in self.requests())

    def first(self, sessions: int) -> Trace:
        """The trace cut to its first `sessions` top-level sessions."""
        return Trace(self.sessions[:sessions], self.block_size, self.hash_scope, self.source)


def session_order(sessions: Sequence[TraceSession]) -> list[TraceSession]:
    """Sessions sorted by their first request's time (sessions without requests last)."""
    return sorted(sessions, key=lambda s: s.requests[0].at_s if s.requests else float("inf"))
