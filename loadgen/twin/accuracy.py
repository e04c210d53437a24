"""How well the fitted model reproduces each probe: predicted against measured, per probe."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.twin.calibrate import Calibration

__all__ = ["ProbeRow", "accuracy_rows", "accuracy_text"]


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
    """A row per prefill length (TTFT) and per sweep level below the limit, and the first
    one past it (ITL)."""
    rows = [
        ProbeRow(
            f"prefill {p.prompt_tokens} tokens",
            "TTFT",
            sorted(p.ttft_s)[len(p.ttft_s) // 2],
            cal.prefill.predict_s(p.prompt_tokens),
        )
        for p in cal.prefill_points
    ]
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
