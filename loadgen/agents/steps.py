"""What an agent asks of the runtime at each step: the request to send next (StepPlan) and
the tools to wait for before the step after it (ToolInvocation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadgen.protocol import Api

__all__ = ["StepPlan", "ToolInvocation"]


@dataclass(slots=True)
class ToolInvocation:
    """A tool the agent runs between steps: how long it takes, whether it fails, what it returns."""

    call_id: str
    name: str
    latency_s: float  # unscaled; the runtime applies the profile's time_scale
    fails: bool
    result_tokens: int


@dataclass(slots=True)
class StepPlan:
    """What the next request is, and what the runtime should expect of its reply."""

    kind: str  # turn | tool_result | subagent_result | compaction | resume
    api: Api
    body: list[bytes]
    max_tokens: int
    forced_min_tokens: int | None  # set when the output length is forced
    context_tokens: int  # the agent's estimate of the prompt
    delay_s: float = 0.0  # think time before sending (unscaled)
    tools: Mapping[str, dict[str, Any] | None] | None = None  # for validating tool calls
    continues_history: bool = True  # prompt must hold at least the last prompt + reply
    # Of what was appended since the last plan, the tokens that are model output (sub-agent
    # findings): a server tokenizes them unlike the agent's own text.
    model_text_tokens: int = 0
    uses_server_state: bool = False  # carries previous_response_id
    # Not before this many seconds after the run's schedule origin (a replayed trace's
    # time): the runtime waits for the later of this and delay_s.
    at_s: float | None = None
