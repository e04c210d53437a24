"""A real Prometheus scrapes a live run against the simulator; every dashboard query answers."""

# One run per topology (about 30 s each): the simulator (small KV cache, a short batch,
# injected faults) and agentload's exporter on free ports, Debian's `prometheus` scraping
# both every second with the shipped alerting rules loaded, and a ramped swarm of coding,
# research and assistant agents that compacts, fans out, calls tools, loses server state
# and retries, all through `agentload run`. The exporter is the one process's own, or the
# master of `agentload run --processes 2` serving what its two worker processes shipped to
# it, their load spread over a fleet of two replicas (both the one simulator): every test
# holds for both, the fleet's panels and counters in the second. tests/
# test_server_dialects_live.py reuses the Prometheus helpers below.

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from loadgen.sim import PRESETS, SimConfig, SimServer

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
SHIPPED_CONFIG = DASHBOARDS / "prometheus" / "prometheus.yml"
SHIPPED_RULES = DASHBOARDS / "prometheus" / "alerts.yml"

RUN_S = 20.0  # a 6 s ramp to 16 agents, then 14 s at 16
PROFILE: dict[str, Any] = {
    "name": "prometheus-live",
    "seed": 3,
    "time_scale": 0.01,
    "arrival": {"mode": "closed", "agents": 16},
    "stages": [
        {"kind": "ramp", "duration": "6s", "target": 16},
        {"kind": "hold", "duration": "14s"},
    ],
    "force_output_length": "always",
    "agents": [
        {
            "kind": "coding",
            "weight": 2,
            "params": {
                "system_prompt_tokens": 600,
                "turns": 2,
                "steps_per_turn": {"uniform": [3, 6]},
                "user_tokens": 60,
                "output_tokens": {"uniform": [24, 64]},
                "tool_result_tokens": {"uniform": [200, 400]},
                # A small window, so that histories are compacted within seconds.
                "context_budget_tokens": 8000,
                "compact_at": 0.4,
                "compact_to_tokens": 800,
                "think_time_s": 0.5,
            },
        },
        {
            "kind": "research",
            "weight": 1,
            "params": {
                "system_prompt_tokens": 400,
                "turns": 1,
                "steps_per_turn": {"uniform": [2, 4]},
                "subagent_probability": 0.5,
                "subagents": 2,
                "subagent_steps": 2,
                "output_tokens": {"uniform": [24, 64]},
                "tool_result_tokens": 200,
            },
        },
        {
            "kind": "assistant",
            "weight": 1,
            "params": {
                "turns": 3,
                "steps_per_turn": 1,
                "output_tokens": {"uniform": [24, 64]},
                "idle_between_sessions_s": 1,
                "think_time_s": 0.5,
            },
        },
    ],
    "reactions": {
        "http_error": {"action": "retry", "max_attempts": 4, "backoff": "10ms"},
        "rate_limited": {"action": "retry", "max_attempts": 4, "backoff": "10ms"},
        "stream_truncated": {"action": "retry", "max_attempts": 4, "backoff": "10ms"},
        # One fallback after a lost response id: the session goes on with its history.
        "server_state_lost": {"action": "fallback", "max_attempts": 2},
    },
    "slos": {"ttft_p95": "2s", "e2e_p99": "10s"},
}
# Six sequences in the batch and 600 KV blocks: the queue fills, the cache runs out and
# the engine preempts, so the server panels have something to draw.
SIM = {
    "max_num_seqs": 6,
    "num_kv_blocks": 600,
    "max_model_len": 8192,
    "faults": {"http_5xx": 0.02, "stream_cut": 0.02, "rate_limit": 0.02, "store_evict": 0.3},
}


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def binary(name: str) -> str:
    """The path of an installed Prometheus tool; fails with how to install it."""
    path = shutil.which(name)
    assert path, f"`{name}` is not installed: apt-get install -y prometheus (.ci/run does)"
    return path


