"""Workload profiles: the built-in ones, errors that name file, field and fix, custom agents
loaded from a Python file, and the command-line overrides."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadgen.agents import Agent
from loadgen.cli.run_setup import profile_overrides as _overrides
from loadgen.errors import UsageError
from loadgen.observe import ResultFiles, RunStats
from loadgen.profile.loader import LoadedProfile, ProfileError, builtin_profiles, load_profile
from loadgen.runtime.engine import StatsSink
from loadgen.runtime.session import SessionRunner
from loadgen.runtime.sinks import FanOut, MemorySink
from loadgen.sim import SimServer
from loadgen.sim.config import profile_sim_config as _sim_config
from loadgen.transport import TargetConfig, Transport

StartSim = Callable[..., Awaitable[SimServer]]

AGENTLOAD = [sys.executable, "-m", "loadgen"]
MODEL = "agentload-sim"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTLOAD, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


# -- running whole sessions ----------------------------------------------------------------


async def run_sessions(
    loaded: LoadedProfile, server: SimServer, out_dir: Path, *, k: int = 1
) -> tuple[RunStats, MemorySink]:
    """Run `k` whole sessions of the profile's first agent against `server`, to their end."""
    profile = loaded.profile
    cls = loaded.agent_classes[0]
    mix = profile.agents[0]
    params = cls.Params.model_validate(mix.params)
    stats, recorder = RunStats(), MemorySink()
    with ResultFiles(out_dir) as files:
        sink = FanOut([StatsSink(stats, files), recorder])
        async with Transport(TargetConfig.from_url(server.base_url)) as transport:
            runner = SessionRunner(transport, profile, sink)
            agents = [
                cls(f"{mix.label}-{i}", params, model=MODEL, seed=profile.seed) for i in range(k)
            ]
            async with asyncio.timeout(60):
                await asyncio.gather(
                    *(runner.run_session(a, mix.label, f"s{i}") for i, a in enumerate(agents))
                )
    return stats, recorder


# -- built-in profiles -------------------------------------------------------------------------

BUILTIN = sorted(builtin_profiles())


def test_there_are_builtin_profiles_with_descriptions() -> None:
    profiles = builtin_profiles()
    assert "quickstart" in profiles
    assert all(description for description in profiles.values())


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profile_loads_and_every_agents_params_validate(name: str) -> None:
    loaded = load_profile(name)

    assert loaded.profile.name == name
    assert len(loaded.agent_classes) == len(loaded.profile.agents)
    for cls, mix in zip(loaded.agent_classes, loaded.profile.agents, strict=True):
        assert issubclass(cls, Agent)
        cls.Params.model_validate(mix.params)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profile_sim_settings_make_a_valid_simulator(name: str) -> None:
    config = _sim_config(load_profile(name).profile.sim)

    assert config.max_model_len <= config.num_kv_blocks * config.block_size


def test_agentload_profiles_lists_every_builtin_profile() -> None:
    result = run_cli("profiles")

    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert listed == set(BUILTIN)


# A length a description names: "45-second", "one-minute", "10 minutes", "20 s", "2 min".
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "five": 5, "ten": 10, "fifteen": 15}
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_LENGTH = re.compile(
    rf"\b(\d+(?:\.\d+)?|{'|'.join(_NUMBER_WORDS)})[- ]?({'|'.join(_UNIT_S)})s?\b", re.IGNORECASE
)


def lengths_named(description: str) -> list[float]:
    """The run lengths `description` names, in seconds."""
    return [
        float(_NUMBER_WORDS.get(number.lower(), number)) * _UNIT_S[unit.lower()]
        for number, unit in _LENGTH.findall(description)
    ]


def test_the_lengths_a_description_names_are_read() -> None:
    assert lengths_named("A one-minute mixed swarm") == [60.0]
    assert lengths_named("A 45-second swarm, then 2 min more, 20 s at most") == [45.0, 120.0, 20.0]
    assert lengths_named("16K shared prefix, 3-5 sub-agents of ~25 calls") == []


