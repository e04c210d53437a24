"""A run's share per replica of a fleet: load, latency, cache hits and state failures, and
which replica the imbalance falls on (summary.json `by_replica`, `replica_imbalance`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loadgen.observe.histogram import LatencyHistogram
from loadgen.observe.records import StepRecord

__all__ = [
    "HEADER_SOURCE",
    "MAX_REPLICAS",
    "OTHER_REPLICA",
    "TARGETS_SOURCE",
    "ReplicaStats",
    "add_replica_counts",
    "count_imbalance",
    "replica_imbalance",
    "replica_key",
    "replica_sections",
]

# Distinct replica names one run keeps; later ones are counted together as OTHER_REPLICA.
# Names come from response headers: a router that names every request differently must
# not grow the summary (or the master's merge) without bound.
MAX_REPLICAS = 64
OTHER_REPLICA = "other"
# summary.json `by_replica_source`: where the replicas' names came from.
HEADER_SOURCE = "response header"
TARGETS_SOURCE = "targets"
# The imbalance's sentence calls requests even while the busiest replica has less than a
# tenth above the mean, and names the slowest replica once its median is a quarter above.
_EVEN = 1.1
_SLOW = 1.25


@dataclass(slots=True)
class ReplicaStats:
    """What the steps a replica served measured."""

    requests_ok: int = 0
    requests_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_reported: int = 0  # steps whose usage said how many prompt tokens were cached
    failures: dict[str, int] = field(default_factory=dict)  # non-zero kinds only
    ttft_s: LatencyHistogram = field(default_factory=LatencyHistogram)
    e2e_s: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def requests(self) -> int:
        """Every step recorded, successful or not."""
        return self.requests_ok + self.requests_failed

    def add(self, rec: StepRecord, kinds: list[str]) -> None:
        """Count one step (`kinds`: its failures, by canonical name), as RunStats does."""
        if rec.ok:
            self.requests_ok += 1
            if rec.ttft_s is not None:
                self.ttft_s.record(rec.ttft_s)
            self.e2e_s.record(rec.e2e_s)
        else:
            self.requests_failed += 1
        for kind in kinds:
            self.failures[kind] = self.failures.get(kind, 0) + 1
        if rec.cached_tokens is not None:
            self.cache_reported += 1
        self.prompt_tokens += rec.prompt_tokens or 0
        self.completion_tokens += rec.completion_tokens or 0
        self.cached_tokens += rec.cached_tokens or 0

    def merge(self, other: ReplicaStats) -> None:
        """Add `other`'s counts and histograms."""
        self.requests_ok += other.requests_ok
        self.requests_failed += other.requests_failed
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_reported += other.cache_reported
        for kind, n in other.failures.items():
            self.failures[kind] = self.failures.get(kind, 0) + n
        self.ttft_s.merge(other.ttft_s)
        self.e2e_s.merge(other.e2e_s)

    def to_dict(self) -> dict[str, Any]:
        """Lossless JSON-able form."""
        return {
            "requests_ok": self.requests_ok,
            "requests_failed": self.requests_failed,
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "cached": self.cached_tokens,
            },
            "cache_reported": self.cache_reported,
            "failures": dict(self.failures),
            "ttft_s": self.ttft_s.to_dict(),
            "e2e_s": self.e2e_s.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplicaStats:
        """Rebuild from `to_dict()` output."""
        tokens = data["tokens"]
        return cls(
            requests_ok=int(data["requests_ok"]),
            requests_failed=int(data["requests_failed"]),
            prompt_tokens=int(tokens["prompt"]),
            completion_tokens=int(tokens["completion"]),
            cached_tokens=int(tokens["cached"]),
            cache_reported=int(data.get("cache_reported", 0)),
            failures={str(k): int(n) for k, n in data["failures"].items()},
            ttft_s=LatencyHistogram.from_dict(data["ttft_s"]),
            e2e_s=LatencyHistogram.from_dict(data["e2e_s"]),
        )

    def hit_ratio(self) -> float | None:
        """Cached prompt tokens over prompt tokens; None when no reply said what was cached."""
        if not self.cache_reported or not self.prompt_tokens:
            return None
        return self.cached_tokens / self.prompt_tokens


def replica_key(replicas: Mapping[str, ReplicaStats], name: str) -> str:
    """The key `name` is counted under: itself, or OTHER_REPLICA past MAX_REPLICAS names."""
    if name in replicas or len(replicas) < MAX_REPLICAS:
        return name
    return OTHER_REPLICA


def add_replica_counts(into: dict[str, ReplicaStats], other: Mapping[str, ReplicaStats]) -> None:
    """Merge `other`'s replicas into `into`, within MAX_REPLICAS names."""
    for name, stats in other.items():
        into.setdefault(replica_key(into, name), ReplicaStats()).merge(stats)


