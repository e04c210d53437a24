"""State checks on every reply: is the session's context, cache and output what it should be?"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.agents import StepPlan
from loadgen.agents.conversation import message_tokens
from loadgen.profile.schema import Checks
from loadgen.protocol import Reply, validate_tool_calls
from loadgen.protocol.failures import FailureKind

__all__ = ["FATAL", "CheckFinding", "SessionBaseline", "check_reply"]

# Kinds after which the reply cannot be used; the others degrade a session without
# breaking it (they are counted and the session goes on).
FATAL = frozenset(FailureKind) - {FailureKind.CACHE_MISS, FailureKind.CONTEXT_TRUNCATED}


@dataclass(frozen=True, slots=True)
class CheckFinding:
    """One failure a state check found in a transported reply, and why, in numbers."""

    kind: FailureKind
    message: str
    window_tokens: int | None = None  # the server's window, where the finding shows it


@dataclass(slots=True)
class SessionBaseline:
    """What the previous successful step of this session sent and got back.

    Real servers tokenize differently from the agent's own estimate, so each comparison is
    made in the server's tokens: what the session appended since is counted with the agent's
    tokenizer and scaled by the ratio this session has shown between reported and estimated
    prompt tokens.
    """

    prompt_tokens: int | None = None  # server-reported prompt of the previous step
    completion_tokens: int = 0  # server-reported completion of the previous step
    estimated_prompt: int = 0  # the agent's own estimate of that prompt
    estimated_reply: int = 0  # the agent's estimate of that reply, as history holds it
    ratio: float = 1.0  # reported / estimated prompt tokens, as this session has seen it

    def reset(self) -> None:
        """History was rewritten (compaction): nothing to compare the next prompt with."""
        self.prompt_tokens = None
        self.completion_tokens = 0

    def update(self, plan: StepPlan, reply: Reply) -> None:
        """Remember a successful step as the next one's baseline."""
        usage = reply.usage
        if usage is None or not plan.continues_history:
            self.reset()
            return
        if self.prompt_tokens is None and plan.context_tokens > 0 and usage.prompt_tokens > 0:
            # Learned where the prompt is known to be whole (a session's first step, or the
            # first after compaction). A ratio taken later would sink with every trim a
            # gateway made (the dropped text stays in the estimate) and hide the next one.
            self.ratio = usage.prompt_tokens / plan.context_tokens
        self.prompt_tokens = usage.prompt_tokens
        self.completion_tokens = usage.completion_tokens
        self.estimated_prompt = plan.context_tokens
        self.estimated_reply = message_tokens(reply.text, reply.tool_calls)

    def expected_prompt(self, plan: StepPlan) -> tuple[int, int] | None:
        """The least prompt the server should count now, and what was appended (its tokens)."""
        if self.prompt_tokens is None or not plan.continues_history:
            return None
        appended = max(plan.context_tokens - self.estimated_prompt - self.estimated_reply, 0)
        # Model output comes back as history (the reply, sub-agents' findings): the ratio
        # learned on the agent's own text does not hold for it, and random-weight or
        # reasoning models' output may re-tokenize shorter than generated (or lose its
        # thinking to the template). Counted at the least of the plausible figures.
        model_ratio = min(self.ratio, 1.0)
        reply = min(self.completion_tokens, round(self.estimated_reply * model_ratio))
        model_text = min(plan.model_text_tokens, appended)
        added = round((appended - model_text) * self.ratio + model_text * model_ratio)
        return self.prompt_tokens + reply + added, added


def check_reply(
    plan: StepPlan,
    reply: Reply,
    baseline: SessionBaseline,
    checks: Checks,
    *,
    caching_seen: bool = True,
    window_tokens: int | None = None,
) -> list[CheckFinding]:
    """Failures a successfully transported reply still shows, in DESIGN's table order.

    `caching_seen`: the target has reported a cached prompt token at least once; until it
    has, a cold cache is what the target does (caching off or unreported), not a miss.
    `window_tokens`: the server's window, once a refusal stated it.
    """
    found: list[CheckFinding] = []
    usage = reply.usage
    expected = baseline.expected_prompt(plan) if usage is not None else None
    if usage is not None and expected is not None:
        least, added = expected
        floor = least * (1 - checks.truncation_tolerance) - checks.truncation_slack_tokens
        if usage.prompt_tokens < floor:
            found.append(
                CheckFinding(
                    FailureKind.CONTEXT_TRUNCATED,
                    f"prompt of {usage.prompt_tokens} tokens, expected at least {least}: "
                    f"previous prompt {baseline.prompt_tokens} + its reply + {added} appended",
                )
            )
    resent = baseline.prompt_tokens
    if (
        usage is not None
        and usage.cached_tokens is not None
        and caching_seen
        and resent is not None
        and plan.continues_history
        and resent >= checks.cache_min_prefix_tokens
        # The whole previous prompt is resent as this one's prefix; caches keep whole blocks.
        and usage.cached_tokens < checks.cache_miss_ratio * resent - checks.cache_block_tokens
    ):
        found.append(
            CheckFinding(
                FailureKind.CACHE_MISS,
                f"{usage.cached_tokens} cached prompt tokens of the {resent} this session "
                "resent from its previous request",
            )
        )
    forced = plan.forced_min_tokens
    if (
        forced is not None
        and reply.finish_reason == "length"
        and usage is not None
        and usage.completion_tokens < forced
    ):
        # The server clamped the output below the forced minimum: out of context room.
        reached = usage.prompt_tokens + usage.completion_tokens
        if window_tokens is None or reached >= window_tokens:
            # Its window, unknown until now (or reached): the server's limit, as a refusal
            # would have stated it; the session compacts to it.
            found.append(
                CheckFinding(
                    FailureKind.CONTEXT_OVERFLOW,
                    f"finish_reason 'length' after {usage.completion_tokens} of the {forced} "
                    f"tokens forced: the reply filled the server's window at {reached} tokens",
                    window_tokens=reached,
                )
            )
        else:  # the window was known and left room: not the window's doing
            found.append(
                CheckFinding(
                    FailureKind.ABNORMAL_FINISH,
                    f"finish_reason 'length' after {usage.completion_tokens} of the "
                    f"{forced} tokens forced",
                )
            )
    if plan.tools is not None and reply.tool_calls:
        problems = [p for p in validate_tool_calls(reply.tool_calls, plan.tools) if p]
        if problems:
            found.append(CheckFinding(FailureKind.MALFORMED_TOOL_CALL, problems[0]))
    return found
