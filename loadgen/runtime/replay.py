"""Trace replay: each recorded session as an agent that sends what the trace says, when it says.

A session's requests go in order, each at the later of its (scaled) time in the trace and
the end of the previous one plus the recorded gap (think and tool time, times the profile's
time_scale): the original server's speed is not replayed, the target's is measured. A
sub-agent starts after the request it followed and its parent's next request waits for it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from loadgen.agents import Agent
from loadgen.agents.agent import StepPlan, ToolInvocation
from loadgen.agents.conversation import Conversation
from loadgen.agents.params import AgentParams
from loadgen.observe import LatencyHistogram
from loadgen.profile.loader import LoadedProfile
from loadgen.protocol import Reply, chat_body, encode_message
from loadgen.traces import Trace, TraceSession
from loadgen.traces.formats import load_trace
from loadgen.traces.prompt import TextScale, prompt_text
from loadgen.traces.timeline import implied_cached_tokens, replay_timeline

__all__ = ["LEAD_S", "TraceAgent", "TraceReplay", "replay_section", "replay_trace"]

SessionFn = Callable[[Agent, str, str], Coroutine[Any, Any, object]]

LABEL = "replay"
# The trace's time 0 falls this long after the run starts: every process of a swarm has its
# driver going by then (spawning one takes ~0.2 s), so the first requests are not late.
LEAD_S = 1.0


class TraceAgent(Agent):
    """One recorded session (or sub-agent), replayed request by request."""

    kind = LABEL

    def __init__(self, agent_id: str, session: TraceSession, trace: Trace, *, model: str) -> None:
        super().__init__(agent_id, AgentParams(), model=model, seed=0)
        self.session = session
        self.trace = trace
        self.namespace = session.hash_namespace if trace.hash_scope == "local" else ""
        self._next = 0
        self._forks: list[TraceSession] = []
        # What the target's chat template adds: the text is that much shorter, so that the
        # prompt the server counts is the trace's length.
        self.template_tokens = 0
        # The target's tokens per stand-in token of the text (1 on the simulator): prompts
        # and their blocks are made that much shorter (or longer) in stand-in tokens.
        self.text_scale = TextScale()

    def start_session(self, session_id: str) -> None:
        """Begin at the session's first request."""
        self.session_id = session_id
        self.sessions_started += 1
        self.conversation = Conversation()
        self._next = 0
        self.done = not self.session.requests

    def end_session(self) -> None:
        """Nothing is carried over: a recorded session is replayed once."""
        self.done = True

    def plan_step(self) -> StepPlan | None:
        """The trace's next request of this session, or None after its last."""
        if self.done:
            return None
        request = self.session.requests[self._next]
        scale = self.text_scale
        text = prompt_text(
            request.hash_ids,
            scale.prompt_tokens(request.input_tokens - self.template_tokens),
            scale.block or self.trace.block_size,
            self.namespace,
            f"{self.session.id}\x1f{self._next}",
        )
        forced = request.output_tokens if self.force_length_supported else None
        body = chat_body(
            self.model,
            [encode_message("user", text)],
            max_tokens=request.output_tokens,
            min_tokens=forced,
            ignore_eos=True if forced else None,
        )
        return StepPlan(
            kind="turn" if self._next == 0 else "step",
            api="chat",
            body=body,
            max_tokens=request.output_tokens,
            forced_min_tokens=forced,
            context_tokens=request.input_tokens,
            delay_s=(request.gap_s or 0.0) if self._next else 0.0,
            continues_history=False,  # a trace's next prompt need not extend the last one
            at_s=request.at_s,
        )

    def apply_reply(self, reply: Reply) -> list[ToolInvocation]:
        """Move on; sub-agents recorded after this request are forked next."""
        done = self._next
        self._next += 1
        self.done = self._next >= len(self.session.requests)
        self._forks = [sub for after, sub in self.session.subagents if max(after, 0) == done]
        return []

    def apply_tool_results(self, invocations: Sequence[ToolInvocation]) -> None:
        """Tools are not run: their time is in the recorded gap."""

    def wants_subagents(self) -> int:
        """The sub-agents the trace started after the request just done."""
        return len(self._forks)

    def make_subagent(self, child_id: str, seed: int) -> Agent:
        """The next recorded sub-agent of this point in the session."""
        child = TraceAgent(child_id, self._forks.pop(0), self.trace, model=self.model)
        child.force_length_supported = self.force_length_supported
        child.template_tokens = self.template_tokens
        child.text_scale = self.text_scale
        return child

    def join_subagents(self, results: Sequence[str]) -> None:
        """The next prompt is the trace's, whatever the sub-agents found."""

    def needs_compaction(self) -> bool:
        """A trace's prompts are replayed as recorded, never compacted."""
        return False

    def over_budget(self) -> bool:
        """The target's window, not the agent's, decides."""
        return False

    def idle_time(self) -> float:
        """Not asked: each session is replayed once."""
        return 0.0


