"""Agents that ask reasoning models to think: the profile's `reasoning_effort` (a level, or
weights drawn once per session) and `thinking_budget`, what request bodies carry of them,
the room a step leaves for thinking, and histories that never resend the thinking."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from agent_sessions import MODEL
from conftest import StartSim

from loadgen.agents import Agent, AgentParams, CodingAgent, ResearchAgent, SupportAgent
from loadgen.agents.reasoning import ROOM_TOKENS
from loadgen.agents.registry import BUILTIN_AGENTS
from loadgen.observe import ResultFiles, RunStats
from loadgen.profile.loader import ProfileError, load_profile, profile_from_mapping
from loadgen.profile.schema import AgentMix, Profile
from loadgen.protocol import (
    Reply,
    chat_body,
    completions_body,
    encode_input_message,
    encode_message,
    responses_body,
    words_for_tokens,
)
from loadgen.protocol.assembly import ChoiceStream
from loadgen.protocol.responses_assembly import ResponsesStream
from loadgen.runtime.engine import StatsSink
from loadgen.runtime.session import SessionRunner
from loadgen.runtime.sinks import FanOut, MemorySink
from loadgen.sim.config import profile_sim_config
from loadgen.sim.reasoning import REASONING_WORDS
from loadgen.transport import TargetConfig, Transport

SMALL: dict[str, Any] = {
    "system_prompt_tokens": 100,
    "session_context_tokens": 0,
    "user_tokens": 10,
    "output_tokens": 10,
    "tool_result_tokens": 20,
    "think_time_s": 0,
}
PROFILES = Path(__file__).resolve().parents[1] / "profiles"
# A reasoning text, of words no agent writes: never resent.
THOUGHT = "hmmzz letmeponder weighzz optionzz"


def entry(**fields: Any) -> dict[str, Any]:
    return {"kind": "coding", **fields}


def load(*entries: dict[str, Any]) -> Any:
    data = {"agents": list(entries), "arrival": {"mode": "closed", "agents": 1}}
    return profile_from_mapping(data, "p.yaml", Path())


def agent(cls: type[Agent] = Agent, seed: int = 1, agent_id: str = "a-0", **params: Any) -> Agent:
    return cls(agent_id, cls.Params.model_validate({**SMALL, **params}), model=MODEL, seed=seed)


def body_of(segments: list[bytes]) -> dict[str, Any]:
    data = orjson.loads(b"".join(segments))
    assert isinstance(data, dict)
    return data


def step(a: Agent, reply: Reply) -> None:
    """The reply, then its tools' results (as the runtime does: only when it asked for any)."""
    if invocations := a.apply_reply(reply):
        a.apply_tool_results(invocations)


def session_bodies(a: Agent, session_id: str) -> list[dict[str, Any]]:
    """Every body of one whole session, each reply as long as asked (offline)."""
    a.start_session(session_id)
    bodies = []
    while (plan := a.plan_step()) is not None:
        bodies.append(body_of(plan.body))
        text = words_for_tokens(min(plan.max_tokens, 10))
        step(a, Reply(api=plan.api, text=text, finish_reason="stop"))
    a.end_session()
    return bodies


# -- the profile -------------------------------------------------------------------------------


def test_an_entry_takes_one_level_weights_and_a_budget_into_its_agents_params() -> None:
    loaded = load(
        entry(reasoning_effort="high", thinking_budget=2048),
        entry(kind="support", reasoning_effort={"high": 0.3, "low": 0.7}),
        entry(kind="research"),
    )
    high, mixed, plain = (
        cls.Params.model_validate(m.params)
        for cls, m in zip(loaded.agent_classes, loaded.profile.agents, strict=True)
    )

    assert (high.reasoning_effort, high.thinking_budget) == ({"high": 1.0}, 2048)
    # Weights in the levels' order, whatever the YAML's: the same draws either way.
    assert list(mixed.reasoning_effort or ()) == ["low", "high"]
    assert (plain.reasoning_effort, plain.thinking_budget) == (None, None)


