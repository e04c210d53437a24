"""Counters and histograms of one run, mergeable across worker processes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loadgen.observe.histogram import LatencyHistogram
from loadgen.observe.records import SessionOutcome, SessionRecord, StepRecord
from loadgen.observe.replicas import ReplicaStats, add_replica_counts, replica_key
from loadgen.observe.summary import build_summary
from loadgen.protocol.failures import FailureKind

__all__ = ["RUN_STATS_SCHEMA", "AgentStats", "RunStats", "SessionCounts"]

RUN_STATS_SCHEMA = "agentload.run_stats/1"

_KINDS = tuple(kind.value for kind in FailureKind)
_OUTCOMES = (SessionOutcome.COMPLETED, SessionOutcome.FAILED, SessionOutcome.ABORTED)


def _zero_by_kind() -> dict[str, int]:
    return dict.fromkeys(_KINDS, 0)


def _kind(kind: str) -> str:
    """The canonical name of `kind`; raises ValueError for a name outside FailureKind."""
    try:
        return FailureKind(kind).value
    except ValueError:
        raise ValueError(f"unknown failure kind {kind!r}; expected one of {_KINDS}") from None


def _add_counts(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


# Distinct messages kept per failure kind: the first ones seen, each with its count. Enough to
# say why (a wrong model name, a context limit), bounded however long a run fails.
MESSAGES_PER_KIND = 5
_MESSAGE_CHARS = 300


def _add_reasons(into: dict[str, dict[str, int]], kind: str, counts: Mapping[str, int]) -> None:
    kept = into.setdefault(kind, {})
    for message, n in counts.items():
        if message in kept:
            kept[message] += n
        elif len(kept) < MESSAGES_PER_KIND:
            kept[message] = n


@dataclass(slots=True)
class SessionCounts:
    """Sessions by how they ended; `recovered` overlaps the others."""

    started: int = 0
    completed: int = 0
    failed: int = 0
    aborted: int = 0
    recovered: int = 0

    def ended(self, rec: SessionRecord) -> None:
        """Count one finished session."""
        if rec.outcome == SessionOutcome.COMPLETED:
            self.completed += 1
        elif rec.outcome == SessionOutcome.FAILED:
            self.failed += 1
        elif rec.outcome == SessionOutcome.ABORTED:
            self.aborted += 1
        else:
            raise ValueError(
                f"unknown session outcome {rec.outcome!r}; expected one of {_OUTCOMES}"
            )
        if rec.recovered:
            self.recovered += 1

    def merge(self, other: SessionCounts) -> None:
        """Add `other`'s counts."""
        self.started += other.started
        self.completed += other.completed
        self.failed += other.failed
        self.aborted += other.aborted
        self.recovered += other.recovered

    def to_dict(self) -> dict[str, int]:
        """{started, completed, failed, aborted, recovered}."""
        return {
            "started": self.started,
            "completed": self.completed,
            "failed": self.failed,
            "aborted": self.aborted,
            "recovered": self.recovered,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionCounts:
        """Rebuild from `to_dict()` output."""
        return cls(**{key: int(data[key]) for key in cls().to_dict()})


@dataclass(slots=True)
class AgentStats:
    """The per-archetype share of a run."""

    requests_ok: int = 0
    requests_failed: int = 0
    sessions: SessionCounts = field(default_factory=SessionCounts)
    failures: dict[str, int] = field(default_factory=dict)  # non-zero kinds only
    recoveries: dict[str, int] = field(default_factory=dict)  # non-zero kinds only
    ttft_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    ttfat_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    e2e_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    session_s: LatencyHistogram = field(default_factory=LatencyHistogram)  # completed only
    # Ages of the sessions still running when the run ended (aborted by its end).
    running_at_end_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    def merge(self, other: AgentStats) -> None:
        """Add `other`'s counts and histograms."""
        self.requests_ok += other.requests_ok
        self.requests_failed += other.requests_failed
        self.sessions.merge(other.sessions)
        _add_counts(self.failures, other.failures)
        _add_counts(self.recoveries, other.recoveries)
        self.ttft_s.merge(other.ttft_s)
        self.ttfat_s.merge(other.ttfat_s)
        self.e2e_s.merge(other.e2e_s)
        self.session_s.merge(other.session_s)
        self.running_at_end_s.merge(other.running_at_end_s)
        self.completion_tokens += other.completion_tokens
        self.reasoning_tokens += other.reasoning_tokens

    def to_dict(self) -> dict[str, Any]:
        """Lossless JSON-able form."""
        return {
            "requests_ok": self.requests_ok,
            "requests_failed": self.requests_failed,
            "sessions": self.sessions.to_dict(),
            "failures": dict(self.failures),
            "recoveries": dict(self.recoveries),
            "ttft_s": self.ttft_s.to_dict(),
            "ttfat_s": self.ttfat_s.to_dict(),
            "e2e_s": self.e2e_s.to_dict(),
            "session_s": self.session_s.to_dict(),
            "running_at_end_s": self.running_at_end_s.to_dict(),
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentStats:
        """Rebuild from `to_dict()` output."""
        return cls(
            requests_ok=int(data["requests_ok"]),
            requests_failed=int(data["requests_failed"]),
            sessions=SessionCounts.from_dict(data["sessions"]),
            failures={_kind(k): int(n) for k, n in data["failures"].items()},
            recoveries={_kind(k): int(n) for k, n in data["recoveries"].items()},
            ttft_s=LatencyHistogram.from_dict(data["ttft_s"]),
            e2e_s=LatencyHistogram.from_dict(data["e2e_s"]),
            # Absent from a worker of an older version: its share is simply not split.
            ttfat_s=_histogram(data, "ttfat_s"),
            session_s=_histogram(data, "session_s"),
            running_at_end_s=_histogram(data, "running_at_end_s"),
            completion_tokens=int(data.get("completion_tokens", 0)),
            reasoning_tokens=int(data.get("reasoning_tokens", 0)),
        )


def _histogram(data: Mapping[str, Any], name: str) -> LatencyHistogram:
    # Absent from a worker of an older version: its share is simply not split.
    return LatencyHistogram.from_dict(data[name]) if name in data else LatencyHistogram()


# Histograms every run keeps, by name: (summary section, field) is decided in summary().
_HISTOGRAMS = (
    "ttft_s",
    "ttfat_s",
    "itl_s",
    "e2e_s",
    "session_s",
    "running_at_end_s",
    "context_tokens",
    "schedule_lag_s",
)


@dataclass(slots=True)
class RunStats:
    """Everything a run summary is computed from: counters plus mergeable histograms.

    Failures and tokens are counted from step records; session outcomes from session
    records; recoveries from `recovery()` calls (a SessionRecord's own failure and recovery
    dicts repeat those events, so they are not counted again). Latency histograms hold
    successful steps only, so a burst of timeouts cannot pass for a latency figure.
    """

    requests_ok: int = 0
    requests_failed: int = 0
    sessions: SessionCounts = field(default_factory=SessionCounts)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # part of completion_tokens
    tool_calls: int = 0
    failures: dict[str, int] = field(default_factory=_zero_by_kind)
    recoveries: dict[str, int] = field(default_factory=_zero_by_kind)
    ttft_s: LatencyHistogram = field(default_factory=LatencyHistogram)  # any first token
    # First answer token (content or tool call): later than ttft_s by a reasoning model's thinking.
    ttfat_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    itl_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    e2e_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    session_s: LatencyHistogram = field(default_factory=LatencyHistogram)  # completed only
    # Ages of the sessions still running when the run ended: the sessions its end aborted
    # (not those a ramp-down retired mid-run), each at least that long.
    running_at_end_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    context_tokens: LatencyHistogram = field(default_factory=LatencyHistogram)
    schedule_lag_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    agents: dict[str, AgentStats] = field(default_factory=dict)
    # Why, per failure kind: the first MESSAGES_PER_KIND distinct messages and their counts.
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    # Steps whose usage reported cached prompt tokens at all, and those reporting some.
    cache_reported: int = 0
    cache_hits: int = 0
    # Per replica of a fleet (StepRecord.replica), at most MAX_REPLICAS names.
    replicas: dict[str, ReplicaStats] = field(default_factory=dict)

    @property
    def requests_total(self) -> int:
        """Every step recorded, successful or not."""
        return self.requests_ok + self.requests_failed

    def _agent(self, name: str) -> AgentStats:
        stats = self.agents.get(name)
        if stats is None:
            stats = self.agents[name] = AgentStats()
        return stats

    def session_started(self, agent: str) -> None:
        """Count a session of archetype `agent` as started."""
        self.sessions.started += 1
        self._agent(agent).sessions.started += 1

    def add_step(self, rec: StepRecord) -> None:
        """Count one request: outcome, tokens, failures, latencies, context and schedule lag."""
        agent = self._agent(rec.agent)
        if rec.ok:
            self.requests_ok += 1
            agent.requests_ok += 1
            if rec.ttft_s is not None:
                self.ttft_s.record(rec.ttft_s)
                agent.ttft_s.record(rec.ttft_s)
            if rec.ttfat_s is not None:
                self.ttfat_s.record(rec.ttfat_s)
                agent.ttfat_s.record(rec.ttfat_s)
            self.itl_s.record_many(rec.itl_s)
            self.e2e_s.record(rec.e2e_s)
            agent.e2e_s.record(rec.e2e_s)
        else:
            self.requests_failed += 1
            agent.requests_failed += 1
        for failure in rec.failures:
            kind = _kind(failure)
            self.failures[kind] += 1
            agent.failures[kind] = agent.failures.get(kind, 0) + 1
            message = rec.reasons.get(failure) or rec.error
            if message:
                _add_reasons(self.reasons, kind, {message[:_MESSAGE_CHARS]: 1})
        if rec.cached_tokens is not None:
            self.cache_reported += 1
            if rec.cached_tokens > 0:
                self.cache_hits += 1
        self.prompt_tokens += rec.prompt_tokens or 0
        self.completion_tokens += rec.completion_tokens or 0
        agent.completion_tokens += rec.completion_tokens or 0
        self.cached_tokens += rec.cached_tokens or 0
        self.reasoning_tokens += rec.reasoning_tokens or 0
        agent.reasoning_tokens += rec.reasoning_tokens or 0
        self.tool_calls += rec.tool_calls
        if rec.context_tokens > 0:  # 0 means the agent made no estimate
            self.context_tokens.record(rec.context_tokens)
        # A step that started early is on time as far as the generator's health goes.
        self.schedule_lag_s.record(max(rec.schedule_lag_s, 0.0))
        if rec.replica is not None:
            key = replica_key(self.replicas, rec.replica)
            replica = self.replicas.setdefault(key, ReplicaStats())
            replica.add(rec, [_kind(failure) for failure in rec.failures])

    def add_session(self, rec: SessionRecord) -> None:
        """Count one finished session by outcome; time it if it completed, keep its age if
        the run's end stopped it."""
        self.sessions.ended(rec)
        agent = self._agent(rec.agent)
        agent.sessions.ended(rec)
        if rec.outcome == SessionOutcome.COMPLETED:
            self.session_s.record(rec.duration_s)
            agent.session_s.record(rec.duration_s)
        elif rec.running_at_end and rec.outcome == SessionOutcome.ABORTED:
            self.running_at_end_s.record(rec.duration_s)
            agent.running_at_end_s.record(rec.duration_s)

    def recovery(self, kind: str, agent: str) -> None:
        """Count one failure of `kind` absorbed by an agent's reaction (retry, fallback...)."""
        kind = _kind(kind)
        self.recoveries[kind] += 1
        stats = self._agent(agent)
        stats.recoveries[kind] = stats.recoveries.get(kind, 0) + 1

    def merge(self, other: RunStats) -> None:
        """Add another process's stats, exactly as if its records had been added here."""
        self.requests_ok += other.requests_ok
        self.requests_failed += other.requests_failed
        self.sessions.merge(other.sessions)
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.tool_calls += other.tool_calls
        _add_counts(self.failures, other.failures)
        _add_counts(self.recoveries, other.recoveries)
        for kind, counts in other.reasons.items():
            _add_reasons(self.reasons, kind, counts)
        self.cache_reported += other.cache_reported
        self.cache_hits += other.cache_hits
        for name in _HISTOGRAMS:
            self.histogram(name).merge(other.histogram(name))
        for name, stats in other.agents.items():
            self._agent(name).merge(stats)
        add_replica_counts(self.replicas, other.replicas)

    def histogram(self, name: str) -> LatencyHistogram:
        """The run-wide histogram called `name` (ttft_s, ttfat_s, itl_s, e2e_s, ...)."""
        if name not in _HISTOGRAMS:
            raise ValueError(f"unknown histogram {name!r}; expected one of {_HISTOGRAMS}")
        hist: LatencyHistogram = getattr(self, name)
        return hist

    def to_dict(self) -> dict[str, Any]:
        """Lossless JSON-able form, for shipping a worker's stats to the master."""
        return {
            "schema": RUN_STATS_SCHEMA,
            "requests_ok": self.requests_ok,
            "requests_failed": self.requests_failed,
            "sessions": self.sessions.to_dict(),
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "cached": self.cached_tokens,
                "reasoning": self.reasoning_tokens,
            },
            "tool_calls": self.tool_calls,
            "failures": dict(self.failures),
            "recoveries": dict(self.recoveries),
            "reasons": {kind: dict(counts) for kind, counts in self.reasons.items()},
            "cache": {"reported": self.cache_reported, "hits": self.cache_hits},
            "histograms": {name: self.histogram(name).to_dict() for name in _HISTOGRAMS},
            "agents": {name: stats.to_dict() for name, stats in self.agents.items()},
            "replicas": {name: stats.to_dict() for name, stats in self.replicas.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunStats:
        """Rebuild from `to_dict()` output; raises ValueError for another schema."""
        if data.get("schema") != RUN_STATS_SCHEMA:
            raise ValueError(f"expected schema {RUN_STATS_SCHEMA!r}, got {data.get('schema')!r}")
        stats = cls(
            requests_ok=int(data["requests_ok"]),
            requests_failed=int(data["requests_failed"]),
            sessions=SessionCounts.from_dict(data["sessions"]),
            prompt_tokens=int(data["tokens"]["prompt"]),
            completion_tokens=int(data["tokens"]["completion"]),
            cached_tokens=int(data["tokens"]["cached"]),
            # Absent from a worker of an older version: it saw no reasoning.
            reasoning_tokens=int(data["tokens"].get("reasoning", 0)),
            tool_calls=int(data["tool_calls"]),
            agents={name: AgentStats.from_dict(d) for name, d in data["agents"].items()},
        )
        _add_counts(stats.failures, {_kind(k): int(n) for k, n in data["failures"].items()})
        _add_counts(stats.recoveries, {_kind(k): int(n) for k, n in data["recoveries"].items()})
        for kind, counts in data.get("reasons", {}).items():
            _add_reasons(stats.reasons, _kind(kind), {str(m): int(n) for m, n in counts.items()})
        cache = data.get("cache", {})
        stats.cache_reported = int(cache.get("reported", 0))
        stats.cache_hits = int(cache.get("hits", 0))
        for name in _HISTOGRAMS:
            stats.histogram(name).merge(_histogram(data["histograms"], name))
        replicas = data.get("replicas", {})  # absent from a worker of an older version
        add_replica_counts(
            stats.replicas, {n: ReplicaStats.from_dict(r) for n, r in replicas.items()}
        )
        return stats

    def summary(
        self,
        *,
        target: Mapping[str, Any],
        profile: str,
        duration_s: float,
        generator: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The summary.json document (schema "agentload.summary/1", see docs/summary-schema.md)."""
        return build_summary(
            self, target=target, profile=profile, duration_s=duration_s, generator=generator
        )
