"""`agentload compare` on crafted results: the statistics, the verdict rules and every exit code."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from scipy import stats

from loadgen.observe import ResultFiles, RunStats, SessionRecord, StepRecord
from loadgen.report import compare_runs, load_results, resolve_metrics
from loadgen.report.statistics import (
    design_effect,
    mann_whitney_p,
    percentile_change,
    proportion_change,
    quantile,
    rate_change,
)

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def make_run(
    path: Path,
    *,
    seed: int,
    n: int = 400,
    ttft_scale: float = 1.0,
    failed: int = 0,
    loop_lag_s: float = 0.002,
    records: bool = True,
    delayed: Callable[[int], bool] = lambda i: False,
) -> Path:
    """A results folder of `n` requests with lognormal latencies, written the real way.

    Requests in start order for which `delayed(i)` holds wait 250 ms more for their first token.
    """
    rng = random.Random(seed)
    stats = RunStats()
    with ResultFiles(path) as files:
        for i in range(n):
            ttft = 0.2 * rng.lognormvariate(0, 0.3) * ttft_scale + 0.25 * delayed(i)
            ok = i >= failed
            step = StepRecord(
                session_id=f"s{i}", agent="coding", step=0, kind="turn", api="chat",
                started_unix=1_700_000_000.0 + i * 0.05, e2e_s=ttft + 1.0, ttft_s=ttft,
                itl_s=[0.02 * rng.lognormvariate(0, 0.1) for _ in range(4)],
                completion_tokens=100, prompt_tokens=1000, ok=ok,
                failures=[] if ok else ["http_error"],
            )  # fmt: skip
            session = SessionRecord(
                f"s{i}", "coding", step.started_unix, step.e2e_s + 0.5, 1,
                "completed" if ok else "failed",
            )  # fmt: skip
            stats.session_started("coding")
            stats.add_step(step)
            stats.add_session(session)
            if records:
                files.write_step(step)
                files.write_session(session)
        generator = {"cpu_percent": 10.0, "schedule_lag_p99_s": 0.001,
                     "loop_lag_p99_s": loop_lag_s, "saturated": False, "reasons": []}  # fmt: skip
        files.write_summary(
            stats.summary(target={"url": "x"}, profile="p", duration_s=20.0, generator=generator)
        )
    if not records:
        (path / "steps.jsonl").unlink()
        (path / "sessions.jsonl").unlink()
    return path


def run_compare(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTLOAD, "compare", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def verdicts(base: Path, new: Path, **kwargs: Any) -> dict[str, str]:
    comparison = compare_runs(load_results(base), load_results(new), **kwargs)
    return {c.metric: c.verdict for c in comparison.changes}


# -- statistics -----------------------------------------------------------------------------------


def test_nearest_rank_quantile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 50) == 50.0
    assert quantile(values, 95) == 95.0
    assert quantile(values, 100) == 100.0
    assert quantile([3.0], 99) == 3.0


def test_bootstrap_interval_excludes_zero_for_a_real_shift_and_not_for_noise() -> None:
    rng = random.Random(1)
    base = sorted(rng.lognormvariate(0, 0.4) for _ in range(600))
    same = sorted(rng.lognormvariate(0, 0.4) for _ in range(600))
    slower = sorted(v * 1.3 for v in (rng.lognormvariate(0, 0.4) for _ in range(600)))
    kw: dict[str, Any] = {"confidence": 0.99, "resamples": 2000}
    noise = percentile_change(base, same, 95, rng=random.Random(0), **kw)
    assert noise.low < 0 < noise.high
    shift = percentile_change(base, slower, 50, rng=random.Random(0), **kw)
    assert 0.15 < shift.low < shift.change < shift.high
    assert shift.change == pytest.approx(0.3, abs=0.1)
    assert shift.p_value is not None
    assert shift.p_value < 0.001


def test_bootstrap_rarely_calls_noise_a_change() -> None:
    rng = random.Random(7)
    excluded = 0
    for trial in range(100):
        a = sorted(rng.lognormvariate(0, 0.5) for _ in range(300))
        b = sorted(rng.lognormvariate(0, 0.5) for _ in range(300))
        est = percentile_change(a, b, 95, confidence=0.99, resamples=1000, rng=random.Random(trial))
        excluded += not (est.low <= 0 <= est.high)
    assert excluded <= 4  # 99% intervals: about 1 in 100 by chance


def test_design_effect_counts_a_clump_of_slow_samples_as_few_and_scattered_ones_as_many() -> None:
    rng = random.Random(5)
    fast = [rng.uniform(0.1, 0.2) for _ in range(400)]
    clumped = [v + 0.5 if 100 <= i < 140 else v for i, v in enumerate(fast)]
    scattered = [v + 0.5 if i % 10 == 0 else v for i, v in enumerate(fast)]
    threshold = quantile(sorted(clumped), 95)  # the same for both: they hold the same values
    assert design_effect(scattered, threshold) < 1.5
    assert design_effect(clumped, threshold) > 5
    assert design_effect(fast[:10], 0.15) == 1.0  # too few to batch


def test_rank_test_matches_scipy_with_and_without_ties() -> None:
    rng = random.Random(3)
    a = [rng.gauss(0, 1) for _ in range(80)]
    b = [rng.gauss(0.4, 1) for _ in range(90)]
    tied_a = [float(round(v)) for v in a]
    tied_b = [float(round(v)) for v in b]
    for x, y in ((a, b), (tied_a, tied_b)):
        expected = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue
        assert mann_whitney_p(x, y, random.Random(0)) == pytest.approx(expected, rel=1e-6)
    assert mann_whitney_p([1.0] * 5, [1.0] * 5, random.Random(0)) == 1.0


def test_rate_and_proportion_intervals() -> None:
    # 10,000 vs 8,000 requests in the same time: a clear 20% drop.
    drop = rate_change(10_000, 10_000, 100.0, 8_000, 8_000, 100.0, confidence=0.99)
    assert drop is not None
    assert drop.change == pytest.approx(-0.2)
    assert drop.high < 0
    # 100 vs 95 requests: the same drop in percent, but within the noise.
    small = rate_change(100, 100, 10.0, 95, 95, 10.0, confidence=0.99)
    assert small is not None
    assert small.low < 0 < small.high
    worse = proportion_change(100, 10_000, 500, 10_000, confidence=0.99)
    assert worse is not None
    assert worse.change == pytest.approx(4.0)
    assert worse.low > 0
    assert worse.p_value is not None
    assert worse.p_value < 1e-6
    none = proportion_change(0, 500, 0, 500, confidence=0.99)
    assert none is not None
    assert none.change == 0
    assert none.low < 0 < none.high


# -- verdicts ------------------------------------------------------------------------------------


def test_same_distribution_is_unchanged_and_a_slower_ttft_regresses(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1)
    again = make_run(tmp_path / "again", seed=2)
    slower = make_run(tmp_path / "slower", seed=3, ttft_scale=1.25)
    assert set(verdicts(base, again).values()) == {"unchanged"}
    found = verdicts(base, slower)
    assert found["ttft_p50"] == "regression"
    assert found["ttft_p95"] == "regression"
    assert found["itl_p50"] == "unchanged"
    assert verdicts(slower, base)["ttft_p50"] == "improvement"


def test_one_stall_that_delayed_the_requests_in_flight_together_is_not_a_regression(
    tmp_path: Path,
) -> None:
    base = make_run(tmp_path / "base", seed=1)
    # 40 requests in a row 250 ms late: one server hiccup, one piece of evidence...
    stalled = make_run(tmp_path / "stalled", seed=2, delayed=lambda i: 100 <= i < 140)
    # ...while 40 late requests spread over the whole run are a slower tail.
    slow_tail = make_run(tmp_path / "slow-tail", seed=2, delayed=lambda i: i % 10 == 0)
    assert verdicts(base, stalled)["ttft_p95"] == "unchanged"
    assert verdicts(base, slow_tail)["ttft_p95"] == "regression"


def test_a_change_below_the_tolerance_is_not_a_regression(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1, n=3000)
    slower = make_run(tmp_path / "slower", seed=2, n=3000, ttft_scale=1.06)
    comparison = compare_runs(load_results(base), load_results(slower))
    ttft = next(c for c in comparison.changes if c.metric == "ttft_p50")
    assert ttft.ci_low is not None
    assert ttft.ci_low > 0  # statistically clear...
    assert ttft.verdict == "unchanged"  # ...but within the 10% tolerance
    tight = compare_runs(load_results(base), load_results(slower), max_regression=0.02)
    assert any(c.metric == "ttft_p50" for c in tight.regressions)


def test_latency_changes_within_the_generators_timing_noise_never_count(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1, loop_lag_s=0.002)
    # +25% of a 200 ms TTFT is 50 ms: inside a generator whose loop lagged 80 ms.
    noisy = make_run(tmp_path / "noisy", seed=2, ttft_scale=1.25, loop_lag_s=0.08)
    comparison = compare_runs(load_results(base), load_results(noisy))
    assert comparison.noise_floor_s == 0.08
    assert not comparison.regressions


def test_failure_rates_regress_when_clearly_higher(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1, n=2000, failed=10)
    flaky = make_run(tmp_path / "flaky", seed=2, n=2000, failed=80)
    found = verdicts(base, flaky)
    assert found["error_rate"] == "regression"
    assert found["session_failure_rate"] == "regression"


def test_summary_only_baselines_compare_from_the_histograms(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1, records=False)
    slower = make_run(tmp_path / "slower", seed=3, ttft_scale=1.3)
    comparison = compare_runs(load_results(base / "summary.json"), load_results(slower))
    assert comparison.source == "summary.json histograms"
    assert {c.metric for c in comparison.regressions} >= {"ttft_p50"}
    again = make_run(tmp_path / "again", seed=2, records=False)
    assert not compare_runs(load_results(base), load_results(again)).regressions


def test_worker_folders_of_a_distributed_run_are_read_too(tmp_path: Path) -> None:
    whole = make_run(tmp_path / "whole", seed=1)
    split = tmp_path / "split"
    split.mkdir()
    (split / "summary.json").write_bytes((whole / "summary.json").read_bytes())
    for name in ("steps.jsonl", "sessions.jsonl"):
        lines = (whole / name).read_text().splitlines(keepends=True)
        for worker in (0, 1):
            folder = split / f"worker-{worker}"
            folder.mkdir(exist_ok=True)
            (folder / name).write_text("".join(lines[worker::2]))
    a = compare_runs(load_results(whole), load_results(whole))
    b = compare_runs(load_results(whole), load_results(split))
    assert b.source == "steps.jsonl / sessions.jsonl"
    assert [c.samples for c in a.changes] == [c.samples for c in b.changes]
    assert [c.new for c in a.changes] == [c.new for c in b.changes]


def test_metric_names_are_checked() -> None:
    assert [m.name for m in resolve_metrics(["ttft_p99,e2e_p50", "ttft_p99"])] == [
        "ttft_p99",
        "e2e_p50",
    ]


# -- the command and its exit codes -----------------------------------------------------------


def test_exit_0_when_nothing_regressed(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1)
    again = make_run(tmp_path / "again", seed=2)
    result = run_compare(base / "summary.json", again)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: no regression" in result.stdout
    assert "ttft_p95" in result.stdout
    assert result.stderr == ""


def test_exit_1_on_a_regression_with_junit_and_json(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1)
    slower = make_run(tmp_path / "slower", seed=3, ttft_scale=1.3)
    junit, report = tmp_path / "compare.xml", tmp_path / "compare.json"
    result = run_compare(base, slower, "--junit", junit, "--json", report)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "REGRESSION" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("ttft_p50 "))
    assert row.endswith("REGRESSION")
    data = json.loads(report.read_text())
    assert data["regressed"] is True
    assert data["schema"] == "agentload.compare/1"
    failed = [
        c.attrib["name"] for c in ET.parse(junit).iter("testcase") if c.find("failure") is not None
    ]
    assert "ttft_p50" in failed


def test_a_looser_tolerance_or_other_metrics_turn_it_back_to_0(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1)
    slower = make_run(tmp_path / "slower", seed=3, ttft_scale=1.3)
    assert run_compare(base, slower, "--max-regression", "50%").returncode == 0
    only_itl = run_compare(base, slower, "--metric", "itl_p50", "--metric", "itl_p95")
    assert only_itl.returncode == 0, only_itl.stdout
    assert "ttft" not in only_itl.stdout.split("\n\n")[1]


def _assert_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_exit_2_for_usage_errors_with_one_line_naming_the_problem(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", seed=1)
    missing = tmp_path / "nowhere"
    _assert_usage_error(run_compare(missing, base), str(missing), "no such results folder")
    _assert_usage_error(run_compare(base, missing), str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_usage_error(run_compare(base, empty), str(empty), "no summary.json")
    broken = tmp_path / "broken" / "summary.json"
    broken.parent.mkdir()
    broken.write_text('{"schema": "agentload.summ')
    _assert_usage_error(run_compare(base, broken), str(broken), "not valid JSON")
    other = tmp_path / "other" / "summary.json"
    other.parent.mkdir()
    other.write_bytes(orjson.dumps({"schema": "something/else"}))
    _assert_usage_error(run_compare(base, other), "not an agentload summary")
    _assert_usage_error(run_compare(base, base, "--metric", "ttft_p42"), "ttft_p42", "ttft_p95")
    _assert_usage_error(run_compare(base, base, "--max-regression", "lots"), "--max-regression")
    _assert_usage_error(run_compare(base, base, "--max-regression", "5"), "write it as 5%")
    _assert_usage_error(run_compare(base), "NEW")
