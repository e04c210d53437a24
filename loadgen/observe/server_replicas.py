"""The target's own /metrics broken down by replica: what each engine of a fleet finished,
used and cached, as its own `replica` (else `engine`) label names it (summary.json
`server.by_replica`, and the top-level `by_replica` when no response named a replica)."""

# target_metrics.py parses each scrape into figures per label value; this module keeps the
# replica names within MAX_REPLICAS and tallies each replica's figures as samples come, so
# that memory stays bounded by the fleet's size, not by the run's length.

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loadgen.observe.replicas import MAX_REPLICAS, OTHER_REPLICA, count_imbalance

__all__ = [
    "REPLICA_LABELS",
    "SERVER_METRICS_SOURCE",
    "ServerReplicas",
    "prefix_cache_hit_ratio",
    "replica_label",
    "server_replica_sections",
]

# The label naming a sample's replica, the first present in a scrape: the simulated fleet's
# `replica` (the names its response header gives), else vLLM's data-parallel `engine`.
REPLICA_LABELS = ("replica", "engine")
# summary.json `by_replica_source` when the top-level `by_replica` comes from these figures.
SERVER_METRICS_SOURCE = "server metrics"
# Counter figures whose increase over the run is reported.
_COUNTERS = (
    "requests_finished",
    "prompt_tokens",
    "generation_tokens",
    "prefix_cache_hits",
    "prefix_cache_queries",
    "cached_tokens",
    "preemptions",
)
_PEAKS = ("running", "waiting", "kv_cache_usage")


def replica_label(label_sets: Iterable[Mapping[str, str]]) -> str | None:
    """The label that names replicas in a scrape's samples; None when none carries one."""
    seen = {name for labels in label_sets for name in labels if name in REPLICA_LABELS}
    return next((name for name in REPLICA_LABELS if name in seen), None)


def prefix_cache_hit_ratio(
    increase: Callable[[str], float | None], mean_rate: float | None
) -> float | None:
    """A server's prefix-cache hit ratio from its counters' increases: hits / queries (vLLM),
    else cached / prompt tokens (SGLang), else the mean of its hit-rate gauge (llama.cpp)."""
    hits, queries = increase("prefix_cache_hits"), increase("prefix_cache_queries")
    if hits is not None and queries:
        return hits / queries
    cached, prompt = increase("cached_tokens"), increase("prompt_tokens")
    if cached is not None and prompt:
        return cached / prompt
    return mean_rate


@dataclass(slots=True)
class _Tally:
    """One replica's figures over the samples so far."""

    last: dict[str, float] = field(default_factory=dict)
    increase: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    rate_sum: float = 0.0
    rate_samples: int = 0
    retractions: float = 0.0
    retractions_seen: bool = False

    def add(self, values: Mapping[str, float], baseline: bool) -> None:
        for figure in _COUNTERS:
            value = values.get(figure)
            if value is None:
                continue
            # A counter first seen after the baseline started during the run (a labelled
            # series appears with its first increment; a replica can join): from zero.
            last = self.last.get(figure, None if baseline else 0.0)
            if last is not None:
                step = value - last if value >= last else value  # a drop: a restart
                self.increase[figure] = self.increase.get(figure, 0.0) + step
            else:
                self.increase.setdefault(figure, 0.0)
            self.last[figure] = value
        for figure in _PEAKS:
            if (value := values.get(figure)) is not None:
                self.peak[figure] = max(value, self.peak.get(figure, value))
        if (rate := values.get("prefix_cache_hit_rate")) is not None:
            self.rate_sum += rate
            self.rate_samples += 1
        if (retracted := values.get("retractions")) is not None:
            self.retractions += retracted
            self.retractions_seen = True

    def _count(self, figure: str) -> int | None:
        value = self.increase.get(figure)
        return None if value is None else round(value)

    def hit_ratio(self) -> float | None:
        """As the whole server's (prefix_cache_hit_ratio)."""
        mean_rate = self.rate_sum / self.rate_samples if self.rate_samples else None
        return prefix_cache_hit_ratio(self.increase.get, mean_rate)

    def report(self, finished_total: int | None) -> dict[str, Any]:
        finished = self._count("requests_finished")
        preemptions = self._count("preemptions")
        if preemptions is None and self.retractions_seen:
            preemptions = round(self.retractions)
        return {
            "requests_finished": finished,
            "share": finished / finished_total if finished is not None and finished_total else None,
            "prompt_tokens": self._count("prompt_tokens"),
            "generation_tokens": self._count("generation_tokens"),
            "prefix_cache_hit_ratio": self.hit_ratio(),
            "preemptions": preemptions,
            "running_peak": self.peak.get("running"),
            "waiting_peak": self.peak.get("waiting"),
            "kv_cache_usage_peak": self.peak.get("kv_cache_usage"),
        }


