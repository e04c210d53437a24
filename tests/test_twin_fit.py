"""The twin's fits and readings, on made-up measurements: lines, block sizes, dialects, the
running peak, the steady ITL, the decode fit, and the refusals."""

from __future__ import annotations

import math

import pytest

from loadgen.observe.generator_health import GeneratorHealth
from loadgen.protocol import Reply
from loadgen.twin import CalibrationRefused, fit_line
from loadgen.twin.calibrate import _healthy, check_noise
from loadgen.twin.decode_sweep import Level, LevelRun, fit_decode, peak_decoding, steady_itl
from loadgen.twin.fit import relative_spread
from loadgen.twin.prefill_probe import PrefillPoint, fit_prefill, prefill_lengths
from loadgen.twin.server_facts import _block_size, parse_cache_config, read_dialect

MS = 1_000_000  # ns


def test_a_line_through_exact_points_is_recovered_with_zero_error() -> None:
    line = fit_line([1, 2, 4, 8], [12.5, 13.0, 14.0, 16.0])
    assert line.intercept == pytest.approx(12.0)
    assert line.slope == pytest.approx(0.5)
    assert line.slope_se == pytest.approx(0.0, abs=1e-12)
    assert line.predict(16) == pytest.approx(20.0)


def test_the_standard_errors_match_the_textbook_formulas() -> None:
    xs, ys = [1.0, 2.0, 3.0, 4.0, 5.0], [2.1, 3.9, 6.2, 7.8, 10.1]
    line = fit_line(xs, ys)
    n, mean_x = len(xs), sum(xs) / len(xs)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    residual = sum((y - line.predict(x)) ** 2 for x, y in zip(xs, ys, strict=True))
    s2 = residual / (n - 2)
    assert line.slope_se == pytest.approx(math.sqrt(s2 / sxx))
    assert line.intercept_se == pytest.approx(math.sqrt(s2 * (1 / n + mean_x**2 / sxx)))


def test_a_line_needs_two_distinct_xs() -> None:
    with pytest.raises(ValueError, match="two distinct"):
        fit_line([4, 4, 4], [1, 2, 3])


def test_relative_spread_is_range_over_median() -> None:
    assert relative_spread([9.0, 10.0, 11.0]) == pytest.approx(0.2)
    assert relative_spread([5.0]) == 0.0


def test_prefill_fit_gives_the_rate_and_the_overhead() -> None:
    points = [PrefillPoint(n, (0.013 + n / 20_000, 0.013 + n / 20_000)) for n in (256, 1024, 4096)]
    fit = fit_prefill(points)
    assert fit.rate.value == pytest.approx(20_000)
    assert fit.overhead_s.value == pytest.approx(0.013)
    assert fit.predict_s(2048) == pytest.approx(0.013 + 2048 / 20_000)


def test_prefill_that_does_not_grow_with_the_prompt_is_refused() -> None:
    points = [PrefillPoint(n, (0.02, 0.021)) for n in (256, 1024, 4096)]
    with pytest.raises(CalibrationRefused, match="does not grow measurably"):
        fit_prefill(points)


def test_prefill_lengths_stop_at_half_the_window_and_the_flag() -> None:
    assert prefill_lengths(8192, 131072) == [256, 512, 1024, 2048, 4096, 8192]
    assert prefill_lengths(8192, 4096) == [256, 512, 1024, 2048]
    assert prefill_lengths(1000, None) == [256, 512]


