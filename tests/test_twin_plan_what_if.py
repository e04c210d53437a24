"""`agentload plan --what-if`: the plan made again with one thing varied, and the change shown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.agents.distributions import Distribution
from loadgen.cli.main import main
from loadgen.errors import UsageError
from loadgen.orchestration.what_if import (
    WhatIf,
    change_from,
    format_what_if,
    parse_what_if,
    profile_variant,
    scale_distribution,
)
from loadgen.profile.loader import load_profile, profile_from_mapping
from tests.test_ceiling import SLO
from tests.test_twin_plan import AGENTLOAD, AGENTS, ROOT, _files


def _row(variant: str, **figures: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "variant": variant,
        "per_replica_agents": 5.0,
        "replicas": 3,
        "output_tokens_per_s": 1000.0,
        "sessions_per_min": 500.0,
        "cost_per_million_output_tokens": 4.0,
        "cost_per_session": 0.001,
        "first_to_run_out": "queue",
        "holds": True,
        "confirmed": True,
    }
    return {**row, **figures}


def test_each_value_of_a_what_if_is_a_variant_of_its_own() -> None:
    assert parse_what_if(["output_scale=2,0.5", "router=session", "output_scale=2"]) == [
        WhatIf("output_scale", "2"),
        WhatIf("output_scale", "0.5"),
        WhatIf("router", "session"),
    ]
    assert WhatIf("router", "prefix-load").folder == "what-if-router-prefix-load"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("temperature=2", "--what-if 'temperature=2': unknown kind 'temperature'; use KIND="),
        ("output_scale", "--what-if 'output_scale': give KIND=VALUE"),
        ("output_scale=0", "--what-if output_scale=0: an output scale is a number above 0"),
        ("output_scale=lots", "--what-if output_scale=lots: an output scale is a number"),
        ("context_budget=100", "--what-if context_budget=100: a context budget is a whole"),
        ("reasoning_effort=extreme", "--what-if reasoning_effort=extreme: a reasoning effort"),
        ("router=fastest", "--what-if router=fastest: a router is one of round-robin"),
    ],
)
def test_a_bad_what_if_is_one_line_and_exit_2_before_anything_runs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    message: str,
) -> None:
    twin, profile = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = main(["plan", str(profile), "--twin", str(twin), "--slo", SLO,
                 "--agents", "12", "--what-if", spec])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("results*")), "nothing runs after a usage error"


def test_a_variant_that_is_no_valid_profile_is_a_usage_error(tmp_path: Path) -> None:
    # The completions API carries no reasoning fields: the variant names the fix.
    path = tmp_path / "completions.yaml"
    path.write_text("arrival: {mode: closed, agents: 1}\n"
                    "agents: [{kind: support, params: {api: completions}}]\n")  # fmt: skip
    with pytest.raises(UsageError, match=r"^--what-if reasoning_effort=high: .*completions"):
        profile_variant(load_profile(str(path)), WhatIf("reasoning_effort", "high"))


def test_output_scale_multiplies_every_value_of_a_reply_length() -> None:
    archetype = Distribution.model_validate(
        {"lognormal": {"median": 250, "p90": 900}, "low": 1, "high": 4096}
    )
    assert scale_distribution(archetype, 2) == {
        "lognormal": {"median": 500, "p90": 1800},
        "low": 2,
        "high": 8192,
    }
    assert scale_distribution(Distribution.model_validate(48), 2) == {"constant": 96}
    assert scale_distribution(Distribution.model_validate({"choice": {10: 1}}), 3) == {
        "choice": {30: 1}
    }


def test_output_scale_reaches_agents_that_use_their_archetypes_reply_length() -> None:
    # coding-agent sets no output_tokens: the coding archetype's own is scaled.
    loaded = load_profile("coding-agent")
    default = loaded.agent_classes[0].Params().output_tokens
    variant = profile_variant(loaded, WhatIf("output_scale", "2"))
    scaled = profile_from_mapping(variant, "variant", Path()).profile.agents[0].params
    assert Distribution.model_validate(scaled["output_tokens"]).lognormal == {
        k: 2 * v for k, v in (default.lognormal or {}).items()
    }


def test_context_budget_sets_every_agents_budget_and_nothing_else() -> None:
    loaded = load_profile("quickstart")
    variant = profile_from_mapping(
        profile_variant(loaded, WhatIf("context_budget", "32768")), "variant", Path()
    ).profile
    for before, after in zip(loaded.profile.agents, variant.agents, strict=True):
        assert after.params == {**before.params, "context_budget_tokens": 32768}
    assert variant.model_copy(update={"agents": loaded.profile.agents}) == loaded.profile


def test_reasoning_effort_none_drops_the_thinking_budget_with_the_thinking() -> None:
    variant = profile_variant(load_profile("reasoning-agents"), WhatIf("reasoning_effort", "none"))
    agents = profile_from_mapping(variant, "variant", Path()).profile.agents
    assert [(a.reasoning_effort, a.thinking_budget) for a in agents] == [({"none": 1.0}, None)] * 3


def test_reasoning_effort_replaces_each_entrys_own() -> None:
    variant = profile_variant(load_profile("reasoning-agents"), WhatIf("reasoning_effort", "low"))
    agents = profile_from_mapping(variant, "variant", Path()).profile.agents
    assert [a.reasoning_effort for a in agents] == [{"low": 1.0}] * 3
    assert agents[0].thinking_budget == 8192  # a budget still caps the thinking it asks for


def test_the_change_names_replicas_then_each_figure_in_percent() -> None:
    base = _row("baseline")
    bigger = _row("output_scale=2", per_replica_agents=4.0, replicas=4, sessions_per_min=250.0,
                  cost_per_session=0.0027)  # fmt: skip
    assert change_from(base, bigger) == "+1 replica, ceiling -20%, sess/min -50%, $/session +170%"
    assert change_from(base, _row("same")) == "no change"
    assert change_from(base, _row("none", per_replica_agents=None, replicas=None)) == (
        "holds no load"
    )


def test_the_comparison_table_has_the_baseline_then_each_variant() -> None:
    doc = {
        "agents": 12,
        "per_replica": {"agents": 5, "first_to_run_out": {"server_resource": "queue"}},
        "replicas": 3,
        "answer": {"output_tokens_per_s": 1000.0, "sessions_per_min": 500.0, "holds": True,
                   "cost": {"per_million_output_tokens": 4.0, "per_session": 0.001}},
        "what_if": [
            {**_row("output_scale=2", sessions_per_min=250.0), "change": "sess/min -50%",
             "ceiling": "searched again"},
            {**_row("router=session", holds=False), "change": "no change",
             "ceiling": "the baseline's: one replica has no router"},
        ],
    }  # fmt: skip
    lines = format_what_if(doc).splitlines()
    assert lines[1].split() == ["variant", "ceiling", "replicas", "out", "tok/s",
                                "sess/min", "$/M", "tok", "$/session", "first", "out", "held",
                                "change"]  # fmt: skip
    assert lines[2].split() == ["baseline", "5", "3", "1000", "500.0", "$4.00", "$0.001",
                                "queue", "yes"]  # fmt: skip
    assert lines[3].split()[:5] == ["output_scale=2", "5", "3", "1000", "250.0"]
    assert lines[3].endswith("sess/min -50%")
    assert lines[4].split()[:2] == ["router=session", "5*"]  # the baseline's ceiling
    assert " NO  no change" in lines[4]
    assert lines[5].startswith("* ceiling the baseline's: one replica has no router")


@pytest.fixture(scope="module")
def what_if_plan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """tests/test_twin_plan.py's plan, with replies twice as long and with the session router
    as what-ifs: the plan's folder and what it printed."""
    tmp_path = tmp_path_factory.mktemp("what-if")
    twin, profile = _files(tmp_path)
    out = tmp_path / "plan"
    result = subprocess.run(
        [*AGENTLOAD, "plan", str(profile), "--twin", str(twin), "--slo", SLO,
         "--agents", str(AGENTS), "--gpu-hour-cost", "2.5",
         "--warmup", "0.5s", "--window", "1.5s", "--resolution", "0.25",
         "--max-duration", "60s", "--verify-duration", "4s", "--quiet", "--out", str(out),
         "--what-if", "output_scale=2", "--what-if", "router=session"],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return out, result.stdout


def _what_if(out: Path, name: str) -> dict[str, Any]:
    doc = json.loads((out / "plan.json").read_text())
    found: dict[str, Any] = next(e for e in doc["what_if"] if e["variant"] == name)
    return found


@pytest.mark.slow
def test_replies_twice_as_long_halve_sessions_and_raise_the_cost_per_session(
    what_if_plan: tuple[Path, str],
) -> None:
    out, _ = what_if_plan
    base = json.loads((out / "plan.json").read_text())["answer"]
    longer = _what_if(out, "output_scale=2")
    # 4 sequences a replica either way: the same agents stream the same tokens/s, each
    # session twice as long (2 replies of 96 tokens, not 48).
    assert longer["replicas"] == 3
    assert longer["sessions_per_min"] < 0.75 * base["sessions_per_min"], (base, longer)
    assert longer["cost_per_session"] > 1.3 * base["cost"]["per_session"], (base, longer)
    assert "sess/min -" in longer["change"]
    assert "$/session +" in longer["change"]


@pytest.mark.slow
def test_an_output_variant_is_a_profile_copy_planned_again_in_its_own_folder(
    what_if_plan: tuple[Path, str],
) -> None:
    out, _ = what_if_plan
    folder = out / "what-if-output_scale-2"
    copy = yaml.safe_load((folder / "plan-test.yaml").read_text())
    assert copy["agents"][0]["params"]["output_tokens"] == {"constant": 96.0}
    assert (folder / "ceiling-1-replica" / "ceiling.json").is_file()
    assert (folder / "plan.json").is_file()
    assert _what_if(out, "output_scale=2")["ceiling"] == "searched again"


@pytest.mark.slow
def test_a_router_variant_reuses_the_baseline_ceiling_and_reruns_only_the_verification(
    what_if_plan: tuple[Path, str],
) -> None:
    out, _ = what_if_plan
    base = json.loads((out / "plan.json").read_text())
    folder = out / "what-if-router-session"
    variant = json.loads((folder / "plan.json").read_text())
    assert not (folder / "ceiling-1-replica").exists()
    assert variant["per_replica"] == base["per_replica"]
    assert variant["sized_replicas"] == base["sized_replicas"]
    assert {check["router"] for check in variant["verification"]} == {"session"}
    assert _what_if(out, "router=session")["ceiling"].startswith("the baseline's")


@pytest.mark.slow
def test_the_answer_ends_with_the_comparison_table(what_if_plan: tuple[Path, str]) -> None:
    _, printed = what_if_plan
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("what if (12 agents"))
    assert [line.split()[0] for line in lines[start + 2 : start + 5]] == [
        "baseline",
        "output_scale=2",
        "router=session",
    ]
    assert lines[start + 5].startswith("* ceiling the baseline's")
    assert lines[-1].startswith("results: ")
