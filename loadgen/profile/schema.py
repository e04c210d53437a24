"""The workload profile: agent mix, arrival, stages, duration, reactions, SLOs and gates."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from loadgen.agents.distributions import parse_seconds
from loadgen.agents.reasoning import (
    EffortWeights,
    ThinkingBudget,
    check_reasoning,
    reasoning_into_params,
)
from loadgen.protocol.failures import FailureKind

__all__ = [
    "REPLICA_HEADERS",
    "AgentMix",
    "Arrival",
    "Checks",
    "Profile",
    "Reaction",
    "Stage",
    "default_reactions",
]

Seconds = Annotated[float, BeforeValidator(parse_seconds), Field(ge=0)]
# Response headers that name the replica (engine, deployment) that served a request, the
# first present wins: agentload's simulated fleet; a LiteLLM proxy passing that header on
# from its deployment (prefixed llm_provider-); LiteLLM's own, the deployment's API base
# and its id.
REPLICA_HEADERS = (
    "x-agentload-replica",
    "llm_provider-x-agentload-replica",
    "x-litellm-model-api-base",
    "x-litellm-model-id",
)
_SLO_KEY = re.compile(
    r"^(ttft|ttfat|itl|e2e|session)_(p50|p90|p95|p99|max|mean)$|^session_success$"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentMix(_Strict):
    """One kind of agent in the mix, with its share and its archetype parameters."""

    kind: str = Field(description="built-in archetype or 'path/to/file.py:ClassName'")
    weight: float = Field(default=1.0, gt=0)
    name: str | None = Field(default=None, description="label in results (default: kind)")
    params: dict[str, Any] = Field(default_factory=dict)
    # Reasoning models (docs/profiles.md): carried into `params`, where archetypes read them.
    reasoning_effort: EffortWeights = Field(
        default=None, description="a level (none|minimal|low|medium|high) or {level: weight}"
    )
    thinking_budget: ThinkingBudget = Field(
        default=None, description="the most tokens to think, sent as thinking_token_budget"
    )

    @model_validator(mode="before")
    @classmethod
    def _reasoning_in_params(cls, data: Any) -> Any:
        return reasoning_into_params(data)

    @model_validator(mode="after")
    def _reasoning_makes_sense(self) -> AgentMix:
        check_reasoning(self.reasoning_effort, self.thinking_budget)
        return self

    @property
    def label(self) -> str:
        """The name results and metrics use for this agent."""
        return self.name or self.kind


class Arrival(_Strict):
    """Closed loop (N long-lived agents), open loop (new sessions at a rate), or a trace's
    sessions at their recorded times (docs/traces.md)."""

    mode: Literal["closed", "open", "trace"] = "closed"
    agents: int | None = Field(default=None, ge=1, description="closed loop: concurrent agents")
    rate: float | None = Field(default=None, gt=0, description="open loop: sessions per second")
    process: Literal["poisson", "gamma"] = "poisson"
    burstiness: float = Field(
        default=1.0, gt=0, description="gamma: squared coefficient of variation (1 = Poisson)"
    )
    file: str | None = Field(default=None, description="trace: the trace file")
    format: str = Field(default="auto", description="trace: its format (auto detects it)")
    speedup: float = Field(
        default=1.0, gt=0, allow_inf_nan=False, description="trace: divides its timestamps"
    )
    cap_idle: Seconds | None = Field(
        default=None, description="trace: shortens any stretch without requests to this"
    )
    sessions: int | None = Field(default=None, ge=1, description="trace: replay the first N")

    @model_validator(mode="after")
    def _level_given(self) -> Arrival:
        if self.mode == "closed" and self.agents is None:
            raise ValueError("closed-loop arrival needs `agents: N`")
        if self.mode == "open" and self.rate is None:
            raise ValueError("open-loop arrival needs `rate: R` (sessions per second)")
        if self.mode == "trace" and not self.file:
            raise ValueError("trace arrival needs `file: PATH` (a trace; see docs/traces.md)")
        return self

    @property
    def level(self) -> float:
        """Agents (closed), sessions/s (open) or the trace's speedup."""
        if self.mode == "closed":
            return float(self.agents or 0)
        if self.mode == "trace":
            return self.speedup
        return float(self.rate or 0.0)


