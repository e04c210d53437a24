"""What the shipped profiles ask of their own simulated target: its window takes their agents'
contexts, and it answers their sessions (through the real CLI, `agentload run`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadgen.profile.loader import builtin_profiles, load_profile
from loadgen.sim.config import profile_sim_config

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def run(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTLOAD, "run", *args, "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the simulator takes what the profile's agents send ------------------------------------


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_a_profiles_simulator_takes_its_agents_whole_context_budget(name: str) -> None:
    loaded = load_profile(name)
    sim = profile_sim_config(loaded.profile.sim)
    for cls, mix in zip(loaded.agent_classes, loaded.profile.agents, strict=True):
        params = cls.Params.model_validate(mix.params)
        # A history is compacted before it passes the agent's budget; the summary request
        # then carries at most the budget: the simulator's window must take it, and its KV
        # cache one such sequence (vLLM refuses to start otherwise).
        assert sim.max_model_len >= params.context_budget_tokens, (name, mix.label)
        assert sim.num_kv_blocks * sim.block_size >= sim.max_model_len


def test_the_coding_profile_runs_on_a_preset_made_for_200k_contexts() -> None:
    sim = profile_sim_config(load_profile("coding-agent").profile.sim)

    assert sim.max_model_len >= 200_000
    # Room for ~10 whole coding contexts at once, not one.
    assert sim.num_kv_blocks * sim.block_size >= 10 * 200_000


# -- rag: its simulated target answers nearly every session ----------------------------------


@pytest.mark.slow
def test_the_rag_profile_gets_nearly_every_session_answered_by_its_simulator(
    tmp_path: Path,
) -> None:
    """Before: at 4 sessions a second, 82 of 172 sessions got an answer. Sessions that started
    in the run's last 20 s may still be waiting for theirs (and are not counted)."""
    out = tmp_path / "run"
    done = run("rag", "--duration", "40s", out=out)
    assert done.returncode == 0, done.stderr

    sessions = records(out / "sessions.jsonl")
    answered = {s["session_id"] for s in records(out / "steps.jsonl") if s["ok"]}
    end = max(s["started_unix"] + s["duration_s"] for s in sessions)
    early = [s["session_id"] for s in sessions if s["started_unix"] < end - 20]
    assert len(early) >= 10
    share = sum(sid in answered for sid in early) / len(early)
    assert share >= 0.9, f"{share:.0%} of {len(early)} sessions answered"
