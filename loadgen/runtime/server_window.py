"""What an agent learns of the server's context window, so that it plans within it:
compacts in time and asks for no more output than the window leaves."""

from __future__ import annotations

from loadgen.agents import Agent
from loadgen.protocol import Reply
from loadgen.runtime.checks import SessionBaseline

__all__ = ["adopt_window", "learn_window"]


def adopt_window(agent: Agent, window: int | None, baseline: SessionBaseline) -> None:
    """A window the server stated refusing another session's prompt: this agent plans
    within it too, rather than learning it from a refusal or a reply cut short of its own."""
    if window is None or agent.server_window is not None:
        return
    ratio = max(baseline.ratio, 1e-6)
    agent.server_ratio = ratio
    agent.server_window = max(1, int(window / ratio))


def learn_window(
    agent: Agent, baseline: SessionBaseline, reply: Reply, known_window: int | None
) -> None:
    """After the server refused a prompt as too long: how much of a window it has.

    The server's own figure where this refusal states one, else `known_window` (what an
    earlier refusal, of any session, stated); else the last prompt it accepted (plus its
    reply) bounds it from below. Kept on the agent, in its own token estimate, so it
    compacts before the next refusal rather than after it.
    """
    window = reply.window_tokens or known_window
    if window is None and baseline.prompt_tokens is not None:
        window = baseline.prompt_tokens + baseline.completion_tokens
    if window is not None:
        ratio = baseline.ratio
        if reply.counted_prompt_tokens and agent.conversation.tokens > 0:
            ratio = reply.counted_prompt_tokens / agent.conversation.tokens
        ratio = max(ratio, 1e-6)
        agent.server_ratio = ratio
        agent.server_window = max(1, int(window / ratio))