@pytest.mark.parametrize("name", BUILTIN)
def test_a_builtin_profiles_description_names_no_length_but_its_own(name: str) -> None:
    description = builtin_profiles()[name]
    duration = load_profile(name).profile.total_duration

    assert all(named == duration for named in lengths_named(description)), (
        f"{name}: {description!r} against a duration of {duration:g} s"
    )


def test_agentload_profiles_prints_no_length_a_profile_does_not_run() -> None:
    result = run_cli("profiles")

    assert result.returncode == 0, result.stderr
    for line in filter(str.strip, result.stdout.splitlines()):
        name, description = line.split(maxsplit=1)
        duration = load_profile(name).profile.total_duration
        assert all(named == duration for named in lengths_named(description)), line


# -- errors name the file, the field path and the fix -------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A broken profile, where its error is, and a word of the fix the message must give."""

    id: str
    text: str
    where: str
    fix: str


BAD = [
    Bad(
        "unknown-top-level-field",
        """
        arrival: {mode: closed, agents: 2}
        agents: [{kind: coding}]
        colour: blue
        """,
        "colour",
        "remove it",
    ),
    Bad(
        "bad-distribution",
        """
        arrival: {mode: closed, agents: 2}
        agents:
          - kind: coding
            params:
              turns: {lognormal: {median: 5}}
        """,
        "agents.0.params.turns",
        "p90",
    ),
    Bad(
        "closed-loop-without-agents",
        """
        arrival: {mode: closed}
        agents: [{kind: coding}]
        """,
        "arrival",
        "agents: N",
    ),
    Bad(
        "invalid-yaml",
        """
        arrival: {mode: closed, agents: 2
        agents: [{kind: coding}]
        """,
        "line 2",
        "YAML",
    ),
    Bad(
        "unknown-agent-kind",
        """
        arrival: {mode: closed, agents: 2}
        agents: [{kind: wizard}]
        """,
        "agents.0.kind",
        "coding",
    ),
    Bad(
        "unknown-slo",
        """
        arrival: {mode: closed, agents: 2}
        agents: [{kind: coding}]
        slos: {ttft_p97: 1s}
        """,
        "slos",
        "_p99",
    ),
]


def write_bad(tmp_path: Path, bad: Bad) -> Path:
    path = tmp_path / f"{bad.id}.yaml"
    path.write_text(textwrap.dedent(bad.text).lstrip())
    return path


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_profile_error_names_the_file_the_field_path_and_the_fix(bad: Bad, tmp_path: Path) -> None:
    path = write_bad(tmp_path, bad)

    with pytest.raises(ProfileError) as info:
        load_profile(str(path))

    message = str(info.value)
    assert path.name in message
    assert bad.where in message
    assert bad.fix in message


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_profile_error_is_a_usage_error_with_exit_code_2(bad: Bad, tmp_path: Path) -> None:
    path = write_bad(tmp_path, bad)

    with pytest.raises(UsageError) as info:
        load_profile(str(path))

    assert info.value.exit_code == 2


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_run_with_a_bad_profile_exits_2_with_one_stderr_line_and_no_traceback(
    bad: Bad, tmp_path: Path
) -> None:
    path = write_bad(tmp_path, bad)

    result = run_cli("run", str(path), "--quiet", "--out", str(tmp_path / "out"))

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert path.name in lines[0]
    assert bad.where in lines[0]


def test_missing_profile_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    with pytest.raises(ProfileError, match=r"nowhere\.yaml"):
        load_profile(str(path))


# -- custom agents from a Python file -----------------------------------------------------------

AGENT_FILE = """
from loadgen.agents import Agent, AgentParams, Distribution


class MyParams(AgentParams):
    system_prompt_tokens: int = 64
    turns: Distribution = Distribution.model_validate(1)
    steps_per_turn: Distribution = Distribution.model_validate(2)
    output_tokens: Distribution = Distribution.model_validate(16)
    tool_result_tokens: Distribution = Distribution.model_validate(20)
    tool_latency_s: Distribution = Distribution.model_validate(0.001)
    think_time_s: Distribution = Distribution.model_validate(0)


class MyAgent(Agent):
    kind = "mine"
    Params = MyParams
"""

