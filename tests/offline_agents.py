"""Stepping built-in agents through whole sessions offline: no network, no clock.

Agents are plain state machines (loadgen/agents/agent.py); this drives one as
runtime/session.py's SessionRunner does (compaction when the agent asks, tool results,
sub-agent fan-out and join) with a stand-in server that answers every request in full:
the reply is exactly as long as the agent asked for. What comes out is what the agent
would send a target, step by step, and what it would wait for between steps.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from loadgen.agents import Agent, AgentParams, StepPlan
from loadgen.protocol import Reply, words_for_tokens

__all__ = ["SessionTrace", "percentile", "step_sessions"]


@dataclass
class SessionTrace:
    """One whole session as an agent made it (sub-agents' calls counted in)."""

    first_prompt: int = 0  # the first request's prompt, in the agent's own tokens
    prompts: list[int] = field(default_factory=list)  # every LLM call's prompt (compaction too)
    calls_per_turn: list[int] = field(default_factory=list)  # the main agent's calls per request
    tool_latencies_s: list[float] = field(default_factory=list)  # unscaled
    tool_names: list[str] = field(default_factory=list)
    think_s: list[float] = field(default_factory=list)  # between user requests
    compactions: int = 0
    overflows: int = 0  # steps that found the history over the agent's own window
    subagents: int = 0
    subagent_calls: list[int] = field(default_factory=list)  # calls of each sub-agent

    @property
    def calls(self) -> int:
        """LLM calls of the session, its sub-agents' and compactions included."""
        return len(self.prompts)


def _reply(plan: StepPlan, text_tokens: int | None = None) -> Reply:
    n = plan.max_tokens if text_tokens is None else text_tokens
    return Reply(api=plan.api, text=words_for_tokens(n, offset=n), finish_reason="stop")


def _run(agent: Agent, trace: SessionTrace, *, main: bool) -> str:
    """Drive `agent` through its started session; the last reply's text (a sub-agent's
    finding)."""
    last = ""
    calls = 0
    while True:
        if main and agent.needs_compaction():
            compaction = agent.plan_compaction()
            trace.prompts.append(compaction.context_tokens)
            agent.apply_compaction(_reply(compaction))
            trace.compactions += 1
        plan = agent.plan_step()
        if plan is None:
            break
        if main and agent.over_budget():
            # The runtime counts a context_overflow and compacts (the profile's reaction).
            trace.overflows += 1
            compaction = agent.plan_compaction()
            trace.prompts.append(compaction.context_tokens)
            agent.apply_compaction(_reply(compaction))
            trace.compactions += 1
            continue
        if main and plan.kind == "turn":
            if calls:
                trace.calls_per_turn.append(calls)
            calls = 0
            if trace.prompts:
                trace.think_s.append(plan.delay_s)
        if not trace.prompts:
            trace.first_prompt = plan.context_tokens
        trace.prompts.append(plan.context_tokens)
        calls += 1
        reply = _reply(plan)
        last = reply.text
        invocations = agent.apply_reply(reply)
        if invocations:
            trace.tool_latencies_s.extend(i.latency_s for i in invocations)
            trace.tool_names.extend(i.name for i in invocations)
            agent.apply_tool_results(invocations)
        fan_out = agent.wants_subagents() if main else 0
        if fan_out:
            results = []
            for k in range(fan_out):
                child = type(agent)(
                    f"{agent.id}.{k}",
                    agent.subagent_params(),
                    model=agent.model,
                    seed=agent.rng.getrandbits(32),
                )
                child.start_session(f"{agent.session_id}.{trace.subagents + k}")
                before = len(trace.prompts)
                results.append(_run(child, trace, main=False))
                trace.subagent_calls.append(len(trace.prompts) - before)
                child.end_session()
            trace.subagents += fan_out
            agent.join_subagents(results)
    if main and calls:
        trace.calls_per_turn.append(calls)
    return last


def step_sessions(
    agent_cls: type[Agent], sessions: int, *, params: AgentParams | None = None, seed: int = 0
) -> list[SessionTrace]:
    """`sessions` whole sessions, each by a fresh agent of `agent_cls` (deterministic)."""
    p = params if params is not None else agent_cls.Params()
    traces = []
    for i in range(sessions):
        agent = agent_cls(f"{agent_cls.kind}-{i}", p, model="offline", seed=seed)
        agent.start_session(f"s{i}")
        trace = SessionTrace()
        _run(agent, trace, main=True)
        agent.end_session()
        traces.append(trace)
    return traces


def percentile(values: Sequence[float] | Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def median(values: Iterable[float]) -> float:
    """The median of `values`."""
    return float(statistics.median(list(values)))
