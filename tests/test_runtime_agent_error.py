"""A custom agent whose code raises: its session ends failed as agent_error, never completed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

AGENTLOAD = [sys.executable, "-m", "loadgen"]

BUGGY_AGENT = '''\
from loadgen.agents import Agent


class BuggyAgent(Agent):
    """Plans its first step, then trips over its own bug."""

    kind = "buggy"

    def plan_step(self):
        if self.conversation.tokens > 0 and len(self.conversation) > 2:
            raise KeyError("tool_registry")
        return super().plan_step()
'''

PROFILE = """\
name: buggy
duration: 4s
time_scale: 0.01
arrival: {mode: closed, agents: 3}
agents:
  - kind: buggy_agent.py:BuggyAgent
    params: {output_tokens: 16, turns: 2, steps_per_turn: 2}
sim: {preset: fast}
"""


def test_a_raising_custom_agent_ends_its_sessions_failed_with_agent_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "buggy_agent.py").write_text(BUGGY_AGENT)
    (tmp_path / "buggy.yaml").write_text(PROFILE)
    out = tmp_path / "out"
    result = subprocess.run(
        [*AGENTLOAD, "run", str(tmp_path / "buggy.yaml"), "--quiet", "--out", str(out),
         "--storm-stop", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    sessions = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    assert summary["state_failures"]["agent_error"] > 0
    assert summary["sessions"]["completed"] == 0
    ended = [s for s in sessions if s["outcome"] != "aborted"]
    assert ended
    assert all(s["outcome"] == "failed" for s in ended)
    assert all("agent_error: KeyError" in s["error"] for s in ended)
    assert "tool_registry" in summary["failure_reasons"]["agent_error"][0]["message"]
    # Logged once, with its traceback, however many sessions it broke.
    assert result.stderr.count("Traceback (most recent call last)") == 1
    assert "in plan_step" in result.stderr
