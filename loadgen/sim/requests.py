"""Validated request bodies for the simulator's endpoints (unknown extra fields are accepted)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loadgen.sim.config import ReasoningEffort

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "FunctionDef",
    "ReasoningParam",
    "ResponsesRequest",
    "SamplingFields",
    "ToolDef",
    "describe_validation_error",
]


class _Open(BaseModel):
    # Clients send many fields the simulator has no use for (top_p, user, logprobs...).
    model_config = ConfigDict(extra="allow")


class FunctionDef(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(_Open):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedToolChoice(_Open):
    type: Literal["function"] = "function"
    function: dict[str, str] | None = None
    name: str | None = None  # the Responses API's flat form

    def tool_name(self) -> str | None:
        """The forced tool's name, in either API's shape."""
        if self.function is not None:
            return self.function.get("name")
        return self.name


class StreamOptions(_Open):
    include_usage: bool = False


class SamplingFields(_Open):
    """Fields every generation endpoint shares (vLLM's extras included)."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    min_tokens: int = Field(default=0, ge=0)
    ignore_eos: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    # vLLM's cap on reasoning tokens (chat and Responses); the answer follows the cap.
    thinking_token_budget: int | None = Field(default=None, ge=0)

    def stop_strings(self) -> list[str]:
        """The stop sequences as a list, empty ones dropped."""
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in stops if s]


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    # An unknown effort fails validation: a 400 naming the field, as vLLM's does.
    reasoning_effort: ReasoningEffort | None = None

    def requested_max_tokens(self) -> int | None:
        """max_completion_tokens wins over the deprecated max_tokens, as in OpenAI's API."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] = Field(min_length=1)
    max_tokens: int | None = Field(default=16, ge=1)  # the Completions API's own default
    echo: bool = False


class ResponsesTool(_Open):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ReasoningParam(_Open):
    effort: ReasoningEffort | None = None


class ResponsesRequest(SamplingFields):
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    store: bool = True
    previous_response_id: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list[ResponsesTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    reasoning: ReasoningParam | None = None

    def reasoning_effort(self) -> ReasoningEffort | None:
        """The effort the request names, if any."""
        return None if self.reasoning is None else self.reasoning.effort


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)
