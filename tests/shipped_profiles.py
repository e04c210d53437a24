"""Running every shipped profile through the real CLI against a real server, and judging it.

Used by the test_real_*_profiles files: each runs all of them against one kind of server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadgen.profile.loader import builtin_profiles

PROFILES = sorted(builtin_profiles())
PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"

# Failures a server's own reply says it caused: it refused a prompt as too long (its words
# are in the message), it reported fewer cached tokens than the session resent (its usage
# says so), its model emitted tool-call arguments that do not parse (its output).
SERVER_CAUSED = frozenset({"context_overflow", "cache_miss", "malformed_tool_call"})


@dataclass
class ProfileRun:
    """What one `agentload run` of a shipped profile left behind."""

    name: str
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any]
    steps: list[dict[str, Any]]

    def failures(self) -> dict[str, int]:
        return {k: n for k, n in self.summary["state_failures"].items() if n}


# The coding archetypes' shared prefix is 16K of their own tokens (Claude Code's system
# prompt and tool definitions, as published traces show it), 32K of the tiny test models':
# a CPU server's whole 32K window, which no coding agent fits and whose prefill alone takes
# it ~10 s. A RAG question (a 4K system prompt and 4-8 chunks of ~600 tokens) is ~16K of the
# tiny models' tokens: four slots prefilling such prompts side by side answered none within
# 64 s on CI's two busy cores. Their profiles run here with prompts such a server holds and
# answers in seconds; every other shape of the archetype (tools, steps, chunks per question,
# compaction) stays.
CPU_SERVER_PARAMS: dict[str, dict[str, Any]] = {
    "coding": {"system_prompt_tokens": 4000},
    "coding-128k": {"system_prompt_tokens": 4000},
    "rag": {
        "system_prompt_tokens": 1000,
        "chunk_tokens": {"lognormal": {"median": 150, "p90": 300}},
    },
}
# Agents asking a reasoning model to think leave room for it in max_tokens (8-32K tokens);
# the tiny test models do not reason and never stop early, so they would fill it all, for
# minutes on a CPU. On these servers such agents ask for effort `none`: the field is still
# sent (and must be taken), with no room to think. (vLLM's thinking_token_budget is left
# out with it: transformers serve refuses it, HTTP 422.)


def cpu_server_profile(name: str, out: Path) -> str:
    """The profile to run on a CPU server: NAME itself, or a copy beside `out` whose
    coding and RAG agents send prompts such a server answers in seconds and whose agents do
    not think."""
    spec = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    scaled = False
    for mix in spec["agents"]:
        params = mix.setdefault("params", {})
        for key, value in CPU_SERVER_PARAMS.get(mix["kind"], {}).items():
            if key not in params:
                params[key] = value
                scaled = True
        if mix.get("reasoning_effort", "none") != "none":
            mix["reasoning_effort"] = "none"
            mix.pop("thinking_budget", None)
            scaled = True
    if not scaled:
        return name
    copy = out.parent / f"{name}.cpu-server.yaml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(copy)


def run_profile(
    name: str,
    target: str,
    model: str,
    out: Path,
    *,
    duration: str = "8s",
    agents: int = 3,
    before_attempt: Callable[[], None] | None = None,
) -> ProfileRun:
    """`agentload run NAME` against `target`, scaled to a CPU server: a few agents (or one
    session a second for open-loop profiles) for `duration`, and a coding agent's prefix
    that fits its window (cpu_server_profile)."""
    spec = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    profile = cpu_server_profile(name, out)
    load = ["--agents", str(agents)]
    if spec["arrival"]["mode"] == "open":
        # Sessions start one a second; a CPU server needs a while to finish the first ones.
        load = ["--rate", "1"]
        duration = f"{2 * float(duration.removesuffix('s')):g}s"
    for attempt in range(2):
        if before_attempt is not None:  # e.g. until the server is idle again
            before_attempt()
        result = subprocess.run(
            [sys.executable, "-m", "loadgen", "run", profile, "--target", target, "--model", model,
             "--duration", duration, *load, "--quiet", "--out", str(out)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        # A CPU server busy with the rest of the suite may not finish one long first request
        # (a coding agent's forced output, a RAG prompt's prefill) within the window: that is
        # no verdict; once more, four times as long (CI's 2 cores, shared with another CPU
        # server's test, once finished no rag request in 8 s nor in 16 s). Nor is a start-up
        # request that waited 30 s for a slot: through LiteLLM, the previous profile's
        # streams go on generating on llama-server after agentload left (the proxy does not
        # cancel upstream), and hold its slots a while.
        busy = ("measured no request at all", "did not answer a first request")
        if attempt or not any(words in result.stderr for words in busy):
            break
        duration = f"{4 * float(duration.removesuffix('s')):g}s"
    assert result.returncode in (0, 1), f"{name}: exit {result.returncode}\n{result.stderr}"
    summary = json.loads((out / "summary.json").read_text())
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    return ProfileRun(name, result.returncode, result.stdout, result.stderr, summary, steps)


def start_run(profile: str | Path, target: str, out: Path, *flags: str) -> subprocess.Popen[str]:
    """`agentload run PROFILE --target TARGET` started in the background (--quiet)."""
    return subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", str(profile), "--target", target, "--quiet",
         "--out", str(out), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish_run(proc: subprocess.Popen[str], out: Path, codes: tuple[int, ...] = (0, 1)) -> Any:
    """Wait for a run started by start_run; its summary.json."""
    try:
        _stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()  # not left running into the tests after this one
        proc.communicate()
        raise
    assert proc.returncode in codes, stderr
    return json.loads((out / "summary.json").read_text())


def assert_only_server_caused(run: ProfileRun) -> None:
    """Every failure of the run is one the server's own reply shows; the run measured work."""
    summary = run.summary
    why = json.dumps(summary.get("failure_reasons"), indent=1)
    assert "run_failed" not in summary, f"{run.name}: {summary['run_failed']}"
    assert summary["requests"]["ok"] > 0, f"{run.name}: nothing succeeded\n{why}"
    invented = {k: n for k, n in run.failures().items() if k not in SERVER_CAUSED}
    # The failing steps whole (timings, tokens, replica, error): CI once saw one truncated
    # stream through LiteLLM that no local rerun showed again.
    evidence = "\n".join(
        json.dumps(step) for step in run.steps if set(step["failures"]) & set(invented)
    )
    assert not invented, (
        f"{run.name}: failures the server did not cause: {invented}\n{why}\n{evidence[:4000]}"
    )
    for step in run.steps:
        for kind in step["failures"]:
            if kind == "context_overflow":
                # The server's refusal, in its words (or the agent's own window, said so).
                error = step.get("error") or ""
                assert step["http_status"] == 400 or "agent's own" in error, step
                assert "context" in error.lower(), step
            elif kind == "cache_miss":
                assert step["cached_tokens"] is not None, step  # the server's own count
    assert "Traceback" not in run.stderr, run.stderr
