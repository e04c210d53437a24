"""A synthetic agent: long-lived state and the policy that decides what each step sends.

The agent is a plain state machine; the runtime drives it (sends what `plan_step` returns,
feeds the reply to `apply_reply`, waits for the tools it asks for, forks the sub-agents it
wants) and owns every clock. That keeps agents deterministic for a given seed and
testable without a network.
"""

from __future__ import annotations

import functools
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.agents.compaction import clipped_summary, kept_through_compaction
from loadgen.agents.conversation import Conversation
from loadgen.agents.params import AgentParams, ToolParams
from loadgen.agents.reasoning import SessionReasoning
from loadgen.agents.request_bodies import compaction_body, step_body
from loadgen.agents.steps import StepPlan, ToolInvocation
from loadgen.protocol import (
    Reply,
    ToolDefinition,
    count_tokens,
    encode_function_call_output,
    encode_tools,
    words_for_tokens,
)

# StepPlan and ToolInvocation are re-exported: runtime code and tests import them from here.
__all__ = ["Agent", "StepPlan", "ToolInvocation", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A seed that is the same in every process (hash() is salted per process)."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


# Tokens a chat template may add around each message (Llama 3: 4-5, ChatML: 5, with role
# names); counted against a known window's room for output, never for prompts.
_MESSAGE_FRAMING_TOKENS = 8


@functools.lru_cache(maxsize=64)
def _shared_text(kind: str, tokens: int) -> str:
    # Every agent of an archetype shares this prefix, as real deployments share a system prompt.
    return words_for_tokens(tokens, offset=stable_seed(kind))


@dataclass
class _Turn:
    index: int = 0
    steps_planned: int = 1
    steps_done: int = 0


class Agent:
    """One long-lived synthetic agent; subclass (or set params) to make an archetype."""

    kind = "agent"
    Params: type[AgentParams] = AgentParams

    def __init__(self, agent_id: str, params: AgentParams, *, model: str, seed: int) -> None:
        self.id = agent_id
        self.params = params
        self.model = model
        self.rng = random.Random(stable_seed(seed, self.kind, agent_id))
        self.reasoning = SessionReasoning(params, stable_seed(seed, self.kind, agent_id, "think"))
        # What the runtime learned about the target, set on the agent so its plans fit it:
        self.force_length_supported = True  # off for targets without min_tokens/ignore_eos
        self.server_state_supported = True  # off for targets without previous_response_id
        self.server_window: int | None = None  # the server's window, in this agent's tokens
        self.server_ratio = 1.0  # server-counted / estimated prompt tokens
        self.failed_in_a_row = 0  # consecutive failed sessions (the runtime backs off)
        self._model_text_tokens = 0  # model output appended since the last plan
        self.memory: list[str] = []
        self.conversation = Conversation(items=params.api == "responses")
        self.session_id = ""
        self.sessions_started = 0
        self.last_response_id: str | None = None
        # Router tokens the target asked to be echoed (profile echo_headers), kept by the
        # runtime across sessions for a resumed server-held conversation.
        self.router_tokens: dict[str, str] = {}
        self.done = True
        self._pending: list[bytes] = []  # input items since the last stored response
        self._prompt_parts: list[str] = []  # the completions API's plain-text history
        self._turn = _Turn()
        self._turns_total = 1
        self._next_kind = "turn"
        self._next_delay = 0.0
        self._tools: dict[str, ToolParams] = {t.name: t for t in params.tools}
        self._tool_weights = [t.weight for t in params.tools]
        definitions = [ToolDefinition(t.name, t.parameters, t.description) for t in params.tools]
        # Encoded once per agent: the tools array rides along on every model-driven step.
        self._tools_json = encode_tools(definitions, params.api)

    # -- sessions ---------------------------------------------------------------------------

    def start_session(self, session_id: str) -> None:
        """Begin a session: fresh history (memory notes carried), first turn queued."""
        p = self.params
        self.session_id = session_id
        self.sessions_started += 1
        self.reasoning.draw()
        self.done = False
        resume = self._server_held() and p.memory and self.last_response_id is not None
        if not resume:
            self.last_response_id = None
            self.conversation = Conversation(items=p.api == "responses")
            self._pending = []
            self._prompt_parts = []
            self._add("system", self._system_prompt())
        self._turns_total = p.turns.sample_int(self.rng, 1)
        self._turn = _Turn()
        self._begin_turn(first=True)
        if resume:
            self._next_kind = "resume"

    def end_session(self) -> None:
        """Keep what a long-lived agent remembers; forget the rest unless state is resumable."""
        p = self.params
        self.done = True
        if p.memory and p.memory_max_notes:
            tokens = p.memory_note_tokens.sample_int(self.rng, 1)
            self.memory.append(f"note {self.sessions_started}: {self._words(tokens)}")
            del self.memory[: -p.memory_max_notes]

    def idle_time(self) -> float:
        """Seconds (unscaled) a long-lived agent waits before its next session."""
        return self.params.idle_between_sessions_s.sample(self.rng)

    # -- steps ------------------------------------------------------------------------------

    def plan_step(self) -> StepPlan | None:
        """The next request, or None when the session is over."""
        if self.done:
            return None
        p = self.params
        answer = p.output_tokens.sample_int(self.rng, 1)
        force = p.force_output_length and self.force_length_supported and p.tool_mode == "scripted"
        room = self._output_room()
        max_tokens, forced = self.reasoning.limits(answer, room, force, self.conversation.tokens)
        offer_tools = p.tool_mode == "model" and bool(self._tools)
        last_step = self._turn.steps_done + 1 >= self._turn.steps_planned
        tool_choice = None if not offer_tools else ("none" if last_step else "auto")
        plan = StepPlan(
            kind=self._next_kind,
            api=p.api,
            body=self._body(max_tokens, forced, offer_tools, tool_choice),
            max_tokens=max_tokens,
            forced_min_tokens=forced,
            context_tokens=self.conversation.tokens,
            delay_s=self._next_delay,
            tools={n: t.parameters for n, t in self._tools.items()} if offer_tools else None,
            uses_server_state=self.last_response_id is not None,
            model_text_tokens=self._model_text_tokens,
        )
        self._next_delay = 0.0
        self._model_text_tokens = 0
        return plan

    def apply_reply(self, reply: Reply) -> list[ToolInvocation]:
        """Take a successful reply into the history; returns the tools to run next."""
        p = self.params
        self._turn.steps_done += 1
        if reply.response_id:
            self.last_response_id = reply.response_id
            self._pending = []
        calls = reply.tool_calls if p.tool_mode == "model" else []
        self.conversation.append("assistant", reply.text or None, tool_calls=calls or None)
        self._remember_text(reply.text)
        if p.tool_mode == "model":
            if calls and self._turn.steps_done < self._turn.steps_planned:
                self._next_kind = "tool_result"
                return [self._invocation(c.name, c.id) for c in calls]
        elif self._turn.steps_done < self._turn.steps_planned:
            self._next_kind = "tool_result"
            count = p.parallel_tools.sample_int(self.rng, 1)
            tools = self.rng.choices(p.tools, self._tool_weights, k=count) if p.tools else []
            return [
                self._invocation(t.name, f"call_{self.rng.getrandbits(48):012x}") for t in tools
            ]
        self._end_turn()
        return []

    def apply_tool_results(self, invocations: Sequence[ToolInvocation]) -> None:
        """Append what the tools returned; a failed tool often costs the agent another step."""
        p = self.params
        for inv in invocations:
            if inv.fails and self.rng.random() < p.retry_failed_tool:
                self._turn.steps_planned += 1
        if p.tool_mode == "model":
            for inv in invocations:
                text = self._tool_output(inv)
                raw = self.conversation.append("tool", text, tool_call_id=inv.call_id)
                self._remember_text(text)
                if p.api == "responses":
                    raw = encode_function_call_output(inv.call_id, text)
                self._pending.append(raw)
        else:
            text = "tool results:\n" + "\n".join(self._tool_output(i) for i in invocations)
            self._add("user", text)

    def wants_subagents(self) -> int:
        """How many sub-agents to fork now (0 for none); asked after tools ran."""
        p = self.params
        if self.done or p.subagent_probability <= 0 or self.rng.random() >= p.subagent_probability:
            return 0
        return p.subagents.sample_int(self.rng, 1)

    def subagent_params(self) -> AgentParams:
        """A child's knobs: one focused turn, no think time, no further fan-out, own history."""
        p = self.params
        return p.model_copy(
            update={
                "turns": p.turns.model_validate(1),
                "steps_per_turn": p.subagent_steps,
                "first_turn_steps": None,
                "session_context_tokens": p.session_context_tokens.model_validate(0),
                "think_time_s": p.think_time_s.model_validate(0),
                "subagent_probability": 0.0,
                "system_prompt_tokens": min(p.system_prompt_tokens, 1000),
                "state": "client",
                "memory": False,
                "reasoning_effort": self.reasoning.inherited(),  # this session's, not a draw
            }
        )

    def make_subagent(self, child_id: str, seed: int) -> Agent:
        """A sub-agent to fork now, of this agent's class with subagent_params()."""
        child = type(self)(child_id, self.subagent_params(), model=self.model, seed=seed)
        child.force_length_supported = self.force_length_supported
        child.server_window = self.server_window
        return child

    def join_subagents(self, results: Sequence[str]) -> None:
        """Append the sub-agents' findings; the next step reads them."""
        tokens = [self.params.subagent_result_tokens.sample_int(self.rng, 1) for _ in results]
        parts = [
            f"sub-agent {i + 1}: " + " ".join(text.split()[:n])
            for i, (text, n) in enumerate(zip(results, tokens, strict=True))
        ]
        before = self.conversation.tokens
        self._add("user", "sub-agent results:\n" + "\n".join(parts))
        self._model_text_tokens += self.conversation.tokens - before
        self._next_kind = "subagent_result"

    # -- context management -----------------------------------------------------------------

    def needs_compaction(self) -> bool:
        """True when the history reached the compaction threshold of the context budget (or
        of the server's window, once a refusal showed it to be smaller)."""
        p = self.params
        budget = p.context_budget_tokens
        if self.server_window is not None:
            budget = min(budget, self.server_window)
        return p.compaction and self.conversation.tokens >= p.compact_at * budget

    def over_budget(self) -> bool:
        """True when the history no longer fits the agent's own context window."""
        return self.conversation.tokens > self.params.context_budget_tokens

    def plan_compaction(
        self, fit_tokens: int | None = None, summary_tokens: int | None = None
    ) -> StepPlan:
        """A request that summarises the history.

        Client-held, it must see it all; when `fit_tokens` (this agent's token estimate)
        says how much the server accepts, or the history has outgrown the agent's own window,
        the system prompt and the newest messages that fit. `summary_tokens` caps the
        summary's length to the room the window leaves.
        """
        p = self.params
        ask = "Summarize the work so far for a fresh context."
        n = p.compact_to_tokens
        if summary_tokens is not None:
            n = min(n, summary_tokens)
        own = max(p.context_budget_tokens - n - 64, 0)  # the agent's window, less the summary
        if self.conversation.tokens > own:  # a history past it: what fits in it
            fit_tokens = own if fit_tokens is None else min(fit_tokens, own)
        forced = n if p.force_output_length and self.force_length_supported else None
        history = self.conversation.messages
        if fit_tokens is not None:
            history = self.conversation.head_and_tail(fit_tokens)
        body = compaction_body(
            p.api,
            self.model,
            history,
            self._prompt_parts,
            ask,
            max_tokens=n,
            forced=forced,
            store=self._server_held(),
        )
        return StepPlan(
            kind="compaction",
            api=p.api,
            body=body,
            max_tokens=n,
            forced_min_tokens=forced,
            context_tokens=(
                self.conversation.tokens
                if fit_tokens is None
                else min(self.conversation.tokens, fit_tokens)
            ),
            # A summary of part of the history: not the next prompt of an append-only one.
            continues_history=False,
        )

    def apply_compaction(self, reply: Reply) -> None:
        """Replace the history with its summary; the server-held chain restarts from it."""
        summary = clipped_summary(reply.text, self.server_window)
        kept = kept_through_compaction(
            self.conversation, self.params, self.server_window, count_tokens(summary)
        )
        self.conversation.replace(
            1, [("user", f"session {self.session_id} summary:"), ("assistant", summary)]
        )
        if self._prompt_parts:
            self._prompt_parts = [self._prompt_parts[0], summary]
        for text in kept:
            self._add("user", text)
        self.last_response_id = None
        self._pending = []

    def fall_back_to_client_history(self) -> None:
        """The server lost our state: resend the full history from now on (new chain)."""
        self.last_response_id = None
        self._pending = []

    # -- internals --------------------------------------------------------------------------

    def _server_held(self) -> bool:
        return self.params.state == "server" and self.server_state_supported

    def _output_room(self) -> int:
        """The most output tokens the server's window leaves after the history (unbounded
        until a refusal showed the window): asking for more gets a silent clamp."""
        if self.server_window is None:
            return 1 << 30
        # A chat template wraps every message in tokens of its own (role markers, ends), which
        # the ratio learned on a first step of few messages does not cover once a history
        # holds many short ones (tool results kept through a compaction).
        framing = _MESSAGE_FRAMING_TOKENS * len(self.conversation)
        left = (self.server_window - self.conversation.tokens - framing) * self.server_ratio
        return max(1, int(left * 0.9) - 16)

    def _system_prompt(self) -> str:
        p = self.params
        shared = _shared_text(self.kind, p.system_prompt_tokens)
        text = shared if p.shared_system_prompt else f"agent {self.id}: {shared}"
        if self.memory:
            text += "\nmemory:\n" + "\n".join(self.memory)
        return text

    def _begin_turn(self, *, first: bool = False) -> None:
        p = self.params
        steps = p.first_turn_steps if first and p.first_turn_steps else p.steps_per_turn
        self._turn = _Turn(self._turn.index + 1, steps.sample_int(self.rng, 1), 0)
        words = self._words(p.user_tokens.sample_int(self.rng, 1))
        text = f"session {self.session_id} turn {self._turn.index}: {words}"
        for _ in range(p.retrieved_chunks.sample_int(self.rng)):
            text += "\n[document] " + self._words(p.chunk_tokens.sample_int(self.rng, 1))
        if first and (context := p.session_context_tokens.sample_int(self.rng)):
            text += "\n[context] " + self._words(context)
        self._add("user", text)
        self._next_kind = "turn"
        self._next_delay = 0.0 if first else p.think_time_s.sample(self.rng)

    def _end_turn(self) -> None:
        if self._turn.index >= self._turns_total:
            self.done = True
        else:
            self._begin_turn()

    def _add(self, role: str, text: str) -> None:
        raw = self.conversation.append(role, text)
        self._pending.append(raw)
        self._remember_text(text)

    def _remember_text(self, text: str) -> None:
        # Only the completions API sends plain text; a second copy of a 100K-token history
        # would double every other agent's memory.
        if self.params.api == "completions":
            self._prompt_parts.append(text)

    def _words(self, tokens: int) -> str:
        return words_for_tokens(tokens, offset=self.rng.getrandbits(16))

    def _invocation(self, name: str, call_id: str) -> ToolInvocation:
        p = self.params
        tool = self._tools.get(name)
        latency = (tool.latency_s if tool and tool.latency_s else p.tool_latency_s).sample(self.rng)
        latency = min(latency, p.tool_latency_s.high)  # a tool's own latency inherits the cap
        rate = tool.error_rate if tool and tool.error_rate is not None else p.tool_error_rate
        size = tool.result_tokens if tool and tool.result_tokens else p.tool_result_tokens
        return ToolInvocation(
            call_id, name, latency, self.rng.random() < rate, size.sample_int(self.rng, 1)
        )

    def _tool_output(self, inv: ToolInvocation) -> str:
        if inv.fails:
            return f"[{inv.name}] error: exit status 1 {self._words(min(inv.result_tokens, 40))}"
        return f"[{inv.name}] ok: {self._words(inv.result_tokens)}"

    def _body(
        self, max_tokens: int, forced: int | None, offer_tools: bool, tool_choice: str | None
    ) -> list[bytes]:
        return step_body(
            self.params.api,
            self.model,
            self.conversation,
            self._prompt_parts,
            max_tokens=max_tokens,
            forced=forced,
            tools=self._tools_json if offer_tools else None,
            tool_choice=tool_choice,
            reasoning=self.reasoning.fields,
            server_held=self._server_held(),
            last_response_id=self.last_response_id,
            pending=self._pending,
        )
