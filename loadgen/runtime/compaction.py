"""How big a compaction request may be: what history it carries and how long its summary is."""

from __future__ import annotations

from loadgen.agents import Agent

__all__ = ["compaction_budget"]

# Of the server's window, the summary may take at most this share (the history the rest):
# the compacted history must sit well below the compaction threshold.
_SUMMARY_SHARE = 0.25
# Headroom for the estimate being off (tokenizers differ) and for the request's own message.
_HEADROOM = 0.9
_ASK_TOKENS = 32


def compaction_budget(agent: Agent) -> tuple[int | None, int | None]:
    """(history budget in the agent's own tokens, summary length in the server's tokens).

    (None, None) until the server's window is known: the summary request then carries the
    whole history and asks for the profile's `compact_to_tokens`. Once a refusal showed the
    window, both are sized so that prompt and summary fit in it together: a summary asked
    for beyond the room left would be clamped by the server (finish_reason "length") and
    fail as abnormal_finish, again on every retry.
    """
    window = agent.server_window
    if window is None:
        return None, None
    ratio = agent.server_ratio
    window_server = window * ratio
    summary = max(16, min(agent.params.compact_to_tokens, int(window_server * _SUMMARY_SHARE)))
    history = int(_HEADROOM * (window_server - summary) / ratio) - _ASK_TOKENS
    return max(history, 0), summary