def test_params_may_name_them_too_and_a_dumped_entry_validates_again() -> None:
    loaded = load(entry(params={"reasoning_effort": "medium", "thinking_budget": 512}))
    params = loaded.agent_classes[0].Params.model_validate(loaded.profile.agents[0].params)
    assert (params.reasoning_effort, params.thinking_budget) == ({"medium": 1.0}, 512)

    mix = AgentMix.model_validate(entry(reasoning_effort={"low": 1, "high": 3}))
    again = AgentMix.model_validate(mix.model_dump(mode="json"))
    assert again.reasoning_effort == mix.reasoning_effort == {"low": 1.0, "high": 3.0}


def test_no_builtin_archetype_asks_for_reasoning_unless_the_profile_does() -> None:
    for cls in BUILTIN_AGENTS.values():
        params = cls.Params()
        assert (params.reasoning_effort, params.thinking_budget) == (None, None), cls.kind


@pytest.mark.parametrize(
    ("fields", "where", "fix"),
    [
        ({"reasoning_effort": "hgh"}, "agents.0.reasoning_effort", "none|minimal|low|medium|high"),
        ({"reasoning_effort": {"low": 0.7, "hi": 0.3}}, "agents.0.reasoning_effort", "'hi'"),
        ({"reasoning_effort": {"low": -1}}, "agents.0.reasoning_effort", ">= 0"),
        ({"reasoning_effort": {"low": 0, "high": 0}}, "agents.0.reasoning_effort", "> 0"),
        ({"reasoning_effort": {}}, "agents.0.reasoning_effort", "weights such as"),
        ({"reasoning_effort": ["low"]}, "agents.0.reasoning_effort", "one level"),
        ({"reasoning_effort": 3}, "agents.0.reasoning_effort", "one level"),
        ({"thinking_budget": 0}, "agents.0.thinking_budget", "whole number > 0"),
        ({"thinking_budget": "4k"}, "agents.0.thinking_budget", "whole number > 0"),
        ({"thinking_budget": 1.5}, "agents.0.thinking_budget", "whole number > 0"),
        ({"thinking_budget": True}, "agents.0.thinking_budget", "whole number > 0"),
        (
            {"reasoning_effort": "none", "thinking_budget": 256},
            "agents.0: thinking_budget",
            "remove thinking_budget or choose a level",
        ),
        (
            {"reasoning_effort": "low", "params": {"reasoning_effort": "high"}},
            "agents.0: reasoning_effort",
            "remove params.reasoning_effort",
        ),
        (
            {"params": {"reasoning_effort": "lo"}},
            "agents.0.params.reasoning_effort",
            "one level",
        ),
        (
            {"reasoning_effort": "low", "params": {"api": "completions"}},
            "agents.0.params",
            "use api: chat or responses",
        ),
    ],
)
def test_a_bad_reasoning_field_is_one_line_naming_the_field_and_the_fix(
    fields: dict[str, Any], where: str, fix: str
) -> None:
    with pytest.raises(ProfileError) as caught:
        load(entry(**fields))

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"p.yaml: {where}"), message
    assert fix in message, message


# -- the effort of a session -------------------------------------------------------------------


def test_weights_are_drawn_once_per_session_in_their_proportions() -> None:
    a = agent(reasoning_effort={"low": 0.7, "high": 0.3}, turns=1, steps_per_turn=3)
    efforts: Counter[str] = Counter()
    for i in range(300):
        sent = {b["reasoning_effort"] for b in session_bodies(a, f"s{i}")}
        assert len(sent) == 1  # one effort for every step of a session
        efforts.update(sent)

    assert set(efforts) == {"low", "high"}
    assert 0.6 <= efforts["low"] / 300 <= 0.8, efforts


def test_each_agent_draws_for_itself_and_the_seed_decides() -> None:
    def draws(seed: int) -> list[str]:
        out = []
        for i in range(400):
            a = agent(seed=seed, agent_id=f"a-{i}", reasoning_effort={"low": 0.7, "high": 0.3})
            a.start_session("s")
            out.append(str(a.reasoning.effort))
        return out

    first = draws(7)
    assert 0.6 <= first.count("low") / 400 <= 0.8
    assert draws(7) == first
    assert draws(8) != first