def get_json(url: str, params: dict[str, str] | None = None) -> Any:
    """GET `url` with query `params` and decode the JSON reply."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(url + query, timeout=10) as resp:
        return json.loads(resp.read())


def fleet_targets(url: str) -> list[str]:
    """Two replicas named r0 and r1, both at `url`."""
    return ["--target", f"r0={url}", "--target", f"r1={url}"]


@dataclass
class LiveRun:
    """What the tests read: the Prometheus that scraped the run, and the run's own results."""

    prometheus: str
    summary: dict[str, Any]
    live_at: float  # a unix time while the swarm was at full strength
    window: str  # a rate window that reaches back to before the run started
    test_config: Path
    final_at: float  # a unix time when Prometheus held the run's final values

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector; raises on a PromQL error."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = get_json(f"{self.prometheus}/api/v1/query", params)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        """The one value of a query that sums to a single series (0 when empty)."""
        result = self.query(expr, at=self.final_at)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else 0.0

    def by(self, expr: str, label: str) -> dict[str, float]:
        """A query's values keyed by one label."""
        return {r["metric"][label]: float(r["value"][1]) for r in self.query(expr, self.final_at)}


class Prometheus:
    """Debian's prometheus on a free loopback port, with a 1 s scrape interval."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "prometheus.yml"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, jobs: Mapping[str, Sequence[int]]) -> None:
        """Scrape each job's loopback ports, with the shipped alerting rules loaded."""
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(SHIPPED_RULES)],
            "scrape_configs": [
                {"job_name": job,
                 "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in ports]}]}
                for job, ports in jobs.items()
            ],
        }  # fmt: skip
        self.config.write_text(yaml.safe_dump(config))
        self._log = (self.tmp / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={self.config}",
             f"--storage.tsdb.path={self.tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip

    async def wait_until(
        self, expr: str, at_least: float, timeout_s: float = 30.0, count: int = 2
    ) -> None:
        """Poll until `count` series of `expr` are each at least `at_least` (catching up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                body = await asyncio.to_thread(
                    get_json, f"{self.url}/api/v1/query", {"query": expr}
                )
                values = [float(r["value"][1]) for r in body["data"]["result"]]
                if len(values) == count and min(values) >= at_least:
                    return
            except OSError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
        log = (self.tmp / "prometheus.log").read_text()[-2000:]
        raise AssertionError(f"Prometheus never got {expr} >= {at_least}; log:\n{log}")

    def last_time(self, expr: str, start: float, end: float) -> float:
        """The last unix time (0.5 s steps) at which `expr` has a series; fails if none."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "0.5"}
        body = get_json(f"{self.url}/api/v1/query_range", params)
        times = [float(t) for series in body["data"]["result"] for t, _v in series["values"]]
        assert times, f"{expr} never held between {start:.0f} and {end:.0f}"
        return max(times)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()


async def _cli_scenario(tmp: Path, prometheus: Prometheus, processes: int) -> LiveRun:
    """PROFILE through `agentload run`, scraped where it serves its metrics: the one process's
    own exporter, or the master's of `processes` worker processes."""
    profile_path = tmp / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(PROFILE))
    sim = SimServer(SimConfig.model_validate({**PRESETS["fast"].model_dump(), **SIM}))
    await sim.start()
    log = (tmp / "agentload.log").open("wb")
    if processes == 1:  # at the target's root + /metrics
        flags = ["--scrape-target-metrics", "--target", sim.base_url]
    else:
        # Two replicas of a fleet balanced by agentload (both the one simulator: its counters
        # stay the run's), the target's metrics at an explicit address.
        flags = ["--processes", str(processes), *fleet_targets(sim.base_url),
                 "--target-metrics-url", f"http://127.0.0.1:{sim.port}/metrics"]  # fmt: skip
    try:
        port = free_port()
        prometheus.start({"agentload": [port], "target": [sim.port]})
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadgen", "run", str(profile_path), *flags,
            "--prometheus-port", str(port), "--target-metrics-interval", "0.5s", "--quiet",
            "--out", str(tmp / "results"),
            cwd=ROOT, stdout=log, stderr=log,
        )  # fmt: skip
        launched = time.time()
        await prometheus.wait_until("up", 1.0, timeout_s=60)
        await prometheus.wait_until("sum(agentload_users)", 1.0, count=1, timeout_s=60)
        code = await asyncio.wait_for(run.wait(), timeout=120)
        assert code == 0, (tmp / "agentload.log").read_text()[-3000:]
        ended = time.time()
        # The exporter served until a scrape read its final values, and then exited: at `ended`
        # that scrape is the latest sample (a later failed scrape marks the series stale).
        await prometheus.wait_until("timestamp(up)", ended + 0.1)
        # The run ended when the target last had a request running (nothing else sends it
        # any). Its start is not observable as sharply: a master's view lags by a worker
        # report (3 s, more on a busy machine), and Prometheus may start scraping after it.
        busy_until = prometheus.last_time("sum(vllm:num_requests_running) > 0", launched, ended)
    finally:
        log.close()
        await sim.stop()
    return LiveRun(
        prometheus=prometheus.url,
        summary=json.loads((tmp / "results" / "summary.json").read_text()),
        live_at=busy_until - 1.5,  # about 2 s before the run's end, at full strength
        window=f"{math.ceil(RUN_S + 5)}s",
        test_config=prometheus.config,
        final_at=ended,
    )


