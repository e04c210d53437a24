"""The LiteLLM proxy as a real router: one model group of three simulator deployments, each
with its own KV cache and Responses store, and what LiteLLM's routing does to agents' state.

LiteLLM (pinned in tests/real_servers.py) routes by `simple-shuffle` unless told otherwise:
a session's steps land on any deployment. Its `session_affinity` pre-call check pins a
session (the `x-litellm-session-id` header) to the deployment it first reached, and
`responses_api_deployment_check` sends a `previous_response_id` to the deployment that
stored it. agentload names the deployment that served each request from LiteLLM's response
headers, so `by_replica` and the steps show where each session went.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from real_servers import LiteLLMProxy, SimProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = 3
# Each deployment's KV cache holds about a third of the coding agents' working set, as in
# tests/test_sim_fleet_runs.py: a deployment that sees every session evicts them.
KV_CONSTRAINED = ("--num-kv-blocks", "9216", "--max-model-len", "65536")
SESSION_HEADER = "x-litellm-session-id"  # LiteLLM's own, read by its session_affinity check

CODING: dict[str, Any] = {
    "name": "litellm-coding",
    "seed": 3,
    "time_scale": 0.05,
    "arrival": {"mode": "closed", "agents": 6},
    "session_header": SESSION_HEADER,
    "agents": [
        {
            "kind": "coding",
            "params": {
                "system_prompt_tokens": 2000,
                "session_context_tokens": {"lognormal": {"median": 6000, "p90": 12000}},
                "turns": 1,
                "first_turn_steps": 400,
                "context_budget_tokens": 60000,
                "compact_keep_tokens": 10000,
                "tool_result_tokens": {"lognormal": {"median": 400, "p90": 1500}, "high": 6000},
                "output_tokens": {"lognormal": {"median": 200, "p90": 500}, "low": 1, "high": 1000},
            },
        }
    ],
}


class Gateway:
    """Three simulator deployments behind one LiteLLM model group, routed as configured."""

    def __init__(self, stack: ExitStack, router_settings: Mapping[str, Any]) -> None:
        self.sims = [
            stack.enter_context(SimProcess(extra_args=KV_CONSTRAINED)) for _ in range(DEPLOYMENTS)
        ]
        self.proxy = stack.enter_context(
            LiteLLMProxy(
                [(s.base_url, s.model) for s in self.sims], router_settings=router_settings
            )
        )

    def run(self, spec: Mapping[str, Any], out: Path, duration: str) -> dict[str, Any]:
        """`agentload run` of `spec` through the proxy; its summary.json."""
        profile = out.with_suffix(".yaml")
        profile.write_text(yaml.safe_dump(dict(spec)))
        result = subprocess.run(
            [sys.executable, "-m", "loadgen", "run", str(profile), "--target",
             self.proxy.base_url, "--model", self.proxy.model, "--duration", duration,
             "--quiet", "--out", str(out)],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode in (0, 1), result.stderr
        summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
        return summary

    def lookups(self) -> dict[str, float]:
        """previous_response_id lookups on the deployments, by their own count: found or not."""
        total = {"found": 0.0, "not_found": 0.0}
        for sim in self.sims:
            url = sim.base_url.removesuffix("/v1") + "/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "agentload_sim_response_lookups_total":
                        total[sample.labels["result"]] += sample.value
        return total


@pytest.fixture
def gateway() -> Iterator[Any]:
    with ExitStack() as stack:
        yield lambda settings: Gateway(stack, settings)


def steps(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


def deployments_per_session(out: Path) -> dict[str, set[str]]:
    where: dict[str, set[str]] = defaultdict(set)
    for step in steps(out):
        if step.get("replica"):
            where[step["session_id"]].add(step["replica"])
    return where


def hit_ratio(summary: dict[str, Any]) -> float:
    return float(summary["tokens"]["cached"] / summary["tokens"]["prompt"])


def assistant_memory() -> dict[str, Any]:
    """profiles/assistant-memory.yaml (Responses chains), its waits shortened for a test."""
    spec: dict[str, Any] = yaml.safe_load((ROOT / "profiles/assistant-memory.yaml").read_text())
    spec.pop("sim", None)
    spec.pop("slos", None)
    spec["time_scale"] = 0.03
    spec["session_header"] = SESSION_HEADER
    return spec


# -- chat: prefix-cache hits ---------------------------------------------------------------------


def test_simple_shuffle_spreads_each_session_over_the_deployments(
    gateway: Any, tmp_path: Path
) -> None:
    summary = gateway({}).run(CODING, tmp_path / "shuffle", "30s")
    assert summary["requests"]["failed"] == 0
    # Every deployment is named by LiteLLM's headers, and served a share.
    assert len(summary["by_replica"]) == DEPLOYMENTS, summary["by_replica"]
    spread = deployments_per_session(tmp_path / "shuffle")
    assert sum(len(seen) > 1 for seen in spread.values()) >= len(spread) / 2, spread


def test_session_affinity_pins_each_session_to_one_deployment_and_keeps_its_prefix(
    gateway: Any, tmp_path: Path
) -> None:
    affinity = {"optional_pre_call_checks": ["session_affinity"]}
    pinned = gateway(affinity).run(CODING, tmp_path / "affinity", "30s")
    shuffled = gateway({}).run(CODING, tmp_path / "shuffle", "30s")
    assert pinned["requests"]["failed"] == shuffled["requests"]["failed"] == 0
    spread = deployments_per_session(tmp_path / "affinity")
    assert spread, "no step named its deployment"
    assert all(len(seen) == 1 for seen in spread.values()), spread
    # Measured on this machine: 0.93 pinned against 0.71 shuffled (6 agents, 30 s).
    assert hit_ratio(pinned) >= 0.85, pinned["tokens"]
    assert hit_ratio(shuffled) <= hit_ratio(pinned) - 0.1, (shuffled["tokens"], pinned["tokens"])


# -- Responses: server-held state ----------------------------------------------------------------


def test_simple_shuffle_loses_the_chains_that_land_elsewhere_counted_exactly(
    gateway: Any, tmp_path: Path
) -> None:
    arm = gateway({})
    summary = arm.run(assistant_memory(), tmp_path / "shuffle", "20s")
    lost = summary["state_failures"]["server_state_lost"]
    lookups = arm.lookups()
    # Counted exactly: each lost request is a lookup a deployment could not answer, and so
    # was the start-up probe's chained request when it landed elsewhere (no verdict then:
    # the server's state is left "untested" for the sessions to find out).
    probe_missed = summary["target"]["server_state"] == "untested"
    assert lost + probe_missed == lookups["not_found"], (summary["target"], lookups)
    assert lost > 0
    # A chain's next request lands on another of the three deployments 2 times in 3.
    share = lost / (lookups["found"] + lookups["not_found"])
    assert 0.45 <= share <= 0.85, lookups


def test_the_responses_deployment_check_sends_every_chain_home(
    gateway: Any, tmp_path: Path
) -> None:
    arm = gateway({"optional_pre_call_checks": ["responses_api_deployment_check"]})
    summary = arm.run(assistant_memory(), tmp_path / "home", "20s")
    assert summary["requests"]["ok"] > 50
    assert summary["state_failures"]["server_state_lost"] == 0
    lookups = arm.lookups()
    assert lookups["not_found"] == 0
    assert lookups["found"] > 20  # the chains were there to lose


# -- reasoning fields ------------------------------------------------------------------------------


def test_a_gateway_refusing_the_reasoning_fields_stops_the_run_at_once_in_its_words(
    gateway: Any, tmp_path: Path
) -> None:
    # LiteLLM does not know our openai/ deployments reason, and refuses reasoning_effort
    # unless allowed_openai_params (or drop_params) says otherwise.
    arm = gateway({})
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "reasoning-agents", "--target",
         arm.proxy.base_url, "--model", arm.proxy.model, "--duration", "10s", "--quiet",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "reasoning_effort" in lines[0], lines[0]
    assert "HTTP 400" in lines[0], lines[0]
    assert "allowed_openai_params" in lines[0]
