"""The canonical failure kinds, used as-is in results, summaries and metric labels."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CLIENT_FAILURES", "STATE_FAILURES", "TRANSPORT_FAILURES", "FailureKind"]


class FailureKind(StrEnum):
    """What went wrong in one step; see docs/design.md for how each is detected."""

    CONTEXT_OVERFLOW = "context_overflow"
    CONTEXT_TRUNCATED = "context_truncated"
    SERVER_STATE_LOST = "server_state_lost"
    CACHE_MISS = "cache_miss"
    STREAM_TRUNCATED = "stream_truncated"
    ABNORMAL_FINISH = "abnormal_finish"
    MALFORMED_TOOL_CALL = "malformed_tool_call"
    TIMEOUT = "timeout"
    HTTP_ERROR = "http_error"
    RATE_LIMITED = "rate_limited"
    CONNECTION_ERROR = "connection_error"
    # The agent's own code raised (a custom agent's bug): the session ends failed, the run goes on.
    AGENT_ERROR = "agent_error"


# Agent-state failures (the reply arrived, but the session's state is broken or degraded).
STATE_FAILURES = (
    FailureKind.CONTEXT_OVERFLOW,
    FailureKind.CONTEXT_TRUNCATED,
    FailureKind.SERVER_STATE_LOST,
    FailureKind.CACHE_MISS,
    FailureKind.STREAM_TRUNCATED,
    FailureKind.ABNORMAL_FINISH,
    FailureKind.MALFORMED_TOOL_CALL,
)
TRANSPORT_FAILURES = (
    FailureKind.TIMEOUT,
    FailureKind.HTTP_ERROR,
    FailureKind.RATE_LIMITED,
    FailureKind.CONNECTION_ERROR,
)
# Neither: failures of the load generator's own agent code, never of the target.
CLIENT_FAILURES = (FailureKind.AGENT_ERROR,)