class Stage(_Strict):
    """A phase of the run; `target` is agents (closed loop) or sessions/s (open loop)."""

    kind: Literal["ramp", "hold", "spike", "soak"]
    duration: Seconds
    target: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _target_for_moves(self) -> Stage:
        if self.kind in ("ramp", "spike") and self.target is None:
            raise ValueError(f"a {self.kind} stage needs `target`")
        return self


class Reaction(_Strict):
    """What an agent does when a step fails with a given kind."""

    action: Literal["retry", "fallback", "compact", "abort", "continue"]
    max_attempts: int = Field(default=3, ge=1)
    backoff: Seconds = 0.5
    max_backoff: Seconds = 10.0
    jitter: float = Field(default=0.5, ge=0, le=1)


def default_reactions() -> dict[FailureKind, Reaction]:
    """Retry transient faults, fall back on lost server state, compact on overflow."""
    retry = Reaction(action="retry")
    return {
        FailureKind.RATE_LIMITED: Reaction(action="retry", max_attempts=5, backoff=1.0),
        FailureKind.HTTP_ERROR: retry,
        FailureKind.TIMEOUT: Reaction(action="retry", max_attempts=2),
        FailureKind.CONNECTION_ERROR: retry,
        FailureKind.STREAM_TRUNCATED: retry,
        FailureKind.ABNORMAL_FINISH: retry,
        FailureKind.MALFORMED_TOOL_CALL: retry,
        # Two attempts: the one that failed, and the one after compacting / falling back.
        FailureKind.CONTEXT_OVERFLOW: Reaction(action="compact", max_attempts=2),
        FailureKind.SERVER_STATE_LOST: Reaction(action="fallback", max_attempts=2),
        FailureKind.CONTEXT_TRUNCATED: Reaction(action="continue"),
        FailureKind.CACHE_MISS: Reaction(action="continue"),
    }


class Checks(_Strict):
    """Thresholds of the state checks run on every reply."""

    cache_miss_ratio: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="cached < ratio x the prefix the session resent, less a block, is a miss",
    )
    cache_block_tokens: int = Field(
        default=64, ge=0, description="cache granularity: a partly filled block is not cached"
    )
    cache_min_prefix_tokens: int = Field(default=256, ge=0)
    truncation_tolerance: float = Field(default=0.02, ge=0, le=1)
    truncation_slack_tokens: int = Field(default=32, ge=0)


class Profile(_Strict):
    """A whole workload; see docs/profiles.md for every field."""

    name: str = "custom"
    description: str = ""
    duration: Seconds = 60.0
    seed: int = 0
    time_scale: float = Field(
        default=1.0, gt=0, description="multiplies tool latency, think and idle times"
    )
    agents: list[AgentMix] = Field(default_factory=list)  # none for a trace's replay
    arrival: Arrival
    stages: list[Stage] = Field(default_factory=list)
    force_output_length: Literal["auto", "always", "never"] = "auto"
    session_header: str | None = "x-session-id"
    echo_headers: list[str] = Field(default_factory=lambda: ["x-session-token"])
    replica_headers: list[str] = Field(default_factory=lambda: list(REPLICA_HEADERS))
    reactions: dict[FailureKind, Reaction] = Field(default_factory=default_reactions)
    checks: Checks = Checks()
    slos: dict[str, float] = Field(default_factory=dict)
    gates: list[str] = Field(default_factory=list)
    sim: dict[str, Any] = Field(
        default_factory=dict, description="built-in simulator settings when no --target is given"
    )

    @model_validator(mode="after")
    def _agents_given(self) -> Profile:
        if not self.agents and self.arrival.mode != "trace":
            raise ValueError("agents: list at least one agent (e.g. - kind: coding)")
        return self

    @field_validator("reactions", mode="before")
    @classmethod
    def _merge_reactions(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {**default_reactions(), **value}
        return value

    @field_validator("slos", mode="before")
    @classmethod
    def _slo_values(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for key, raw in value.items():
            if not _SLO_KEY.match(str(key)):
                raise ValueError(
                    f"unknown SLO {key!r}: use ttft|ttfat|itl|e2e|session with _p50|_p90|_p95|_p99|"
                    "_max|_mean, or session_success"
                )
            out[key] = parse_seconds(raw)
        return out

    @property
    def total_duration(self) -> float:
        """The run's length: the sum of stages when given, else `duration`."""
        return sum(s.duration for s in self.stages) if self.stages else self.duration
