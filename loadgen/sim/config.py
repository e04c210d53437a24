"""Simulator configuration: hardware/model presets, analytical mode, behaviour and faults."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loadgen.errors import ConfigError

__all__ = [
    "METRICS_DIALECTS",
    "PRESETS",
    "REASONING_EFFORTS",
    "REASONING_FIELDS",
    "ROUTERS",
    "AnalyticalModel",
    "FaultRates",
    "MetricsDialect",
    "ReasoningConfig",
    "ReasoningEffort",
    "ReasoningField",
    "ReasoningTokens",
    "RooflineModel",
    "RouterName",
    "SimConfig",
    "preset_config",
    "profile_sim_config",
    "sim_config_from_file",
    "sim_config_from_mapping",
    "step_ms_at",
]

Rate = Annotated[float, Field(ge=0.0, le=1.0)]

# Whose metric names and types /metrics uses: current vLLM, vLLM before its renames
# (gpu_cache_usage_perc, gpu_prefix_cache_*, time_per_output_token), SGLang, llama.cpp.
MetricsDialect = Literal["vllm", "vllm-v0", "sglang", "llamacpp"]
METRICS_DIALECTS: tuple[MetricsDialect, ...] = ("vllm", "vllm-v0", "sglang", "llamacpp")

# How a simulated fleet's router picks a replica per request (loadgen/sim/router.py).
RouterName = Literal[
    "round-robin", "random", "least-loaded", "session", "session-load", "prefix", "prefix-load"
]
ROUTERS: tuple[RouterName, ...] = (
    "round-robin",
    "random",
    "least-loaded",
    "session",
    "session-load",
    "prefix",
    "prefix-load",
)


# A request's reasoning_effort (chat) or reasoning.effort (Responses); "none" never reasons.
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]
REASONING_EFFORTS: tuple[ReasoningEffort, ...] = ("none", "minimal", "low", "medium", "high")

# Where chat replies carry the reasoning text: `reasoning_content` (vLLM before 0.10, SGLang,
# llama.cpp's deepseek format), `reasoning` (newer vLLM), or both fields with the same text.
ReasoningField = Literal["reasoning_content", "reasoning", "both"]
REASONING_FIELDS: tuple[ReasoningField, ...] = ("reasoning_content", "reasoning", "both")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReasoningTokens(_Frozen):
    """Mean reasoning tokens per request at each effort ("none" is always 0).

    The defaults are illustrative, not measured: an agent step's thinking runs from tens of
    tokens to a few thousand, and each level here is four times the one below it.
    """

    minimal: int = Field(default=32, ge=0)
    low: int = Field(default=256, ge=0)
    medium: int = Field(default=1024, ge=0)
    high: int = Field(default=4096, ge=0)

    def mean(self, effort: ReasoningEffort) -> int:
        """The mean length at `effort`."""
        return 0 if effort == "none" else int(getattr(self, effort))


class ReasoningConfig(_Frozen):
    """How the simulated model reasons before it answers (docs/reasoning.md)."""

    tokens: ReasoningTokens = ReasoningTokens()
    spread: float = Field(
        default=0.0, ge=0, description="lognormal sigma of the length; 0 = exactly the mean"
    )
    default_effort: ReasoningEffort = Field(
        default="none", description="the effort of a request that names none"
    )
    field: ReasoningField = Field(
        default="reasoning_content", description="the chat field that carries reasoning text"
    )


class RooflineModel(_Frozen):
    """Step time from a roofline: max(compute, memory traffic) per GPU plus fixed overheads."""

    kind: Literal["roofline"] = "roofline"
    params: float = Field(gt=0, description="model parameters (dense)")
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    weight_bytes_per_gpu: float = Field(gt=0)
    kv_bytes_per_token_per_gpu: float = Field(gt=0)
    tensor_parallel: int = Field(default=1, ge=1)
    peak_flops_per_gpu: float = Field(gt=0)
    flops_efficiency: float = Field(default=0.5, gt=0, le=1)
    memory_bandwidth_per_gpu: float = Field(gt=0, description="bytes/s")
    bandwidth_efficiency: float = Field(default=0.8, gt=0, le=1)
    step_overhead_s: float = Field(default=0.002, ge=0, description="scheduler, sampling, launch")
    tp_overhead_s: float = Field(default=0.0, ge=0, description="all-reduce cost per step")


class AnalyticalModel(_Frozen):
    """Every step costs decode_step_ms, plus decode_step_per_seq_ms for each sequence it
    decodes, plus its prefill tokens / prefill_tokens_per_s, plus prefill_attention_ns_per_pair
    for each pair of a prefilled token and a token before it; every request first spends
    request_overhead_ms on its own before the engine sees it.

    With all max_num_seqs slots decoding, output throughput is exactly
    max_num_seqs / step_s(max_num_seqs) tokens/s: the ceiling tests and benchmarks look for.
    The per-sequence term (0 by default: a constant step) is the slope a real engine's step
    shows against its running batch, the attention term (0 by default: prefill linear in the
    new tokens) what a new turn's tokens cost for attending over a long cached conversation,
    and the request overhead (0 by default) what a real server spends per request outside
    its steps (HTTP, tokenizing, scheduling), each as `agentload calibrate` fits them
    (docs/twin.md).
    """

    kind: Literal["analytical"] = "analytical"
    decode_step_ms: float = Field(gt=0)
    decode_step_per_seq_ms: float = Field(
        default=0.0, ge=0, description="added to a step per sequence it decodes"
    )
    prefill_tokens_per_s: float = Field(default=1_000_000.0, gt=0)
    request_overhead_ms: float = Field(
        default=0.0,
        ge=0,
        description="each request's time before the engine admits it; adds to TTFT, not ITL",
    )
    prefill_attention_ns_per_pair: float = Field(
        default=0.0,
        ge=0,
        description="added to a step per pair of a prefilled token and a token of context "
        "before it (cached prefix included): attention, which grows with the context",
    )

    decode_step_points_ms: dict[int, float] | None = Field(
        default=None,
        description="measured steps (ms) by running batch: the step between them is "
        "interpolated, past the last it grows by decode_step_per_seq_ms per sequence",
    )

    @field_validator("decode_step_points_ms")
    @classmethod
    def _points_are_batches_and_times(cls, points: dict[int, float] | None) -> Any:
        if points is not None and not all(b >= 1 and ms > 0 for b, ms in points.items()):
            raise ValueError("each point is a running batch >= 1 and a step > 0 ms")
        return points or None

    def decode_step_s(self, batch: int) -> float:
        """Seconds of a step that decodes `batch` sequences and prefills nothing."""
        return (
            step_ms_at(
                batch, self.decode_step_ms, self.decode_step_per_seq_ms, self.decode_step_points_ms
            )
            / 1000.0
        )


def step_ms_at(
    batch: int, base_ms: float, per_seq_ms: float, points: Mapping[int, float] | None
) -> float:
    """A decode step of `batch` sequences: the line base + per_seq x batch, or, with
    measured points (a real engine's step is seldom a straight line in the batch: llama.cpp's
    doubles from 1 to 2 streams and grows a third from 2 to 4), through them."""
    if not points or batch <= 0:
        return base_ms + per_seq_ms * batch
    xs = sorted(points)
    if batch >= xs[-1]:
        return points[xs[-1]] + per_seq_ms * (batch - xs[-1])
    below_x, below_ms = 0, base_ms  # under the first point: from the line's intercept
    for x in xs:
        if x == batch:
            return points[x]
        if x > batch:
            return below_ms + (points[x] - below_ms) * (batch - below_x) / (x - below_x)
        below_x, below_ms = x, points[x]
    raise AssertionError("unreachable: batch < the last point")


class FaultRates(_Frozen):
    """Probabilities of injected faults; each injection is counted on /metrics."""

    http_5xx: Rate = 0.0
    rate_limit: Rate = 0.0
    stream_cut: Rate = 0.0
    malformed_tool_args: Rate = 0.0
    latency_spike: Rate = 0.0
    latency_spike_ms: float = Field(default=2000.0, ge=0)
    store_evict: Rate = 0.0
    # A fleet's replicas crash: each live replica, each second, with this probability (its
    # mean time between crashes is 1/rate seconds); one comes back empty after
    # replica_restore_s (0: only when POST /admin/replicas/{id}/restore says so).
    replica_crash: Rate = 0.0
    replica_restore_s: float = Field(default=30.0, ge=0)

    def any(self) -> bool:
        """True when at least one fault can fire."""
        return any(
            (
                self.http_5xx,
                self.rate_limit,
                self.stream_cut,
                self.malformed_tool_args,
                self.latency_spike,
                self.store_evict,
                self.replica_crash,
            )
        )


class SimConfig(_Frozen):
    """Everything that decides how the simulator behaves; deterministic for a given seed."""

    preset: str = "fast"
    served_model_name: str = "agentload-sim"
    seed: int = 0
    perf: RooflineModel | AnalyticalModel = Field(discriminator="kind")
    max_num_seqs: int = Field(default=256, ge=1)
    max_num_batched_tokens: int = Field(default=8192, ge=1)
    max_model_len: int = Field(default=131072, ge=16)
    block_size: int = Field(default=16, ge=1)
    num_kv_blocks: int = Field(default=65536, ge=1)
    output_tokens_median: int = Field(default=200, ge=1, description="natural reply length")
    output_tokens_sigma: float = Field(default=0.8, ge=0, description="lognormal spread")
    tool_call_probability: Rate = 0.5
    reasoning: ReasoningConfig = ReasoningConfig()
    responses_store_capacity: int = Field(default=10_000, ge=0)
    responses_store_ttl_s: float = Field(default=3600.0, gt=0)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    metrics_dialect: MetricsDialect = Field(
        default="vllm", description="the server whose metric names /metrics uses"
    )
    faults: FaultRates = FaultRates()
    # A fleet (docs/fleets.md): replicas, each its own engine, KV cache and Responses store,
    # behind one router; one replica (the default) is a plain single server.
    replicas: int = Field(default=1, ge=1, le=256, description="engine replicas behind a router")
    router: RouterName = Field(default="round-robin", description="how requests pick a replica")
    shared_store: bool = Field(
        default=False, description="one Responses store for every replica (an external store)"
    )
    prefix_load_weight: float = Field(
        default=1.0,
        ge=0,
        description="prefix-load router: score = cached fraction - weight x load fraction",
    )
    admin_remote: bool = Field(
        default=False, description="serve /admin/* to any address, not only loopback"
    )
    # A fleet spread over processes (fleet_front.py): one router in front, the replicas in
    # `processes` shard processes, for fleets past what one core streams (docs/fleets.md).
    processes: int = Field(
        default=1, ge=1, le=64, description="processes the fleet's replicas are spread over"
    )
    # Faster than real time (docs/twin.md, "Faster than real time"): a plan's runs are many
    # minutes of modelled time; a simulator whose clock runs K times faster serves them in
    # 1/K of the wall time, as long as its steps keep up (Engine.lost_s counts where not).
    speedup: float = Field(
        default=1.0,
        ge=1.0,
        le=1000.0,
        description="the modelled clock runs this many times faster than the wall clock: "
        "steps, request overhead, latency spikes, crashes, restores and the Responses store's "
        "TTL all last 1/speedup of their modelled time; clients measure wall time",
    )

    @model_validator(mode="after")
    def _processes_hold_replicas(self) -> SimConfig:
        if self.processes > self.replicas:
            raise ValueError(
                f"processes {self.processes} exceeds replicas {self.replicas}: each process "
                "holds at least one replica; lower --processes or raise --replicas"
            )
        if self.processes > 1 and self.shared_store:
            raise ValueError(
                "shared_store keeps one Responses store in one process: it cannot be spread "
                "over processes; drop --shared-store or use --processes 1"
            )
        return self

    @model_validator(mode="after")
    def _context_fits_in_kv_cache(self) -> SimConfig:
        # vLLM refuses to start when one full-length sequence cannot fit in the KV cache.
        capacity = self.num_kv_blocks * self.block_size
        if self.max_model_len > capacity:
            raise ValueError(
                f"max_model_len {self.max_model_len} exceeds the KV cache ({self.num_kv_blocks} "
                f"blocks x {self.block_size} = {capacity} tokens); lower --max-model-len "
                "or raise --num-kv-blocks"
            )
        return self

    def wall_s(self, modelled_s: float) -> float:
        """Wall seconds that `modelled_s` of the modelled hardware's time last (speedup)."""
        return modelled_s / self.speedup

    @property
    def stable_hashes(self) -> bool:
        """Whether KV block hashes must be the same in every process (engine.chain_block_hashes):
        a fleet spread over processes, whose front asks its shards' prefix caches."""
        return self.processes > 1

    def output_tokens_per_s_ceiling(self) -> float | None:
        """Analytical mode's exact decode capacity (tokens/s) of the whole fleet (every
        replica's max_num_seqs / the step of a full batch); None for roofline presets."""
        if isinstance(self.perf, AnalyticalModel):
            return self.replicas * self.max_num_seqs / self.perf.decode_step_s(self.max_num_seqs)
        return None


