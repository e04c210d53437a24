"""How well the fitted model reproduces each probe: predicted against measured, per probe."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from loadgen.twin.calibrate import Calibration
from loadgen.twin.suffix_probe import SuffixSample, modelled_ms

__all__ = ["ProbeRow", "accuracy_rows", "accuracy_text", "suffix_rows"]


@dataclass(frozen=True, slots=True)
class ProbeRow:
    """One probe: what it was, its measured median and the fit's prediction (seconds)."""

    probe: str
    figure: str
    measured_s: float
    predicted_s: float

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted_s - self.measured_s) / self.measured_s if self.measured_s else 0.0


def accuracy_rows(cal: Calibration) -> list[ProbeRow]:
    """A row per prefill length (TTFT), per suffix probe length (TTFT) and per sweep level
    below the limit, and the first one past it (ITL)."""
    rows = [
        ProbeRow(
            f"prefill {p.prompt_tokens} tokens",
            "TTFT",
            sorted(p.ttft_s)[len(p.ttft_s) // 2],
            cal.prefill.predict_s(p.prompt_tokens),
        )
        for p in cal.prefill_points
    ]
    rows += suffix_rows(cal)
    rows += [
        ProbeRow(
            f"concurrency {level.concurrency}" + (" (past the limit)" if level.saturated else ""),
            "ITL",
            level.itl_s,
            cal.decode.predict_itl_s(level.concurrency),
        )
        for level in cal.levels
    ]
    return rows


def suffix_rows(cal: Calibration) -> list[ProbeRow]:
    """A row per prefill length for the suffix probe: the median TTFT of the short turns sent
    after prompts of about that length, against the twin's (overhead, one step, the new
    tokens' prefill and their attention over the context)."""
    if cal.suffix is None:
        return []
    rows = []
    tpw = cal.prefill.tokens_per_word
    step_ms = cal.decode.step_ms
    for point in cal.prefill_points:
        near = [
            s
            for s in cal.suffix_samples
            if abs(s.cached_tokens - point.prompt_tokens) <= 0.1 * point.prompt_tokens
        ]
        if not near:
            continue
        middle = SuffixSample(
            round(statistics.median(s.cached_tokens for s in near)),
            round(statistics.median(s.new_tokens for s in near)),
            statistics.median(s.ttft_s for s in near),
        )
        predicted_ms = cal.suffix.overhead_ms.value + modelled_ms(
            middle,
            step_ms=step_ms,
            prefill_tokens_per_s=cal.prefill.rate.value,
            pair_ns=cal.prefill.attention_ns_per_pair().value,
            tokens_per_word=tpw,
        )
        rows.append(
            ProbeRow(
                f"{middle.new_tokens} new after {middle.cached_tokens} cached",
                "TTFT",
                middle.ttft_s,
                predicted_ms / 1000,
            )
        )
    return rows


def accuracy_text(rows: list[ProbeRow]) -> str:
    """The rows as an aligned table, with the worst error under it."""
    width = max(len(r.probe) for r in rows)
    lines = [f"{'probe':<{width}}  figure  measured  predicted   error"]
    for r in rows:
        lines.append(
            f"{r.probe:<{width}}  {r.figure:<6}  {r.measured_s * 1000:>6.1f}ms  "
            f"{r.predicted_s * 1000:>7.1f}ms  {r.error:>+6.1%}"
        )
    worst = max(rows, key=lambda r: abs(r.error))
    lines.append(f"worst: {worst.probe} {worst.figure}, {worst.error:+.1%}")
    return "\n".join(lines)
