"""One process's share of a run: target facts, agents, sessions, statistics and result files.

What drives it: the Locust users of `agentload run` (loadgen/orchestration/), which run it
on the engine's loop thread, and a single-process ceiling search's levels (loadgen/ceiling/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadgen.agents import Agent, AgentParams
from loadgen.observe import GeneratorHealth, ResultFiles, RunStats
from loadgen.observe.records import SessionRecord, StepRecord
from loadgen.profile.loader import LoadedProfile
from loadgen.runtime.capabilities import TargetCapabilities
from loadgen.runtime.load import WeightedPicker
from loadgen.runtime.probes import (
    check_reasoning_fields,
    detect_server_state,
    discover_model,
    first_request,
    force_length_works,
    replay_text_scale,
    template_tokens,
)
from loadgen.runtime.replay import TraceReplay, replay_section, replay_trace
from loadgen.runtime.session import SessionRunner
from loadgen.runtime.sinks import FanOut, RecordSink
from loadgen.traces import Trace
from loadgen.traces.prompt import TextScale
from loadgen.transport import SocketFactory, TargetConfig, Transport

logger = logging.getLogger(__name__)

__all__ = ["AgentFactory", "Engine", "StatsSink"]


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
        self.text_scale = TextScale()  # how replayed text is sized in the target's tokens

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
            if self.trace is not None:  # replayed prompts are sized in the target's tokens
                self.text_scale = await replay_text_scale(
                    self.transport, self.model, self.trace.block_size, self.template_tokens
                )
            make_agent = AgentFactory(self.loaded, self.model, self.force_length)
            for replica in range(len(self.transport.replicas)):
                await check_reasoning_fields(self.transport, self.model, make_agent.params, replica)
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
            text_scale=self.text_scale, share=share, on_origin=origin,
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