def _replica_summary(stats: ReplicaStats, total: int, duration_s: float) -> dict[str, Any]:
    return {
        "requests": {
            "total": stats.requests,
            "ok": stats.requests_ok,
            "failed": stats.requests_failed,
        },
        "share": stats.requests / total if total else None,
        "tokens": {
            "prompt": stats.prompt_tokens,
            "completion": stats.completion_tokens,
            "cached": stats.cached_tokens,
        },
        "output_tokens_per_s": stats.completion_tokens / duration_s if duration_s > 0 else None,
        "cache_hit_ratio": stats.hit_ratio(),
        "latency": {"ttft_s": stats.ttft_s.quantiles_dict(), "e2e_s": stats.e2e_s.quantiles_dict()},
        "state_failures": dict(sorted(stats.failures.items())),
    }


def _seconds(value: float) -> str:
    return f"{value * 1000:.3g} ms" if value < 1.0 else f"{value:.3g} s"


def _slowest(replicas: Mapping[str, ReplicaStats]) -> dict[str, Any] | None:
    """The replica with the highest median latency: TTFT where every replica streamed one,
    else end to end; None below two replicas with successful requests."""
    served = {name: s for name, s in replicas.items() if s.requests_ok}
    if len(served) < 2:
        return None
    ttft = all(s.ttft_s.count for s in served.values())
    metric = "ttft_p50_s" if ttft else "e2e_p50_s"
    medians = {
        name: (s.ttft_s if ttft else s.e2e_s).percentile(50) or 0.0 for name, s in served.items()
    }
    name = max(medians, key=lambda n: medians[n])
    mean = sum(medians.values()) / len(medians)
    return {
        "metric": metric,
        "replica": name,
        "value": medians[name],
        "max_over_mean": medians[name] / mean if mean > 0 else None,
    }


# How the imbalance's sentence names each count it can be taken over.
_NOUNS = {
    "requests": ("requests", "served", "the fewest", "no replica served a request"),
    "generation_tokens": ("output tokens", "generated", "the least", "no replica generated"),
}


def count_imbalance(counts: Mapping[str, float], metric: str = "requests") -> dict[str, Any] | None:
    """Which replica has the largest count of `metric` ("requests", "generation_tokens") and
    how far above the mean, which the smallest; a sentence saying so. None below two."""
    if len(counts) < 2:
        return None
    noun, verb, least, none = _NOUNS[metric]
    total = sum(counts.values())
    mean = total / len(counts)
    # Ties go to the name first in order, so that the verdict is the same on every run.
    ordered = sorted(counts, key=lambda n: (-counts[n], n))
    busiest, idlest = ordered[0], ordered[-1]
    share = {name: n / total if total else 0.0 for name, n in counts.items()}
    over = counts[busiest] / mean if mean else None
    if over is None:
        text = none
    elif over < _EVEN:
        text = f"{noun} evenly spread: the busiest, {busiest}, {verb} {share[busiest]:.0%}"
        text += f" ({over:.2f}x the mean)"
    else:
        text = f"{busiest} {verb} {share[busiest]:.0%} of {noun} ({over:.2f}x the mean), "
        text += f"{idlest} {least} ({share[idlest]:.0%})"
    return {
        "metric": metric,
        "max_over_mean": over,
        "busiest": busiest,
        "busiest_share": share[busiest],
        "idlest": idlest,
        "idlest_share": share[idlest],
        "slowest": None,
        "text": text,
    }


def replica_imbalance(replicas: Mapping[str, ReplicaStats]) -> dict[str, Any] | None:
    """Which replica got the most requests and how far above the mean, which the fewest, and
    which answered slowest; a sentence saying so. None below two replicas."""
    out = count_imbalance({name: float(s.requests) for name, s in replicas.items()})
    if out is None:
        return None
    slowest = _slowest(replicas)
    if slowest is not None and (slowest["max_over_mean"] or 0) >= _SLOW:
        what = "TTFT" if slowest["metric"] == "ttft_p50_s" else "end-to-end"
        out["text"] += (
            f"; {slowest['replica']} is the slowest, {what} p50 {_seconds(slowest['value'])} "
            f"({slowest['max_over_mean']:.2f}x the mean)"
        )
    out["slowest"] = slowest
    return out


def replica_sections(
    replicas: Mapping[str, ReplicaStats], known: Mapping[str, Any], duration_s: float
) -> dict[str, Any]:
    """summary.json's `by_replica` and `replica_imbalance`; nothing when no step named a
    replica and no fleet was given. `known`: the fleet's replicas by name (those that served
    nothing are listed too, at zero)."""
    if not replicas and not known:
        return {}
    every = dict(replicas)
    for name in known:
        if name not in every:
            every[name] = ReplicaStats()
    total = sum(s.requests for s in every.values())
    out: dict[str, Any] = {
        "by_replica": {
            name: _replica_summary(every[name], total, duration_s) for name in sorted(every)
        },
        # Several --target URLs (a name a response header gave still takes precedence), or
        # the replica header alone; observe/server_replicas.py gives "server metrics".
        "by_replica_source": TARGETS_SOURCE if known else HEADER_SOURCE,
    }
    if (imbalance := replica_imbalance(every)) is not None:
        out["replica_imbalance"] = imbalance
    return out