def test_block_size_divides_every_cached_count_and_covers_each_rest() -> None:
    # vLLM caches whole blocks and always computes at least one token.
    pairs = [(p, (p - 1) // 16 * 16) for p in (211, 339, 465, 597, 709, 831)]
    assert _block_size(pairs) == 16
    # Blocks of 32: every count is a multiple of 16 as well, but a rest of 30 rules out 16.
    assert _block_size([(230, 224), (350, 320), (470, 448)]) == 32
    assert _block_size([(100, 0)]) is None


VLLM = """\
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.9",num_cpu_blocks="None",num_gpu_blocks="27024"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.0
"""  # noqa: E501


def test_kv_capacity_is_read_from_vllms_cache_config_info() -> None:
    cache = parse_cache_config(VLLM)
    assert cache is not None
    assert (cache.num_blocks, cache.block_size) == (27024, 16)
    assert parse_cache_config("vllm:num_requests_running 0\n") is None


@pytest.mark.parametrize(
    ("text", "dialect"),
    [
        (VLLM, "vllm"),
        ("vllm:gpu_cache_usage_perc 0.1\n", "vllm-v0"),
        ('sglang:token_usage{model_name="m"} 0.2\n', "sglang"),
        ("llamacpp:requests_processing 1\n", "llamacpp"),
        ("process_cpu_seconds_total 3\n", None),
    ],
)
def test_the_metric_dialect_is_told_by_the_names(text: str, dialect: str | None) -> None:
    assert read_dialect(text) == dialect


def stream(first_ms: float, tokens: int, step_ms: float) -> Reply:
    reply = Reply(api="chat")
    reply.token_times_ns = [int((first_ms + i * step_ms) * MS) for i in range(tokens)]
    reply.t_first_token_ns = reply.token_times_ns[0]
    return reply


def test_the_running_peak_counts_streams_between_first_and_last_token() -> None:
    # Two waves of two: the second starts one step after the first ends.
    replies = [stream(0, 10, 10), stream(1, 10, 10), stream(101, 10, 10), stream(102, 10, 10)]
    assert peak_decoding(replies) == 2
    assert peak_decoding([stream(0, 10, 10), stream(5, 10, 10), stream(7, 10, 10)]) == 3


def test_steady_itl_is_the_mean_gap_while_the_whole_wave_decodes() -> None:
    # Gaps jitter by a millisecond either way (a timer's granularity); the mean is the step.
    jitter = Reply(api="chat")
    jitter.token_times_ns = [int((i * 12.5 + (0.6 if i % 3 else -0.6)) * MS) for i in range(40)]
    assert steady_itl([jitter, stream(3, 40, 12.5)]) == pytest.approx(0.0125, rel=2e-3)
    assert steady_itl([stream(0, 3, 10)]) is None


def level(c: int, itl_ms: float, peak: int | None = None) -> Level:
    run = LevelRun(itl_ms / 1000, 0.02, c if peak is None else peak, 0, 1.0)
    return Level(c, (run, run))


def test_the_decode_fit_uses_the_levels_below_the_limit_and_names_the_limit() -> None:
    levels = [level(c, 12 + 0.5 * c) for c in (1, 2, 4, 8, 16)] + [level(32, 20, peak=16)]
    fit = fit_decode(levels, None)
    assert fit.base_ms.value == pytest.approx(12)
    assert fit.per_seq_ms.value == pytest.approx(0.5)
    assert fit.limit_found
    assert fit.batch_limit.value == 16
    assert fit.predict_itl_s(64) == pytest.approx(0.020)


def test_a_sweep_that_never_saturated_gives_a_lower_bound() -> None:
    fit = fit_decode([level(c, 10 + c) for c in (1, 2, 4)], "the cap")
    assert not fit.limit_found
    assert fit.batch_limit.value == 4
    assert "lower bound: the cap" in fit.batch_limit.method


def test_a_sweep_with_one_level_below_the_limit_cannot_be_fitted() -> None:
    with pytest.raises(CalibrationRefused, match="cannot fit the decode step"):
        fit_decode([level(1, 12), level(2, 12, peak=1)], None)


def test_a_noisy_target_is_refused_and_a_stray_outlier_is_not() -> None:
    assert check_noise("prefill probes", [0.01, 0.02, 0.9], 0.25) == 0.02
    with pytest.raises(CalibrationRefused, match=r"too noisy.*differ by 40%.*limit is 25%"):
        check_noise("prefill probes", [0.3, 0.4, 0.5], 0.25)


def test_a_saturated_generator_is_refused_with_its_reasons() -> None:
    wall = iter([0.0, 10.0])  # started, then reported: 9.9 s of CPU in 10 s
    cpu = iter([0.0, 9.9])
    health = GeneratorHealth(clock=lambda: next(wall), cpu_clock=lambda: next(cpu))
    with pytest.raises(CalibrationRefused, match=r"generator was saturated during the sweep \(CPU"):
        _healthy(health, "sweep")
