"""The shipped Grafana dashboards, Prometheus config and docker-compose wiring, read statically."""

# tests/test_observe_prometheus_live.py runs every query against a real Prometheus; these
# tests pin down how the queries are written, so that they stay right for every target.

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.observe.prometheus.metrics import DEFAULT_PROMETHEUS_PORT, RunMetrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
FILES = sorted((DASHBOARDS / "grafana" / "dashboards").glob("*.json"))

_SELECTOR = re.compile(r"([a-z_]+:?[a-zA-Z_]*)\{([^}]*)\}")
_AGENTLOAD = re.compile(r"\bagentload_(?!sim_)[a-z_]+")  # the simulator's are the target's
_SIM = "agentload_sim_"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_info")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.stem}/{panel['title']}", panel) for p in FILES for panel in _load(p)["panels"]]


def _queries() -> list[tuple[str, str]]:
    return [(name, t["expr"]) for name, panel in _panels() for t in panel["targets"]]


PANELS = _panels()
QUERIES = _queries()


def test_dashboard_files_are_what_build_py_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "build.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_six_dashboards_are_shipped() -> None:
    titles = {_load(p)["title"] for p in FILES}
    assert titles == {
        "agentload / Overview",
        "agentload / Latency",
        "agentload / Agent state health",
        "agentload / Server",
        "agentload / Ceiling",
        "agentload / Fleet",
    }


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_dashboard_offers_a_prometheus_datasource_and_a_profile_filter(path: Path) -> None:
    variables = {v["name"]: v for v in _load(path)["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["profile"]["allValue"] == ".*"
    assert variables["profile"]["multi"] is True


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_dashboard_filtering_servers_offers_a_target_variable(path: Path) -> None:
    data = _load(path)
    uses_target = "$target" in json.dumps(data["panels"])
    names = {v["name"] for v in data["templating"]["list"]}
    assert uses_target == ("target" in names)


def test_dashboard_uids_are_unique() -> None:
    uids = [_load(p)["uid"] for p in FILES]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=[n for n, _ in PANELS])
def test_panel_queries_through_the_datasource_variable(name: str, panel: dict[str, Any]) -> None:
    sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
    assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources)


# "<what it shows>. Bad: <what a bad reading means>. Next: <what to check next>."
_DESCRIPTION = re.compile(r"(?P<shows>[^:].{14,}?) Bad: (?P<bad>.{20,}?) Next: (?P<next>.{20,})")


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=[n for n, _ in PANELS])
def test_panel_description_says_what_a_bad_reading_means_and_what_to_check_next(
    name: str, panel: dict[str, Any]
) -> None:
    description = panel["description"]
    form = _DESCRIPTION.fullmatch(description)
    assert form, f"not 'SHOWS Bad: ... Next: ...': {description}"
    assert description.count("Bad: ") == description.count("Next: ") == 1
    assert panel["title"] not in form["shows"]  # says more than the title
    for part in ("shows", "bad", "next"):
        assert form[part].rstrip().endswith((".", ")")), f"{part} is not a sentence: {form[part]}"


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=[n for n, _ in PANELS])
def test_panel_fits_the_grid(name: str, panel: dict[str, Any]) -> None:
    pos = panel["gridPos"]
    assert pos["x"] >= 0
    assert pos["x"] + pos["w"] <= 24


@pytest.mark.parametrize(("name", "expr"), QUERIES, ids=[n for n, _ in QUERIES])
def test_every_agentload_selector_filters_by_profile(name: str, expr: str) -> None:
    for metric, labels in _SELECTOR.findall(expr):
        if metric.startswith("agentload_") and not metric.startswith(_SIM):
            assert 'profile=~"$profile"' in labels, f"{metric} in {expr}"


@pytest.mark.parametrize(("name", "expr"), QUERIES, ids=[n for n, _ in QUERIES])
def test_every_server_selector_filters_by_target(name: str, expr: str) -> None:
    # The simulated fleet's own families (agentload_sim_*) are the target's metrics too.
    for metric, labels in _SELECTOR.findall(expr):
        if metric.startswith(("vllm:", "sglang:", "llamacpp:", _SIM)):
            assert 'instance=~"$target"' in labels, f"{metric} in {expr}"


