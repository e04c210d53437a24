"""What `agentload compare` reads from each run: latency samples, rate and failure counts."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.gates.metrics import summary_number
from loadgen.observe.histogram import LatencyHistogram
from loadgen.report.results import RunResults

__all__ = ["FAMILIES", "Side", "proportion_inputs", "rate_inputs", "rate_value", "read_side"]

# Histogram-derived samples are thinned to evenly spaced ranks: enough for the bootstrap,
# and an honest sample size for ITL, whose gaps within one request are not independent.
_HISTOGRAM_SAMPLES = 2000
FAMILIES = {
    "ttft": "ttft_s",
    "ttfat": "ttfat_s",
    "itl": "itl_s",
    "e2e": "e2e_s",
    "session": "session_s",
}


@dataclass
class Side:
    """One run's inputs to the comparison, read once."""

    run: RunResults
    samples: dict[str, list[float]]  # sorted
    # Σ per-request tokens² from the records, by rate ("output", "answer"); None without.
    token_sq: dict[str, float] | None
    # The same samples by start time (records only; a histogram has no time order).
    in_time_order: dict[str, list[float]]


def read_side(run: RunResults, from_records: bool) -> Side:
    """Read one run's comparison inputs (from its records, or its summary's histograms)."""
    samples, token_sq, in_time_order = _samples(run, from_records)
    return Side(run, samples, token_sq, in_time_order)


def _thin(hist: LatencyHistogram, n: int) -> list[float]:
    n = min(n, hist.count)
    return [v for i in range(n) if (v := hist.percentile(100 * (i + 0.5) / n)) is not None]


def _samples(
    run: RunResults, from_records: bool
) -> tuple[dict[str, list[float]], dict[str, float] | None, dict[str, list[float]]]:
    """Latency samples by family, sorted; Σ tokens² per request; the samples by start time.

    Without records only the first is known; the others come back None and empty.
    """
    out: dict[str, list[float]] = {fam: [] for fam in FAMILIES}
    timed: dict[str, list[tuple[float, float]]] = {fam: [] for fam in FAMILIES}
    if not from_records:
        for fam, field in FAMILIES.items():
            raw = (run.summary.get("histograms") or {}).get(field)
            if raw:
                cap = _HISTOGRAM_SAMPLES
                if fam == "itl":
                    cap = min(cap, int(summary_number(run.summary, "requests", "ok") or 0))
                out[fam] = _thin(LatencyHistogram.from_dict(raw), cap)
        return out, None, {}
    token_sq = {"output": 0.0, "answer": 0.0}
    for step in run.steps():
        completion = float(step.get("completion_tokens") or 0)
        token_sq["output"] += completion**2
        token_sq["answer"] += max(0.0, completion - float(step.get("reasoning_tokens") or 0)) ** 2
        if not step.get("ok"):
            continue
        for fam, key in (
            ("ttft", "ttft_s"),
            ("ttfat", "ttfat_s"),
            ("e2e", "e2e_s"),
            ("itl", "itl_mean_s"),
        ):
            value = step.get(key)
            if isinstance(value, int | float):
                timed[fam].append((_started(step), float(value)))
    for session in run.sessions():
        duration = session.get("duration_s")
        if session.get("outcome") == "completed" and isinstance(duration, int | float):
            timed["session"].append((_started(session), float(duration)))
    # Worker folders are read one after another: their records interleave only by time.
    in_time_order = {fam: [v for _, v in sorted(pairs)] for fam, pairs in timed.items()}
    return {fam: sorted(v) for fam, v in in_time_order.items()}, token_sq, in_time_order


def _started(record: dict[str, object]) -> float:
    started = record.get("started_unix")
    return float(started) if isinstance(started, int | float) else 0.0


def rate_inputs(
    run: RunResults, name: str, token_sq: dict[str, float] | None
) -> tuple[float, float, float] | None:
    """(total, Σ per-event amount², seconds) behind throughput `name`, or None if unknown."""
    duration = summary_number(run.summary, "duration_s")
    if name == "requests_per_s":
        total = summary_number(run.summary, "requests", "total")
        sq = total
    elif name == "sessions_per_min":
        total = summary_number(run.summary, "sessions", "completed")
        sq = total
    else:
        answer = name == "answer_tokens_per_s"
        total = summary_number(run.summary, "tokens", "answer" if answer else "completion")
        if answer and total is None:  # a summary from before reasoning was counted
            total = summary_number(run.summary, "tokens", "completion")
        requests = summary_number(run.summary, "requests", "total") or 0.0
        # Without records assume per-request token counts spread like an exponential
        # (E[c²] = 2·mean²): wider than most real mixes, so the interval stays honest.
        recorded = token_sq.get("answer" if answer else "output") if token_sq else None
        sq = recorded if recorded else (2 * total**2 / requests if total and requests else None)
    if total is None or sq is None or duration is None:
        return None
    return total, sq, duration


def proportion_inputs(run: RunResults, name: str) -> tuple[int, int]:
    """(failures, trials) behind `error_rate` (requests) or `session_failure_rate`."""
    s = run.summary
    if name == "error_rate":
        hits = summary_number(s, "requests", "failed") or 0.0
        return int(hits), int(summary_number(s, "requests", "total") or 0)
    failed = summary_number(s, "sessions", "failed") or 0.0
    return int(failed), int(failed + (summary_number(s, "sessions", "completed") or 0))


def rate_value(run: RunResults, name: str) -> float | None:
    """The throughput figure `name` as the run's summary reports it."""
    return summary_number(run.summary, "throughput", name)
