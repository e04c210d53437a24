"""What one request produced, from the wire: text, tool calls, usage, timings, failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

__all__ = ["Api", "Reply", "ToolCall", "Usage"]

Api = Literal["chat", "responses", "completions"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call as the model emitted it; `arguments` is the raw JSON text, unchecked."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Server-reported token counts; cached and reasoning tokens are None when the server does
    not say. Reasoning tokens are part of completion_tokens."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(slots=True)
class Reply:
    """One request's outcome; failed requests are Replies with ok=False, never exceptions."""

    api: Api
    ok: bool = True
    status: int | None = None  # HTTP status; None when no response arrived
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    response_id: str | None = None  # Responses API: the id a follow-up can chain on
    saw_done: bool = False  # [DONE], response.completed/incomplete, or a complete JSON body
    t_sent_ns: int = 0  # perf_counter_ns just before sending
    # First output token of any kind, reasoning included (streaming only).
    t_first_token_ns: int | None = None
    # First answer token: content or a tool call, never reasoning (streaming only).
    t_first_answer_ns: int | None = None
    # Arrival of every event that carried output (reasoning, content, a tool-call delta); ITLs
    # are their gaps.
    token_times_ns: list[int] = field(default_factory=list)
    t_end_ns: int = 0  # perf_counter_ns when the exchange ended (last byte or failure)
    failures: list[str] = field(default_factory=list)  # FailureKind values
    error: str | None = None  # short message for failed requests
    retry_after_s: float | None = None  # the server's Retry-After, when it sent one
    headers: dict[str, str] = field(default_factory=dict)  # the response headers asked for
    # The replica that served it, as a response header named it (a router's, a fleet's).
    replica: str | None = None
    # A capability the target refused outright ("previous_response_id"): not a failure of
    # this request but a fact about the target, which the runtime works around.
    unsupported: str | None = None
    # From a context-overflow refusal: the server's window and its count of the prompt.
    window_tokens: int | None = None
    counted_prompt_tokens: int | None = None
    # Reasoning tokens: the usage's count, else the reasoning delta events streamed; None when
    # the reply said nothing of reasoning.
    reasoning_tokens: int | None = None

    @property
    def e2e_s(self) -> float:
        """Request sent to exchange ended, in seconds."""
        return (self.t_end_ns - self.t_sent_ns) / 1e9

    @property
    def ttft_s(self) -> float | None:
        """Request sent to first token, in seconds; None when no token was streamed."""
        if self.t_first_token_ns is None:
            return None
        return (self.t_first_token_ns - self.t_sent_ns) / 1e9

    @property
    def ttfat_s(self) -> float | None:
        """Request sent to first answer token (content or tool call), in seconds; None if none."""
        if self.t_first_answer_ns is None:
            return None
        return (self.t_first_answer_ns - self.t_sent_ns) / 1e9

    def itl_s(self) -> list[float]:
        """The gaps between consecutive token events, in seconds."""
        return [(b - a) / 1e9 for a, b in pairwise(self.token_times_ns)]

    def fail(self, kind: str, message: str) -> None:
        """Record a failure (keeping the first message as the error)."""
        self.ok = False
        if kind not in self.failures:
            self.failures.append(kind)
        if self.error is None:
            self.error = message
