"""Deciding what the simulated model says: text or tool calls, how long, and why it stops."""

from __future__ import annotations

import dataclasses
import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.protocol.tokens import VOCABULARY, count_tokens, text_chunks, token_pieces
from loadgen.sim.config import ReasoningEffort
from loadgen.sim.prompt import render_tool_call
from loadgen.sim.reasoning import reasoning_words
from loadgen.sim.tool_arguments import encode_arguments, generate_arguments, malformed_arguments

__all__ = [
    "CONTENT",
    "REASONING",
    "ReplyPlan",
    "ReplyRequest",
    "ToolCallPlan",
    "ToolSpec",
    "plan_reply",
    "reply_seed",
]

CONTENT = -1  # delta target meaning "message text" rather than a tool call index
REASONING = -2  # delta target meaning "reasoning text", streamed before the answer


@dataclass(slots=True)
class ToolSpec:
    """A tool the request offers: its name and JSON-Schema parameters."""

    name: str
    parameters: dict[str, Any] | None


@dataclass(slots=True)
class ReplyRequest:
    """The generation knobs of a request, already clamped to the model's context."""

    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: Sequence[str] = ()
    tools: Sequence[ToolSpec] = ()
    tool_choice: str = "auto"  # none | auto | required | the name of a forced tool
    parallel_tool_calls: bool = True
    # The effort the request reasons at; None: reasoning is not in play (no reasoning fields).
    reasoning_effort: ReasoningEffort | None = None
    thinking_budget: int | None = None  # thinking_token_budget: a cap on reasoning tokens


@dataclass(slots=True)
class ToolCallPlan:
    """One tool call of the reply (arguments as they will be sent, possibly truncated)."""

    id: str
    name: str
    arguments: str
    malformed: bool = False


@dataclass(slots=True)
class ReplyPlan:
    """The whole reply, decided up front; the engine only decides when each token appears."""

    tokens: list[str]  # one token piece per generated token (what the KV cache hashes)
    deltas: list[tuple[int, str]]  # per token: (REASONING, CONTENT or tool index, its text)
    finish_reason: str  # stop | length | tool_calls
    content: str = ""
    tool_calls: list[ToolCallPlan] = field(default_factory=list)
    # Reasoning comes first: tokens[:reasoning_tokens] are thinking. None: not in play.
    reasoning_tokens: int | None = None
    reasoning: str = ""
    reasoning_effort: ReasoningEffort | None = None

    @property
    def has_answer(self) -> bool:
        """False when the max tokens limit was reached while the model was still reasoning."""
        return len(self.tokens) > (self.reasoning_tokens or 0)