class TraceReplay:
    """Starts each of this process's sessions of a trace at its time; ends when all ended.

    `share` (index, count): this process replays the sessions whose position modulo count is
    index, so a swarm's workers split a trace between them without sending any twice.
    """

    def __init__(
        self,
        trace: Trace,
        run_session: SessionFn,
        model: str,
        *,
        force_length: bool,
        template_tokens: int = 0,
        text_scale: TextScale | None = None,
        share: Callable[[], tuple[int, int]] | None = None,
        on_origin: Callable[[float], None] | None = None,
    ) -> None:
        self.trace = trace
        self.run_session = run_session
        self.model = model
        self.force_length = force_length
        self.template_tokens = template_tokens
        self.text_scale = text_scale or TextScale()
        self.share = share or (lambda: (0, 1))
        self.on_origin = on_origin  # told the loop time the trace's time 0 falls on
        self.tasks: set[asyncio.Task[object]] = set()
        self.schedule_lag = LatencyHistogram()
        self.started = 0

    async def run(self, duration: float, *, elapsed: float = 0.0) -> None:
        """Replay until every session ended or `duration` passed (then cancel the rest).

        `elapsed`: how far into the run this driver starts (a worker that joined late):
        sessions whose time already passed start at once.
        """
        loop = asyncio.get_running_loop()
        start = loop.time() - elapsed
        origin = start + LEAD_S
        if self.on_origin is not None:
            self.on_origin(origin)
        try:
            async with asyncio.timeout_at(start + duration):
                await self._start_all(origin)
                while self.tasks:
                    await asyncio.wait(set(self.tasks))
        except TimeoutError:
            pass
        finally:
            pending = [t for t in list(self.tasks) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _start_all(self, origin: float) -> None:
        loop = asyncio.get_running_loop()
        for position, session in enumerate(self.trace.sessions):
            index, count = self.share()
            if position % max(1, count) != index or not session.requests:
                continue
            due = origin + session.requests[0].at_s
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            self.schedule_lag.record(max(0.0, loop.time() - due))
            agent = TraceAgent(session.id, session, self.trace, model=self.model)
            agent.force_length_supported = self.force_length
            agent.template_tokens = self.template_tokens
            agent.text_scale = self.text_scale
            task = asyncio.create_task(self.run_session(agent, LABEL, session.id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            self.started += 1


@functools.lru_cache(maxsize=4)
def _prepared(
    path: Path, fmt: str, speedup: float, cap_idle_s: float | None, sessions: int | None
) -> Trace:
    trace = load_trace(path, fmt)
    return replay_timeline(trace, speedup=speedup, cap_idle_s=cap_idle_s, sessions=sessions)


def replay_trace(loaded: LoadedProfile) -> Trace | None:
    """The trace a `mode: trace` profile replays, cut and timed as its arrival says (read once
    per process); None for other modes. ConfigError for a trace that cannot be read."""
    path = loaded.trace_path
    if path is None:
        return None
    a = loaded.profile.arrival
    return _prepared(path.resolve(), a.format, a.speedup, a.cap_idle, a.sessions)


def replay_section(loaded: LoadedProfile) -> dict[str, Any] | None:
    """summary.json's `replay`: the trace, what it holds, and the prefix-cache hit ratio its
    hash ids imply (an infinite cache) to set beside the measured one."""
    trace = replay_trace(loaded)
    if trace is None:
        return None
    cached, total = implied_cached_tokens(trace)
    a = loaded.profile.arrival
    return {
        "trace": trace.source,
        "speedup": a.speedup,
        "cap_idle_s": a.cap_idle,
        "sessions": len(trace.sessions),
        "requests": trace.request_count(),
        "input_tokens": total,
        "implied_cache_hit_ratio": round(cached / total, 4) if total else None,
    }
