"""The Fleet dashboard and the reasoning panels, read statically and evaluated by promtool.

`promtool test rules` evaluates the shipped queries over series written here in the label
shapes real fleets have: the simulated fleet's replica and engine labels, vLLM's engine label
alone (data-parallel engines, or one engine per server), and servers told apart only by
their Prometheus instance (SGLang, llama.cpp). tests/test_dashboards_fleet_live.py runs every
query against a real Prometheus scraping a simulated fleet under load.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.sim import PRESETS, SimConfig
from loadgen.sim.config import METRICS_DIALECTS
from loadgen.sim.fleet import Fleet
from tests.test_observe_prometheus_live import binary, substituted

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "dashboards" / "grafana" / "dashboards"


def _dashboard(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SHIPPED / f"{stem}.json").read_text())
    return data


def _panel(stem: str, title: str) -> dict[str, Any]:
    (panel,) = [p for p in _dashboard(stem)["panels"] if p["title"] == title]
    return panel


def _expr(stem: str, title: str, ref: str = "A") -> str:
    """A shipped query, with Grafana's variables filled as "All" and a 5-minute window."""
    (target,) = [t for t in _panel(stem, title)["targets"] if t["refId"] == ref]
    return substituted(target["expr"], "5m")


FLEET = [p["title"] for p in _dashboard("fleet")["panels"]]
# The panels that read the replicas' own engine metrics, one line per replica.
PER_REPLICA = [
    "Running requests per replica",
    "Waiting requests per replica",
    "KV-cache usage per replica",
    "Prefix-cache hit ratio per replica (server)",
    "Generation tokens per second per replica",
    "Load relative to the mean replica",
]


def test_fleet_dashboard_shows_what_issue_15_asks_for() -> None:
    # Per-replica load, queue, KV use, cache hits, imbalance and affinity breaks, from the
    # replicas' own metrics and from agentload's view of them.
    assert set(PER_REPLICA) <= set(FLEET)
    assert {
        "Router decisions by reason (simulated fleet)",
        "Affinity breaks by replica",
        "Replicas in service and removals",
        "Requests per second by replica",
        "Replica imbalance (busiest / mean)",
        "Prefix-cache hit ratio by replica",
        "State failures by replica",
    } <= set(FLEET)
    assert _dashboard("fleet")["uid"] == "agentload-fleet"


@pytest.mark.parametrize("title", PER_REPLICA)
def test_per_replica_panels_key_each_series_by_replica_engine_or_instance(title: str) -> None:
    (target,) = _panel("fleet", title)["targets"]
    assert target["legendFormat"] == "{{replica}}"
    assert '"replica", "engine", "instance")' in target["expr"]
    assert "by (replica)" in target["expr"]


def test_affinity_breaks_put_agentloads_lost_state_beside_the_fleets_own_count() -> None:
    exprs = [t["expr"] for t in _panel("fleet", "Affinity breaks by replica")["targets"]]
    assert 'kind=~"cache_miss|server_state_lost"' in exprs[0]
    assert "agentload_replica_state_failures_total" in exprs[0]
    assert (
        'agentload_sim_response_lookups_total{instance=~"$target", result="not_found"}'
        in (exprs[1])
    )


def _families(fleet: Fleet) -> set[str]:
    registries = [r.context.metrics.registry for r in fleet.replicas]
    return {
        family.name
        for registry in [*registries, *([fleet.metrics.registry] if fleet.metrics else [])]
        for family in registry.collect()
    }


def test_fleet_dashboard_reads_the_families_a_simulated_fleet_exports() -> None:
    exported: set[str] = set()
    for dialect in METRICS_DIALECTS:
        config = {**PRESETS["fast"].model_dump(), "replicas": 2, "metrics_dialect": dialect}
        fleet = Fleet(SimConfig.model_validate(config))
        exported |= _families(fleet)
        # llama.cpp's lines are rendered outside the registry.
        exported |= {f"llamacpp:{row[1]}" for row in fleet.replicas[0].context.metrics.text_rows()}
    queries = " ".join(t["expr"] for p in _dashboard("fleet")["panels"] for t in p["targets"])
    sim_families = {n.removesuffix("_total") for n in re.findall(r"agentload_sim_[a-z_]+", queries)}
    assert sim_families
    assert sim_families <= exported
    for name in ("vllm:num_requests_running", "sglang:num_running_reqs",
                 "llamacpp:requests_processing", "vllm:kv_cache_usage_perc",
                 "vllm:prefix_cache_hits"):  # fmt: skip
        assert name in exported, name
        assert name in queries, name


