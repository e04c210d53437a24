"""The dashboards and --scrape-target-metrics read SGLang, older vLLM and llama.cpp, live."""

# One real Prometheus scrapes four simulators at once, each exporting its engine's state under
# one server's metric names (`--metrics-dialect`): current vLLM, vLLM's older names, SGLang
# and llama.cpp. Each gets a short closed-loop swarm (`agentload run --scrape-target-metrics`)
# with a small KV cache and batch, so the queue fills and the engine preempts. Then every
# dashboard query that reads server metrics is run with $target set to each non-default
# dialect's instance, and with "All" over the mixed fleet (tests/test_observe_prometheus_live.py
# runs the default dialect's end to end).

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.sim import PRESETS, SimConfig, SimServer
from loadgen.sim.config import METRICS_DIALECTS
from tests.cli_runs import agentload_run
from tests.test_observe_prometheus_live import (
    SHIPPED_RULES,
    VARIABLES,
    Prometheus,
    dashboard_queries,
    get_json,
    substituted,
)

RUN_S = 8.0
WINDOW = "30s"  # a rate window that reaches back to before the load started
PROFILE: dict[str, Any] = {
    "name": "server-dialects",
    "seed": 11,
    "time_scale": 0.01,
    "arrival": {"mode": "closed", "agents": 10},
    "force_output_length": "always",
    "agents": [
        {
            "kind": "coding",
            "params": {
                "system_prompt_tokens": 400,
                "turns": 2,
                "steps_per_turn": {"uniform": [2, 3]},
                "user_tokens": 40,
                "output_tokens": {"uniform": [24, 48]},
                "tool_result_tokens": {"uniform": [100, 200]},
                "think_time_s": 0,
            },
        }
    ],
}
# Six sequences in the batch for ten agents, and KV blocks for about two long contexts:
# requests queue, the cache fills and running sequences are preempted (SGLang: retracted).
SIM = {"max_num_seqs": 6, "num_kv_blocks": 160, "max_model_len": 2560}
WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred")
OTHER_DIALECTS = tuple(d for d in METRICS_DIALECTS if d != "vllm")
ENGINE = {"vllm": "vllm", "vllm-v0": "vllm", "sglang": "sglang", "llamacpp": "llamacpp"}

# (dialect, panel) pairs that cannot have data because that server does not export the
# metric; each must really stay empty (test_panel_a_server_cannot_fill_stays_empty).
NOT_EXPOSED = {
    # SGLang counts finished requests without a finish reason.
    ("sglang", "server / Finished requests by reason (vLLM)"),
    # llama.cpp has no latency histograms, no preemption or prefix-cache metric, and no
    # finish reasons: only token counters, slot gauges and KV-cache usage.
    ("llamacpp", "server / Server TTFT"),
    ("llamacpp", "server / Server inter-token latency"),
    ("llamacpp", "server / Server queue time and end-to-end (p95)"),
    ("llamacpp", "latency / Client vs server TTFT (p95)"),
    ("llamacpp", "server / Preemptions"),
    ("llamacpp", "server / Prefix-cache hit ratio (server)"),
    ("llamacpp", "server / Finished requests by reason (vLLM)"),
}
# Every query that reads the target's own metrics (they all filter by $target).
SERVER_QUERIES = [(name, expr) for name, expr in dashboard_queries() if "$target" in expr]
CASES = [
    (dialect, name, expr)
    for dialect in OTHER_DIALECTS
    for name, expr in SERVER_QUERIES
    if (dialect, name.rsplit(" / ", 1)[0]) not in NOT_EXPOSED
]
EMPTY_CASES = [
    (dialect, name, expr)
    for dialect in OTHER_DIALECTS
    for name, expr in SERVER_QUERIES
    if (dialect, name.rsplit(" / ", 1)[0]) in NOT_EXPOSED
]


