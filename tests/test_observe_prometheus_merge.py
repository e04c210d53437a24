"""Merging the workers' metric samples into the master's one endpoint (real registries)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from loadgen.observe.prometheus.merge import MergedMetrics, SampleTracker
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.text import IncrementalExposition

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(registry: Collector, *, gauges: bool = True) -> Series:
    """Every exposed sample (no _created), as a scraper reads it."""
    out: Series = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if family.type == "gauge" and not gauges:
            continue
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def load(metrics: RunMetrics, requests: int, ttfts: list[float], active: int = 0) -> None:
    """Counts the way the run's sink does: requests, a histogram, a gauge."""
    metrics.set_target("p", "http://target/v1", "m")
    for _ in range(requests):
        metrics.requests.labels("p", "coding", "turn", "ok").inc()
    for ttft in ttfts:
        metrics.ttft.labels("p", "coding", "turn").observe(ttft)
    metrics.sessions_active.labels("p", "coding").set(active)


def test_merged_counters_and_histograms_equal_one_registry_that_saw_everything() -> None:
    a, b, whole = RunMetrics(), RunMetrics(), RunMetrics()
    load(a, 3, [0.02, 0.4])
    load(b, 5, [0.3, 7.0, 0.09])
    load(whole, 8, [0.02, 0.4, 0.3, 7.0, 0.09])
    merged = MergedMetrics()
    merged.update("a", SampleTracker(a).changes())
    merged.update("b", SampleTracker(b).changes())
    assert series(merged, gauges=False) == series(whole.registry, gauges=False)


def test_histogram_buckets_stay_in_ascending_order_for_parsers() -> None:
    a = RunMetrics()
    load(a, 1, [0.5])
    merged = MergedMetrics()
    merged.update("a", SampleTracker(a).changes())
    text = generate_latest(merged).decode()
    les = [line.split('le="')[1].split('"')[0] for line in text.splitlines()
           if line.startswith("agentload_ttft_seconds_bucket")]  # fmt: skip
    assert les[-1] == "+Inf"
    assert [float(le) for le in les[:-1]] == sorted(float(le) for le in les[:-1])


def test_a_report_carries_only_the_samples_that_changed() -> None:
    a = RunMetrics()
    load(a, 2, [0.1])
    tracker = SampleTracker(a)
    first = tracker.changes()
    assert len(first["samples"]) > 10
    assert first["families"]
    assert tracker.changes() == {"families": {}, "samples": []}
    a.requests.labels("p", "coding", "turn", "ok").inc()
    again = tracker.changes()["samples"]
    assert [(s[1], s[3]) for s in again] == [("agentload_requests_total", 3.0)]


def test_a_report_applied_twice_counts_once() -> None:
    a = RunMetrics()
    load(a, 4, [0.1, 0.2])
    report = SampleTracker(a).changes()
    merged = MergedMetrics()
    merged.update("a", report)
    merged.update("a", report)
    assert series(merged, gauges=False) == series(a.registry, gauges=False)


def test_a_lost_worker_keeps_its_counts_but_not_its_gauges() -> None:
    a, b = RunMetrics(), RunMetrics()
    load(a, 3, [0.1], active=4)
    load(b, 5, [0.1], active=6)
    merged = MergedMetrics()
    merged.update("a", SampleTracker(a).changes())
    merged.update("b", SampleTracker(b).changes())
    active = ("agentload_sessions_active", (("agent", "coding"), ("profile", "p")))
    requests = (
        "agentload_requests_total",
        (("agent", "coding"), ("outcome", "ok"), ("profile", "p"), ("step_kind", "turn")),
    )
    assert series(merged)[active] == 10
    merged.set_live(["b"])
    assert series(merged)[active] == 6
    assert series(merged)[requests] == 8


def test_generator_cpu_ratio_is_the_busiest_worker_not_the_sum() -> None:
    a, b = RunMetrics(), RunMetrics()
    a.cpu_ratio.labels("p").set(0.3)
    b.cpu_ratio.labels("p").set(0.9)
    merged = MergedMetrics()
    merged.update("a", SampleTracker(a).changes())
    merged.update("b", SampleTracker(b).changes())
    assert series(merged)[("agentload_generator_cpu_ratio", (("profile", "p"),))] == 0.9


def test_target_info_is_one_series_not_a_count_of_workers() -> None:
    a, b = RunMetrics(), RunMetrics()
    load(a, 1, [])
    load(b, 1, [])
    merged = MergedMetrics()
    merged.update("a", SampleTracker(a).changes())
    merged.update("b", SampleTracker(b).changes())
    info = [v for (name, _), v in series(merged).items() if name == "agentload_target_info"]
    assert info == [1.0]


def test_a_histogram_observation_resends_only_that_series_and_the_merge_stays_exact() -> None:
    a = RunMetrics()
    load(a, 1, [0.1])
    a.ttft.labels("p", "support", "turn").observe(0.2)
    tracker = SampleTracker(a)
    merged = MergedMetrics()
    merged.update("a", tracker.changes())
    a.ttft.labels("p", "coding", "turn").observe(3.0)
    report = tracker.changes()
    series_sent = {(s[1], tuple(map(tuple, s[2]))) for s in report["samples"]}
    assert {name for name, _ in series_sent} == {
        "agentload_ttft_seconds_bucket", "agentload_ttft_seconds_count",
        "agentload_ttft_seconds_sum",
    }  # fmt: skip
    assert all(("agent", "coding") in labels for _, labels in series_sent)
    merged.update("a", report)
    assert series(merged, gauges=False) == series(a.registry, gauges=False)


def test_incremental_exposition_reads_as_generate_latest_scrape_after_scrape() -> None:
    a = RunMetrics()
    load(a, 2, [0.1, 30.0])
    a.tool_calls.labels("p", "coding", 'odd "tool"\\name', "ok").inc()
    a.cpu_ratio.labels("p").set(0.25)
    exposition = IncrementalExposition(a)
    for step in range(3):
        text = exposition.render().decode()
        expected = generate_latest(a.registry).decode()
        parsed = {f.name: f for f in text_string_to_metric_families(text)}
        for family in text_string_to_metric_families(expected):
            if family.name.endswith("_created"):
                continue
            assert family.name in parsed, family.name
            assert parsed[family.name].type == family.type
            assert parsed[family.name].documentation == family.documentation
        assert series(TextCollector(text)) == series(a.registry), step
        a.requests.labels("p", "support", "turn", "failed").inc()  # a new series
        a.ttft.labels("p", "coding", "turn").observe(0.3 * (step + 1))


class TextCollector(Collector):
    """An exposition text as a collector, so `series()` reads it as it reads a registry."""

    def __init__(self, text: str) -> None:
        self.text = text

    def collect(self) -> Iterable[Metric]:
        return text_string_to_metric_families(self.text)