@pytest.mark.parametrize(("name", "expr"), QUERIES, ids=[n for n, _ in QUERIES])
def test_every_percentile_merges_bucket_rates_by_le_first(name: str, expr: str) -> None:
    # histogram_quantile(q, sum by (le, ...) (rate(x_bucket[...]))): processes and workers
    # merge exactly; averaging their percentiles would not.
    for call in expr.split("histogram_quantile(")[1:]:
        assert re.match(r"[0-9.]+, sum by \(le[,)]", call), expr
        assert "rate(" in call
        assert "_bucket{" in call


@pytest.mark.parametrize(("name", "expr"), QUERIES, ids=[n for n, _ in QUERIES])
def test_every_percentile_sums_all_server_names_in_one_aggregation(name: str, expr: str) -> None:
    # sum by (le) (rate(A) or rate(B)) keeps a vLLM and an SGLang instance both; the
    # aggregates joined by `or` (sum(A) or sum(B)) kept only the first server's buckets.
    for call in expr.split("histogram_quantile(")[1:]:
        assert call.count("sum by (") == 1, expr


def test_dashboards_query_only_metrics_agentload_exports() -> None:
    exported = {family.name for family in RunMetrics().registry.collect()}
    used = set()
    for _, expr in QUERIES:
        for name in _AGENTLOAD.findall(expr):
            for suffix in _SUFFIXES:
                name = name.removesuffix(suffix)
            used.add(name)
    assert used
    assert used - exported - {"agentload_target"} == set()


def _latency_splits() -> list[tuple[str, str]]:
    # The Latency dashboard's promise: each latency's percentiles by agent and by step kind,
    # as far as its histogram carries those labels (a session has no step kind).
    m = RunMetrics()
    return [
        (family.name, label)
        for family in (m.ttft, m.itl, m.request_duration, m.session_duration)
        for label in ("agent", "step_kind")
        if label in family.labelnames
    ]


LATENCY_SPLITS = _latency_splits()


@pytest.mark.parametrize(
    ("metric", "label"), LATENCY_SPLITS, ids=[f"{m} by {label}" for m, label in LATENCY_SPLITS]
)
def test_latency_dashboard_splits_each_latency_by_agent_and_step_kind(
    metric: str, label: str
) -> None:
    latency = " ".join(e for n, e in QUERIES if n.startswith("latency/"))
    assert f"sum by (le, {label}) (rate({metric}_bucket{{" in latency


def test_server_panels_read_old_and_new_vllm_names_and_sglang_and_llamacpp() -> None:
    server = " ".join(e for n, e in QUERIES if n.startswith("server/"))
    for name in (
        "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
        "vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total",
        "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds",
        "vllm:num_preemptions_total", "sglang:num_running_reqs", "sglang:token_usage",
        "sglang:cache_hit_rate", "sglang:time_to_first_token_seconds",
        "llamacpp:requests_processing", "llamacpp:tokens_predicted_total",
    ):  # fmt: skip
        assert name in server, name


# -- Prometheus, Grafana provisioning and docker-compose --------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_prometheus_config_scrapes_the_master_port_the_host_run_and_the_sim() -> None:
    config = yaml.safe_load((DASHBOARDS / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    port = DEFAULT_PROMETHEUS_PORT
    assert {f"master:{port}", f"host.docker.internal:{port}", "sim:8000"} <= targets


def test_compose_mounts_existing_provisioning_folders_into_prometheus_and_grafana() -> None:
    services = _compose()["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            assert (ROOT / source).is_dir(), f"{name} mounts missing {source}"


def test_grafana_loads_dashboards_from_where_compose_mounts_them() -> None:
    provider = yaml.safe_load(
        (DASHBOARDS / "grafana" / "provisioning" / "dashboards" / "agentload.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    mounts = dict(v.split(":")[:2] for v in _compose()["services"]["grafana"]["volumes"])
    assert mounts["./dashboards/grafana/dashboards"] == path


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    config = yaml.safe_load(
        (DASHBOARDS / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090:9090") for p in _compose()["services"]["prometheus"]["ports"])


def test_observability_doc_names_every_metric_and_dashboard() -> None:
    doc = (ROOT / "docs" / "observability.md").read_text()
    for family in RunMetrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        name = name if family.type != "info" else family.name + "_info"
        assert name in doc, name
    for path in FILES:
        assert _load(path)["title"].removeprefix("agentload / ") in doc
