"""Reasoning models: the effort an agent asks for, drawn once per session, and the room its
requests leave for thinking.

A profile's agent entry (or an archetype's params) names `reasoning_effort` as one level
(`high`) or as weights (`{low: 0.7, high: 0.3}`), and optionally `thinking_budget` (the most
tokens to think, sent as vLLM's `thinking_token_budget`). Neither given: no reasoning field
is sent and every request is exactly what it was before reasoning models were modelled.

Reasoning tokens are output tokens: they count against max_tokens. A step that asks the
model to think therefore asks for its answer's length plus room to think (its thinking
budget, else the room for its effort, below), and is not forced to a length: `ignore_eos`
would make the server fill the whole room, and a reasoning model's answer length is its own.
A compaction request carries no reasoning fields, so its summary keeps the length it asks
for. A sub-agent thinks at the effort its parent drew for the session.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict, get_args

from pydantic import BeforeValidator

if TYPE_CHECKING:
    from loadgen.agents.params import AgentParams

__all__ = [
    "EFFORTS",
    "ROOM_TOKENS",
    "Effort",
    "EffortWeights",
    "ReasoningFields",
    "SessionReasoning",
    "ThinkingBudget",
    "check_reasoning",
    "reasoning_into_params",
]

Effort = Literal["none", "minimal", "low", "medium", "high"]
EFFORTS: tuple[Effort, ...] = get_args(Effort)
_LEVELS = "none|minimal|low|medium|high"
_FORMS = f"one level ({_LEVELS}) or weights such as {{low: 0.7, high: 0.3}}"

# Room to think that a step without a thinking budget adds to its output limit. High is
# 32,768: Qwen3's model card recommends that output length for most queries (38,912 for the
# hardest), and OpenAI asks clients to reserve at least 25,000 tokens for reasoning and
# output; each lower level halves it. Unused room costs nothing: servers stop at the answer's
# end, and vLLM reserves no cache for it. It only has to fit the window with the prompt.
ROOM_TOKENS: dict[str, int] = {
    "none": 0,
    "minimal": 4096,
    "low": 8192,
    "medium": 16384,
    "high": 32768,
}


def _effort(value: Any) -> dict[str, float] | None:
    """A level or weights as {level: weight}, in EFFORTS order; ValueError names the fix."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in EFFORTS:
            raise ValueError(f"unknown level {value!r}: use {_FORMS}")
        return {value: 1.0}
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{value!r} is neither: use {_FORMS}")
    for level, weight in value.items():
        if level not in EFFORTS:
            raise ValueError(f"unknown level {level!r} in the weights: use {_LEVELS}")
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if not number or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"the weight of {level} is {weight!r}: use a number >= 0")
    if not any(value.values()):
        raise ValueError("every weight is 0: give at least one level a weight > 0")
    return {level: float(value[level]) for level in EFFORTS if value.get(level)}


def _budget(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{value!r} is not a token count: use a whole number > 0, e.g. 4096")
    return value


EffortWeights = Annotated[dict[str, float] | None, BeforeValidator(_effort)]
ThinkingBudget = Annotated[int | None, BeforeValidator(_budget)]


def check_reasoning(
    effort: dict[str, float] | None, budget: int | None, api: str | None = None
) -> None:
    """ValueError when the fields ask for something no request can carry."""
    asked = effort is not None or budget is not None
    if asked and api == "completions":
        raise ValueError(
            "reasoning_effort / thinking_budget: the completions API has no reasoning "
            "fields; use api: chat or responses, or remove them"
        )
    if budget is not None and effort is not None and set(effort) == {"none"}:
        raise ValueError(
            "thinking_budget: reasoning_effort none asks for no reasoning; remove "
            "thinking_budget or choose a level"
        )


def reasoning_into_params(data: Any) -> Any:
    """An agent entry's `reasoning_effort` / `thinking_budget`, copied into its `params`
    (the archetype's knobs, where the runtime reads them); kept on the entry as well, so
    that their errors name the entry's own field."""
    if not isinstance(data, dict):
        return data
    given = {k: data[k] for k in ("reasoning_effort", "thinking_budget") if k in data}
    params = data.get("params")
    if not given or not isinstance(params, dict | None):
        return data
    params = dict(params or {})
    for key, value in given.items():
        if key in params and not _same(key, params[key], value):
            raise ValueError(
                f"{key} is set on the entry and under params; keep the entry's, remove params.{key}"
            )
        params[key] = value
    return {**data, "params": params}


def _same(key: str, a: Any, b: Any) -> bool:
    """Whether two spellings of `key` say the same (a level is its weights {level: 1})."""
    parse = _effort if key == "reasoning_effort" else _budget
    try:
        return parse(a) == parse(b)
    except ValueError:
        return False


class ReasoningFields(TypedDict):
    """What a request body carries of reasoning (None: not sent)."""

    reasoning_effort: str | None
    thinking_token_budget: int | None


_NOTHING: ReasoningFields = {"reasoning_effort": None, "thinking_token_budget": None}


class SessionReasoning:
    """One agent's effort for its current session, drawn at the session's start from the
    weights, and what its requests carry of it."""

    __slots__ = ("_budget", "_levels", "_seed", "_weights", "_window", "effort", "fields", "rng")

    def __init__(self, params: AgentParams, seed: int) -> None:
        effort = params.reasoning_effort or {}
        self._levels = list(effort)
        self._weights = list(effort.values())
        self._budget = params.thinking_budget
        self._window = params.context_budget_tokens  # the agent's own
        self._seed = seed
        # A stream of its own, so that weights change no other draw of the session.
        self.rng: random.Random | None = None
        self.effort: str | None = self._levels[0] if len(self._levels) == 1 else None
        self.fields = self._fields()

    def draw(self) -> None:
        """Pick this session's effort (weights only: one level needs no draw)."""
        if len(self._levels) > 1:
            if self.rng is None:
                self.rng = random.Random(self._seed)
            self.effort = self.rng.choices(self._levels, self._weights)[0]
            self.fields = self._fields()

    def inherited(self) -> dict[str, float] | None:
        """A sub-agent's effort: its parent's for this session."""
        return None if self.effort is None else {self.effort: 1.0}

    def room(self) -> int:
        """Output tokens a step leaves for thinking: the budget, else its effort's room."""
        if self._budget is not None and self.effort != "none":
            return self._budget
        return 0 if self.effort is None else ROOM_TOKENS[self.effort]

    def limits(
        self, answer: int, room_left: int, force: bool, history: int
    ) -> tuple[int, int | None]:
        """A step's output limit and forced length for an `answer`-token reply.

        Without thinking, as asked: at most `room_left` (what the server's window leaves),
        forced when `force`. With it: the answer plus room to think, and never forced. The
        room ends a twentieth short of the agent's own window after its `history` tokens
        (what its estimate misses: chat-template framing, the server's tokenizer), so that
        a server whose window is the agent's does not refuse the request; the answer alone
        is never cut, and `room_left` bounds it all.
        """
        room = self.room()
        if not room:
            limit = min(answer, room_left)
            return limit, (limit if force else None)
        own = self._window - self._window // 20 - history
        return min(answer + room, max(answer, own), room_left), None

    def _fields(self) -> ReasoningFields:
        if self.effort is None and self._budget is None:
            return _NOTHING
        budget = None if self.effort == "none" else self._budget
        return {"reasoning_effort": self.effort, "thinking_token_budget": budget}