def test_ttfat_sits_beside_ttft_on_the_latency_dashboard_with_the_same_percentiles() -> None:
    panels = _dashboard("latency")["panels"]
    titles = [p["title"] for p in panels]
    ttft = panels[titles.index("Time to first token")]
    ttfat = panels[titles.index("Time to first answer token (TTFAT)")]
    assert ttfat["gridPos"]["y"] == ttft["gridPos"]["y"]
    assert ttfat["gridPos"]["x"] == ttft["gridPos"]["x"] + ttft["gridPos"]["w"]
    legends = [t["legendFormat"] for t in ttfat["targets"]]
    assert legends == [t["legendFormat"] for t in ttft["targets"]] == ["p50", "p90", "p99"]
    for a, b in zip(ttft["targets"], ttfat["targets"], strict=True):
        assert b["expr"] == a["expr"].replace("agentload_ttft_seconds", "agentload_ttfat_seconds")


# -- promtool: the shipped queries over series of each label shape -------------------------


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _expect(expr: str, samples: dict[str, float], label: str = "replica") -> dict[str, Any]:
    return {
        "expr": expr,
        "eval_time": "10m",
        "exp_samples": [
            {"labels": f'{{{label}="{key}"}}' if key else "{}", "value": value}
            for key, value in samples.items()
        ],
    }


SIM = {"instance": "sim:8000", "model_name": "m"}  # a simulated fleet: replica and engine
R0 = {**SIM, "engine": "0", "replica": "r0"}
OLD = {"instance": "old:8000", "engine": "0"}  # a vLLM of the older names
# Every 1 min for 13 min: gauges hold their value, counters grow by the step each minute.
GAUGE, PER_S = "{}x12", "0+{}x12"


def _fleet_series() -> list[dict[str, str]]:
    running = "vllm:num_requests_running"
    return [
        # The simulated fleet: replica="r0".. and engine="0".. on one instance.
        _series(running, GAUGE.format(3), **SIM, engine="0", replica="r0"),
        _series(running, GAUGE.format(5), **SIM, engine="1", replica="r1"),
        # vLLM with two data-parallel engines: engine only.
        _series(running, GAUGE.format(2), instance="dp:8000", engine="0"),
        _series(running, GAUGE.format(4), instance="dp:8000", engine="1"),
        # Two single-engine vLLM servers, each engine="0": told apart by instance.
        _series(running, GAUGE.format(7), instance="gpu-0:8000", engine="0"),
        _series(running, GAUGE.format(1), instance="gpu-1:8000", engine="0"),
        # SGLang and llama.cpp servers: no label but the instance.
        _series("sglang:num_running_reqs", GAUGE.format(6), instance="sg:30000"),
        _series("llamacpp:requests_processing", GAUGE.format(8), instance="ll:8080"),
        # KV usage: a server exporting vLLM's current and older name counts once (current).
        _series("vllm:kv_cache_usage_perc", GAUGE.format(0.75), **SIM, engine="0", replica="r0"),
        _series("vllm:kv_cache_usage_perc", GAUGE.format(0.5), instance="both:8000", engine="0"),
        _series("vllm:gpu_cache_usage_perc", GAUGE.format(0.25), instance="both:8000", engine="0"),
        _series("sglang:token_usage", GAUGE.format(0.125), instance="sg:30000"),
        # Generation tokens: 2, 1 and 3 tokens/s.
        _series("vllm:generation_tokens_total", PER_S.format(120), **SIM, engine="0", replica="r0"),
        _series("vllm:generation_tokens_total", PER_S.format(60), **SIM, engine="1", replica="r1"),
        _series("sglang:generation_tokens_total", PER_S.format(180), instance="sg:30000"),
        # Prefix cache: current vLLM names (1/2), older names (1/4), SGLang's own rate.
        _series("vllm:prefix_cache_hits_total", PER_S.format(30), **R0),
        _series("vllm:prefix_cache_queries_total", PER_S.format(60), **R0),
        _series("vllm:gpu_prefix_cache_hits_total", PER_S.format(15), **OLD),
        _series("vllm:gpu_prefix_cache_queries_total", PER_S.format(60), **OLD),
        _series("sglang:cache_hit_rate", GAUGE.format(0.75), instance="sg:30000"),
    ]  # fmt: skip


