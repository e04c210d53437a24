"""The suffix probe: TTFT of a short new turn after a cached conversation, as an agent's later
steps are. Right after each fresh prompt of the prefill probe, the same conversation goes
again with a reply and a short user turn after it: the server holds the prompt in its cache,
so what it computes is the suffix, attending over that cached prefix.

It measures what the fresh prompts can only extrapolate: the request overhead (what a short
request costs beyond its step, its prefill and its attention: HTTP, tokenizing, scheduling)
at a short request, not at an empty prompt; and its accuracy rows show whether the
attention cost fitted on fresh prompts holds over a cached conversation."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.protocol import Reply, chat_body, encode_message, words_for_tokens
from loadgen.sim.step_time import token_pairs
from loadgen.twin.fit import Estimate
from loadgen.twin.probe_requests import ProbeBody

__all__ = [
    "SUFFIX_WORDS",
    "SuffixFit",
    "SuffixSample",
    "fit_suffix",
    "modelled_ms",
    "suffix_body",
    "suffix_pairs",
    "suffix_sample",
]

# The new user turn: short, as an agent's next step is, but long enough that its prefill is
# a few blocks on any server.
SUFFIX_WORDS = 16


@dataclass(frozen=True, slots=True)
class SuffixSample:
    """One suffix request: the server's counts of its cached and new tokens, and its TTFT."""

    cached_tokens: int
    new_tokens: int
    ttft_s: float


def suffix_body(model: str, prompt: str, serial: int) -> ProbeBody:
    """`prompt` (a fresh prompt just sent), a reply and a new short user turn, max_tokens 1."""
    return chat_body(
        model,
        [
            encode_message("user", prompt),
            encode_message("assistant", "noted"),
            encode_message("user", words_for_tokens(SUFFIX_WORDS, offset=serial + 7)),
        ],
        max_tokens=1,
    )


def suffix_sample(reply: Reply) -> SuffixSample | None:
    """The sample a reply gives; None when the server did not say what it had cached."""
    usage = reply.usage
    if usage is None or usage.cached_tokens is None or reply.ttft_s is None:
        return None
    return SuffixSample(
        usage.cached_tokens, usage.prompt_tokens - usage.cached_tokens, reply.ttft_s
    )


@dataclass(frozen=True, slots=True)
class SuffixFit:
    """What the suffix requests leave beyond the modelled step, prefill and attention: the
    request overhead, over every suffix request."""

    overhead_ms: Estimate
    cached_range: tuple[int, int]  # the twin's tokens, shortest and longest cached prefix
    new_tokens: float  # the twin's, the median suffix


def suffix_pairs(sample: SuffixSample, tokens_per_word: float = 1.0) -> float:
    """The sample's (new token, context token) pairs in the twin's tokens, as the engine
    counts them: each new token attends over the cached prefix and the new ones before it."""
    return token_pairs(sample.new_tokens / tokens_per_word, sample.cached_tokens / tokens_per_word)


def modelled_ms(
    sample: SuffixSample,
    *,
    step_ms: float,
    prefill_tokens_per_s: float,
    pair_ns: float,
    tokens_per_word: float = 1.0,
) -> float:
    """The engine's part of the sample's TTFT: the step that samples the first token, the new
    tokens' prefill and their attention over the context (all but the request overhead)."""
    new = sample.new_tokens / tokens_per_word
    attention_ms = suffix_pairs(sample, tokens_per_word) * pair_ns * 1e-6
    return step_ms + new / prefill_tokens_per_s * 1000.0 + attention_ms


def fit_suffix(
    samples: Sequence[SuffixSample],
    *,
    step_ms: float,
    prefill_tokens_per_s: float,
    pair_ns: float,
    tokens_per_word: float = 1.0,
) -> SuffixFit | None:
    """The request overhead: the median over the samples of TTFT less its modelled part; None
    without samples. Measured where agents' later steps are (a short turn after a cached
    conversation), not extrapolated to an empty prompt; what grows with the prompt but is
    not attention (tokenizing the whole conversation) is in it, at the probed lengths. A
    negative median (noise) is written as 0, and said so."""
    usable = [s for s in samples if s.cached_tokens > 0 and s.new_tokens > 0]
    if not usable:
        return None
    left = sorted(
        s.ttft_s * 1000.0
        - modelled_ms(
            s,
            step_ms=step_ms,
            prefill_tokens_per_s=prefill_tokens_per_s,
            pair_ns=pair_ns,
            tokens_per_word=tokens_per_word,
        )
        for s in usable
    )
    middle = statistics.median(left)
    # The median's standard error, from the spread of what is left (1.2533 sigma / sqrt n).
    stderr = 1.2533 * statistics.stdev(left) / len(left) ** 0.5 if len(left) > 1 else None
    cached = sorted(s.cached_tokens / tokens_per_word for s in usable)
    new = statistics.median(s.new_tokens / tokens_per_word for s in usable)
    how = (
        f"median over {len(usable)} requests of a {SUFFIX_WORDS}-word user turn (~{new:.0f} new "
        f"tokens) after a cached conversation of {cached[0]:.0f}..{cached[-1]:.0f} tokens (the "
        "twin's), each right after the prefill probe's fresh prompt: TTFT less one decode "
        f"step ({step_ms:.4g} ms), the new tokens' prefill and their attention over the context"
    )
    if middle < 0:
        how += f"; the median, {middle:.3g} ms, is below 0: written as 0"
    overhead = Estimate(max(middle, 0.0), stderr, how)
    return SuffixFit(overhead, (round(cached[0]), round(cached[-1])), new)
