"""The prefill probe: TTFT of lone requests with fresh prompts at several lengths."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loadgen.transport import Transport
from loadgen.twin.fit import (
    Estimate,
    LineFit,
    QuadraticFit,
    fit_line,
    fit_quadratic,
    relative_spread,
)
from loadgen.twin.probe_requests import (
    CalibrationRefused,
    fresh_prompt,
    probe_body,
    send_probe,
)
from loadgen.twin.suffix_probe import SuffixSample, suffix_body, suffix_sample

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
    # Seconds per token squared where TTFT curves upward (attention over the prompt, as on a
    # CPU): then `rate` is the curve's slope at no prompt, not the line's; None on a line.
    quadratic_s: Estimate | None = None
    # The server's tokens per token of the fit (a word agentload sends): see fit_prefill.
    tokens_per_word: float = 1.0

    def attention_ns_per_pair(self) -> Estimate:
        """The cost of attention per (prefilled token, token before it) pair, in the twin's
        tokens: a fresh prompt of n tokens has n x n / 2 pairs, so twice the square term;
        0 where TTFT is a line."""
        if self.quadratic_s is None:
            return Estimate(0.0, None, "0: TTFT grows linearly with the prompt (no square term)")
        q = self.quadratic_s
        return Estimate(
            2e9 * q.value,
            None if q.stderr is None else 2e9 * q.stderr,
            "twice the " + q.method + "; a fresh prompt of n tokens has n x n / 2 pairs of a "
            "token and one before it; simulated over the whole context, cached prefix included",
        )

    def predict_s(self, prompt_tokens: int) -> float:
        """The fitted TTFT of a lone request of `prompt_tokens` tokens (the server's count)."""
        n = prompt_tokens / self.tokens_per_word
        if self.quadratic_s is None:
            return self.line.predict(n)
        return self.overhead_s.value + n / self.rate.value + self.quadratic_s.value * n * n


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
    tokens_per_word: float = 1.0,
    *,
    suffixes: bool = True,
) -> tuple[list[PrefillPoint], list[SuffixSample]]:
    """Each length `repeats` times, rounds interleaved (a drift shows as spread, not as slope),
    one request at a time, each with max_tokens 1 and a prompt no cache holds; with
    `suffixes`, each followed at once by the suffix probe's request on the prompt it just
    sent (suffix_probe: a short new turn after that cached conversation).

    `lengths` are the server's tokens: each prompt has lengths / `tokens_per_word` one-token
    words (server_facts.PrefixFacts), so a server whose tokenizer splits them still gets
    prompts of about those lengths, within half its window."""
    rounds = [
        [fresh_prompt(max(8, round(n / tokens_per_word))) for n in lengths] for _ in range(repeats)
    ]
    ttfts: list[list[float]] = [[] for _ in lengths]
    counted: list[list[int]] = [[] for _ in lengths]
    samples: list[SuffixSample] = []
    for r, prompts in enumerate(rounds):
        for i, prompt in enumerate(prompts):
            if time_left() <= 0:
                raise CalibrationRefused("--max-duration ran out during the prefill probe")
            body = probe_body(model, prompt, 1, force=False)
            reply = await send_probe(transport, body, "prefill probe")
            ttfts[i].append(reply.ttft_s or 0.0)
            if reply.usage is not None:
                counted[i].append(reply.usage.prompt_tokens)
            if suffixes:
                body = suffix_body(model, prompt, r * len(lengths) + i)
                sample = suffix_sample(await send_probe(transport, body, "suffix probe"))
                if sample is not None:
                    samples.append(sample)
    points = [
        PrefillPoint(int(statistics.median(c)) if c else n, tuple(t))
        for n, c, t in zip(lengths, counted, ttfts, strict=True)
    ]
    return points, samples


def fit_prefill(points: Sequence[PrefillPoint], tokens_per_word: float = 1.0) -> PrefillFit:
    """The line through every TTFT against its prompt's tokens; CalibrationRefused when TTFT
    does not grow with the prompt (prefill too fast to see, or a cache in the way).

    The tokens are counted as the twin counts them, one per word agentload sends: the
    server's count / `tokens_per_word` (1 where the server's tokenizer reads a word as one
    token), so the twin's rate holds for the prompts a run sends it."""
    xs = [float(p.prompt_tokens) / tokens_per_word for p in points for _ in p.ttft_s]
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
    if abs(tokens_per_word - 1.0) > 0.05:
        how += (
            f"; tokens as the twin counts them: the server's / {tokens_per_word:.3g}, its "
            "tokens per word agentload sends"
        )
    curved = _curve(xs, ys)
    if curved is not None:
        return curved_fit(line, curved, how, tokens_per_word)
    return PrefillFit(
        line,
        Estimate(rate, line.slope_se / line.slope**2, "1 / slope of " + how),
        Estimate(line.intercept, line.intercept_se, "intercept of " + how),
        tokens_per_word=tokens_per_word,
    )


def _curve(xs: Sequence[float], ys: Sequence[float]) -> QuadraticFit | None:
    """The parabola through the points when TTFT curves upward, else None (the line stands).

    Upward: the line misses the shortest prompt by more than a fifth, and either the square
    term is positive over 3 standard errors or the line's intercept is below zero by over 2
    (no server answers before it is asked: the line is a chord of a curve). The parabola's
    linear term must then be a rate (positive)."""
    if len(set(xs)) < 4:
        return None  # three lengths leave a parabola no residual to judge it by
    try:
        curve = fit_quadratic(xs, ys)
    except ValueError:
        return None
    _c0, c1, c2 = curve.coefficients
    line = fit_line(xs, ys)
    shortest = min(xs)
    measured = statistics.median(y for x, y in zip(xs, ys, strict=True) if x == shortest)
    misses = abs(line.predict(shortest) - measured) > 0.2 * measured
    bends = c2 > 3 * curve.stderrs[2] or line.intercept < -2 * line.intercept_se
    if not (misses and bends) or c2 <= 0 or c1 <= 0:
        return None
    return curve


def curved_fit(
    line: LineFit, curve: QuadraticFit, how: str, tokens_per_word: float = 1.0
) -> PrefillFit:
    """The fit of a TTFT that grows faster than the prompt: the rate is the parabola's slope at
    no prompt, what short prompts see; the square term is the prompt's attention over itself
    (PrefillFit.attention_ns_per_pair)."""
    c0, c1, c2 = curve.coefficients
    se0, se1, se2 = curve.stderrs
    how = how.replace("least squares of", "a least-squares parabola of", 1)
    return PrefillFit(
        line,
        Estimate(
            1.0 / c1,
            se1 / c1**2,
            "1 / linear term of " + how + " (TTFT grows faster than the prompt, as attention "
            "over it does on a CPU: the rate is what short prompts see)",
        ),
        Estimate(c0, se0, "intercept of " + how),
        Estimate(c2, se2, "square term of " + how),
        tokens_per_word,
    )