@dataclass
class Fleet:
    """The Prometheus that scraped the four simulators, and what each run summarised."""

    prometheus: str
    instances: dict[str, str]  # dialect -> Prometheus instance label
    summaries: dict[str, dict[str, Any]]
    live_at: float  # a unix time when every simulator had requests waiting

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector at `live_at`; raises on a PromQL error."""
        params = {"query": expr, "time": f"{self.live_at:.3f}"}
        body = get_json(f"{self.prometheus}/api/v1/query", params)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str, target: str = ".*") -> list[float]:
        """A dashboard query's values with $target set to `target` (a regex, as Grafana's)."""
        return [float(r["value"][1]) for r in self.query(substituted(expr, WINDOW, target))]

    def target(self, dialect: str) -> str:
        """$target as Grafana sets it when the instance of `dialect` alone is selected."""
        # Regex-escaped, and the escapes escaped again inside PromQL's double quotes.
        return re.escape(self.instances[dialect]).replace("\\", "\\\\")


async def _load(sim: SimServer, profile: Path, out: Path) -> dict[str, Any]:
    run = await agentload_run(
        profile, out, "--duration", f"{RUN_S:g}s", "--scrape-target-metrics",
        # Not faster than SGLang's logging interval: its retraction gauge is summed per sample.
        "--target-metrics-interval", "1s",
        target=sim.base_url,
    )  # fmt: skip
    return run.summary


async def _fleet(tmp: Path, prometheus: Prometheus) -> Fleet:
    profile = tmp / "profile.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    sims = {
        dialect: SimServer(
            SimConfig.model_validate(
                {**PRESETS["fast"].model_dump(), **SIM, "metrics_dialect": dialect}
            )
        )
        for dialect in METRICS_DIALECTS
    }
    for sim in sims.values():
        await sim.start()
    try:
        prometheus.start({"target": [sim.port for sim in sims.values()]})
        # Every simulator scraped once before its first request: rates start from zero.
        await prometheus.wait_until("up", 1.0, count=len(sims))
        started = time.time()
        runs = asyncio.gather(
            *(_load(sim, profile, tmp / dialect) for dialect, sim in sims.items())
        )
        summaries = dict(zip(sims, await runs, strict=True))
        ended = time.time()
    finally:
        for sim in sims.values():
            await sim.stop()
    # The gauges are read at the last scrape that saw requests queued on every simulator;
    # rate windows from before the start cover the whole run from there.
    queued = " or ".join(f"sum by (instance) ({name})" for name in WAITING)
    busy = f"count(({queued}) > 0) == {len(sims)}"
    return Fleet(
        prometheus=prometheus.url,
        instances={dialect: f"127.0.0.1:{sim.port}" for dialect, sim in sims.items()},
        summaries=summaries,
        live_at=prometheus.last_time(busy, started, ended),
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The four simulators' runs, scraped by one Prometheus, shared by every test here."""
    tmp = tmp_path_factory.mktemp("server-dialects")
    prometheus = Prometheus(tmp)
    try:
        yield asyncio.run(asyncio.wait_for(_fleet(tmp, prometheus), timeout=120))
    finally:
        prometheus.stop()


def test_the_exceptions_name_panels_that_exist_on_every_dashboard_reading_servers() -> None:
    # A renamed panel would drop out of NOT_EXPOSED silently, and then fail as "no data".
    titles = {name.rsplit(" / ", 1)[0] for name, _ in SERVER_QUERIES}
    assert {panel for _, panel in NOT_EXPOSED} <= titles
    assert {"server / Running and waiting requests", "latency / Client vs server TTFT (p95)",
            "ceiling / What runs out first: KV cache and queue"} <= titles  # fmt: skip


# -- each dialect alone ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dialect", "panel", "expr"), CASES, ids=[f"{d}: {n}" for d, n, _ in CASES]
)
def test_server_query_returns_data_for_each_server_dialect(
    fleet: Fleet, dialect: str, panel: str, expr: str
) -> None:
    values = fleet.values(expr, fleet.target(dialect))
    assert values, f"{dialect}: {panel}: no series"
    assert any(math.isfinite(v) and v != 0 for v in values), f"{dialect}: {panel}: only {values}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dialect", "panel", "expr"), EMPTY_CASES, ids=[f"{d}: {n}" for d, n, _ in EMPTY_CASES]
)
def test_panel_a_server_cannot_fill_stays_empty(
    fleet: Fleet, dialect: str, panel: str, expr: str
) -> None:
    assert fleet.values(expr, fleet.target(dialect)) == [], f"{dialect} fills {panel} after all"


@pytest.mark.slow
def test_target_variable_lists_every_servers_instance(fleet: Fleet) -> None:
    definition = dict(VARIABLES)["target"]
    selector, label = definition.removeprefix("label_values(").removesuffix(")").rsplit(", ", 1)
    body = get_json(f"{fleet.prometheus}/api/v1/label/{label}/values", {"match[]": selector})
    assert set(body["data"]) == set(fleet.instances.values())