SCENARIOS = {"one process": 1, "master of 2 workers": 2}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveRun]:
    """The live run of one topology, shared by every test of this module."""
    tmp = tmp_path_factory.mktemp("prometheus-live")
    prometheus = Prometheus(tmp)
    scenario = _cli_scenario(tmp, prometheus, processes=SCENARIOS[request.param])
    try:
        yield asyncio.run(asyncio.wait_for(scenario, timeout=180))
    finally:
        prometheus.stop()


# -- the dashboards' queries ------------------------------------------------------------


# The Fleet dashboard reads a fleet's replicas and its router's own families, which neither
# this run's single simulator nor tests/test_server_dialects_live.py's servers have:
# tests/test_dashboards_fleet_live.py runs its queries against a simulated fleet.
FLEET_DASHBOARD = "fleet"


def dashboard_queries(fleet: bool = False) -> list[tuple[str, str]]:
    """("dashboard / panel / refId", expr) of every query of every shipped dashboard but the
    Fleet dashboard, or (`fleet`) of the Fleet dashboard alone."""
    found = []
    for path in sorted((DASHBOARDS / "grafana" / "dashboards").glob("*.json")):
        if (path.stem == FLEET_DASHBOARD) != fleet:
            continue
        for panel in json.loads(path.read_text())["panels"]:
            # Checked while collecting: a row's nested panels, or a panel without a query,
            # would otherwise be left out of the parametrized tests without a word.
            name = f"{path.stem} / {panel['title']}"
            assert panel["type"] != "row", f"{name}: row panels hide their panels from this test"
            assert panel.get("targets"), f"{name}: a panel without a query"
            for target in panel["targets"]:
                found.append((f"{name} / {target['refId']}", target["expr"]))
    return found


def _dashboard_variables() -> list[tuple[str, str]]:
    found = {}
    for path in sorted((DASHBOARDS / "grafana" / "dashboards").glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] == "query":
                found[var["name"]] = var["definition"]
    return sorted(found.items())


QUERIES = dashboard_queries()
VARIABLES = _dashboard_variables()


def substituted(expr: str, window: str, target: str = ".*") -> str:
    """Grafana's variables as Grafana fills them: "All" selected, unless `target` is given."""
    for name, value in (("$__rate_interval", window), ("$profile", ".*"), ("$target", target)):
        expr = expr.replace(name, value)
    # label_replace()'s group references ($1, ${2}) stay: Grafana leaves a reference to a
    # variable that does not exist as it is, and no variable is named by a number.
    assert not re.search(r"\$(?!\{?[0-9])", expr), (
        f"a Grafana variable the test does not fill: {expr}"
    )
    return expr