_H100_FLOPS = 989e12  # dense BF16
_H100_BW = 3.35e12  # HBM3 bytes/s
_H100_MEM = 80e9


def _kv_blocks(gpu_mem: float, weights: float, kv_per_token: float, block_size: int) -> int:
    # vLLM's default gpu_memory_utilization 0.9 minus weights and ~4 GB activations/graphs.
    return int((gpu_mem * 0.9 - weights - 4e9) / (kv_per_token * block_size))


PRESETS: dict[str, SimConfig] = {
    # Llama-3.1-8B BF16 on one H100: 32 layers, 8 KV heads x 128 dims -> 128 KiB KV per token.
    "llama-8b-h100": SimConfig(
        preset="llama-8b-h100",
        perf=RooflineModel(
            params=8.03e9,
            num_layers=32,
            hidden_size=4096,
            weight_bytes_per_gpu=16.06e9,
            kv_bytes_per_token_per_gpu=131072,
            peak_flops_per_gpu=_H100_FLOPS,
            flops_efficiency=0.55,
            memory_bandwidth_per_gpu=_H100_BW,
            step_overhead_s=0.002,
        ),
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        max_model_len=131072,
        num_kv_blocks=_kv_blocks(_H100_MEM, 16.06e9, 131072, 16),
    ),
    # Llama-3.1-70B BF16, tensor-parallel over 4 H100s: weights and KV split four ways.
    "llama-70b-4xh100": SimConfig(
        preset="llama-70b-4xh100",
        perf=RooflineModel(
            params=70.6e9,
            num_layers=80,
            hidden_size=8192,
            weight_bytes_per_gpu=141.2e9 / 4,
            kv_bytes_per_token_per_gpu=327680 / 4,
            tensor_parallel=4,
            peak_flops_per_gpu=_H100_FLOPS,
            flops_efficiency=0.5,
            memory_bandwidth_per_gpu=_H100_BW,
            step_overhead_s=0.003,
            tp_overhead_s=0.002,
        ),
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        max_model_len=131072,
        num_kv_blocks=_kv_blocks(_H100_MEM, 141.2e9 / 4, 327680 / 4, 16),
    ),
    # Qwen3-Coder-30B-A3B-Instruct (an open model made for coding agents; 30.5B parameters,
    # 3.3B active per token; 48 layers, 4 KV heads x 128 dims; a native 262,144-token
    # window) in BF16, tensor-parallel over 4 H100s: the coding archetypes' 200K contexts
    # fit, and its ~2.1M tokens of KV cache hold ~20 of them at once. Decoding a big batch
    # touches nearly every expert, so each step reads all of the weights (the roofline's
    # memory term); the FLOPs are the active parameters'. Attention FLOPs use the query
    # width, 32 heads x 128 = 4096.
    "qwen3-coder-30b-4xh100": SimConfig(
        preset="qwen3-coder-30b-4xh100",
        perf=RooflineModel(
            params=3.3e9,
            num_layers=48,
            hidden_size=4096,
            weight_bytes_per_gpu=61.0e9 / 4,
            kv_bytes_per_token_per_gpu=98304 / 4,
            tensor_parallel=4,
            peak_flops_per_gpu=_H100_FLOPS,
            flops_efficiency=0.5,
            memory_bandwidth_per_gpu=_H100_BW,
            step_overhead_s=0.003,
            tp_overhead_s=0.002,
        ),
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        max_model_len=262144,
        num_kv_blocks=_kv_blocks(_H100_MEM, 61.0e9 / 4, 98304 / 4, 16),
    ),
    # gpt-oss-120b, a reasoning model (116.8B parameters, 5.1B active per token; 36 layers,
    # 8 KV heads x 64 dims, every other layer a 128-token sliding window; a 60.8 GiB MXFP4
    # checkpoint, per its model card and config.json), tensor-parallel over 2 H100s. The
    # sliding layers hold 128 tokens whatever the context, so a long context's KV is the 18
    # full-attention layers': 36,864 bytes per token, half per GPU. Attention FLOPs use the
    # query width, 64 heads x 64 = 4096. It thinks before it answers: at medium effort when a
    # request names none (its chat template's default), lengths drawn with an illustrative
    # spread, the text in `reasoning` as newer vLLM streams it.
    "gpt-oss-120b-2xh100": SimConfig(
        preset="gpt-oss-120b-2xh100",
        perf=RooflineModel(
            params=5.1e9,
            num_layers=36,
            hidden_size=4096,
            weight_bytes_per_gpu=65.3e9 / 2,
            kv_bytes_per_token_per_gpu=36864 / 2,
            tensor_parallel=2,
            peak_flops_per_gpu=_H100_FLOPS,
            flops_efficiency=0.5,
            memory_bandwidth_per_gpu=_H100_BW,
            step_overhead_s=0.003,
            tp_overhead_s=0.001,
        ),
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        max_model_len=131072,
        num_kv_blocks=_kv_blocks(_H100_MEM, 65.3e9 / 2, 36864 / 2, 16),
        reasoning=ReasoningConfig(spread=0.6, default_effort="medium", field="reasoning"),
    ),
    # A ~1B model on one H100: steps of a few milliseconds so tests finish quickly; its
    # window takes a coding agent's 200K contexts (the default preset of every profile).
    "fast": SimConfig(
        preset="fast",
        perf=RooflineModel(
            params=1.0e9,
            num_layers=16,
            hidden_size=2048,
            weight_bytes_per_gpu=2.0e9,
            kv_bytes_per_token_per_gpu=32768,
            peak_flops_per_gpu=_H100_FLOPS,
            flops_efficiency=0.5,
            memory_bandwidth_per_gpu=_H100_BW,
            step_overhead_s=0.002,
        ),
        max_num_seqs=1024,
        max_num_batched_tokens=16384,
        max_model_len=262144,
        num_kv_blocks=_kv_blocks(_H100_MEM, 2.0e9, 32768, 16),
        output_tokens_median=64,
    ),
}


