"""Running one agent session: steps, state checks, reactions, tool waits and sub-agent fan-out."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from loadgen.agents import Agent, StepPlan, ToolInvocation
from loadgen.observe.records import SessionOutcome, SessionRecord, StepRecord, ToolOutcome
from loadgen.profile.schema import Profile, Reaction
from loadgen.protocol import Reply, send
from loadgen.protocol.failures import FailureKind
from loadgen.runtime.capabilities import TargetCapabilities
from loadgen.runtime.checks import FATAL, check_reply
from loadgen.runtime.compaction import compaction_budget
from loadgen.runtime.server_window import adopt_window, learn_window
from loadgen.runtime.session_records import SessionTally, step_record
from loadgen.runtime.sinks import RecordSink
from loadgen.transport import Transport

__all__ = ["SessionRunner", "replacement_delay"]

logger = logging.getLogger(__name__)

# Before an agent whose sessions keep failing starts another: 0.5 s, doubling, at most 30 s
# (with jitter), so a broken target gets a trickle of new sessions rather than a storm.
_REPLACE_FIRST_S = 0.5
_REPLACE_MAX_S = 30.0


def replacement_delay(failed_in_a_row: int, rng: random.Random) -> float:
    """Seconds to wait before a session that follows `failed_in_a_row` failed ones."""
    if failed_in_a_row <= 0:
        return 0.0
    base = min(_REPLACE_MAX_S, _REPLACE_FIRST_S * 2.0 ** (failed_in_a_row - 1))
    return base * (0.5 + rng.random())


class _SessionFailed(Exception):
    """A failure the profile's reactions could not absorb; ends the session as failed."""