@pytest.mark.slow
@pytest.mark.parametrize(("panel", "expr"), QUERIES, ids=[name for name, _ in QUERIES])
def test_dashboard_query_returns_data_from_a_live_run(live: LiveRun, panel: str, expr: str) -> None:
    if "agentload_replica_" in expr and "by_replica" not in live.summary:
        pytest.skip("a fleet's panel: read in the scenario whose run had replicas")
    result = live.query(substituted(expr, live.window), at=live.live_at)  # valid PromQL
    values = [float(r["value"][1]) for r in result]
    if "agentload_reasoning_tokens_total" in expr:
        # This run's agents do not reason: reasoning reads 0 (and the answer all output).
        # tests/test_dashboards_reasoning_live.py draws it from a run whose model reasons.
        assert not live.summary["tokens"]["reasoning"]
        assert all(math.isfinite(v) for v in values), f"{panel}: {values}"
        pytest.skip("a reasoning panel: drawn in tests/test_dashboards_reasoning_live.py")
    assert values, f"{panel}: no series"
    assert any(math.isfinite(v) and v != 0 for v in values), f"{panel}: only {values}"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "definition"), VARIABLES, ids=[n for n, _ in VARIABLES])
def test_dashboard_variable_lists_the_live_run(live: LiveRun, name: str, definition: str) -> None:
    selector, label = definition.removeprefix("label_values(").removesuffix(")").rsplit(", ", 1)
    body = get_json(f"{live.prometheus}/api/v1/label/{label}/values", {"match[]": selector})
    assert body["data"], f"${name}: {definition} lists nothing"


# -- Prometheus's figures equal summary.json's --------------------------------------------


# Each Prometheus histogram (and its label filter) next to the summary histogram that counts
# the same observations: the summary's session time counts completed sessions only.
_HISTOGRAMS = (
    ("agentload_ttft_seconds", "", "ttft_s"),
    ("agentload_itl_seconds", "", "itl_s"),
    ("agentload_request_duration_seconds", "", "e2e_s"),
    ("agentload_session_duration_seconds", '{outcome="completed"}', "session_s"),
    ("agentload_context_tokens", "", "context_tokens"),
)


def _summary_histogram(summary: Mapping[str, Any], name: str) -> tuple[int, float]:
    """(count, sum) of the summary's histogram `name`."""
    if name in summary["histograms"]:
        shipped = summary["histograms"][name]
        return shipped["count"], shipped["sum"]
    # summary.json keeps context sizes as quantiles and an exact mean, not whole. Every
    # request, failed ones included, carries its agent's estimate of what it sent, so the
    # count is the requests'; a request left out would move the mean off Prometheus's.
    count = summary["requests"]["total"]
    return count, summary["context_tokens"]["mean"] * count


@pytest.mark.slow
def test_histogram_counts_equal_the_summary(live: LiveRun) -> None:
    for metric, labels, name in _HISTOGRAMS:
        count = live.value(f"sum({metric}_count{labels})")
        assert count == _summary_histogram(live.summary, name)[0] > 0, metric
    assert _summary_histogram(live.summary, "e2e_s")[0] == live.summary["requests"]["ok"]
    assert _summary_histogram(live.summary, "session_s")[0] == live.summary["sessions"]["completed"]


@pytest.mark.slow
def test_histogram_sums_equal_the_summary(live: LiveRun) -> None:
    for metric, labels, name in _HISTOGRAMS:
        got = live.value(f"sum({metric}_sum{labels})")
        expected = _summary_histogram(live.summary, name)[1]
        assert expected > 0, name
        assert math.isclose(got, expected, rel_tol=1e-9), metric


@pytest.mark.slow
def test_session_steps_are_observed_once_per_ended_session(live: LiveRun) -> None:
    sessions = live.summary["sessions"]
    ended = sum(sessions[k] for k in ("completed", "failed", "aborted"))
    steps = live.by("sum by (outcome) (agentload_session_steps_count)", "outcome")
    assert sum(steps.values()) == ended > 0
    assert steps.get("completed") == sessions["completed"]


