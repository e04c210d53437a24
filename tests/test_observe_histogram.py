"""LatencyHistogram: percentile precision, exact merging and a lossless dict form."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from loadgen.observe import LatencyHistogram

QUANTILES = (0, 0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100)


def _lognormal(n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(-2.5, 1.2) for _ in range(n)]


def _exact(values: list[float], q: float) -> float:
    """The nearest-rank sample quantile, by sorting."""
    ordered = sorted(values)
    rank = min(max(math.ceil(q * len(ordered) / 100), 1), len(ordered))
    return ordered[rank - 1]


def _filled(values: list[float]) -> LatencyHistogram:
    hist = LatencyHistogram()
    hist.record_many(values)
    return hist


def test_percentiles_are_within_one_percent_of_exact_sample_quantiles() -> None:
    values = _lognormal(20_000)
    hist = _filled(values)
    for q in QUANTILES:
        got = hist.percentile(q)
        assert got is not None
        assert got == pytest.approx(_exact(values, q), rel=0.01), q


def test_integer_token_counts_are_within_one_percent() -> None:
    rng = random.Random(3)
    values = [rng.randint(1, 200_000) for _ in range(5_000)]
    hist = _filled([float(v) for v in values])
    for q in QUANTILES:
        assert hist.percentile(q) == pytest.approx(_exact([float(v) for v in values], q), rel=0.01)


def test_count_sum_min_max_and_mean_are_exact() -> None:
    values = _lognormal(1_000)
    hist = _filled(values)
    assert hist.count == len(values)
    assert hist.sum == pytest.approx(math.fsum(values), rel=1e-12)
    assert hist.min == min(values)
    assert hist.max == max(values)
    assert hist.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-12)


def test_merge_of_split_data_equals_histogram_of_all_data() -> None:
    values = _lognormal(10_000)
    whole = _filled(values)
    merged = _filled(values[:3_000])
    merged.merge(_filled(values[3_000:7_500]))
    merged.merge(_filled(values[7_500:]))
    assert merged == whole
    assert merged.count == whole.count
    for q in QUANTILES:
        assert merged.percentile(q) == whole.percentile(q)


def test_merging_an_empty_histogram_changes_nothing() -> None:
    hist = _filled(_lognormal(100))
    before = hist.copy()
    hist.merge(LatencyHistogram())
    assert hist == before


def test_dict_roundtrip_through_json_gives_an_equal_histogram() -> None:
    hist = _filled([*_lognormal(2_000), 0.0, 1e-9])
    again = LatencyHistogram.from_dict(orjson.loads(orjson.dumps(hist.to_dict())))
    assert again == hist
    assert again.percentile(99) == hist.percentile(99)
    assert again.sum == hist.sum


def test_empty_histogram_roundtrips_and_reports_none() -> None:
    hist = LatencyHistogram.from_dict(LatencyHistogram().to_dict())
    assert hist == LatencyHistogram()
    assert hist.percentile(50) is None
    assert hist.mean is None
    assert hist.quantiles_dict() == dict.fromkeys(("p50", "p90", "p95", "p99", "max", "mean"))


def test_to_dict_lists_only_non_empty_buckets() -> None:
    data = _filled([0.010, 0.010, 0.010, 2.0]).to_dict()
    assert sum(data["buckets"].values()) == 4
    assert len(data["buckets"]) == 2


def test_values_below_a_microsecond_share_the_low_bucket_and_report_the_minimum() -> None:
    hist = _filled([0.0, 5e-7, 0.5])
    assert hist.to_dict()["low"] == 2
    assert hist.percentile(50) == 0.0
    assert hist.percentile(100) == 0.5


def test_percentiles_stay_within_min_and_max() -> None:
    hist = _filled([0.123456789])
    assert hist.percentile(0) == hist.percentile(100) == 0.123456789


@pytest.mark.parametrize("value", [-0.001, math.nan, math.inf])
def test_negative_and_non_finite_values_are_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="cannot record"):
        LatencyHistogram().record(value)


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_outside_0_to_100_is_rejected(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        _filled([1.0]).percentile(q)


def test_from_dict_refuses_another_bucket_layout() -> None:
    data = _filled([1.0]).to_dict()
    data["sub_buckets"] = 100
    with pytest.raises(ValueError, match="sub-buckets"):
        LatencyHistogram.from_dict(data)


def test_from_dict_refuses_counts_that_do_not_add_up() -> None:
    data = _filled([1.0, 2.0]).to_dict()
    data["count"] = 3
    with pytest.raises(ValueError, match="add up"):
        LatencyHistogram.from_dict(data)


def test_quantiles_dict_has_the_summary_keys() -> None:
    values = _lognormal(500)
    summary = _filled(values).quantiles_dict()
    assert list(summary) == ["p50", "p90", "p95", "p99", "max", "mean"]
    assert summary["max"] == max(values)
