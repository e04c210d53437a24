"""KV capacity where the server's metrics do not state it: where its prefix cache starts to evict.

A fresh anchor prompt is sent (and cached), then fresh filler prompts of X tokens in all, one at
a time, then the anchor again. A paged KV cache keeps finished prompts' blocks until it needs
them, and takes the least recently used first: while X and the anchor fit in it, the anchor
comes back cached; once they do not, the anchor (older than every filler) is what goes. X is
doubled until the anchor is evicted, then bisected to within a tenth; the capacity is the
bracket's middle plus the anchor. Each trial starts from a new anchor, and every prompt shares
nothing with any other, so nothing but the trial's own prompts decides what is evicted.

Bounded: the trials stop at `max_tokens` of fillers or when time runs out, and say so (the
capacity is then only known to be above the largest X that kept the anchor).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from loadgen.transport import Transport
from loadgen.twin.probe_requests import fresh_prompt, probe_body, send_probe

__all__ = ["KvProbe", "probe_kv_capacity"]

_RESOLUTION = 0.1  # the bracket's width, as a share of its top, where bisecting stops
_MAX_TRIALS = 16
_EVICTED = 0.5  # an anchor with under half its tokens cached was evicted
# Fillers of this many of the server's tokens at most (within the window): large enough to
# fill a GPU's KV cache in tens of requests, small enough to be prefilled quickly.
_FILLER_TOKENS = 32_768


@dataclass(frozen=True, slots=True)
class Trial:
    """One anchor: the filler tokens sent after it, and what of it came back cached."""

    filler_tokens: int
    anchor_tokens: int
    anchor_cached: int

    @property
    def evicted(self) -> bool:
        """Whether the fillers pushed the anchor out of the cache."""
        return self.anchor_cached < _EVICTED * self.anchor_tokens


@dataclass(frozen=True, slots=True)
class KvProbe:
    """The eviction probe's finding, in the server's tokens."""

    tokens: int | None  # the capacity; None: no eviction seen within the probe's budget
    low: int  # the most filler tokens after which an anchor stayed cached
    high: int | None  # the fewest after which one was evicted
    method: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def stderr(self) -> float | None:
        """Half the bracket: the capacity lies within it."""
        return None if self.high is None else (self.high - self.low) / 2


async def _trial(
    transport: Transport, model: str, filler_tokens: int, filler_size: int, anchor_size: int,
    tokens_per_word: float,
) -> Trial:  # fmt: skip
    def words(tokens: int) -> int:
        return max(16, round(tokens / tokens_per_word))

    anchor = probe_body(model, fresh_prompt(words(anchor_size)), 1, force=False)
    await send_probe(transport, anchor, "KV-capacity probe")
    sent = 0
    while sent < filler_tokens:
        size = min(filler_size, filler_tokens - sent)
        body = probe_body(model, fresh_prompt(words(max(size, 64))), 1, force=False)
        reply = await send_probe(transport, body, "KV-capacity probe")
        counted = reply.usage.prompt_tokens if reply.usage is not None else 0
        sent += counted or max(size, 64)
    again = await send_probe(transport, anchor, "KV-capacity probe")
    usage = again.usage
    anchor_tokens = usage.prompt_tokens if usage is not None else 0
    cached = (usage.cached_tokens or 0) if usage is not None else 0
    return Trial(sent, anchor_tokens, cached)


async def probe_kv_capacity(
    transport: Transport,
    model: str,
    *,
    window: int | None,
    tokens_per_word: float,
    time_left: Callable[[], float],
    max_tokens: int = 8_000_000,
) -> KvProbe:
    """Find where the prefix cache starts to evict (the module's docstring says how)."""
    span = window or _FILLER_TOKENS
    filler_size = max(256, min(_FILLER_TOKENS, span - 512))
    anchor_size = max(256, min(2048, span // 8))
    trials: list[Trial] = []
    low, high = 0, None
    x = filler_size
    spent = 0
    why = ""
    while len(trials) < _MAX_TRIALS:
        if spent + x > max_tokens:
            why = f"the probe's budget of {max_tokens:,} filler tokens"
            break
        if time_left() <= 0:
            why = "the calibration's time"
            break
        trial = await _trial(transport, model, x, filler_size, anchor_size, tokens_per_word)
        trials.append(trial)
        spent += trial.filler_tokens
        if trial.evicted:
            high = trial.filler_tokens if high is None else min(high, trial.filler_tokens)
        else:
            low = max(low, trial.filler_tokens)
        if high is None:
            x = x * 2
        elif high - low <= _RESOLUTION * high:
            break
        else:
            x = (low + high) // 2
    anchor = max((t.anchor_tokens for t in trials), default=anchor_size)
    if high is None:
        method = (
            f"not measured: no eviction seen after up to {low:,} tokens of fresh prompts "
            f"({len(trials)} trials; stopped by {why or 'the trial limit'}): the capacity is "
            "above that"
        )
        return KvProbe(None, low, None, method, trials)
    tokens = math.ceil((low + high) / 2) + anchor
    method = (
        f"the prefix cache's eviction onset: a {anchor:,}-token prompt stayed cached after "
        f"{low:,} tokens of fresh prompts and was evicted after {high:,} ({len(trials)} trials, "
        "one at a time); capacity = the middle of that bracket + the prompt"
    )
    return KvProbe(tokens, low, high, method, trials)
