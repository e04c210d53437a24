"""docs/ci.md and the GitHub Actions example stay true: every gate they show parses, every
metric they name exists, and the workflow runs, compares, reports and uploads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from loadgen.gates import METRICS, parse_gate
from loadgen.report import COMPARE_METRICS
from loadgen.report.html.ceiling import parse_ceiling

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _workflow_commands() -> str:
    workflow = yaml.safe_load((DOCS / "github-actions-example.yml").read_text())
    (job,) = workflow["jobs"].values()
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_the_workflow_is_valid_yaml_that_runs_compares_reports_and_uploads() -> None:
    workflow = yaml.safe_load((DOCS / "github-actions-example.yml").read_text())
    (job,) = workflow["jobs"].values()
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    commands = _workflow_commands()
    for needle in (
        "agentload sim --preset fast --port 8000 ",
        "agentload run ci-smoke --target",
        "--junit junit.xml --out results",
        "agentload compare baseline/ results/",
        "agentload report results/",
    ):
        assert needle in commands


def test_every_gate_shown_in_the_docs_parses() -> None:
    shown = re.findall(r"--gate '([^']+)'", _workflow_commands())
    ci = (DOCS / "ci.md").read_text()
    shown += re.findall(r'^\s+- "([^"]+)"', ci, flags=re.MULTILINE)
    shown += re.findall(r"--gate '([^']+)'", ci)
    assert len(shown) >= 10
    for text in shown:
        parse_gate(text)


def test_every_metric_named_in_the_docs_exists() -> None:
    ci = (DOCS / "ci.md").read_text()
    table = ci[ci.index("### Metrics") : ci.index("### JUnit XML")]
    for name in re.findall(r"^\| `([a-z_.]+)`", table, flags=re.MULTILINE):
        assert name in METRICS or any(m.startswith(name) for m in METRICS), name
    for name in re.findall(r"--metric (\w+)", ci):
        assert name in COMPARE_METRICS or name == "NAME", name


def test_the_documented_ceiling_example_is_accepted() -> None:
    ci = (DOCS / "ci.md").read_text()
    block = ci[ci.index("### ceiling.json") :]
    example = block[
        block.index("```json") + len("```json") : block.index("```", block.index("```json") + 7)
    ]
    ceiling = parse_ceiling(yaml.safe_load(example))
    assert ceiling.ceiling_load == 64
    assert [level.load for level in ceiling.levels] == [8, 16]
