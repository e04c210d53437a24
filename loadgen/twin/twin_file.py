"""twin.yaml: a simulator config fitted to a target, with a `calibration:` section saying
what each value is, how sure it is and how it was measured (the simulator ignores it)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from loadgen import __version__
from loadgen.sim.config import PRESETS, sim_config_from_mapping
from loadgen.twin.accuracy import accuracy_rows
from loadgen.twin.calibrate import Calibration
from loadgen.twin.fit import Estimate

__all__ = ["BASE_PRESET", "NOT_MODELLED", "request_overhead", "twin_document", "write_twin"]

# What a twin takes from a preset for what calibration does not measure (the per-step token
# budget, reply lengths, reasoning, the Responses store): the simulator's default server.
BASE_PRESET = "llama-8b-h100"

NOT_MODELLED = [
    "request overhead that grows with the conversation (tokenizing and templating it on "
    "every request): the overhead is fixed, the suffix probe's median over its lengths",
    "decode step against context length: the step is fitted at short contexts only",
    "chunked-prefill budget (max_num_batched_tokens): the base preset's",
    "KV-cache pressure below the batch limit: the sweep's streams are short",
    "speculative decoding, and the step between the sweep's batch sizes (1, 2, 4, ...): "
    "interpolated along a line between each two measured, so CUDA-graph batch padding "
    "between them is not seen",
]


def _round(value: float) -> float:
    """Four significant figures, enough for every fitted value here."""
    return float(f"{value:.4g}") if value else 0.0


def _entry(estimate: Estimate, unit: str, *, whole: bool = False) -> dict[str, Any]:
    value = round(estimate.value) if whole else _round(estimate.value)
    out: dict[str, Any] = {"value": value, "unit": unit}
    if estimate.stderr is not None:
        out["stderr"] = _round(estimate.stderr)
    out["method"] = estimate.method
    return out


def _kv(cal: Calibration, block_size: int, window: int) -> tuple[int, dict[str, Any]]:
    cache = cal.metrics.cache
    if cache is not None:
        return cache.num_blocks, {"value": cache.num_blocks, "method": cache.source}
    probe = cal.kv_probe
    if probe is not None and probe.tokens is not None:
        blocks = max(1, math.ceil(probe.tokens / block_size))
        entry: dict[str, Any] = {"value": blocks, "unit": f"blocks of {block_size} tokens"}
        if probe.stderr is not None:
            entry["stderr"] = _round(probe.stderr / block_size)
        entry["method"] = probe.method
        return blocks, entry
    base = PRESETS[BASE_PRESET].num_kv_blocks
    blocks = max(base, math.ceil(window / block_size))
    if cal.slot_contexts:
        slots = cal.slot_contexts
        blocks = math.ceil(sum(slots) / block_size)
        method = (
            f"not measured as one cache: llama.cpp's {len(slots)} slots (GET /slots) each hold "
            f"their own KV of n_ctx {max(slots)}, not one paged cache shared by every sequence "
            f"that the eviction probe could size; the twin assumes their sum, {blocks} blocks"
        )
        return blocks, {"value": None, "assumed": blocks, "method": method}
    if probe is not None:
        lower = math.ceil(probe.low / block_size)
        blocks = max(blocks, lower)
        why = probe.method
    elif cal.prefix.caching:
        why = "not measured: the server's metrics state no KV capacity and the probe was off"
    else:
        why = (
            "not measured: the server's metrics state no KV capacity (vLLM's "
            "vllm:cache_config_info) and reports no prefix caching to probe its evictions"
        )
    method = f"{why}; the twin assumes {blocks} blocks"
    return blocks, {"value": None, "assumed": blocks, "method": method}


def _block_size(cal: Calibration) -> tuple[int, dict[str, Any]]:
    if cal.metrics.cache is not None:
        size = cal.metrics.cache.block_size
        method = "vllm:cache_config_info block_size"
        if cal.prefix.block_size not in (None, size):
            method += f" (cached_tokens suggested {cal.prefix.block_size})"
        return size, {"value": size, "method": method}
    if cal.prefix.block_size is not None:
        return cal.prefix.block_size, {"value": cal.prefix.block_size, "method": cal.prefix.method}
    size = PRESETS[BASE_PRESET].block_size
    return size, {"value": None, "assumed": size, "method": cal.prefix.method}


def request_overhead(intercept_s: Estimate, step_ms: float) -> Estimate:
    """What a request costs the server beyond its engine's steps, where the suffix probe could
    not measure it (no cached tokens reported): TTFT's intercept (a lone request with no
    prompt) less the one step that samples its first token. A negative difference (noise,
    or a curve's intercept below the step) is written as 0 and said so."""
    fitted = intercept_s.value * 1000.0 - step_ms
    stderr = None if intercept_s.stderr is None else intercept_s.stderr * 1000.0
    how = (
        f"TTFT intercept ({intercept_s.value * 1000.0:.4g} ms: the prefill fit's, a lone "
        f"request with no prompt) minus one decode step ({step_ms:.4g} ms); simulated as each "
        "request's wait before the engine admits it"
    )
    if fitted < 0:
        return Estimate(
            0.0, stderr, how + f"; the difference, {fitted:.3g} ms, is below 0: written as 0"
        )
    return Estimate(fitted, stderr, how)


def twin_document(cal: Calibration) -> dict[str, Any]:
    """The twin as a mapping: SimConfig keys, then the calibration section."""
    block_size, block_entry = _block_size(cal)
    window = cal.window or PRESETS[BASE_PRESET].max_model_len
    blocks, kv_entry = _kv(cal, block_size, window)
    window = min(window, blocks * block_size)  # vLLM itself refuses to start otherwise
    decode, prefill = cal.decode, cal.prefill
    base_ms = decode.step_ms
    if cal.suffix is not None:
        overhead = cal.suffix.overhead_ms
    else:
        overhead = request_overhead(prefill.overhead_s, base_ms)
    attention = prefill.attention_ns_per_pair()
    dialect = cal.metrics.dialect or "vllm"
    fitted = {
        "perf.decode_step_ms": _entry(decode.base_ms, "ms"),
        "perf.decode_step_per_seq_ms": _entry(decode.per_seq_ms, "ms per sequence"),
        "perf.decode_step_points_ms": {
            "value": {c: _round(ms) for c, ms in sorted(decode.points_ms.items())},
            "unit": "ms by running batch",
            "method": "each sweep level's median ITL below the batch limit; the twin's step "
            "runs through these (interpolated between them, the slope past the last)",
        },
        "perf.prefill_tokens_per_s": _entry(prefill.rate, "tokens/s"),
        "perf.request_overhead_ms": _entry(overhead, "ms"),
        "perf.prefill_attention_ns_per_pair": _entry(attention, "ns per pair"),
        "max_num_seqs": {
            **_entry(decode.batch_limit, "sequences", whole=True),
            "lower_bound": not decode.limit_found,
        },
        "max_model_len": {
            "value": cal.window,
            "assumed": None if cal.window else window,
            "method": cal.window_method,
        },
        "num_kv_blocks": kv_entry,
        "block_size": block_entry,
        "prefix_caching": {
            "value": cal.prefix.caching,
            "method": cal.prefix.method,
            "cached_tokens_by_prompt_tokens": dict(cal.prefix.pairs),
        },
        "metrics_dialect": {
            "value": cal.metrics.dialect,
            "method": f"metric names on {cal.metrics.url}"
            + (f" ({cal.metrics.error})" if cal.metrics.error else ""),
        },
    }
    if cal.prefix.caching is False:
        fitted["prefix_caching"]["note"] = "the simulator always caches prefixes"
    settings = {
        "preset": BASE_PRESET,
        "served_model_name": cal.model,
        "perf": {
            "kind": "analytical",
            "decode_step_ms": _round(base_ms),
            "decode_step_per_seq_ms": _round(decode.per_seq_ms.value),
            "decode_step_points_ms": {c: _round(ms) for c, ms in sorted(decode.points_ms.items())},
            "prefill_tokens_per_s": _round(prefill.rate.value),
            "prefill_attention_ns_per_pair": _round(attention.value),
            "request_overhead_ms": _round(overhead.value),
        },
        "max_num_seqs": int(decode.batch_limit.value),
        "max_model_len": window,
        "block_size": block_size,
        "num_kv_blocks": blocks,
        "metrics_dialect": dialect,
    }
    return {**settings, "calibration": _calibration(cal, fitted)}


def _calibration(cal: Calibration, fitted: dict[str, Any]) -> dict[str, Any]:
    rows = accuracy_rows(cal)
    probes = [
        {
            "probe": r.probe,
            "figure": r.figure,
            "measured_ms": _round(r.measured_s * 1000),
            "predicted_ms": _round(r.predicted_s * 1000),
            "error": _round(r.error),
        }
        for r in rows
    ]
    levels = [
        {
            "concurrency": level.concurrency,
            "itl_ms": [_round(run.itl_s * 1000) for run in level.runs],
            "ttft_ms": [_round(run.ttft_median_s * 1000) for run in level.runs],
            "running_peak": level.peak,
            "short_streams": sum(run.short_replies for run in level.runs),
        }
        for level in cal.levels
    ]
    return {
        "target": cal.target,
        "model": cal.model,
        "measured_at": datetime.fromtimestamp(cal.started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(cal.duration_s, 1),
        "agentload": __version__,
        "forced_output_lengths": cal.forced_lengths,
        "fitted": fitted,
        "accuracy": probes,
        "sweep": levels,
        "prefill_ttft_ms": {
            p.prompt_tokens: [_round(t * 1000) for t in p.ttft_s] for p in cal.prefill_points
        },
        "noise": {
            **{k: _round(v) for k, v in cal.noise.items()},
            "limit": cal.max_noise,
            "meaning": "median over probes of (max - min) / median of its repeats",
        },
        "generator": {
            phase: {k: v for k, v in report.items() if k != "reasons"}
            for phase, report in cal.generator.items()
        },
        "not_modelled": NOT_MODELLED,
    }


def write_twin(cal: Calibration, path: Path) -> dict[str, Any]:
    """Write the twin to `path` after checking that the simulator takes it; the document."""
    document = twin_document(cal)
    sim_config_from_mapping(document, str(path))  # a twin the simulator refuses is a bug here
    header = (
        f"# A twin of {cal.target} ({cal.model}), fitted by agentload calibrate.\n"
        f"# Serve it: agentload sim --config {path.name}   (docs/twin.md)\n"
    )
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(header + text, encoding="utf-8")
    return document
