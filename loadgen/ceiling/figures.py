"""What ceiling.json says about one level and each of its slices, read from their summaries."""

from __future__ import annotations

from typing import Any

from loadgen.ceiling.steadiness import Slice
from loadgen.gates.metrics import read_metric

__all__ = ["level_figures", "slice_figures"]

_LEVEL_METRICS = (
    ("output_tokens_per_s", "output_tokens_per_s"),
    ("answer_tokens_per_s", "answer_tokens_per_s"),
    ("sessions_per_min", "sessions_per_min"),
    ("requests_per_s", "requests_per_s"),
    ("ttft_p95_s", "ttft_p95"),
    ("ttfat_p95_s", "ttfat_p95"),
    ("itl_p99_s", "itl_p99"),
    ("e2e_p95_s", "e2e_p95"),
    ("session_p90_s", "session_p90"),
    ("session_success_rate", "session_success_rate"),
    ("error_rate", "error_rate"),
    ("goodput", "goodput_ratio"),
    # What the server's prefix cache held of the window's prompts: where routing shows.
    ("cache_hit_ratio", "cache_hit_ratio"),
)
_SLICE_METRICS = (
    ("output_tokens_per_s", "output_tokens_per_s"),
    ("requests_per_s", "requests_per_s"),
    ("ttft_p95_s", "ttft_p95"),
    ("e2e_p50_s", "e2e_p50"),
    ("e2e_p95_s", "e2e_p95"),
    ("error_rate", "error_rate"),
    ("goodput", "goodput_ratio"),
)


# What the generator measured of itself over a level's steady period (None where unknown).
_GENERATOR_FIGURES = ("cpu_percent", "loop_lag_p99_s", "schedule_lag_p99_s")


def _rounded(value: Any) -> float | None:
    return round(float(value), 4) if isinstance(value, int | float) else None


def level_figures(
    load: float,
    summary: dict[str, Any],
    window: Slice,
    generator: dict[str, Any],
    server: dict[str, Any] | None,
) -> dict[str, Any]:
    """One level's entry in ceiling.json, from its rolling window's summary."""
    out: dict[str, Any] = {"load": load, "window_s": window.duration_s}
    for key, metric in _LEVEL_METRICS:
        out[key] = read_metric(summary, metric)
    # The report reads output_tokens_per_s as a number: a window with no tokens shows 0.
    out["output_tokens_per_s"] = out["output_tokens_per_s"] or 0.0
    out["goodput_sessions_per_min"] = (out["sessions_per_min"] or 0.0) * (out["goodput"] or 0.0)
    # The judged sessions (begun at this level) are a sample of the window's: throughput
    # counts sessions begun earlier too. So goodput tokens/s is answer throughput times the
    # share of the judged sessions' answer tokens that came from sessions within every SLO.
    # Answer tokens, not output tokens: a reasoning model's thinking is work the server did,
    # not output a user waits for (for other models the two are the same).
    ratio = (summary.get("goodput") or {}).get("token_ratio")
    answer = out["answer_tokens_per_s"]
    answer = out["output_tokens_per_s"] if answer is None else answer
    out["goodput_tokens_per_s"] = None if ratio is None else answer * ratio
    out["requests"] = window.stats.requests_total
    out["state_failures"] = {k: n for k, n in window.stats.failures.items() if n}
    out["generator"] = {
        "saturated": bool(generator.get("saturated")),
        "reasons": list(generator.get("reasons") or []),
        **{k: _rounded(generator.get(k)) for k in _GENERATOR_FIGURES},
    }
    if server is not None:
        out["server"] = server
    return out


def slice_figures(
    number: int, piece: Slice, summary: dict[str, Any], broken: list[str], in_window: bool
) -> dict[str, Any]:
    """One slice's entry in a level's `slices` list."""
    out: dict[str, Any] = {
        "slice": number,
        "start_s": round(piece.start_s, 3),
        "duration_s": round(piece.duration_s, 3),
        "in_window": in_window,
        "requests": piece.stats.requests_total,
        "sessions_completed": piece.stats.sessions.completed,
    }
    for key, metric in _SLICE_METRICS:
        out[key] = read_metric(summary, metric)
    out["broken"] = broken
    return out