class SessionRunner:
    """Drives agents through sessions against one transport, reporting every record to a sink."""

    def __init__(
        self,
        transport: Transport,
        profile: Profile,
        sink: RecordSink,
        capabilities: TargetCapabilities | None = None,
    ) -> None:
        self.transport = transport
        self.profile = profile
        self.sink = sink
        self.capabilities = capabilities or TargetCapabilities()
        self._jitter = random.Random(profile.seed)
        # True once the run is ending (whoever drives the run says): a session cancelled from
        # then on was still running at its end, unlike one a ramp-down retired mid-run.
        self.run_ending: Callable[[], bool] = lambda: False
        # The loop time a replayed trace's time 0 falls on (StepPlan.at_s counts from it).
        self.schedule_origin: float | None = None
        self._logged_errors: set[tuple[str, str]] = set()

    async def run_session(self, agent: Agent, label: str, session_id: str) -> SessionRecord:
        """One whole session; cancellation ends it as aborted (the client stopped it).

        An agent whose previous sessions failed waits first (replacement_delay), so that a
        broken target is not answered with a storm of new sessions.
        """
        pause = replacement_delay(agent.failed_in_a_row, self._jitter)
        if pause > 0:
            await asyncio.sleep(pause)
        tally = SessionTally()
        started_unix = time.time()
        t0 = time.perf_counter()
        self.sink.session_started(label)
        outcome, error = SessionOutcome.COMPLETED, None
        try:
            self._share_capabilities(agent)
            agent.start_session(session_id)
            if agent.last_response_id is not None:
                # A resumed server-held conversation lives where the agent's last session
                # left it: send back the router's token, as a client with a sticky session
                # would, or an affinity router would place the resume anew.
                tally.echo.update(agent.router_tokens)
            await self._steps(agent, label, session_id, tally)
        except _SessionFailed as exc:
            outcome, error = SessionOutcome.FAILED, str(exc)
        except asyncio.CancelledError:
            outcome = SessionOutcome.ABORTED
            raise
        except Exception as exc:
            # The agent's own code raised: its session cannot go on, the run can.
            outcome, error = (
                SessionOutcome.FAILED,
                self._agent_error(exc, agent, label, session_id, tally),
            )
        finally:
            try:
                agent.end_session()
            except Exception as exc:
                if outcome != SessionOutcome.FAILED:
                    outcome = SessionOutcome.FAILED
                    error = self._agent_error(exc, agent, label, session_id, tally)
            agent.failed_in_a_row = (
                agent.failed_in_a_row + 1 if outcome == SessionOutcome.FAILED else 0
            )
            record = tally.session_record(
                session_id,
                label,
                started_unix=started_unix,
                duration_s=time.perf_counter() - t0,
                outcome=outcome,
                final_context_tokens=agent.conversation.tokens,
                error=error,
                running_at_end=outcome == SessionOutcome.ABORTED and self.run_ending(),
            )
            self.sink.session(record)
        return record

    def _agent_error(
        self, exc: Exception, agent: Agent, label: str, session_id: str, tally: SessionTally
    ) -> str:
        """Record an exception from agent code as a step of kind agent_error; its message."""
        message = f"{type(exc).__name__} in agent {type(agent).__name__}: {exc}"
        key = (label, type(exc).__name__)
        if key not in self._logged_errors:  # once per agent and exception type, with its trace
            self._logged_errors.add(key)
            logger.error("agent %s raised; its sessions end failed (agent_error)", label,
                         exc_info=exc)  # fmt: skip
        kind = FailureKind.AGENT_ERROR
        self._step_without_reply(kind, "agent_error", agent, label, session_id, tally, message)
        return f"{kind}: {message}"

    def _share_capabilities(self, agent: Agent) -> None:
        """Tell the agent what the target cannot do, as learned by any session so far."""
        caps = self.capabilities
        if caps.server_state is False:
            agent.server_state_supported = False

    async def _steps(self, agent: Agent, label: str, session_id: str, tally: SessionTally) -> None:
        while True:
            adopt_window(agent, self.capabilities.window_tokens, tally.baseline)
            if agent.needs_compaction():
                await self._compact(agent, label, session_id, tally)
            plan = agent.plan_step()
            if plan is None:
                return
            lag = await self._wait_for(plan)
            if agent.over_budget():
                # The agent's own window is full and compaction is off or did not help.
                await self._react_without_reply(
                    FailureKind.CONTEXT_OVERFLOW, agent, label, session_id, tally
                )
                continue
            reply, record = await self._attempt(agent, plan, label, session_id, tally, lag)
            invocations = agent.apply_reply(reply)
            record.tool_calls = len(invocations)
            tally.tool_calls += len(invocations)
            self.sink.step(record)
            if invocations:
                await self._run_tools(label, invocations)
                agent.apply_tool_results(invocations)
            fan_out = agent.wants_subagents()
            if fan_out:
                results = await asyncio.gather(
                    *(
                        self._subagent(agent, label, f"{session_id}.{tally.subagents + i}", tally)
                        for i in range(fan_out)
                    )
                )
                tally.subagents += fan_out
                agent.join_subagents(results)

    async def _attempt(
        self,
        agent: Agent,
        plan: StepPlan,
        label: str,
        session_id: str,
        tally: SessionTally,
        lag: float,
    ) -> tuple[Reply, StepRecord]:
        """Send the step, retrying or reacting as the profile says; the record of the good try
        is returned unsent so the caller can add what the agent did with the reply."""
        attempt = 0
        causes: list[str] = []
        while True:
            replica = self.transport.pick(session_id.split(".", 1)[0])  # with its sub-agents
            reply = await send(
                self.transport,
                plan.api,
                plan.body,
                headers=self._headers(session_id, tally),
                capture_headers=self.profile.echo_headers,
                replica=replica,
                replica_headers=self.profile.replica_headers,
            )
            tally.echo.update(reply.headers)
            agent.router_tokens.update(reply.headers)
            self.capabilities.observe(reply)
            if reply.unsupported is not None and agent.server_state_supported:
                # The target keeps no conversation state: a fact about it (the summary says
                # so once), not a failure of this step. Resend the history instead.
                agent.server_state_supported = False
                agent.fall_back_to_client_history()
                replanned = agent.plan_step()
                if replanned is None:
                    raise _SessionFailed("nothing left to send after the server-state fallback")
                plan = replanned
                continue
            found = list(reply.failures)
            reasons = {str(kind): reply.error or "" for kind in found}
            if reply.ok:
                findings = check_reply(
                    plan,
                    reply,
                    tally.baseline,
                    self.profile.checks,
                    caching_seen=self.capabilities.caching_seen,
                    window_tokens=self.capabilities.window_tokens,
                )
                for finding in findings:
                    found.append(str(finding.kind))
                    reasons[str(finding.kind)] = finding.message
                    if finding.window_tokens is not None:
                        reply.window_tokens = finding.window_tokens
                        self.capabilities.observe(reply)
            record = step_record(plan, reply, label, session_id, tally.steps, found, attempt, lag)
            record.reasons = reasons
            record.replica = reply.replica or self.transport.replica_name(replica)
            tally.steps += 1
            tally.failures.update(found)
            tally.count_usage(reply)
            fatal = next((k for k in found if k in FATAL), None)
            if fatal is None:
                tally.baseline.update(plan, reply)
                for kind in dict.fromkeys(causes):
                    tally.recoveries[kind] += 1
                    self.sink.recovery(kind, label)
                return reply, record
            record.ok = False
            self.sink.step(record)
            reaction = self.profile.reactions[FailureKind(fatal)]
            if attempt + 1 >= reaction.max_attempts or reaction.action in ("abort", "continue"):
                raise _SessionFailed(
                    f"{fatal} after {attempt + 1} attempt(s): {reply.error or ''}".strip()
                )
            if reaction.action == "compact" and plan.kind == "compaction":
                # The summary request itself does not fit: compacting again cannot help.
                raise _SessionFailed(f"{fatal}: the history is too long even to summarise")
            causes.append(fatal)
            attempt += 1
            if reaction.action == "fallback":
                agent.fall_back_to_client_history()
            elif reaction.action == "compact":
                learn_window(agent, tally.baseline, reply, self.capabilities.window_tokens)
                await self._compact(agent, label, session_id, tally)
            else:
                await self._wait(self._backoff(reaction, attempt, reply.retry_after_s))
            lag = 0.0
            replanned = agent.plan_step() if reaction.action in ("fallback", "compact") else plan
            if replanned is None:
                raise _SessionFailed(f"{fatal}: nothing left to send after {reaction.action}")
            plan = replanned

    def _step_without_reply(
        self,
        kind: FailureKind,
        step_kind: str,
        agent: Agent,
        label: str,
        session_id: str,
        tally: SessionTally,
        message: str,
    ) -> None:
        """Record a failure found before any request was sent, as a failed step."""
        tally.failures[kind] += 1
        tally.steps += 1
        self.sink.step(
            StepRecord(
                session_id=session_id,
                agent=label,
                step=tally.steps - 1,
                kind=step_kind,
                api=agent.params.api,
                started_unix=time.time(),
                e2e_s=0.0,
                context_tokens=agent.conversation.tokens,
                ok=False,
                failures=[str(kind)],
                error=message,
                reasons={str(kind): message},
            )
        )

    async def _react_without_reply(
        self, kind: FailureKind, agent: Agent, label: str, session_id: str, tally: SessionTally
    ) -> None:
        message = "the history exceeds the agent's own context window"
        self._step_without_reply(kind, "overflow", agent, label, session_id, tally, message)
        reaction = self.profile.reactions[kind]
        if reaction.action != "compact" or not agent.params.compaction:
            raise _SessionFailed(
                f"{kind}: history of {agent.conversation.tokens} tokens exceeds the agent's window"
            )
        await self._compact(agent, label, session_id, tally)
        tally.recoveries[kind] += 1
        self.sink.recovery(kind, label)

    async def _compact(
        self, agent: Agent, label: str, session_id: str, tally: SessionTally
    ) -> None:
        # The summary request is not the next step of an append-only history: nothing to
        # compare its prompt with, before or after.
        tally.baseline.reset()
        fit, room = compaction_budget(agent)
        plan = agent.plan_compaction(fit, room)
        reply, record = await self._attempt(agent, plan, label, session_id, tally, 0.0)
        self.sink.step(record)
        agent.apply_compaction(reply)
        tally.compactions += 1
        tally.baseline.reset()

    async def _subagent(
        self, parent: Agent, label: str, session_id: str, tally: SessionTally
    ) -> str:
        child = parent.make_subagent(
            f"{parent.id}.{session_id.rsplit('.', 1)[-1]}", parent.rng.getrandbits(32)
        )
        child.start_session(session_id)
        child_tally = SessionTally()
        last = ""
        try:
            while (plan := child.plan_step()) is not None:
                plan.kind = "subagent"
                await self._wait_for(plan)
                reply, record = await self._attempt(
                    child, plan, label, session_id, child_tally, 0.0
                )
                invocations = child.apply_reply(reply)
                record.tool_calls = len(invocations)
                self.sink.step(record)
                last = reply.text
                if invocations:
                    await self._run_tools(label, invocations)
                    child.apply_tool_results(invocations)
        except _SessionFailed:
            last = ""  # the parent carries on with what the others found
        finally:
            child.end_session()
            tally.absorb(child_tally)
        return last

    async def _run_tools(self, label: str, invocations: list[ToolInvocation]) -> None:
        ended: set[int] = set()

        async def one(i: int, inv: ToolInvocation) -> None:
            await self._wait(inv.latency_s)
            ended.add(i)
            outcome = ToolOutcome.ERROR if inv.fails else ToolOutcome.OK
            self.sink.tool_call(label, inv.name, outcome, inv.latency_s * self.profile.time_scale)

        try:
            await asyncio.gather(*(one(i, inv) for i, inv in enumerate(invocations)))
        except asyncio.CancelledError:
            # The step asking for these calls is already recorded (summary.json counts them):
            # the ones its stopped session cut off are counted too, as aborted. Here, not in
            # `one`: a call whose task was cancelled before it first ran never enters it.
            for i, inv in enumerate(invocations):
                if i not in ended:
                    self.sink.tool_call(label, inv.name, ToolOutcome.ABORTED, None)
            raise

    async def _wait_for(self, plan: StepPlan) -> float:
        """Wait out the plan's delay, then until its scheduled time; how late we woke."""
        lag = await self._wait(plan.delay_s)
        if plan.at_s is None or self.schedule_origin is None:
            return lag
        loop = asyncio.get_running_loop()
        due = self.schedule_origin + plan.at_s
        if due <= loop.time():
            return lag
        await asyncio.sleep(due - loop.time())
        return max(0.0, loop.time() - due)

    async def _wait(self, seconds: float) -> float:
        """Sleep `seconds` of modelled time (scaled); returns how late we woke (schedule lag)."""
        delay = seconds * self.profile.time_scale
        if delay <= 0:
            return 0.0
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        await asyncio.sleep(delay)
        return max(0.0, loop.time() - due)

    def _backoff(self, reaction: Reaction, attempt: int, retry_after: float | None) -> float:
        # Exponential backoff with jitter, unscaled by time_scale (it is the target's clock).
        base: float = min(reaction.max_backoff, reaction.backoff * 2.0 ** (attempt - 1))
        base *= 1 - reaction.jitter * self._jitter.random()
        if retry_after is not None:
            base = max(base, retry_after)
        return float(base / self.profile.time_scale)

    def _headers(self, session_id: str, tally: SessionTally) -> dict[str, str]:
        headers = dict(tally.echo)
        if self.profile.session_header:
            headers[self.profile.session_header] = session_id.split(".", 1)[0]
        return headers
