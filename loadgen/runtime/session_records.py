"""What a session reports: a StepRecord for each request, and at its end a SessionRecord
built from the tally it kept meanwhile."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from loadgen.agents import StepPlan
from loadgen.observe.records import SessionRecord, StepRecord
from loadgen.protocol import Reply
from loadgen.runtime.checks import SessionBaseline

__all__ = ["SessionTally", "step_record"]


@dataclass
class SessionTally:
    """Per-session counters that end up in the SessionRecord."""

    steps: int = 0
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    tool_calls: int = 0
    subagents: int = 0
    compactions: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    recoveries: Counter[str] = field(default_factory=Counter)
    baseline: SessionBaseline = field(default_factory=SessionBaseline)
    echo: dict[str, str] = field(default_factory=dict)  # router tokens to send back

    def count_usage(self, reply: Reply) -> None:
        """Add the tokens the server reported for `reply` (nothing, where it reported none)."""
        if reply.usage is not None:
            self.prompt += reply.usage.prompt_tokens
            self.completion += reply.usage.completion_tokens
            self.cached += reply.usage.cached_tokens or 0

    def absorb(self, child: SessionTally) -> None:
        """Add a sub-agent's steps, tokens, tool calls, failures and recoveries."""
        for name in ("steps", "prompt", "completion", "cached", "tool_calls"):
            setattr(self, name, getattr(self, name) + getattr(child, name))
        self.failures.update(child.failures)
        self.recoveries.update(child.recoveries)

    def session_record(
        self,
        session_id: str,
        agent: str,
        *,
        started_unix: float,
        duration_s: float,
        outcome: str,
        final_context_tokens: int,
        error: str | None,
        running_at_end: bool,
    ) -> SessionRecord:
        """The session's record, with what this tally counted."""
        return SessionRecord(
            session_id=session_id,
            agent=agent,
            started_unix=started_unix,
            duration_s=duration_s,
            steps=self.steps,
            outcome=outcome,
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            cached_tokens=self.cached,
            tool_calls=self.tool_calls,
            subagents=self.subagents,
            compactions=self.compactions,
            failures=dict(self.failures),
            recoveries=dict(self.recoveries),
            final_context_tokens=final_context_tokens,
            error=error,
            running_at_end=running_at_end,
        )


def step_record(
    plan: StepPlan,
    reply: Reply,
    label: str,
    session_id: str,
    step: int,
    found: list[str],
    attempt: int,
    lag: float,
) -> StepRecord:
    """The record of one sent request: `found` are its failures, `lag` how late it was sent."""
    usage = reply.usage
    return StepRecord(
        session_id=session_id,
        agent=label,
        step=step,
        kind=plan.kind,
        api=plan.api,
        started_unix=time.time() - reply.e2e_s,
        e2e_s=reply.e2e_s,
        ttft_s=reply.ttft_s,
        ttfat_s=reply.ttfat_s,
        itl_s=reply.itl_s(),
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        cached_tokens=usage.cached_tokens if usage else None,
        reasoning_tokens=reply.reasoning_tokens,
        context_tokens=plan.context_tokens,
        finish_reason=reply.finish_reason,
        ok=reply.ok,
        failures=found,
        http_status=reply.status,
        error=reply.error,
        attempt=attempt,
        schedule_lag_s=lag,
    )
