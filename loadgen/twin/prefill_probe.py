"""The prefill probe: TTFT of lone requests with fresh prompts at several lengths."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loadgen.transport import Transport
from loadgen.twin.fit import Estimate, LineFit, fit_line, relative_spread
from loadgen.twin.probe_requests import (
    CalibrationRefused,
    fresh_prompt,
    probe_body,
    send_probe,
)

__all__ = ["PREFILL_LENGTHS", "PrefillFit", "PrefillPoint", "fit_prefill", "probe_prefill"]

# Prompt lengths, cut to --max-prompt-tokens and to half the window. 8192 by default: vLLM's
# usual per-step token budget, so that no probe is split into chunks (each chunk would add a
# step's fixed cost to the slope).
PREFILL_LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass(frozen=True, slots=True)
class PrefillPoint:
    """One prompt length: the server's count of its tokens and the TTFT of each repeat."""

    prompt_tokens: int
    ttft_s: tuple[float, ...]

    @property
    def spread(self) -> float:
        """How far the repeats disagree: (max - min) / median."""
        return relative_spread(self.ttft_s)


@dataclass(frozen=True, slots=True)
class PrefillFit:
    """ttft = overhead + tokens / rate, fitted over every repeat of every length."""

    line: LineFit
    rate: Estimate  # tokens/s
    overhead_s: Estimate

    def predict_s(self, prompt_tokens: int) -> float:
        """The fitted TTFT of a lone request of `prompt_tokens` tokens."""
        return self.line.predict(prompt_tokens)


def prefill_lengths(max_prompt_tokens: int, window: int | None) -> list[int]:
    """The lengths to probe: PREFILL_LENGTHS up to the limits."""
    top = min(max_prompt_tokens, window // 2 if window else max_prompt_tokens)
    return [n for n in PREFILL_LENGTHS if n <= top]


async def probe_prefill(
    transport: Transport,
    model: str,
    lengths: Sequence[int],
    repeats: int,
    time_left: Callable[[], float],
) -> list[PrefillPoint]:
    """Each length `repeats` times, rounds interleaved (a drift shows as spread, not as slope),
    one request at a time, each with max_tokens 1 and a prompt no cache holds."""
    rounds = [
        [probe_body(model, fresh_prompt(n), 1, force=False) for n in lengths]
        for _ in range(repeats)
    ]
    ttfts: list[list[float]] = [[] for _ in lengths]
    counted: list[list[int]] = [[] for _ in lengths]
    for bodies in rounds:
        for i, body in enumerate(bodies):
            if time_left() <= 0:
                raise CalibrationRefused("--max-duration ran out during the prefill probe")
            reply = await send_probe(transport, body, "prefill probe")
            ttfts[i].append(reply.ttft_s or 0.0)
            if reply.usage is not None:
                counted[i].append(reply.usage.prompt_tokens)
    return [
        PrefillPoint(int(statistics.median(c)) if c else n, tuple(t))
        for n, c, t in zip(lengths, counted, ttfts, strict=True)
    ]


def fit_prefill(points: Sequence[PrefillPoint]) -> PrefillFit:
    """The line through every TTFT against its prompt's tokens; CalibrationRefused when TTFT
    does not grow with the prompt (prefill too fast to see, or a cache in the way)."""
    xs = [float(p.prompt_tokens) for p in points for _ in p.ttft_s]
    ys = [t for p in points for t in p.ttft_s]
    try:
        line = fit_line(xs, ys)
    except ValueError as exc:
        raise CalibrationRefused(f"cannot fit prefill: {exc}") from exc
    if line.slope <= 0 or line.slope < 2 * line.slope_se:
        raise CalibrationRefused(
            f"TTFT does not grow measurably with the prompt over {int(min(xs))}..{int(max(xs))} "
            "tokens: prefill is too fast to tell apart from noise at these lengths (raise "
            "--max-prompt-tokens), or the server caches the probes' prompts"
        )
    rate = 1.0 / line.slope
    how = (
        f"least squares of TTFT against prompt tokens: {len(points)} lengths "
        f"{int(min(xs))}..{int(max(xs))}, {len(ys) // len(points)} fresh (uncached) lone "
        "requests each, max_tokens 1"
    )
    return PrefillFit(
        line,
        Estimate(rate, line.slope_se / line.slope**2, "1 / slope of " + how),
        Estimate(line.intercept, line.intercept_se, "intercept of " + how),
    )
