"""The knobs of an agent archetype, validated from a profile's `params:` mapping."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loadgen.agents.distributions import Dist, Distribution
from loadgen.agents.reasoning import EffortWeights, ThinkingBudget, check_reasoning

__all__ = ["AgentParams", "ToolParams"]


def _d(value: Any) -> Distribution:
    return Distribution.model_validate(value)


class ToolParams(BaseModel):
    """A simulated tool: its JSON schema (sent in model-driven mode), latency, failures, output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}, "additionalProperties": False}
    )
    latency_s: Dist | None = Field(
        default=None,
        description="None: the agent's tool_latency_s; either way capped at that one's `high` "
        "(600 s by default), so no tool waits longer than the agent allows",
    )
    error_rate: float | None = Field(default=None, ge=0, le=1)
    result_tokens: Dist | None = None  # None: the agent's tool_result_tokens
    weight: float = Field(
        default=1.0, gt=0, description="how often a scripted step picks this tool, relative"
    )


class AgentParams(BaseModel):
    """Everything that decides how one archetype behaves; archetypes override the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _first_request_follows_the_profile(cls, data: Any) -> Any:
        # A profile that sets steps_per_turn means every request, the first included; one
        # that sizes the system prompt sizes the first request: an archetype's own
        # first_turn_steps and session_context_tokens must not outlive that.
        if not isinstance(data, dict):
            return data
        if "steps_per_turn" in data and "first_turn_steps" not in data:
            data = {**data, "first_turn_steps": None}
        if "system_prompt_tokens" in data and "session_context_tokens" not in data:
            data = {**data, "session_context_tokens": 0}
        return data

    api: Literal["chat", "responses", "completions"] = "chat"
    state: Literal["client", "server"] = Field(
        default="client",
        description="client: resend full history; server: Responses previous_response_id chain",
    )
    tool_mode: Literal["scripted", "model"] = Field(
        default="scripted",
        description="scripted: the agent decides tool calls (reproducible); "
        "model: the reply's own tool calls drive the agent (exercises tool parsers)",
    )
    system_prompt_tokens: int = Field(default=2000, ge=0)
    shared_system_prompt: bool = True
    turns: Dist = _d({"choice": {1: 0.3, 2: 0.3, 3: 0.2, 4: 0.2}})
    steps_per_turn: Dist = _d({"lognormal": {"median": 4, "p90": 20}, "low": 1, "high": 60})
    first_turn_steps: Dist | None = Field(
        default=None,
        description="LLM calls of a session's first request (its task, often its only one); "
        "None: steps_per_turn, as it is when a profile sets steps_per_turn alone",
    )
    user_tokens: Dist = _d({"lognormal": {"median": 120, "p90": 600}})
    session_context_tokens: Dist = Field(
        default=_d(0),
        description="context the first request of a session carries besides the system "
        "prompt: memory files (CLAUDE.md, AGENTS.md), git status, files the user attached; "
        "0 when a profile sets system_prompt_tokens alone",
    )
    output_tokens: Dist = _d({"lognormal": {"median": 250, "p90": 900}, "low": 1, "high": 4096})
    parallel_tools: Dist = _d({"choice": {1: 0.82, 2: 0.13, 3: 0.04, 4: 0.01}})
    tool_result_tokens: Dist = _d({"lognormal": {"median": 900, "p90": 4000}, "high": 32000})
    tool_latency_s: Dist = _d({"lognormal": {"median": 0.3, "p90": 14}, "high": 600})
    tool_error_rate: float = Field(default=0.03, ge=0, le=1)
    retry_failed_tool: float = Field(
        default=0.8, ge=0, le=1, description="chance a failed tool call costs an extra step"
    )
    think_time_s: Dist = _d({"lognormal": {"median": 84, "p90": 1236}, "high": 3600})
    idle_between_sessions_s: Dist = _d(0)
    context_budget_tokens: int = Field(default=131072, ge=512)
    compact_at: float = Field(default=0.8, gt=0, le=1, description="fraction of the budget")
    compact_to_tokens: int = Field(default=4000, ge=16, description="the summary's length")
    compact_keep_tokens: int = Field(
        default=0,
        ge=0,
        description="the newest user messages (tool results, when scripted) kept after the "
        "summary, up to this many tokens and half the compaction threshold",
    )
    compaction: bool = True
    subagent_probability: float = Field(default=0.0, ge=0, le=1)
    subagents: Dist = _d({"choice": {3: 0.5, 4: 0.3, 5: 0.2}})
    subagent_steps: Dist = _d({"lognormal": {"median": 4, "p90": 12}, "low": 1, "high": 40})
    subagent_result_tokens: Dist = _d({"lognormal": {"median": 300, "p90": 900}})
    retrieved_chunks: Dist = _d(0)
    chunk_tokens: Dist = _d({"lognormal": {"median": 600, "p90": 1200}})
    memory: bool = False
    memory_note_tokens: Dist = _d({"lognormal": {"median": 150, "p90": 400}})
    memory_max_notes: int = Field(default=20, ge=0)
    force_output_length: bool = Field(
        default=True,
        description="ask for exactly the sampled output length (min_tokens + ignore_eos) "
        "where the target allows it",
    )
    # None: no reasoning field is sent (a built-in archetype's default: today's bodies).
    reasoning_effort: EffortWeights = Field(
        default=None, description="a level or {level: weight}, drawn once per session"
    )
    thinking_budget: ThinkingBudget = Field(
        default=None, description="the most tokens to think (sent as thinking_token_budget)"
    )
    tools: list[ToolParams] = Field(
        default_factory=lambda: [
            ToolParams(
                name="read_file",
                parameters={
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                    "required": ["path"],
                },
            ),
            ToolParams(
                name="run_shell",
                parameters={
                    "type": "object",
                    "properties": {
                        "command": {"type": "string"},
                        "timeout_s": {"type": "integer", "minimum": 1, "maximum": 600},
                    },
                    "required": ["command"],
                },
            ),
        ]
    )

    @model_validator(mode="after")
    def _reasoning_fits_the_api(self) -> AgentParams:
        check_reasoning(self.reasoning_effort, self.thinking_budget, self.api)
        return self