def preset_config(name: str) -> SimConfig:
    """The named preset; raises KeyError with the valid names when unknown."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def _merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied; a nested section (reasoning, faults) keeps the keys
    it does not override, except perf, whose kind decides its fields."""
    out = dict(base)
    for key, value in overrides.items():
        below = out.get(key)
        if key != "perf" and isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = _merged(below, value)
        else:
            out[key] = value
    return out


def _error_at(exc: ValidationError) -> tuple[str, str]:
    """The dotted key a validation error names (a perf kind's tag left out) and its message."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if len(loc) > 1 and loc[0] == "perf" and loc[1] in ("analytical", "roofline"):
        del loc[1]
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    return ".".join(loc), message


def profile_sim_config(settings: Mapping[str, Any]) -> SimConfig:
    """The built-in simulator's config from a profile's `sim:` mapping (a preset and overrides)."""
    data = dict(settings)
    preset = str(data.pop("preset", "fast"))
    if preset not in PRESETS:
        raise ConfigError(
            f"profile sim.preset {preset!r} is unknown; use one of {', '.join(PRESETS)}"
        )
    try:
        return SimConfig.model_validate(_merged(PRESETS[preset].model_dump(), data))
    except ValidationError as exc:
        where, message = _error_at(exc)
        raise ConfigError(f"profile sim.{where}: {message}") from exc


def sim_config_from_mapping(
    data: Mapping[str, Any], where: str, *, preset: str | None = None
) -> SimConfig:
    """A config file's SimConfig: its `preset` (or `preset`, or llama-8b-h100) as the base,
    its other keys over it; its `calibration:` section is for people and is ignored.

    Errors are ConfigError lines that start with `where` and name the key.
    """
    data = {k: v for k, v in data.items() if k != "calibration"}
    name = str(preset or data.get("preset") or "llama-8b-h100")
    if name not in PRESETS:
        raise ConfigError(f"{where}: preset {name!r} is unknown; use one of {', '.join(PRESETS)}")
    data["preset"] = name
    try:
        return SimConfig.model_validate(_merged(PRESETS[name].model_dump(), data))
    except ValidationError as exc:
        key, message = _error_at(exc)
        raise ConfigError(f"{where}: {key}: {message}" if key else f"{where}: {message}") from exc


def sim_config_from_file(path: Path, *, preset: str | None = None) -> SimConfig:
    """The SimConfig a YAML file holds (a twin from `agentload calibrate`, or hand-written);
    see sim_config_from_mapping. ConfigError for a missing, unreadable or invalid file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of simulator settings at the top")
    return sim_config_from_mapping(data, str(path), preset=preset)
