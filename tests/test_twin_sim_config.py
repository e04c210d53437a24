"""The simulator side of the twin: a step that grows with the batch, a request overhead, and
`agentload sim --config FILE` (a preset as the base, the file's keys over it, flags over
both); a twin's fitted values as keys the simulator takes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadgen.cli.main import build_parser, main
from loadgen.cli.sim_command import config_from_args
from loadgen.errors import ConfigError, UsageError
from loadgen.sim import PRESETS, AnalyticalModel, SimConfig
from loadgen.sim.config import sim_config_from_file
from loadgen.sim.step_time import StepWork, step_seconds
from loadgen.twin.calibrate import Calibration
from loadgen.twin.decode_sweep import Level, LevelRun, fit_decode
from loadgen.twin.fit import Estimate
from loadgen.twin.prefill_probe import PrefillPoint, fit_prefill
from loadgen.twin.server_facts import CacheFacts, MetricsFacts, PrefixFacts
from loadgen.twin.suffix_probe import SuffixSample, fit_suffix
from loadgen.twin.twin_file import request_overhead, write_twin

ROOT = Path(__file__).resolve().parents[1]


def work(decodes: int, prefill: int = 0) -> StepWork:
    w = StepWork()
    for _ in range(decodes):
        w.add(1, 100, prefill=False)
    if prefill:
        w.add(prefill, 0, prefill=True)
    return w


def test_the_analytical_step_adds_its_per_sequence_cost_for_each_decode() -> None:
    model = AnalyticalModel(decode_step_ms=12, decode_step_per_seq_ms=0.5, prefill_tokens_per_s=2e4)
    assert step_seconds(model, work(1)) == pytest.approx(0.0125)
    assert step_seconds(model, work(16)) == pytest.approx(0.020)
    # Prefill chunks pay for their tokens, not per sequence.
    assert step_seconds(model, work(4, prefill=2000)) == pytest.approx(0.014 + 0.1)


def test_an_analytical_model_without_the_per_sequence_cost_is_exactly_as_before() -> None:
    model = AnalyticalModel(decode_step_ms=20)
    assert model.decode_step_per_seq_ms == 0
    assert step_seconds(model, work(1)) == step_seconds(model, work(64)) == pytest.approx(0.020)
    data = PRESETS["fast"].model_dump() | {"perf": {"kind": "analytical", "decode_step_ms": 20}}
    assert SimConfig.model_validate(data | {"max_num_seqs": 64}).output_tokens_per_s_ceiling() == (
        pytest.approx(3200)
    )


def test_measured_step_points_are_followed_interpolated_and_extended_by_the_slope() -> None:
    # llama.cpp's shape: a step that doubles from 1 to 2 streams, then grows slowly.
    model = AnalyticalModel(
        decode_step_ms=2.0,
        decode_step_per_seq_ms=1.8,
        decode_step_points_ms={1: 2.9, 2: 6.8, 4: 8.7},
    )
    assert [round(model.decode_step_s(b) * 1000, 3) for b in (1, 2, 3, 4, 6)] == [
        2.9, 6.8, 7.75, 8.7, 12.3,
    ]  # fmt: skip
    assert model.decode_step_s(0) == pytest.approx(0.002)  # a step that only prefills
    with pytest.raises(ValueError, match="running batch >= 1"):
        AnalyticalModel(decode_step_ms=2.0, decode_step_points_ms={0: 5.0})


def test_a_twin_writes_each_sweep_levels_step_and_a_step_flag_drops_them(tmp_path: Path) -> None:
    path = tmp_path / "twin.yaml"
    document = write_twin(calibration(intercept_ms=28.0, step_ms=5.0), path)
    # The levels below the batch limit of 4 (5 ms + 1 ms per stream), not the one past it.
    assert document["perf"]["decode_step_points_ms"] == {1: 6.0, 2: 7.0, 4: 9.0}
    config = sim_args("--config", str(path))
    assert isinstance(config.perf, AnalyticalModel)
    assert config.perf.decode_step_s(2) == pytest.approx(0.007)
    # --decode-step-ms says a straight line: the file's points would silently override it.
    config = sim_args("--config", str(path), "--decode-step-ms", "3")
    assert isinstance(config.perf, AnalyticalModel)
    assert config.perf.decode_step_points_ms is None
    assert config.perf.decode_step_s(2) == pytest.approx(0.005)


def test_the_ceiling_counts_the_step_of_a_full_batch() -> None:
    perf = {"kind": "analytical", "decode_step_ms": 12, "decode_step_per_seq_ms": 0.5}
    config = SimConfig.model_validate(PRESETS["fast"].model_dump() | {"perf": perf})
    config = config.model_copy(update={"max_num_seqs": 16, "replicas": 2})
    assert config.output_tokens_per_s_ceiling() == pytest.approx(2 * 16 / 0.020)


TWIN = {
    "preset": "fast",
    "served_model_name": "twin-model",
    "perf": {"kind": "analytical", "decode_step_ms": 12, "decode_step_per_seq_ms": 0.5},
    "max_num_seqs": 16,
    "max_model_len": 32768,
    "num_kv_blocks": 3000,
    "calibration": {"fitted": {"anything": {"value": 1, "method": "people read this"}}},
}


def write(tmp_path: Path, data: object, name: str = "twin.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def sim_args(*argv: str) -> SimConfig:
    return config_from_args(build_parser().parse_args(["sim", *argv]))


def test_a_config_file_overrides_its_preset_and_its_calibration_is_ignored(tmp_path: Path) -> None:
    config = sim_args("--config", str(write(tmp_path, TWIN)))
    assert config.preset == "fast"
    assert config.served_model_name == "twin-model"
    assert config.perf == AnalyticalModel(decode_step_ms=12, decode_step_per_seq_ms=0.5)
    assert (config.max_num_seqs, config.num_kv_blocks) == (16, 3000)
    # What the file leaves out is the preset's.
    assert config.max_num_batched_tokens == PRESETS["fast"].max_num_batched_tokens


def test_flags_override_the_file_and_a_fleet_is_one_flag_away(tmp_path: Path) -> None:
    path = str(write(tmp_path, TWIN))
    config = sim_args("--config", path, "--replicas", "4", "--max-num-seqs", "8")
    assert (config.replicas, config.max_num_seqs) == (4, 8)
    # An analytical flag changes its own field and keeps the file's others.
    config = sim_args("--config", path, "--prefill-tokens-per-s", "5000")
    assert config.perf == AnalyticalModel(
        decode_step_ms=12, decode_step_per_seq_ms=0.5, prefill_tokens_per_s=5000
    )


def test_without_a_preset_the_file_builds_on_the_default_server(tmp_path: Path) -> None:
    data = {k: v for k, v in TWIN.items() if k != "preset"}
    assert sim_config_from_file(write(tmp_path, data)).preset == "llama-8b-h100"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "nothere.yaml: no such file"),
        ({"max_num_seq": 4}, "twin.yaml: max_num_seq: unknown key"),
        ({"perf": {"kind": "analytical", "decode_step_ms": -1}}, "perf.decode_step_ms: Input"),
        ({"perf": {"kind": "analytical", "decode_step_ms": 5, "speed": 1}}, "perf.speed: unknown"),
        ({"preset": "nope"}, "twin.yaml: preset 'nope' is unknown; use one of"),
        ({"max_model_len": 100000, "num_kv_blocks": 10}, "max_model_len 100000 exceeds the KV"),
        ("a: [1\n", "twin.yaml: not valid YAML at line 2"),
        ("- 1\n", "twin.yaml: expected a mapping"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_key(
    tmp_path: Path, content: object, message: str
) -> None:
    path = tmp_path / "nothere.yaml" if content is None else write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        sim_args("--config", str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_command_line_says_the_file_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "--config", str(write(tmp_path, {"max_num_seq": 4}))]) == 2
    err = capsys.readouterr().err
    assert err == f"agentload sim: error: {tmp_path / 'twin.yaml'}: max_num_seq: unknown key\n"


def test_agentload_sim_serves_a_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, TWIN)
    with subprocess.Popen(
        [sys.executable, "-m", "loadgen", "sim", "--config", str(path), "--port", "0"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "serving 'twin-model' (analytical, ceiling 800 output tokens/s, from " in line


# The request overhead: a real key of the analytical model, of config files and of twins.


def test_request_overhead_defaults_to_zero_and_round_trips_through_a_file(tmp_path: Path) -> None:
    assert AnalyticalModel(decode_step_ms=12).request_overhead_ms == 0
    assert sim_args("--config", str(write(tmp_path, TWIN))).perf == AnalyticalModel(
        decode_step_ms=12, decode_step_per_seq_ms=0.5
    )
    perf = {**TWIN["perf"], "request_overhead_ms": 23.5}  # type: ignore[dict-item]
    config = sim_args("--config", str(write(tmp_path, {**TWIN, "perf": perf})))
    assert isinstance(config.perf, AnalyticalModel)
    assert config.perf.request_overhead_ms == 23.5
    # What the simulator takes back from its own dump is the same config.
    again = write(tmp_path, config.model_dump(), "again.yaml")
    assert sim_config_from_file(again) == config
    # The flag overrides the file's and keeps the file's other perf keys.
    flagged = sim_args("--config", str(write(tmp_path, {**TWIN, "perf": perf})),
                       "--request-overhead-ms", "4")  # fmt: skip
    assert flagged.perf == AnalyticalModel(
        decode_step_ms=12, decode_step_per_seq_ms=0.5, request_overhead_ms=4
    )


def test_request_overhead_flag_is_analytical_and_not_negative(tmp_path: Path) -> None:
    config = sim_args("--decode-step-ms", "10", "--request-overhead-ms", "7.5")
    assert config.perf == AnalyticalModel(decode_step_ms=10, request_overhead_ms=7.5)
    with pytest.raises(UsageError, match="--request-overhead-ms needs --decode-step-ms"):
        sim_args("--request-overhead-ms", "5")
    with pytest.raises(ConfigError, match="--request-overhead-ms: Input should be greater"):
        sim_args("--decode-step-ms", "10", "--request-overhead-ms", "-1")
    bad = {**TWIN, "perf": {"kind": "analytical", "decode_step_ms": 5, "request_overhead_ms": -2}}
    with pytest.raises(ConfigError, match=r"perf\.request_overhead_ms: Input should be greater"):
        sim_args("--config", str(write(tmp_path, bad)))


LENGTHS = (256, 512, 1024, 2048)


def calibration(
    intercept_ms: float,
    step_ms: float = 5.0,
    points: list[PrefillPoint] | None = None,
    samples: tuple[SuffixSample, ...] = (),
) -> Calibration:
    """A calibration as its fits would leave it: a prefill line with `intercept_ms` (or
    `points`), a decode step of `step_ms`, a batch limit of 4, and the suffix probe's
    `samples` (none: a server that reports no cached tokens); no server needed."""
    if points is None:
        points = [PrefillPoint(n, (intercept_ms / 1000 + n / 2000,) * 2) for n in LENGTHS[:3]]
    levels = [
        Level(c, (LevelRun(step_ms / 1000 + c * 0.001, 0.01, min(c, 4), 0, 1.0),) * 2)
        for c in (1, 2, 4, 8)
    ]
    prefill = fit_prefill(points)
    decode = fit_decode(levels, None)
    suffix = fit_suffix(
        samples,
        step_ms=decode.base_ms.value,
        prefill_tokens_per_s=prefill.rate.value,
        pair_ns=prefill.attention_ns_per_pair().value,
    )
    return Calibration(
        target="http://127.0.0.1:1/v1",
        model="twin-model",
        started=0.0,
        duration_s=1.0,
        forced_lengths=True,
        window=8192,
        window_method="/v1/models max_model_len",
        metrics=MetricsFacts("vllm", CacheFacts(3000, 16, "vllm:cache_config_info"), "m"),
        prefix=PrefixFacts(True, 16, [(211, 208)], "cached_tokens"),
        prefill_points=points,
        prefill=prefill,
        levels=levels,
        decode=decode,
        generator={},
        noise={},
        max_noise=0.25,
        suffix_samples=samples,
        suffix=suffix,
    )


def test_a_twin_writes_the_fitted_request_overhead_as_a_key_the_simulator_takes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "twin.yaml"
    document = write_twin(calibration(intercept_ms=28.0, step_ms=5.0), path)
    # The intercept less one step (5 ms + 1 ms per sequence: the prefill step decodes none).
    assert document["perf"]["request_overhead_ms"] == pytest.approx(23.0, abs=0.01)
    entry = document["calibration"]["fitted"]["perf.request_overhead_ms"]
    assert entry["value"] == document["perf"]["request_overhead_ms"]
    assert entry["unit"] == "ms"
    assert "minus one decode step" in entry["method"]
    # Modelled now: only its growth with the conversation is left out.
    not_modelled = document["calibration"]["not_modelled"]
    assert not [n for n in not_modelled if n.startswith("request overhead:")], not_modelled
    assert any(n.startswith("request overhead that grows") for n in not_modelled)
    config = sim_args("--config", str(path))
    assert isinstance(config.perf, AnalyticalModel)
    assert config.perf.request_overhead_ms == pytest.approx(23.0, abs=0.01)


def test_a_negative_request_overhead_is_written_as_zero_and_said_so(tmp_path: Path) -> None:
    document = write_twin(calibration(intercept_ms=3.0, step_ms=5.0), tmp_path / "twin.yaml")
    assert document["perf"]["request_overhead_ms"] == 0
    entry = document["calibration"]["fitted"]["perf.request_overhead_ms"]
    assert entry["value"] == 0
    assert "below 0: written as 0" in entry["method"]
    assert request_overhead(Estimate(0.010, 0.001, "line"), 4.0).value == pytest.approx(6.0)


def test_prefill_attention_adds_its_cost_per_pair_over_the_cached_context() -> None:
    model = AnalyticalModel(
        decode_step_ms=5, prefill_tokens_per_s=1000, prefill_attention_ns_per_pair=2000
    )
    fresh = StepWork()
    fresh.add(100, 0, prefill=True)  # 100 x 50 pairs: 10 ms of attention
    assert step_seconds(model, fresh) == pytest.approx(0.005 + 0.1 + 0.010)
    after_cache = StepWork()
    after_cache.add(100, 1000, prefill=True)  # 100 x 1050 pairs: 210 ms
    assert step_seconds(model, after_cache) == pytest.approx(0.005 + 0.1 + 0.210)
    # Decodes attend too, but the step fitted on them holds their share.
    assert step_seconds(model, work(4)) == pytest.approx(0.005)
    assert AnalyticalModel(decode_step_ms=5).prefill_attention_ns_per_pair == 0


def test_a_curved_prefill_is_written_as_attention_and_the_overhead_from_the_suffix_probe(
    tmp_path: Path,
) -> None:
    # TTFT = 30 ms + n / 1000 + 1e-6 n^2 (attention, as on a CPU): 2000 ns per pair.
    def ttft(n: float) -> float:
        return 0.030 + n / 1000 + 1e-6 * n * n

    points = [PrefillPoint(n, (ttft(n) * 0.995, ttft(n), ttft(n) * 1.005)) for n in LENGTHS]
    # Short turns after each prompt, cached: 20 ms overhead + a 5 ms step + their prefill and
    # their attention over the context.
    samples = tuple(
        SuffixSample(n, 16, 0.025 + 0.016 + 2e-6 * 16 * (n + 8)) for n in LENGTHS for _ in "ab"
    )
    cal = calibration(intercept_ms=30.0, step_ms=5.0, points=points, samples=samples)
    assert cal.prefill.attention_ns_per_pair().value == pytest.approx(2000, rel=0.05)
    document = write_twin(cal, tmp_path / "twin.yaml")
    perf = document["perf"]
    assert perf["prefill_attention_ns_per_pair"] == pytest.approx(2000, rel=0.05)
    # What is left of each suffix's TTFT beyond the step, its prefill and its attention.
    assert perf["request_overhead_ms"] == pytest.approx(20.0, abs=1.0)
    assert (
        "median over 8 requests"
        in (document["calibration"]["fitted"]["perf.request_overhead_ms"]["method"])
    )
    suffix_rows = [r for r in document["calibration"]["accuracy"] if "cached" in r["probe"]]
    assert len(suffix_rows) == len(LENGTHS)
    assert max(abs(r["error"]) for r in suffix_rows) < 0.05, suffix_rows
    config = sim_args("--config", str(tmp_path / "twin.yaml"))
    assert isinstance(config.perf, AnalyticalModel)
    assert config.perf.prefill_attention_ns_per_pair == perf["prefill_attention_ns_per_pair"]


def test_a_suffix_probe_left_with_less_than_nothing_writes_no_overhead() -> None:
    # TTFTs below the step and the prefill alone (noise): 0, and the method says so.
    samples = [SuffixSample(n, 16, 0.004) for n in LENGTHS]
    fit = fit_suffix(samples, step_ms=5.0, prefill_tokens_per_s=1000, pair_ns=0)
    assert fit is not None
    assert fit.overhead_ms.value == 0
    assert "is below 0: written as 0" in fit.overhead_ms.method
    # A server that reports no cached tokens leaves nothing to fit.
    assert fit_suffix([], step_ms=5.0, prefill_tokens_per_s=1000, pair_ns=0) is None
