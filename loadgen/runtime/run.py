"""One load run from start to summary: target checks, the agent swarm, results as they happen."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from loadgen.agents import Agent, AgentParams
from loadgen.errors import TargetUnreachableError
from loadgen.observe import GeneratorHealth, ResultFiles, RunStats
from loadgen.observe.records import SessionRecord, StepRecord
from loadgen.profile.loader import LoadedProfile
from loadgen.protocol import chat_body, encode_message, send
from loadgen.runtime.load import ClosedLoop, OpenLoop, WeightedPicker
from loadgen.runtime.session import SessionRunner
from loadgen.runtime.sinks import FanOut, RecordSink
from loadgen.transport import TargetConfig, Transport, TransportError

__all__ = ["RunOptions", "StatsSink", "detect_force_length", "discover_model", "run_load"]


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what to run: that is the profile)."""

    out_dir: Path
    model: str | None = None
    progress: TextIO | None = sys.stderr  # None: quiet
    progress_interval_s: float = 10.0
    target_label: dict[str, Any] | None = None  # e.g. {"builtin_sim": "fast"}


class StatsSink:
    """Counts every record into RunStats and appends it to the result files as it happens."""

    def __init__(self, stats: RunStats, files: ResultFiles) -> None:
        self.stats = stats
        self.files = files

    def session_started(self, agent: str) -> None:
        """A session began."""
        self.stats.session_started(agent)

    def step(self, record: StepRecord) -> None:
        """A step ended."""
        self.stats.add_step(record)
        self.files.write_step(record)

    def session(self, record: SessionRecord) -> None:
        """A session ended."""
        self.stats.add_session(record)
        self.files.write_session(record)

    def recovery(self, kind: str, agent: str) -> None:
        """A failure was absorbed by a reaction."""
        self.stats.recovery(kind, agent)

    def tool_call(self, agent: str, tool: str, ok: bool, latency_s: float) -> None:
        """Tool calls are counted from step records; nothing more to keep here."""


async def discover_model(transport: Transport) -> str:
    """The first model the target serves; TargetUnreachableError when it cannot say."""
    url = transport.target.base_url
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


async def detect_force_length(transport: Transport, model: str, setting: str) -> bool:
    """Whether min_tokens + ignore_eos work on this target (asked once, with a tiny request)."""
    if setting != "auto":
        return setting == "always"
    body = chat_body(
        model, [encode_message("user", "ping")], max_tokens=3, min_tokens=3, ignore_eos=True
    )
    reply = await send(transport, "chat", body)
    if not reply.ok and reply.status is None:
        raise TargetUnreachableError(f"cannot reach {transport.target.base_url}: {reply.error}")
    return reply.ok and reply.usage is not None and reply.usage.completion_tokens == 3


class _AgentFactory:
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

    def __call__(self, slot: int) -> tuple[Agent, str]:
        j = self._picker.next()
        label = self.mix[j].label
        agent = self.classes[j](f"{label}-{slot}", self.params[j], model=self.model, seed=self.seed)
        agent.force_length_supported = self.force_length
        return agent, label


async def run_load(
    loaded: LoadedProfile,
    target: TargetConfig,
    options: RunOptions,
    extra_sinks: Sequence[RecordSink] = (),
) -> dict[str, Any]:
    """Run the profile against `target`; returns summary.json's content (also written)."""
    profile = loaded.profile
    async with Transport(target) as transport:
        model = options.model or await discover_model(transport)
        force_length = await detect_force_length(transport, model, profile.force_output_length)
        stats = RunStats()
        with ResultFiles(options.out_dir) as files:
            sink = FanOut([StatsSink(stats, files), *extra_sinks])
            runner = SessionRunner(transport, profile, sink)
            factory = _AgentFactory(loaded, model, force_length)
            arrival = profile.arrival
            driver: ClosedLoop | OpenLoop
            if arrival.mode == "closed":
                driver = ClosedLoop(
                    arrival,
                    profile.stages,
                    factory,
                    runner.run_session,
                    profile.time_scale,
                    profile.seed,
                )
            else:
                driver = OpenLoop(
                    arrival, profile.stages, factory, runner.run_session, profile.seed
                )
            health = GeneratorHealth(schedule_lag=stats.schedule_lag_s)
            t0 = time.perf_counter()
            async with health, _progress(options, stats, t0, profile.total_duration):
                await driver.run(profile.total_duration)
            duration = time.perf_counter() - t0
            if isinstance(driver, OpenLoop):
                stats.schedule_lag_s.record_many(driver.schedule_lag)
            label = {"url": target.base_url, "model": model, "forced_output_length": force_length}
            summary = stats.summary(
                target={**label, **(options.target_label or {})},
                profile=profile.name,
                duration_s=duration,
                generator=health.report(),
            )
            files.write_summary(summary)
    return summary


@contextlib.asynccontextmanager
async def _progress(options: RunOptions, stats: RunStats, t0: float, total: float) -> Any:
    out = options.progress
    if out is None:
        yield
        return

    async def report() -> None:
        while True:
            await asyncio.sleep(options.progress_interval_s)
            out.write(_progress_line(stats, time.perf_counter() - t0, total) + "\n")
            out.flush()

    task = asyncio.create_task(report())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _progress_line(stats: RunStats, elapsed: float, total: float) -> str:
    s = stats.sessions
    ttft = stats.ttft_s.percentile(95)
    failures = ", ".join(f"{k} {v}" for k, v in stats.failures.items() if v) or "none"
    tokens_per_s = stats.completion_tokens / max(elapsed, 1e-9)
    return (
        f"[{elapsed:5.0f}s/{total:.0f}s] sessions {s.completed} done, {s.failed} failed | "
        f"requests {stats.requests_total} | output {tokens_per_s:.0f} tok/s | "
        f"ttft p95 {'-' if ttft is None else f'{ttft:.2f}s'} | failures: {failures}"
    )
