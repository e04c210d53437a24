"""One process's share of a run: target facts, agents, sessions, statistics and result files.

What drives it: the Locust users of `agentload run` (loadgen/orchestration/), which run it
on the engine's loop thread, and a single-process ceiling search's levels (loadgen/ceiling/).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from loadgen.agents import Agent, AgentParams
from loadgen.background import cancel_and_wait
from loadgen.errors import TargetUnreachableError
from loadgen.observe import GeneratorHealth, ResultFiles, RunStats
from loadgen.observe.records import SessionRecord, StepRecord
from loadgen.profile.loader import LoadedProfile
from loadgen.protocol import (
    Api,
    Reply,
    chat_body,
    count_tokens,
    encode_message,
    responses_body,
    send,
)
from loadgen.runtime.capabilities import TargetCapabilities
from loadgen.runtime.load import WeightedPicker
from loadgen.runtime.replay import TraceReplay, replay_section, replay_trace
from loadgen.runtime.session import SessionRunner
from loadgen.runtime.sinks import FanOut, RecordSink
from loadgen.traces import Trace
from loadgen.transport import SocketFactory, TargetConfig, Transport, TransportError

logger = logging.getLogger(__name__)

__all__ = [
    "AgentFactory",
    "Engine",
    "StatsSink",
    "detect_server_state",
    "discover_model",
    "first_request",
    "force_length_works",
    "template_tokens",
]

# Start-up probes are tiny requests: a target that cannot answer one in this long is not
# ready to be measured, and the user should hear so at once, not after the request timeout.
_PROBE_TIMEOUT_S = 30.0
_PROBE_QUIET_S = 4.0  # after this long without an answer the wait is said
# A refusal of the model itself (wrong name, no access): the run could measure nothing.
_MODEL_REFUSED = re.compile(
    r"model.*(?:not exist|not found|does not|unknown|invalid|no access|not available)|"
    r"(?:invalid|unknown) model",
    re.IGNORECASE,
)


class StatsSink:
    """Counts every record into RunStats and appends it to the result files as it happens."""

    def __init__(self, stats: RunStats, files: ResultFiles | None = None) -> None:
        self.stats = stats
        self.files = files  # None: count only

    def session_started(self, agent: str) -> None:
        """A session began."""
        self.stats.session_started(agent)

    def step(self, record: StepRecord) -> None:
        """A step ended."""
        self.stats.add_step(record)
        if self.files is not None:
            self.files.write_step(record)

    def session(self, record: SessionRecord) -> None:
        """A session ended."""
        self.stats.add_session(record)
        if self.files is not None:
            self.files.write_session(record)

    def recovery(self, kind: str, agent: str) -> None:
        """A failure was absorbed by a reaction."""
        self.stats.recovery(kind, agent)

    def tool_call(self, agent: str, tool: str, outcome: str, latency_s: float | None) -> None:
        """Tool calls are counted from step records; nothing more to keep here."""


def _where(transport: Transport, replica: int) -> str:
    """The target (or the replica of a fleet) as error messages name it."""
    url = transport.replicas[replica].base_url
    name = transport.replica_name(replica)
    return url if name is None else f"target {name} ({url})"


async def discover_model(transport: Transport) -> str:
    """The first model the target serves; TargetUnreachableError when it cannot say."""
    url = _where(transport, 0)
    try:
        status, body = await transport.get("models", timeout_s=30)
    except TransportError as exc:
        raise TargetUnreachableError(f"cannot reach {url}: {exc}; check --target") from exc
    if status in (401, 403):
        raise TargetUnreachableError(f"{url} refused the API key (HTTP {status}); check --api-key")
    try:
        return str(orjson.loads(body)["data"][0]["id"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise TargetUnreachableError(
            f"{url}/models answered HTTP {status} without a model list; pass --model"
        ) from exc


async def _probe(
    transport: Transport,
    api: Api,
    body: list[bytes],
    what: str,
    *,
    refusals: bool = True,
    replica: int = 0,
) -> Reply:
    """Send one start-up probe to `replica`; TargetUnreachableError when it cannot serve the run.

    `refusals`: a 404 or a refused model is fatal too (not for a chained request, whose 404
    is about the response it names, not the model).
    """
    url = _where(transport, replica)
    sending = asyncio.ensure_future(send(transport, api, body, replica=replica))
    try:
        done, _ = await asyncio.wait({sending}, timeout=_PROBE_QUIET_S)
        if not done:  # a loading model, a busy server or an endless stream: say so
            logger.warning(
                "agentload: %s has not answered %s in %.0fs; waiting up to %.0fs",
                url, what, _PROBE_QUIET_S, _PROBE_TIMEOUT_S,
            )  # fmt: skip
        async with asyncio.timeout(_PROBE_TIMEOUT_S - _PROBE_QUIET_S):
            reply = await sending
    except TimeoutError as exc:
        raise TargetUnreachableError(
            f"{url} did not answer {what} within {_PROBE_TIMEOUT_S:.0f}s; is the server up "
            "and the model loaded?"
        ) from exc
    finally:
        await cancel_and_wait(sending)
    if not reply.ok and reply.status is None:
        raise TargetUnreachableError(f"cannot reach {url}: {reply.error}")
    status = reply.status or 0
    if status in (401, 403):
        raise TargetUnreachableError(
            f"{url} refused the API key (HTTP {status}): {reply.error}; check --api-key"
        )
    refused = status == 404 or (status in (400, 422) and _MODEL_REFUSED.search(reply.error or ""))
    if refusals and refused:
        raise TargetUnreachableError(
            f"{url} refused {what} (HTTP {status}): {reply.error}; check --model and --target"
        )
    return reply


_PING = "ping"  # one token under the stand-in tokenizer


async def first_request(transport: Transport, model: str, replica: int = 0) -> Reply:
    """The start-up request: a tiny chat with its output length forced to 3 tokens.

    It is the check that the model answers at all (TargetUnreachableError, exit 3, with the
    server's words when not), and tells whether min_tokens + ignore_eos work.
    """
    body = chat_body(
        model, [encode_message("user", _PING)], max_tokens=3, min_tokens=3, ignore_eos=True
    )
    return await _probe(transport, "chat", body, "a first request", replica=replica)


def force_length_works(reply: Reply, setting: str) -> bool:
    """Whether to force output lengths: as `setting` says, or (auto) as the probe showed."""
    if setting != "auto":
        return setting == "always"
    return reply.ok and reply.usage is not None and reply.usage.completion_tokens == 3


def template_tokens(reply: Reply) -> int:
    """Prompt tokens the server adds around a message's text (its chat template), as the
    first request's usage shows; 0 when it reports none."""
    if reply.usage is None:
        return 0
    return max(0, reply.usage.prompt_tokens - count_tokens(_PING))


async def detect_server_state(
    transport: Transport, model: str, capabilities: TargetCapabilities, replica: int = 0
) -> None:
    """Whether the target (its `replica`) chains Responses on previous_response_id (a stored
    response, then a follow-up on it); the answer goes into `capabilities`."""
    first = await _probe(
        transport,
        "responses",
        responses_body(model, [encode_message("user", "ping")], store=True, max_output_tokens=3),
        "a Responses request",
        replica=replica,
    )
    if not first.ok:
        return  # a transient failure says nothing about the store: the sessions will see
    if not first.response_id:
        capabilities.refuse_server_state("a stored response came back without an id to chain on")
        return
    follow = await _probe(
        transport,
        "responses",
        responses_body(
            model,
            [encode_message("user", "pong")],
            previous_response_id=first.response_id,
            store=True,
            max_output_tokens=3,
        ),
        "a chained Responses request",
        refusals=False,
        replica=replica,
    )
    first_usage, follow_usage = first.usage, follow.usage
    if (
        follow.ok
        and first_usage is not None
        and follow_usage is not None
        and follow_usage.prompt_tokens < first_usage.prompt_tokens + first_usage.completion_tokens
    ):
        # Accepted, but the chained prompt does not hold the response it chains on: the
        # server ignores previous_response_id (transformers serve does), and every session
        # would lose its history silently.
        capabilities.refuse_server_state(
            f"previous_response_id accepted but ignored: a chained prompt of "
            f"{follow_usage.prompt_tokens} tokens after a response of "
            f"{first_usage.prompt_tokens} + {first_usage.completion_tokens}"
        )
    elif follow.ok:
        capabilities.server_state = True
    elif follow.unsupported is not None:
        capabilities.refuse_server_state(follow.error or "previous_response_id refused")
    # Anything else (a 404 for the id just issued, a 5xx) is left to the sessions: it may be
    # the very state loss the run is there to count.


def _fleet_label(target: TargetConfig) -> dict[str, Any]:
    """What summary.json's target says of a fleet balanced by this client (nothing for one)."""
    if not target.replicas:
        return {}
    return {"replicas": dict(target.replicas), "balance": target.balance}


def profile_sections(loaded: LoadedProfile) -> dict[str, Any]:
    """What summary.json carries of the profile itself: its SLOs (the report draws them on
    its charts) and, for a trace's replay, the trace and the cache hits it implies."""
    sections: dict[str, Any] = {}
    if loaded.profile.slos:
        sections["slos"] = dict(loaded.profile.slos)
    if (replay := replay_section(loaded)) is not None:
        sections["replay"] = replay
    return sections


class AgentFactory:
    """Builds the agent for each slot, following the mix's weights in a fixed order."""

    def __init__(self, loaded: LoadedProfile, model: str, force_length: bool) -> None:
        profile = loaded.profile
        self.mix = profile.agents
        self.classes = loaded.agent_classes
        self.params: list[AgentParams] = [
            cls.Params.model_validate(m.params)
            for cls, m in zip(self.classes, self.mix, strict=True)
        ]
        self.model = model
        self.seed = profile.seed
        self.force_length = force_length
        self._picker = WeightedPicker([m.weight for m in self.mix])

    def __call__(self, slot: int, mix_index: int | None = None) -> tuple[Agent, str]:
        """The agent for `slot` (of the given mix entry, or the next by weight)."""
        j = self._picker.next() if mix_index is None else mix_index
        label = self.mix[j].label
        agent = self.classes[j](f"{label}-{slot}", self.params[j], model=self.model, seed=self.seed)
        agent.force_length_supported = self.force_length
        return agent, label


class Engine:
    """Transport, target facts, sinks and the session runner of one process; start, then run."""

    def __init__(
        self,
        loaded: LoadedProfile,
        target: TargetConfig,
        out_dir: Path,
        *,
        model: str | None = None,
        extra_sinks: Sequence[RecordSink] = (),
        socket_factory: SocketFactory | None = None,
    ) -> None:
        self.loaded = loaded
        self.profile = loaded.profile
        self.target = target
        self.out_dir = out_dir
        self.model = model or ""
        self.force_length = False
        self.stats = RunStats()
        self.health = GeneratorHealth(schedule_lag=self.stats.schedule_lag_s)
        self.capabilities = TargetCapabilities()
        self.transport = Transport(target, socket_factory=socket_factory)
        self._extra_sinks = list(extra_sinks)
        self._files: ResultFiles | None = None
        self.runner: SessionRunner | None = None
        self.make_agent: AgentFactory | None = None
        self.trace: Trace | None = None  # what a `mode: trace` profile replays
        self.template_tokens = 0  # what the target's chat template adds to a prompt

    async def start(self) -> None:
        """Open the transport, learn the model and output-length support, open result files."""
        await self.transport.__aenter__()
        try:
            self.model = self.model or await discover_model(self.transport)
            probe = await first_request(self.transport, self.model)
            for replica in range(1, len(self.transport.replicas)):  # a fleet: each must serve
                await first_request(self.transport, self.model, replica)
            self.force_length = force_length_works(probe, self.profile.force_output_length)
            self.template_tokens = template_tokens(probe)
            self.trace = replay_trace(self.loaded)
            make_agent = AgentFactory(self.loaded, self.model, self.force_length)
            if any(p.api == "responses" and p.state == "server" for p in make_agent.params):
                for replica in range(len(self.transport.replicas)):
                    if self.capabilities.server_state is not False:  # one without: none
                        await detect_server_state(
                            self.transport, self.model, self.capabilities, replica
                        )
        except BaseException:
            await self.transport.__aexit__(None, None, None)
            raise
        self._files = ResultFiles(self.out_dir)
        sink = FanOut([StatsSink(self.stats, self._files), *self._extra_sinks])
        self.runner = SessionRunner(self.transport, self.profile, sink, self.capabilities)
        self.make_agent = make_agent
        await self.health.start()

    def add_sink(self, sink: RecordSink) -> None:
        """Send every record to `sink` too (before start, or between sessions)."""
        self._extra_sinks.append(sink)
        if self.runner is not None and isinstance(self.runner.sink, FanOut):
            self.runner.sink.sinks.append(sink)

    async def run_session(self, agent: Agent, label: str, session_id: str) -> SessionRecord:
        """One whole session of `agent`."""
        assert self.runner is not None, "Engine.start() first"
        return await self.runner.run_session(agent, label, session_id)

    def replay(
        self, share: Callable[[], tuple[int, int]] | None = None, trace: Trace | None = None
    ) -> TraceReplay:
        """A driver replaying the profile's trace (or `trace`: it retimed), this process's
        `share` of its sessions."""
        assert self.runner is not None, "Engine.start() first"
        trace = trace or self.trace
        assert trace is not None, "replay() is for a profile with `mode: trace`"
        runner = self.runner

        def origin(at: float) -> None:
            runner.schedule_origin = at

        return TraceReplay(
            trace, self.run_session, self.model,
            force_length=self.force_length, template_tokens=self.template_tokens,
            share=share, on_origin=origin,
        )  # fmt: skip

    def target_label(self) -> dict[str, Any]:
        """What summary.json says about the target."""
        return {
            "url": self.target.base_url,
            "model": self.model,
            "forced_output_length": self.force_length,
            # How stream timings were taken: comparing runs taken both ways mixes clocks.
            "timestamps": "kernel" if self.transport.kernel_timestamps else "event_loop",
            **self.capabilities.label(),
            **_fleet_label(self.target),
        }

    def summary(
        self, duration_s: float, stats: RunStats | None = None, **target: Any
    ) -> dict[str, Any]:
        """summary.json's content for `stats` (default: this process's) over `duration_s`."""
        summary = (stats or self.stats).summary(
            target={**self.target_label(), **target},
            profile=self.profile.name,
            duration_s=duration_s,
            generator=self.health.report(),
        )
        summary.update(profile_sections(self.loaded))
        if self._files is not None and (incomplete := self._files.incomplete):
            summary["results_incomplete"] = incomplete  # a record file stopped mid-run
        return summary

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json into the results folder."""
        assert self._files is not None
        self._files.write_summary(summary)

    async def stop(self) -> None:
        """Stop probes, close the transport and the result files."""
        await self.health.stop()
        await self.transport.__aexit__(None, None, None)
        if self._files is not None:
            self._files.close()
