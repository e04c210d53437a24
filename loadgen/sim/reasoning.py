"""How much the simulated model thinks before it answers, and the text of its thinking.

A request's effort (chat `reasoning_effort`, Responses `reasoning.effort`, else the config's
default_effort) picks a mean length; `spread` 0 gives exactly that length, otherwise a
lognormal draw with that mean. `thinking_token_budget` caps it, as vLLM's budget forces the
end of thinking. The max tokens limit then caps it again when the reply is planned.
"""

from __future__ import annotations

import math
import random

from loadgen.protocol.tokens import VOCABULARY
from loadgen.sim.config import ReasoningConfig, ReasoningEffort

__all__ = ["REASONING_WORDS", "reasoning_length", "reasoning_words", "resolve_effort"]

# Thinking is drawn from words the answer never uses (each one token), so a chat client's
# next prompt, which drops the thinking, diverges from the cached sequence at its first
# reasoning token: the prefix cache matches up to the end of the previous prompt, no further.
_THINKING = (
    "hmm so ok why we i must then thus else try may what need look yes no if case each also "
    "both more less well aha ah hm like far just only does here than"
)
REASONING_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(w for w in _THINKING.split() if w not in VOCABULARY)
)


def resolve_effort(
    requested: ReasoningEffort | None, config: ReasoningConfig
) -> ReasoningEffort | None:
    """The effort a request reasons at; None when reasoning is not in play at all (it named
    none and the default is "none"), so its reply carries no reasoning fields, as today."""
    if requested is not None:
        return requested
    return None if config.default_effort == "none" else config.default_effort


def reasoning_length(
    config: ReasoningConfig, effort: ReasoningEffort, budget: int | None, rng: random.Random
) -> int:
    """Reasoning tokens for one request: the effort's mean (or a draw around it), capped by
    the thinking budget. Draws from `rng` only when spread > 0."""
    mean = config.tokens.mean(effort)
    if mean > 0 and config.spread > 0:
        # A lognormal whose mean (not median) is the configured length.
        sigma = config.spread
        mean = round(rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma))
    if budget is not None:
        mean = min(mean, budget)
    return max(0, mean)


def reasoning_words(count: int, rng: random.Random) -> list[str]:
    """`count` one-token thinking words."""
    return rng.choices(REASONING_WORDS, k=count)