def test_weights_change_no_other_draw_of_the_session() -> None:
    """The effort has dice of its own: the same agents at other efforts send the same
    histories (messages, tool calls, turns), so only the thinking differs."""

    def messages(**reasoning: Any) -> list[list[Any]]:
        a = agent(CodingAgent, turns=3, steps_per_turn=4, **reasoning)
        return [b["messages"] for i in range(5) for b in session_bodies(a, f"s{i}")]

    plain = messages()
    assert messages(reasoning_effort={"low": 0.5, "high": 0.5}) == plain
    assert messages(reasoning_effort="high", thinking_budget=100) == plain


def test_a_sub_agent_thinks_at_its_parents_effort_for_the_session() -> None:
    parent = agent(ResearchAgent, reasoning_effort={"minimal": 1, "medium": 1}, thinking_budget=300)
    seen = set()
    for i in range(20):
        parent.start_session(f"s{i}")
        child = parent.make_subagent(f"a-0.{i}", seed=i)
        child.start_session(f"s{i}.0")
        plan = child.plan_step()
        assert plan is not None
        body = body_of(plan.body)
        assert body["reasoning_effort"] == parent.reasoning.effort
        assert body["thinking_token_budget"] == 300
        seen.add(body["reasoning_effort"])
    assert seen == {"minimal", "medium"}  # the parents drew both; each child followed


# -- request bodies ----------------------------------------------------------------------------

HI = [encode_message("user", "hi")]


def test_chat_bodies_carry_reasoning_effort_and_the_budget_at_the_top_level() -> None:
    body = body_of(chat_body(MODEL, HI, reasoning_effort="high", thinking_token_budget=2048))

    assert body["reasoning_effort"] == "high"
    assert body["thinking_token_budget"] == 2048
    assert "reasoning" not in body
    assert body_of(chat_body(MODEL, HI, reasoning_effort="low")).keys() >= {"reasoning_effort"}
    assert "thinking_token_budget" not in body_of(chat_body(MODEL, HI, reasoning_effort="low"))


def test_responses_bodies_carry_a_reasoning_object_and_the_budget() -> None:
    items = [encode_input_message("user", "hi")]
    for given in (items, "hi"):
        body = body_of(
            responses_body(MODEL, given, reasoning_effort="medium", thinking_token_budget=64)
        )
        assert body["reasoning"] == {"effort": "medium"}
        assert body["thinking_token_budget"] == 64
        assert "reasoning_effort" not in body


def test_bodies_without_reasoning_are_byte_for_byte_what_they_were() -> None:
    assert chat_body(MODEL, HI, max_tokens=5) == chat_body(
        MODEL, HI, max_tokens=5, reasoning_effort=None, thinking_token_budget=None
    )
    items = [encode_input_message("user", "hi")]
    assert responses_body(MODEL, items) == responses_body(
        MODEL, items, reasoning_effort=None, thinking_token_budget=None
    )
    for segments in (chat_body(MODEL, HI), responses_body(MODEL, items)):
        assert b"reasoning" not in b"".join(segments)
        assert b"thinking" not in b"".join(segments)


@pytest.mark.parametrize("kind", sorted(BUILTIN_AGENTS))
def test_an_archetype_without_reasoning_sends_no_reasoning_field(kind: str) -> None:
    cls = BUILTIN_AGENTS[kind]
    a = agent(cls, turns=2, steps_per_turn=3)
    for body in session_bodies(a, "s0"):
        raw = orjson.dumps(body)
        assert b"reasoning" not in raw
        assert b"thinking" not in raw
        if a.params.api != "completions":
            assert body.get("min_tokens") == body.get("max_tokens", body.get("max_output_tokens"))


def test_text_completions_have_no_reasoning_parameters() -> None:
    with pytest.raises(TypeError):
        completions_body(MODEL, "hi", reasoning_effort="low")  # type: ignore[call-arg]


