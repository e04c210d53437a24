"""One Prometheus endpoint for a swarm: workers ship their samples, the master serves the sum."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from loadgen.observe.prometheus.histogram import HistogramFamily
from loadgen.observe.prometheus.metrics import RunMetrics

__all__ = ["MergedMetrics", "SampleTracker"]

# Gauges read per process, where a sum over workers would mislead: one worker at 0.9 CPU is
# saturated, four at 0.3 are not, and their sum (1.2) says neither. The busiest one counts.
_MAX_GAUGES = frozenset({"agentload_generator_cpu_ratio"})

# Keyed by sample name and its sorted label pairs; labels travel as [[name, value], ...].
_Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: dict[str, str]) -> _Key:
    return name, tuple(sorted(labels.items()))


class SampleTracker:
    """A worker's side: the samples of a RunMetrics that changed since the last report."""

    def __init__(self, metrics: RunMetrics) -> None:
        self.collectors = metrics.collectors
        self._sent: dict[_Key, float] = {}
        self._families_sent: set[str] = set()
        self._histogram_counts: dict[tuple[str, tuple[str, ...]], int] = {}

    def changes(self) -> dict[str, Any]:
        """Cumulative values of every sample that changed (all of them the first time).

        Values are totals, not increments, so the master just overwrites: a report that
        arrives twice, or a family re-sent, cannot count anything twice. Histogram children
        whose count did not move are skipped without building their samples: most of a
        registry's samples are buckets, and this runs on the generator's event loop.
        """
        families: dict[str, list[str]] = {}
        samples: list[list[Any]] = []

        def family_seen(name: str, kind: str, doc: str) -> None:
            if name not in self._families_sent:
                families[name] = [kind, doc]
                self._families_sent.add(name)

        for collector in self.collectors:
            if isinstance(collector, HistogramFamily):
                family_seen(collector.name, "histogram", collector.documentation)
                self._histogram_changes(collector, samples)
                continue
            for family in collector.collect():
                family_seen(family.name, family.type, family.documentation)
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue  # per-process creation times mean nothing once summed
                    key = _key(sample.name, sample.labels)
                    if self._sent.get(key) == sample.value:
                        continue
                    self._sent[key] = sample.value
                    samples.append([family.name, sample.name, list(map(list, key[1])),
                                    sample.value])  # fmt: skip
        return {"families": families, "samples": samples}

    def _histogram_changes(self, family: HistogramFamily, samples: list[list[Any]]) -> None:
        name, labelnames = family.name, family.labelnames
        les = family.bucket_labels
        for values, child in family.children():
            count = child.count
            if self._histogram_counts.get((name, values)) == count:
                continue
            self._histogram_counts[(name, values)] = count
            pairs = sorted(zip(labelnames, values, strict=True))
            base = [list(p) for p in pairs]
            for le, n in zip(les, child.cumulative(), strict=True):
                labels = sorted([*pairs, ("le", le)])
                samples.append([name, name + "_bucket", [list(p) for p in labels], float(n)])
            samples.append([name, name + "_count", base, float(count)])
            samples.append([name, name + "_sum", base, child.sum])


class _WorkerSamples:
    """The latest value of every sample one worker reported (replaced whole, never mutated)."""

    __slots__ = ("values",)

    def __init__(self, values: dict[_Key, tuple[str, float]]) -> None:
        self.values = values


class MergedMetrics(Collector):
    """The master's side: every worker's latest samples, summed per series when collected.

    Counters and histograms of a worker that went missing keep their last values, so the
    swarm's totals never go backwards; its gauges (sessions in flight, users) drop out.
    `update` runs on Locust's hub while scrapes may be served from another thread: each
    worker's samples are replaced as a whole, so a scrape sees one report or the next.
    """

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str]] = {}
        self._workers: dict[str, _WorkerSamples] = {}
        self._live: frozenset[str] | None = None  # None: every worker that reported

    def update(self, worker: str, changes: dict[str, Any]) -> None:
        """Take one report of `SampleTracker.changes()` from `worker`."""
        for name, (kind, doc) in (changes.get("families") or {}).items():
            self._families.setdefault(name, (kind, doc))
        old = self._workers.get(worker)
        values = dict(old.values) if old is not None else {}
        for family, sample, labels, value in changes.get("samples") or ():
            values[(sample, tuple((str(k), str(v)) for k, v in labels))] = (family, float(value))
        self._workers[worker] = _WorkerSamples(values)

    def set_live(self, workers: Iterable[str]) -> None:
        """The workers still heard from; gauges of the others no longer count."""
        self._live = frozenset(workers)

    @property
    def workers(self) -> list[str]:
        """Every worker that reported samples."""
        return sorted(self._workers)

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the families are known once workers report."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """One family per metric the workers reported, each series summed over workers."""
        families = dict(self._families)
        live = self._live
        merged: dict[_Key, float] = {}
        family_of: dict[_Key, str] = {}
        for worker, samples in list(self._workers.items()):
            for key, (family, value) in samples.values.items():
                kind = families.get(family, ("untyped", ""))[0]
                if kind == "gauge" and live is not None and worker not in live:
                    continue
                family_of[key] = family
                if key not in merged:
                    merged[key] = value
                elif kind == "info" or (kind == "gauge" and family in _MAX_GAUGES):
                    merged[key] = max(merged[key], value)
                else:
                    merged[key] = merged[key] + value
        out: dict[str, Metric] = {}
        # In the order the workers listed them, so each histogram's buckets stay ascending.
        for key in merged:
            family = family_of[key]
            metric = out.get(family)
            if metric is None:
                kind, doc = families.get(family, ("untyped", ""))
                metric = out[family] = Metric(family, doc, kind)
            metric.add_sample(key[0], dict(key[1]), merged[key])
        yield from out.values()
