"""State checks on every reply: is the session's context, cache and output what it should be?"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.agents import StepPlan
from loadgen.profile.schema import Checks
from loadgen.protocol import Reply, validate_tool_calls
from loadgen.protocol.failures import FailureKind

__all__ = ["FATAL", "SessionBaseline", "check_reply"]

# Kinds after which the reply cannot be used; the others degrade a session without
# breaking it (they are counted and the session goes on).
FATAL = frozenset(FailureKind) - {FailureKind.CACHE_MISS, FailureKind.CONTEXT_TRUNCATED}


@dataclass(slots=True)
class SessionBaseline:
    """What the previous successful step of this session's history reported."""

    prompt_tokens: int | None = None
    completion_tokens: int = 0

    def reset(self) -> None:
        """History was rewritten (compaction): nothing to compare the next prompt with."""
        self.prompt_tokens = None
        self.completion_tokens = 0

    def update(self, reply: Reply) -> None:
        """Remember a successful reply's usage as the next step's baseline."""
        if reply.usage is not None:
            self.prompt_tokens = reply.usage.prompt_tokens
            self.completion_tokens = reply.usage.completion_tokens


def check_reply(
    plan: StepPlan, reply: Reply, baseline: SessionBaseline, checks: Checks
) -> list[str]:
    """Failure kinds a successfully transported reply still shows, in DESIGN's table order."""
    found: list[str] = []
    usage = reply.usage
    if usage is not None and baseline.prompt_tokens is not None and plan.continues_history:
        # History is append-only: this prompt holds the last prompt and the last reply.
        expected = baseline.prompt_tokens + baseline.completion_tokens
        floor = expected * (1 - checks.truncation_tolerance) - checks.truncation_slack_tokens
        if usage.prompt_tokens < floor:
            found.append(FailureKind.CONTEXT_TRUNCATED)
    if (
        usage is not None
        and usage.cached_tokens is not None
        and baseline.prompt_tokens is not None
        and plan.continues_history
        and baseline.prompt_tokens >= checks.cache_min_prefix_tokens
        and usage.cached_tokens < checks.cache_miss_ratio * baseline.prompt_tokens
    ):
        found.append(FailureKind.CACHE_MISS)
    forced = plan.forced_min_tokens
    if (
        forced is not None
        and reply.finish_reason == "length"
        and usage is not None
        and usage.completion_tokens < forced
    ):
        # The server clamped the output below the forced minimum (out of context room).
        found.append(FailureKind.ABNORMAL_FINISH)
    if plan.tools is not None and reply.tool_calls:
        problems = validate_tool_calls(reply.tool_calls, plan.tools)
        if any(problems):
            found.append(FailureKind.MALFORMED_TOOL_CALL)
    return [str(kind) for kind in found]
