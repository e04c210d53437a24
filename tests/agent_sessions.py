"""Running K whole agent sessions against a real server, for the runtime test files."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.agents import Agent
from loadgen.observe import ResultFiles, RunStats, SessionRecord, StepRecord
from loadgen.profile.schema import Profile
from loadgen.runtime.engine import StatsSink
from loadgen.runtime.session import SessionRunner
from loadgen.runtime.sinks import FanOut, MemorySink
from loadgen.transport import TargetConfig, Transport

MODEL = "agentload-sim"
TOOLS = [
    {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"key": {"type": "string"}},
            "required": ["key"],
        },
    }
]
# Small sessions: a few steps, short replies, tools that take a millisecond once scaled.
SMALL: dict[str, Any] = {
    "system_prompt_tokens": 200,
    "turns": 2,
    "steps_per_turn": 3,
    "user_tokens": 30,
    "output_tokens": 32,
    "tool_result_tokens": 40,
    "tool_latency_s": 1,
    "think_time_s": 0,
    "tools": TOOLS,
}


@dataclass
class Outcome:
    """What K whole sessions produced."""

    stats: RunStats
    sessions: list[SessionRecord]
    steps: list[StepRecord] = field(default_factory=list)

    def outcomes(self) -> list[str]:
        return [s.outcome for s in self.sessions]

    def steps_of(self, session_id: str) -> list[StepRecord]:
        return sorted((s for s in self.steps if s.session_id == session_id), key=lambda s: s.step)


async def run_sessions(
    base_url: str,
    agent_cls: type[Agent],
    out_dir: Path,
    *,
    params: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
    k: int = 6,
    request_timeout_s: float = 600.0,
) -> Outcome:
    """Run `k` whole sessions of `agent_cls` against `base_url`, concurrently, to their end."""
    prof = Profile.model_validate(
        {
            "agents": [{"kind": agent_cls.kind}],
            "arrival": {"mode": "closed", "agents": k},
            "time_scale": 0.001,
            **(profile or {}),
        }
    )
    agent_params = agent_cls.Params.model_validate({**SMALL, **(params or {})})
    stats, recorder = RunStats(), MemorySink()
    target = TargetConfig.from_url(base_url, request_timeout_s=request_timeout_s)
    with ResultFiles(out_dir) as files:
        sink = FanOut([StatsSink(stats, files), recorder])
        async with Transport(target) as transport:
            runner = SessionRunner(transport, prof, sink)
            agents = [
                agent_cls(f"{agent_cls.kind}-{i}", agent_params, model=MODEL, seed=prof.seed)
                for i in range(k)
            ]
            async with asyncio.timeout(60):
                sessions = await asyncio.gather(
                    *(runner.run_session(a, agent_cls.kind, f"s{i}") for i, a in enumerate(agents))
                )
    return Outcome(stats, list(sessions), recorder.steps)