class ServerReplicas:
    """Each replica's figures over a run's scrapes, at most MAX_REPLICAS names (later ones are
    tallied together as OTHER_REPLICA)."""

    def __init__(self) -> None:
        self.label: str | None = None
        self._names: set[str] = set()
        self._tallies: dict[str, _Tally] = {}
        self._samples = 0

    def key(self, name: str) -> str:
        """The name `name`'s figures are tallied under; admits it while there is room."""
        if name in self._names:
            return name
        if len(self._names) < MAX_REPLICAS:
            self._names.add(name)
            return name
        return OTHER_REPLICA

    def add(self, label: str | None, by_replica: Mapping[str, Mapping[str, float]]) -> None:
        """One successful scrape's figures by replica key (the first is the baseline)."""
        baseline = self._samples == 0
        self._samples += 1
        if label is None:
            return
        self.label = self.label or label
        for name, values in by_replica.items():
            self._tallies.setdefault(name, _Tally()).add(values, baseline=baseline)

    def report(self) -> dict[str, Any]:
        """`replica_label` and `by_replica` for summary.json's "server" section; nothing below
        two replicas (a single engine's figures are the whole server's)."""
        if len(self._tallies) < 2:
            return {}
        finished = [t._count("requests_finished") for t in self._tallies.values()]
        total = None if None in finished else sum(n for n in finished if n is not None)
        return {
            "replica_label": self.label,
            "by_replica": {
                name: self._tallies[name].report(total) for name in sorted(self._tallies)
            },
        }


def _top_level(r: Mapping[str, Any], duration_s: float) -> dict[str, Any]:
    generated = r.get("generation_tokens")
    return {
        "requests": {"total": r.get("requests_finished")},
        "share": r.get("share"),
        "tokens": {"prompt": r.get("prompt_tokens"), "completion": generated},
        "output_tokens_per_s": generated / duration_s
        if isinstance(generated, int | float) and duration_s > 0
        else None,
        "cache_hit_ratio": r.get("prefix_cache_hit_ratio"),
        "kv_cache_usage_peak": r.get("kv_cache_usage_peak"),
        "running_peak": r.get("running_peak"),
        "waiting_peak": r.get("waiting_peak"),
        "preemptions": r.get("preemptions"),
    }


def server_replica_sections(server: Mapping[str, Any], duration_s: float) -> dict[str, Any]:
    """summary.json's top-level `by_replica`, `replica_imbalance` and `by_replica_source` from
    the "server" section's `by_replica`; nothing when it has none. Requests are those each
    replica finished; no latency or state failures: the server's counters do not say them."""
    given = server.get("by_replica")
    if not isinstance(given, Mapping) or not given:
        return {}
    by_replica = {str(name): _top_level(r, duration_s) for name, r in given.items()}
    out: dict[str, Any] = {"by_replica": by_replica, "by_replica_source": SERVER_METRICS_SOURCE}
    finished = {name: r.get("requests_finished") for name, r in given.items()}
    generated = {name: r.get("generation_tokens") for name, r in given.items()}
    if all(isinstance(n, int | float) for n in finished.values()):
        imbalance = count_imbalance({k: float(v) for k, v in finished.items()}, "requests")
    elif all(isinstance(n, int | float) for n in generated.values()):
        # llama.cpp counts no finished requests: its generated tokens show the spread.
        counts = {k: float(v) for k, v in generated.items()}
        imbalance = count_imbalance(counts, "generation_tokens")
    else:
        imbalance = None
    if imbalance is not None:
        out["replica_imbalance"] = imbalance
    return out