# -- room to think -----------------------------------------------------------------------------


def test_a_thinking_step_asks_for_its_answer_plus_room_and_is_not_forced() -> None:
    plain = agent(CodingAgent, seed=3)
    plain.start_session("s")
    base = plain.plan_step()
    assert base is not None
    assert base.forced_min_tokens == base.max_tokens

    for effort, budget, room in (("high", None, ROOM_TOKENS["high"]), ("low", 700, 700)):
        a = agent(CodingAgent, seed=3, reasoning_effort=effort, thinking_budget=budget)
        a.start_session("s")
        plan = a.plan_step()
        assert plan is not None
        assert plan.max_tokens == base.max_tokens + room
        assert plan.forced_min_tokens is None
        body = body_of(plan.body)
        assert body["max_tokens"] == plan.max_tokens
        assert "min_tokens" not in body
        assert "ignore_eos" not in body


def test_effort_none_is_sent_and_leaves_the_step_as_it_was() -> None:
    plain = agent(CodingAgent, seed=3)
    none = agent(CodingAgent, seed=3, reasoning_effort={"none": 1, "high": 0})
    plain.start_session("s")
    none.start_session("s")
    base, plan = plain.plan_step(), none.plan_step()
    assert base is not None
    assert plan is not None

    assert (plan.max_tokens, plan.forced_min_tokens) == (base.max_tokens, base.forced_min_tokens)
    body = body_of(plan.body)
    assert body["reasoning_effort"] == "none"
    assert body == {**body_of(base.body), "reasoning_effort": "none"}


def test_the_room_stays_inside_the_agents_own_window_and_the_servers() -> None:
    a = agent(reasoning_effort="high", context_budget_tokens=4000)
    a.start_session("s")
    plan = a.plan_step()
    assert plan is not None
    # Not answer + 32K: the agent's window, less a twentieth, less its history.
    assert plan.max_tokens == 4000 - 200 - a.conversation.tokens

    a.server_window = a.conversation.tokens + 500
    later = a.plan_step()
    assert later is not None
    assert later.max_tokens < 500


# -- history: thinking is never resent ---------------------------------------------------------


def chat_reply_with_thinking(answer: str) -> Reply:
    """A chat reply as a reasoning model streams it (vLLM's parser: reasoning deltas first)."""
    reply = Reply(api="chat")
    stream = ChoiceStream(reply)
    events: list[dict[str, Any]] = []
    for i, word in enumerate(THOUGHT.split()):
        field = "reasoning_content" if i % 2 else "reasoning"
        events.append({"choices": [{"index": 0, "delta": {field: f" {word}"}}]})
    events.append({"choices": [{"index": 0, "delta": {"content": answer}}]})
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    for t, event in enumerate(events):
        stream.feed(t, orjson.dumps(event))
    stream.feed(len(events), b"[DONE]")
    stream.finish()
    return reply


def test_chat_history_resent_to_the_server_never_carries_the_thinking() -> None:
    a = agent(reasoning_effort="high", turns=2, steps_per_turn=3)
    a.start_session("s")
    seen = 0
    while (plan := a.plan_step()) is not None:
        raw = b"".join(plan.body)
        for word in THOUGHT.split():
            assert word.encode() not in raw
        body = body_of(plan.body)
        for message in body["messages"]:
            assert set(message) <= {"role", "content", "tool_calls", "tool_call_id"}
        reply = chat_reply_with_thinking(f"answer {seen}")
        assert reply.text == f"answer {seen}"
        step(a, reply)
        seen += 1
    assistant = [m for m in body["messages"] if m["role"] == "assistant"]
    assert [m["content"] for m in assistant] == [f"answer {i}" for i in range(seen - 1)]


