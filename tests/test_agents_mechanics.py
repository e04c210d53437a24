"""What the calibrated archetypes rely on, one mechanism at a time, offline: weighted tools,
the agent's latency cap on every tool, a session's first request, compaction that keeps the
newest tool results, and the agent's own window bounding a summary request."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from offline_agents import step_sessions

from loadgen.agents import Agent, AgentParams, CodingAgent
from loadgen.agents.archetypes import CodingParams
from loadgen.protocol import Reply, words_for_tokens

SMALL: dict[str, Any] = {
    "system_prompt_tokens": 100,
    "user_tokens": 10,
    "output_tokens": 10,
    "tool_result_tokens": 50,
    "think_time_s": 0,
}


def agent(params: dict[str, Any], cls: type[Agent] = Agent) -> Agent:
    a = cls("a-0", cls.Params.model_validate({**SMALL, **params}), model="m", seed=1)
    a.start_session("s0")
    return a


def reply(tokens: int = 10) -> Reply:
    return Reply(api="chat", text=words_for_tokens(tokens), finish_reason="stop")


def tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra}


def test_scripted_steps_pick_tools_by_weight() -> None:
    params = {"turns": 1, "steps_per_turn": 2000, "parallel_tools": 1,
              "tools": [tool("often", weight=9), tool("rarely", weight=1)]}  # fmt: skip
    a = agent(params)
    names: Counter[str] = Counter()
    while (plan := a.plan_step()) is not None:
        calls = a.apply_reply(reply())
        names.update(c.name for c in calls)
        a.apply_tool_results(calls)
        assert plan.max_tokens > 0

    assert 0.85 <= names["often"] / sum(names.values()) <= 0.95


def test_a_tools_own_latency_inherits_the_agents_cap() -> None:
    slow = tool("slow", latency_s={"lognormal": {"median": 5000, "p90": 9000}})
    capped = agent({"turns": 1, "steps_per_turn": 50, "tools": [slow]})
    uncapped = agent({"turns": 1, "steps_per_turn": 50, "tools": [slow], "tool_latency_s": 1})

    def latencies(a: Agent) -> list[float]:
        out = []
        while a.plan_step() is not None:
            calls = a.apply_reply(reply())
            out += [c.latency_s for c in calls]
            a.apply_tool_results(calls)
        return out

    assert max(latencies(capped)) == 600  # AgentParams.tool_latency_s is capped at 600 s
    assert min(latencies(uncapped)) > 600  # a constant agent latency has no cap to inherit


def test_first_turn_steps_set_the_first_request_and_steps_per_turn_the_rest() -> None:
    params = {"turns": 3, "first_turn_steps": 7, "steps_per_turn": 2, "tool_error_rate": 0}
    (trace,) = step_sessions(Agent, 1, params=AgentParams.model_validate({**SMALL, **params}))

    assert trace.calls_per_turn == [7, 2, 2]


def test_a_profile_that_sets_steps_per_turn_alone_sets_the_first_request_too() -> None:
    assert CodingParams().first_turn_steps is not None
    assert CodingParams.model_validate({"steps_per_turn": 3}).first_turn_steps is None
    both = CodingParams.model_validate({"steps_per_turn": 3, "first_turn_steps": 9})
    assert both.first_turn_steps is not None
    assert both.first_turn_steps.constant == 9


def test_a_profile_that_sizes_the_system_prompt_alone_sizes_the_first_request() -> None:
    assert CodingParams().session_context_tokens.mean_estimate() > 10_000
    small = CodingParams.model_validate({"system_prompt_tokens": 300})
    assert small.session_context_tokens.constant == 0
    both = CodingParams.model_validate({"system_prompt_tokens": 300, "session_context_tokens": 5})
    assert both.session_context_tokens.constant == 5


def test_only_a_sessions_first_request_carries_the_session_context() -> None:
    a = agent({"turns": 2, "steps_per_turn": 1, "session_context_tokens": 5000})
    first = a.plan_step()
    assert first is not None
    assert first.context_tokens > 5000
    a.apply_reply(reply())
    second = a.plan_step()
    assert second is not None
    assert second.context_tokens - first.context_tokens < 200


def test_compaction_keeps_the_newest_tool_results_after_the_summary() -> None:
    params = {"turns": 1, "steps_per_turn": 40, "parallel_tools": 1, "tool_error_rate": 0,
              "tool_result_tokens": 1000, "context_budget_tokens": 100_000,
              "compact_to_tokens": 500, "compact_keep_tokens": 2500}  # fmt: skip
    a = agent(params)
    for _ in range(20):
        assert a.plan_step() is not None
        a.apply_tool_results(a.apply_reply(reply()))
    newest = orjson.loads(a.conversation.messages[-1])["content"]

    plan = a.plan_compaction()
    a.apply_compaction(reply(500))

    texts = [orjson.loads(m)["content"] for m in a.conversation.messages]
    assert "summary" in texts[1]  # system prompt, the summary, then what was kept
    assert texts[-1] == newest  # the newest tool results, whole
    kept = a.conversation.tokens - a.conversation.count(0) - a.conversation.count(1)
    kept -= a.conversation.count(2)
    assert 2000 <= kept <= 2500  # up to compact_keep_tokens (the oldest kept one cut)
    assert a.conversation.tokens < plan.context_tokens / 3


def test_kept_messages_never_bring_the_history_back_near_the_threshold() -> None:
    # A 2,000-token window learned from a server: half its compaction threshold (800 at
    # compact_at 0.8) leaves no room for 5,000 kept tokens after a 100-token prompt.
    params = {"turns": 1, "steps_per_turn": 40, "parallel_tools": 1, "tool_error_rate": 0,
              "tool_result_tokens": 300, "compact_keep_tokens": 5000}  # fmt: skip
    a = agent(params)
    for _ in range(10):
        assert a.plan_step() is not None
        a.apply_tool_results(a.apply_reply(reply()))
    a.server_window = 2000

    a.apply_compaction(reply(200))

    assert a.conversation.tokens <= 0.8 * 2000 / 2 + 40
    assert not a.needs_compaction()


def test_a_summary_request_carries_no_more_than_the_agents_own_window() -> None:
    params = {"turns": 1, "steps_per_turn": 40, "parallel_tools": 1, "tool_error_rate": 0,
              "tool_result_tokens": 3000, "context_budget_tokens": 20_000,
              "compact_to_tokens": 1000, "compaction": False}  # fmt: skip
    a = agent(params)
    for _ in range(20):
        assert a.plan_step() is not None
        a.apply_tool_results(a.apply_reply(reply()))
    assert a.conversation.tokens > 50_000

    plan = a.plan_compaction()

    sent = sum(len(segment) for segment in plan.body)
    whole = sum(len(m) for m in a.conversation.messages)
    assert plan.context_tokens <= 20_000 - 1000
    assert sent < 0.45 * whole  # the system prompt and the newest ~19K tokens of ~60K


def test_a_sub_agent_runs_its_own_steps_not_its_parents_first_request() -> None:
    params = CodingParams.model_validate({"subagent_steps": 3})
    child = CodingAgent("c", CodingAgent("p", params, model="m", seed=1).subagent_params(),
                        model="m", seed=2)  # fmt: skip
    assert child.params.first_turn_steps is None
    assert child.params.session_context_tokens.constant == 0  # its task is the parent's ask
    assert child.params.turns.constant == 1
