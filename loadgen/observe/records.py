"""What one step and one session measured: the records every result and metric is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SessionOutcome", "SessionRecord", "StepRecord"]


@dataclass(slots=True)
class StepRecord:
    """One LLM request of a session, as the client saw it. Failed requests are records too."""

    session_id: str
    agent: str  # archetype name (bounded label)
    step: int  # index of the step within its session
    kind: str  # what the step was for: turn, tool_result, subagent, compaction, resume...
    api: str  # chat | responses | completions
    started_unix: float  # wall clock, for labels and timelines only
    e2e_s: float  # request sent -> last byte (perf_counter based)
    ttft_s: float | None = None  # request sent -> first token of any kind, reasoning included
    # Request sent -> first answer token (content or tool call); None when none was streamed.
    ttfat_s: float | None = None
    # Every gap between consecutive token events; kept in memory for histograms, summarised
    # in files (a long reply has hundreds).
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None  # server-reported usage (None when not reported)
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    # Reasoning tokens, part of completion_tokens: the server's count, else the reasoning
    # deltas streamed; None when the reply said nothing of reasoning.
    reasoning_tokens: int | None = None
    context_tokens: int = 0  # the agent's own estimate of the prompt it sent
    finish_reason: str | None = None
    ok: bool = True  # False when the step produced no usable reply
    failures: list[str] = field(default_factory=list)  # canonical FailureKind values
    http_status: int | None = None
    error: str | None = None  # short message for failed steps
    tool_calls: int = 0
    attempt: int = 0  # 0 for the first try, 1.. for retries
    schedule_lag_s: float = 0.0  # how late the step started against its plan
    # Why, per failure kind found (the server's words, or the check's figures).
    reasons: dict[str, str] = field(default_factory=dict)
    # The replica that served it: as a response header named it, else the --target it was
    # sent to when there are several; None for one target that names none.
    replica: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The steps.jsonl line: ITLs summarised rather than listed."""
        data = asdict(self)
        if not data["reasons"]:
            del data["reasons"]  # most steps: nothing to explain
        if data["replica"] is None:
            del data["replica"]  # one target, no replica named
        gaps = data.pop("itl_s")
        data["itl_count"] = len(gaps)
        data["itl_mean_s"] = sum(gaps) / len(gaps) if gaps else None
        data["itl_max_s"] = max(gaps) if gaps else None
        return data


class ToolOutcome:
    """How a simulated tool call ended."""

    OK = "ok"
    ERROR = "error"  # the tool's modelled failure
    ABORTED = "aborted"  # the client stopped its session while the tool ran


class SessionOutcome:
    """How a session ended."""

    COMPLETED = "completed"
    FAILED = "failed"  # the target broke it (failures the profile's reactions could not absorb)
    ABORTED = "aborted"  # the client stopped it (end of run, stop requested, ramp-down)


@dataclass(slots=True)
class SessionRecord:
    """One agent session from its first step to its end."""

    session_id: str
    agent: str
    started_unix: float
    duration_s: float
    steps: int
    outcome: str  # SessionOutcome value
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    tool_calls: int = 0
    subagents: int = 0
    compactions: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    recoveries: dict[str, int] = field(default_factory=dict)
    final_context_tokens: int = 0
    error: str | None = None
    # Aborted because the run ended (not retired mid-run): the session was still running at
    # the end, and duration_s is its age then, a lower bound of how long it would have lasted.
    running_at_end: bool = False

    @property
    def recovered(self) -> bool:
        """True when at least one failure was absorbed by a reaction."""
        return bool(self.recoveries)

    def to_json(self) -> dict[str, Any]:
        """The sessions.jsonl line."""
        data = asdict(self)
        # Kinds may arrive as FailureKind (a str subclass); JSON keys must be plain str.
        data["failures"] = {str(k): v for k, v in self.failures.items()}
        data["recoveries"] = {str(k): v for k, v in self.recoveries.items()}
        return data
