"""What survives a compaction: how much of the summary the agent keeps, and which of its
newest messages stay after it."""

from __future__ import annotations

from loadgen.agents.conversation import MESSAGE_OVERHEAD_TOKENS, Conversation
from loadgen.agents.params import AgentParams
from loadgen.protocol import token_pieces

__all__ = ["clipped_summary", "kept_through_compaction"]


def clipped_summary(summary: str, server_window: int | None) -> str:
    """`summary`, cut to a quarter of the server's window (in the agent's tokens) once that
    window is known."""
    if server_window is None:
        return summary
    # A summary must leave the window far from its compaction threshold, or the very next
    # step compacts again; a model's text may count larger than it was asked to be in the
    # agent's own estimate.
    keep = server_window // 4
    pieces = token_pieces(summary)
    if len(pieces) > keep:
        return " ".join(pieces[:keep])
    return summary


def kept_through_compaction(
    conversation: Conversation,
    params: AgentParams,
    server_window: int | None,
    summary_tokens: int,
) -> list[str]:
    """The newest user messages (tool results, in scripted mode) that stay after the
    summary, within `compact_keep_tokens` (as Codex keeps its recent user messages) and
    within half the compaction threshold, so that the next step does not compact again."""
    p = params
    if p.compact_keep_tokens <= 0:
        return []
    budget = p.context_budget_tokens
    if server_window is not None:
        budget = min(budget, server_window)
    head = conversation.count(0)  # the system prompt
    room = int(p.compact_at * budget / 2) - head - summary_tokens - 32
    limit = min(p.compact_keep_tokens, room)
    if limit <= 0:
        return []
    kept = []
    for index, tokens in conversation.newest("user", limit):
        text = conversation.text(index)
        if tokens < conversation.count(index) - MESSAGE_OVERHEAD_TOKENS:
            text = " ".join(token_pieces(text)[-tokens:]) if tokens > 0 else ""
        if text:
            kept.append(text)
    return kept