# -- a mixed fleet under "All" ---------------------------------------------------------------


def _inner(expr: str) -> str:
    """The summed bucket rates of a histogram_quantile() query."""
    head, rest = expr.split(", ", 1)
    assert head.startswith("histogram_quantile("), expr
    return rest.removesuffix(")")


# One panel per distinct histogram (p50, p95 and p99 of a panel sum the same buckets).
BUCKETS = {_inner(e): n for n, e in reversed(SERVER_QUERIES) if "histogram_quantile(" in e}
QUANTILE_SOURCES = sorted((name, buckets) for buckets, name in BUCKETS.items())
OTHER_SERVER_QUERIES = [(n, e) for n, e in SERVER_QUERIES if "histogram_quantile(" not in e]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("panel", "buckets"), QUANTILE_SOURCES, ids=[n for n, _ in QUANTILE_SOURCES]
)
def test_all_servers_percentile_counts_every_instances_requests(
    fleet: Fleet, panel: str, buckets: str
) -> None:
    def requests_per_s(target: str) -> float:
        found = fleet.query(substituted(buckets, WINDOW, target))
        return sum(float(r["value"][1]) for r in found if r["metric"]["le"] == "+Inf")

    each = {dialect: requests_per_s(fleet.target(dialect)) for dialect in METRICS_DIALECTS}
    assert each["vllm"] > 0
    assert each["sglang"] > 0
    assert math.isclose(requests_per_s(".*"), sum(each.values()), rel_tol=1e-9), each


@pytest.mark.slow
@pytest.mark.parametrize(
    ("panel", "expr"), OTHER_SERVER_QUERIES, ids=[n for n, _ in OTHER_SERVER_QUERIES]
)
def test_all_servers_reading_is_every_instances_reading(
    fleet: Fleet, panel: str, expr: str
) -> None:
    each = {d: sum(fleet.values(expr, fleet.target(d))) for d in METRICS_DIALECTS}
    assert sum(v > 0 for v in each.values()) >= 2, each  # a fleet, not one server
    assert math.isclose(sum(fleet.values(expr)), sum(each.values()), rel_tol=1e-9), each


# -- alerting rules --------------------------------------------------------------------------


def _rule(name: str) -> str:
    groups = yaml.safe_load(SHIPPED_RULES.read_text())["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    return str(expr)


@pytest.mark.slow
def test_preemption_alert_sees_vllm_preemptions_and_sglang_retractions(fleet: Fleet) -> None:
    flagged = {r["metric"]["instance"] for r in fleet.query(_rule("TargetPreempting"))}
    assert {fleet.instances[d] for d in ("vllm", "vllm-v0", "sglang")} <= flagged


def test_kv_full_alert_reads_every_servers_kv_usage() -> None:
    expr = _rule("TargetKvCacheFull")
    for name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
                 "llamacpp:kv_cache_usage_ratio"):  # fmt: skip
        assert f"({name}) > 0.95" in expr, name


# -- --scrape-target-metrics -----------------------------------------------------------------

# What summary["server"] can hold for each server: llama.cpp exposes no preemptions and no
# prefix-cache figures.
FIGURES = {
    "vllm-v0": ("preemptions", "prefix_cache_hit_ratio"),
    "sglang": ("preemptions", "prefix_cache_hit_ratio"),
    "llamacpp": (),
}
COMMON_FIGURES = (
    "kv_cache_usage_peak",
    "waiting_peak",
    "running_peak",
    "prompt_tokens",
    "generation_tokens",
)


@pytest.mark.slow
@pytest.mark.parametrize("dialect", OTHER_DIALECTS)
def test_scrape_target_metrics_names_the_server_and_reads_its_figures(
    fleet: Fleet, dialect: str
) -> None:
    summary = fleet.summaries[dialect]
    server = summary["server"]
    assert (server["available"], server["engine"]) == (True, ENGINE[dialect])
    for figure in (*COMMON_FIGURES, *FIGURES[dialect]):
        assert server[figure] is not None, (figure, server)
        assert server[figure] > 0, (figure, server)
    for figure in {"preemptions", "prefix_cache_hit_ratio"} - set(FIGURES[dialect]):
        assert server[figure] is None, (figure, server)
    assert server["generation_tokens"] >= summary["tokens"]["completion"] > 0
    assert server["saturated_first"] in ("kv_cache", "preemptions", "queue")