@pytest.mark.slow
def test_replica_counters_equal_the_summarys_by_replica(live: LiveRun) -> None:
    by_replica = live.summary.get("by_replica")
    if by_replica is None:
        pytest.skip("a single target naming no replica: no replica series")
    assert set(by_replica) == {"r0", "r1"}
    ok = live.by('sum by (replica) (agentload_replica_requests_total{outcome="ok"})', "replica")
    assert ok == {name: r["requests"]["ok"] for name, r in by_replica.items()}
    for family, field in (("prompt", "prompt"), ("cached", "cached")):
        got = live.by(f"sum by (replica) (agentload_replica_{family}_tokens_total)", "replica")
        assert got == {name: r["tokens"][field] for name, r in by_replica.items()}
    ttft = live.by("sum by (replica) (agentload_replica_ttft_seconds_count)", "replica")
    assert sum(ttft.values()) == live.summary["histograms"]["ttft_s"]["count"]


@pytest.mark.slow
def test_request_and_token_counters_equal_the_summary(live: LiveRun) -> None:
    requests = live.summary["requests"]
    outcomes = live.by("sum by (outcome) (agentload_requests_total)", "outcome")
    assert outcomes == {"ok": requests["ok"], "failed": requests["failed"]}
    assert live.value("sum(agentload_request_errors_total)") == live.summary["requests"]["failed"]
    tokens = live.summary["tokens"]
    assert live.value("sum(agentload_prompt_tokens_total)") == tokens["prompt"]
    assert live.value("sum(agentload_completion_tokens_total)") == tokens["completion"]
    assert live.value("sum(agentload_cached_tokens_total)") == tokens["cached"]


@pytest.mark.slow
def test_tool_call_counter_equals_the_summary_with_calls_cut_off_counted_as_aborted(
    live: LiveRun,
) -> None:
    # summary.json counts a call when the step asking for it is recorded; the counter when
    # the tool ends, and a call the run's end cut off (its session aborted) as "aborted".
    outcomes = live.by("sum by (outcome) (agentload_tool_calls_total)", "outcome")
    assert set(outcomes) <= {"ok", "error", "aborted"}
    assert sum(outcomes.values()) == live.summary["tool_calls"] > 0


@pytest.mark.slow
def test_failure_and_recovery_counters_equal_the_summary(live: LiveRun) -> None:
    failures = live.by("sum by (kind) (agentload_state_failures_total)", "kind")
    recoveries = live.by("sum by (kind) (agentload_recoveries_total)", "kind")
    assert failures == live.summary["state_failures"]
    assert recoveries == live.summary["recoveries"]


@pytest.mark.slow
def test_session_counters_equal_the_summary_and_bound_goodput(live: LiveRun) -> None:
    sessions = live.summary["sessions"]
    ended = live.by("sum by (outcome) (agentload_sessions_total)", "outcome")
    assert ended == {k: sessions[k] for k in ("completed", "failed", "aborted")}
    assert live.value("sum(agentload_sessions_active)") == 0  # every session ended
    assert 0 < live.value("sum(agentload_goodput_sessions_total)") <= sessions["completed"]


@pytest.mark.slow
def test_summary_server_section_names_what_the_sim_ran_out_of(live: LiveRun) -> None:
    server = live.summary["server"]
    assert server["available"]
    assert server["engine"] == "vllm"
    assert server["preemptions"] > 0
    assert server["kv_cache_usage_peak"] >= 0.95
    assert server["waiting_peak"] > 0
    assert server["saturated_first"] in ("kv_cache", "preemptions", "queue")
    assert server["generation_tokens"] >= live.summary["tokens"]["completion"]


# -- the shipped Prometheus files ----------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_shipped_prometheus_config() -> None:
    result = _promtool("check", "config", str(SHIPPED_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_shipped_alerting_rules() -> None:
    result = _promtool("check", "rules", str(SHIPPED_RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_promtool_accepts_the_config_the_live_run_used(live: LiveRun) -> None:
    result = _promtool("check", "config", str(live.test_config))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_shipped_alerting_rules_evaluate_without_errors_on_live_data(live: LiveRun) -> None:
    groups = get_json(f"{live.prometheus}/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