AGENT_PROFILE = """
name: custom
time_scale: 0.001
arrival: {mode: closed, agents: 1}
agents:
  - kind: agents_file.py:MyAgent
    params: {user_tokens: 12}
"""


@pytest.fixture
def custom_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "agents_file.py").write_text(AGENT_FILE)
    (folder / "custom.yaml").write_text(AGENT_PROFILE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the agent file is found beside the profile, not in cwd
    return folder / "custom.yaml"


def test_custom_agent_file_is_loaded_relative_to_the_profiles_folder(
    custom_profile: Path,
) -> None:
    loaded = load_profile(str(custom_profile))

    (cls,) = loaded.agent_classes
    assert issubclass(cls, Agent)
    assert cls.kind == "mine"
    assert cls.Params.model_validate(loaded.profile.agents[0].params).system_prompt_tokens == 64


async def test_custom_agent_runs_a_session_with_its_own_defaults(
    custom_profile: Path, start_sim: StartSim, tmp_path: Path
) -> None:
    server = await start_sim()
    loaded = load_profile(str(custom_profile))

    stats, recorder = await run_sessions(loaded, server, tmp_path / "results")

    (session,) = recorder.sessions
    assert session.outcome == "completed"
    assert session.agent == "agents_file.py:MyAgent"
    assert session.steps == 2  # MyParams: one turn of two steps
    assert recorder.steps[0].prompt_tokens is not None
    assert recorder.steps[0].prompt_tokens < 200  # a 64-token system prompt, not the default 2000
    assert stats.sessions.completed == 1


def test_custom_agent_file_that_does_not_exist_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("arrival: {mode: closed, agents: 1}\nagents: [{kind: missing.py:MyAgent}]\n")

    with pytest.raises(ProfileError) as info:
        load_profile(str(path))

    assert "agents.0.kind" in str(info.value)
    assert "missing.py" in str(info.value)


# -- command-line overrides ---------------------------------------------------------------------


def cli_args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(
        **{"agents": None, "rate": None, "duration": None, "seed": None, **given}
    )


def test_agents_override_makes_a_closed_loop_of_n_agents() -> None:
    profile = load_profile("support-chat", _overrides(cli_args(agents=7))).profile

    assert (profile.arrival.mode, profile.arrival.agents) == ("closed", 7)


def test_rate_override_makes_an_open_loop_at_that_rate() -> None:
    profile = load_profile("quickstart", _overrides(cli_args(rate=2.5))).profile

    assert (profile.arrival.mode, profile.arrival.rate) == ("open", 2.5)


def test_duration_override_sets_the_length_and_drops_the_stages() -> None:
    assert load_profile("coding-agent").profile.stages  # the override has something to drop

    profile = load_profile("coding-agent", _overrides(cli_args(duration=3.0))).profile

    assert profile.stages == []
    assert profile.total_duration == 3.0


def test_seed_override_replaces_the_profiles_seed() -> None:
    profile = load_profile("ci-smoke", _overrides(cli_args(seed=1234))).profile

    assert profile.seed == 1234


def test_agents_and_rate_together_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--agents"):
        _overrides(cli_args(agents=2, rate=1.0))


def test_cli_run_applies_agents_and_duration_overrides(tmp_path: Path) -> None:
    out = tmp_path / "run"

    result = run_cli(
        "run", "ci-smoke", "--agents", "2", "--duration", "3s", "--seed", "7", "--quiet",
        "--out", str(out),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert 3.0 <= summary["duration_s"] < 15.0
    sessions = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    slots = {s["session_id"].rsplit("-s", 1)[0] for s in sessions}
    assert len(slots) == 2  # two long-lived agents, each running sessions back to back


def test_cli_run_applies_the_rate_override_as_an_open_loop(tmp_path: Path) -> None:
    out = tmp_path / "run"

    result = run_cli(
        "run", "ci-smoke", "--rate", "4", "--duration", "3s", "--quiet", "--out", str(out)
    )

    assert result.returncode == 0, result.stderr
    sessions = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    assert len(sessions) > 2
    # Open loop: each arrival is a fresh agent running one session.
    assert all(s["session_id"].endswith("-s0") for s in sessions)