# Each replica's key: its replica label, else "<instance> engine <engine>", else its instance.
RUNNING = {"r0": 3, "r1": 5, "dp:8000 engine 0": 2, "dp:8000 engine 1": 4,
           "gpu-0:8000 engine 0": 7, "gpu-1:8000 engine 0": 1, "sg:30000": 6,
           "ll:8080": 8}  # fmt: skip


def _fleet_expectations() -> list[dict[str, Any]]:
    return [
        _expect(_expr("fleet", "Running requests per replica"), RUNNING),
        _expect(
            _expr("fleet", "KV-cache usage per replica"),
            {"r0": 0.75, "both:8000 engine 0": 0.5, "sg:30000": 0.125},
        ),
        _expect(
            _expr("fleet", "Generation tokens per second per replica"),
            {"r0": 2, "r1": 1, "sg:30000": 3},
        ),
        _expect(
            _expr("fleet", "Load relative to the mean replica"),
            {"r0": 1, "r1": 0.5, "sg:30000": 1.5},
        ),
        _expect(
            _expr("fleet", "Prefix-cache hit ratio per replica (server)"),
            {"r0": 0.5, "old:8000 engine 0": 0.25, "sg:30000": 0.75},
        ),
    ]


def _reasoning_series(reasoning: int | None) -> list[dict[str, str]]:
    """10 completion tokens/s, of which `reasoning` per second reasoning (None: no series)."""
    labels = {"profile": "p", "agent": "coding", "step_kind": "turn"}
    series = [_series("agentload_completion_tokens_total", PER_S.format(600), **labels)]
    if reasoning is not None:
        step = PER_S.format(60 * reasoning)
        series.append(_series("agentload_reasoning_tokens_total", step, **labels))
    return series


def _reasoning_expectations(reasoning: int | None) -> list[dict[str, Any]]:
    answer = "Answer vs reasoning tokens/s"
    if reasoning is None:
        figures: dict[str, dict[str, float]] = {"answer": {}, "reasoning": {}, "share": {}}
    else:
        figures = {
            "answer": {"": 10 - reasoning},
            "reasoning": {"": reasoning},
            "share": {"": reasoning / 10},
        }
    by_agent = {} if reasoning is None else {"coding": reasoning / 10}
    return [
        _expect(_expr("overview", answer, "A"), figures["answer"]),
        _expect(_expr("overview", answer, "B"), figures["reasoning"]),
        _expect(_expr("overview", "Reasoning share", "A"), figures["share"]),
        _expect(_expr("overview", "Reasoning share", "B"), by_agent, "agent"),
    ]


def _promtool_test(tmp_path: Path, groups: list[tuple[list[dict[str, str]], list[Any]]]) -> None:
    tests = [
        {"interval": "1m", "input_series": series, "promql_expr_test": expectations}
        for series, expectations in groups
    ]
    path = tmp_path / "fleet_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}, width=1_000_000))
    result = subprocess.run(
        [binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_per_replica_queries_group_by_replica_else_engine_else_instance(tmp_path: Path) -> None:
    _promtool_test(tmp_path, [(_fleet_series(), _fleet_expectations())])


def test_reasoning_panels_split_completion_tokens_and_never_fail_without_reasoning(
    tmp_path: Path,
) -> None:
    # 4 of 10 tokens/s reasoning; none counted (the answer is all output); no series at all
    # (an exporter without the counter): the panels draw nothing, and no query fails.
    groups = [(_reasoning_series(r), _reasoning_expectations(r)) for r in (4, 0, None)]
    _promtool_test(tmp_path, groups)


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses each query as a recording rule's expression: a syntax error fails here
    # in a second, before the live tests' runs.
    exprs = [
        substituted(target["expr"], "1m")
        for path in sorted(SHIPPED.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
