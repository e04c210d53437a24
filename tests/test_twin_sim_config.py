"""The simulator side of the twin: a step that grows with the batch, and `agentload sim
--config FILE` (a preset as the base, the file's keys over it, flags over both)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadgen.cli.main import build_parser, main
from loadgen.cli.sim_command import config_from_args
from loadgen.errors import ConfigError
from loadgen.sim import PRESETS, AnalyticalModel, SimConfig
from loadgen.sim.config import sim_config_from_file
from loadgen.sim.step_time import StepWork, step_seconds

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