def test_a_responses_chain_sends_only_new_items_and_a_fallback_resends_no_thinking() -> None:
    a = agent(api="responses", state="server", reasoning_effort="medium", steps_per_turn=3)
    a.start_session("s")
    first = a.plan_step()
    assert first is not None
    reply = Reply(api="responses")
    stream = ResponsesStream(reply)
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "content": []}
    for event in (
        {"type": "response.created", "response": {"id": "resp_1"}},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *(
            {"type": "response.reasoning_text.delta", "output_index": 0, "delta": f" {w}"}
            for w in THOUGHT.split()
        ),
        {"type": "response.output_text.delta", "output_index": 1, "delta": "the answer"},
        {"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}},
    ):
        stream.feed(0, orjson.dumps(event))
    stream.finish()
    step(a, reply)

    chained = a.plan_step()
    assert chained is not None
    body = body_of(chained.body)
    # The server keeps the reasoning item with the response: the chain resends neither.
    assert body["previous_response_id"] == "resp_1"
    assert body["reasoning"] == {"effort": "medium"}
    assert all(i.get("role") == "user" for i in body["input"])

    a.fall_back_to_client_history()  # the server lost the chain: the history, no thinking
    resent = a.plan_step()
    assert resent is not None
    raw = b"".join(resent.body)
    assert b"previous_response_id" not in raw
    assert b'"type":"reasoning"' not in raw
    for word in THOUGHT.split():
        assert word.encode() not in raw
    assert b"the answer" in raw


# -- the shipped profile, and a simulator that thinks ----------------------------------------


def test_the_shipped_reasoning_profile_asks_each_agent_to_think() -> None:
    loaded = load_profile("reasoning-agents")
    efforts = {m.label: m.reasoning_effort for m in loaded.profile.agents}

    assert any(e and "high" in e for e in efforts.values())
    assert all(efforts.values())
    assert "ttfat_p95" in loaded.profile.slos
    spec = yaml.safe_load((PROFILES / "reasoning-agents.yaml").read_text())
    assert spec["sim"]["reasoning"]["default_effort"] == "none"
    sim = profile_sim_config(loaded.profile.sim)
    assert sim.reasoning.default_effort == "none"
    assert sim.reasoning.tokens.high > sim.reasoning.tokens.low > 0


async def test_against_a_thinking_simulator_the_history_holds_only_answers(
    start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim(reasoning={"tokens": {"low": 40, "high": 120}, "spread": 0.0})
    prof = Profile.model_validate(
        {
            "agents": [{"kind": "support"}],
            "arrival": {"mode": "closed", "agents": 2},
            "time_scale": 0.001,
        }
    )
    params = {**SMALL, "turns": 2, "steps_per_turn": 2, "tool_latency_s": 1}
    agents = [
        agent(SupportAgent, agent_id=f"support-{i}", reasoning_effort=effort, **params)
        for i, effort in enumerate(("low", "high"))
    ]
    recorder = MemorySink()
    target = TargetConfig.from_url(server.base_url)
    with ResultFiles(tmp_path) as files:
        sink = FanOut([StatsSink(RunStats(), files), recorder])
        async with Transport(target) as transport:
            runner = SessionRunner(transport, prof, sink)
            async with asyncio.timeout(60):
                sessions = await asyncio.gather(
                    *(runner.run_session(a, "support", f"s{i}") for i, a in enumerate(agents))
                )
    assert [s.outcome for s in sessions] == ["completed", "completed"], sessions

    # The prefix cache still covers each resent prompt: no cache miss, nothing failed.
    assert not [step.failures for step in recorder.steps if step.failures]
    by_session: dict[str, list[int | None]] = {}
    for step in recorder.steps:
        by_session.setdefault(step.session_id, []).append(step.reasoning_tokens)
    assert by_session == {"s0": [40] * len(by_session["s0"]), "s1": [120] * len(by_session["s1"])}
    answers = [
        message["content"]
        for a in agents
        for message in map(orjson.loads, a.conversation.messages)
        if message["role"] == "assistant"
    ]
    assert answers
    for content in answers:
        assert not set(content.split()) & set(REASONING_WORDS), content


def test_agent_params_accept_reasoning_from_python() -> None:
    params = AgentParams(reasoning_effort="high", thinking_budget=64)  # type: ignore[arg-type]
    assert (params.reasoning_effort, params.thinking_budget) == ({"high": 1.0}, 64)