def reply_seed(*parts: object) -> int:
    """A seed that is stable across processes (unlike hash()) for the given parts."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def plan_reply(
    request: ReplyRequest,
    rng: random.Random,
    *,
    median_tokens: int,
    sigma: float,
    tool_call_probability: float,
    malformed_tool_args: bool = False,
    reasoning_tokens: int = 0,
    reasoning_rng: random.Random | None = None,
) -> ReplyPlan:
    """Decide the reply for a request; deterministic for a given `rng` state.

    With reasoning in play (request.reasoning_effort set), `reasoning_tokens` of thinking
    (words from `reasoning_rng`) come first and count against max_tokens; the answer is
    planned from `rng` as it would be without them, in the room they leave.
    """
    knobs = (rng, median_tokens, sigma, tool_call_probability, malformed_tool_args)
    if request.reasoning_effort is None:
        return _answer(request, *knobs)
    thinking = min(reasoning_tokens, request.max_tokens)
    room = request.max_tokens - thinking
    if room <= 0:
        plan = ReplyPlan(tokens=[], deltas=[], finish_reason="length")
    else:
        # min_tokens counts every output token, thinking included, as vLLM counts it.
        answer = dataclasses.replace(
            request, max_tokens=room, min_tokens=max(0, request.min_tokens - thinking)
        )
        plan = _answer(answer, *knobs)
    words = reasoning_words(thinking, reasoning_rng or random.Random(0))
    plan.tokens[:0] = words
    plan.deltas[:0] = [(REASONING, w if i == 0 else " " + w) for i, w in enumerate(words)]
    plan.reasoning_tokens = thinking
    plan.reasoning = " ".join(words)
    plan.reasoning_effort = request.reasoning_effort
    return plan


def _answer(
    request: ReplyRequest,
    rng: random.Random,
    median_tokens: int,
    sigma: float,
    tool_call_probability: float,
    malformed_tool_args: bool,
) -> ReplyPlan:
    forced = request.tool_choice not in ("none", "auto")
    wants_tool = forced or rng.random() < tool_call_probability
    if request.tools and request.tool_choice != "none" and wants_tool:
        return _tool_reply(request, rng, malformed_tool_args)
    return _text_reply(request, rng, median_tokens, sigma)


def _text_reply(
    request: ReplyRequest, rng: random.Random, median_tokens: int, sigma: float
) -> ReplyPlan:
    natural = max(1, round(rng.lognormvariate(math.log(median_tokens), sigma)))
    if request.ignore_eos:
        count, finish = request.max_tokens, "length"
    else:
        count = min(max(natural, request.min_tokens), request.max_tokens)
        finish = "length" if max(natural, request.min_tokens) >= request.max_tokens else "stop"
    words = [rng.choice(VOCABULARY) for _ in range(count)]
    deltas = [(CONTENT, words[0])] + [(CONTENT, " " + w) for w in words[1:]]
    plan = ReplyPlan(tokens=words, deltas=deltas, finish_reason=finish, content=" ".join(words))
    # ignore_eos only keeps the end-of-sequence token from ending the reply; stop strings
    # still cut it, as in vLLM and SGLang.
    if request.stop:
        _apply_stop(plan, request.stop, request.min_tokens)
    return plan


def _apply_stop(plan: ReplyPlan, stops: Sequence[str], min_tokens: int) -> None:
    """Cut the reply at the first stop string that ends after min_tokens, as servers do."""
    text = plan.content
    ends = [0]
    for _target, piece in plan.deltas:
        ends.append(ends[-1] + len(piece))
    best: tuple[int, int] | None = None  # (tokens kept, text kept)
    for stop in stops:
        at = text.find(stop)
        while at >= 0:
            # The token in which the stop string completes: generation halts there.
            done = next(i for i, end in enumerate(ends) if end >= at + len(stop))
            if done >= min_tokens:
                if best is None or done < best[0]:
                    best = (done, at)
                break
            at = text.find(stop, at + 1)
    if best is None:
        return
    kept_tokens, kept_text = best
    plan.tokens = plan.tokens[:kept_tokens]
    deltas = []
    for i in range(kept_tokens):
        start, end = ends[i], min(ends[i + 1], kept_text)
        deltas.append((CONTENT, text[start:end] if end > start else ""))
    plan.deltas = deltas
    plan.content = text[:kept_text]
    plan.finish_reason = "stop"


def _tool_reply(request: ReplyRequest, rng: random.Random, malformed: bool) -> ReplyPlan:
    by_name = {t.name: t for t in request.tools}
    if request.tool_choice in by_name:
        chosen = [by_name[request.tool_choice]]
    else:
        count = 1
        if request.parallel_tool_calls:
            # Parallel tool calls per step in real coding traces: mean ~1.2, P90 2, P99 4.
            count = rng.choices((1, 2, 3, 4), weights=(82, 13, 4, 1))[0]
        chosen = [rng.choice(list(request.tools)) for _ in range(count)]
    plan = ReplyPlan(tokens=[], deltas=[], finish_reason="tool_calls")
    for index, tool in enumerate(chosen):
        arguments = encode_arguments(generate_arguments(tool.parameters, rng))
        if malformed and index == 0:
            arguments = malformed_arguments(arguments, rng)
        call = ToolCallPlan(
            id=f"call_{rng.getrandbits(64):016x}", name=tool.name, arguments="", malformed=malformed
        )
        malformed = False
        header = count_tokens(f"<|tool_call|>{tool.name}")
        chunks = text_chunks(arguments)
        pieces = token_pieces(render_tool_call(tool.name, arguments))
        room = request.max_tokens - len(plan.tokens)
        if room <= 0:
            plan.finish_reason = "length"
            break
        plan.tool_calls.append(call)
        plan.tokens.extend(pieces[:room])
        plan.deltas.extend([(index, "")] * min(header, room))
        kept = chunks[: max(0, room - header)]
        plan.deltas.extend((index, chunk) for chunk in kept)
        call.arguments = "".join(kept)
        if len(pieces) > room:
            plan.finish_reason = "length"
            break
    return plan
