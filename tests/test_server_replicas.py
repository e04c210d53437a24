"""The target's own /metrics broken down by replica (observe/server_replicas.py): parsed from
the simulated fleet's real exposition, sampled during real runs through the fleet, and what
summary.json, the printed summary and the HTML report make of it when no response named a
replica (docs/fleets.md, "Replicas the server's metrics name")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cli_runs import CliRun, agentload_run, write_profile
from conftest import StartSim

from loadgen.observe.replicas import MAX_REPLICAS, OTHER_REPLICA
from loadgen.observe.server_replicas import ServerReplicas
from loadgen.observe.summary_text import format_summary
from loadgen.observe.target_metrics import TargetMetricsSampler, parse_by_replica
from loadgen.report.html.replicas import replica_section
from loadgen.sim import SimServer

# Coding-style steps that resend a growing history, a few agents at a time, at test scale.
PROFILE: dict[str, Any] = {
    "name": "server-replicas",
    "seed": 3,
    "time_scale": 0.01,
    "duration": "5s",
    "arrival": {"mode": "closed", "agents": 4},
    "force_output_length": "always",
    "agents": [
        {
            "kind": "research",
            "params": {
                "system_prompt_tokens": 200,
                "user_tokens": 800,
                "turns": 1,
                "steps_per_turn": {"uniform": [6, 10]},
                "output_tokens": {"uniform": [8, 16]},
                "tools": [{"name": "search", "result_tokens": {"uniform": [50, 100]}}],
            },
        }
    ],
}
# Counters whose per-replica values add up to the whole server's.
COUNTERS = ("requests_finished", "prompt_tokens", "generation_tokens")


async def exposition(sim: SimServer, requests: int = 6) -> str:
    """The simulator's /metrics after `requests` small chat completions."""
    body = {
        "model": sim.config.served_model_name,
        "messages": [{"role": "user", "content": "the same prefix, every time " * 30}],
        "max_tokens": 4,
    }
    async with aiohttp.ClientSession() as http:
        for _ in range(requests):
            async with http.post(f"{sim.base_url}/chat/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()
        async with http.get(sim.base_url.removesuffix("/v1") + "/metrics") as resp:
            return await resp.text()


def metrics_url(sim: SimServer) -> str:
    return sim.base_url.removesuffix("/v1") + "/metrics"


# -- parsing the real exposition ------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["vllm", "vllm-v0", "sglang", "llamacpp"])
async def test_each_dialects_figures_split_by_the_replica_label_add_up_to_the_whole(
    start_sim: StartSim, dialect: str
) -> None:
    sim = await start_sim(replicas=3, metrics_dialect=dialect)
    whole, label, by_replica = parse_by_replica(await exposition(sim))
    assert label == "replica"
    assert set(by_replica) == {"r0", "r1", "r2"}
    for figure in COUNTERS:
        if figure in whole:
            assert sum(r[figure] for r in by_replica.values()) == whole[figure], figure
    # Round robin: six requests, two per replica (llama.cpp counts no finished requests).
    finished = {name: r.get("requests_finished") for name, r in by_replica.items()}
    expected = None if dialect == "llamacpp" else 2.0
    assert finished == dict.fromkeys(("r0", "r1", "r2"), expected)


async def test_without_a_replica_label_the_engine_label_names_the_replicas(
    start_sim: StartSim,
) -> None:
    sim = await start_sim(replicas=3)
    # vLLM's data-parallel engines carry `engine` alone.
    text = re.sub(r',?replica="r\d+"', "", await exposition(sim))
    _, label, by_replica = parse_by_replica(text)
    assert label == "engine"
    assert {name: r["requests_finished"] for name, r in by_replica.items()} == {
        "0": 2.0,
        "1": 2.0,
        "2": 2.0,
    }


async def test_replicas_past_the_cap_are_tallied_together_as_other(start_sim: StartSim) -> None:
    sim = await start_sim(replicas=3)
    text = await exposition(sim)
    # The fleet's lines of r0, repeated for MAX_REPLICAS + 6 replicas of that name and size.
    r0 = [line for line in text.splitlines() if 'replica="r0"' in line]
    many = "\n".join(
        line.replace('replica="r0"', f'replica="x{i:03d}"')
        for i in range(MAX_REPLICAS + 6)
        for line in r0
    )
    tally = ServerReplicas()
    for _ in range(2):  # the same names scrape after scrape keep their keys
        _, label, by_replica = parse_by_replica(many + "\n", tally.key)
        tally.add(label, by_replica)
    assert len(by_replica) == MAX_REPLICAS + 1
    assert by_replica[OTHER_REPLICA]["requests_finished"] == 6 * 2.0  # six replicas' two each
    assert by_replica["x000"]["requests_finished"] == 2.0
    assert len(tally.report()["by_replica"]) == MAX_REPLICAS + 1


# -- sampling a server -----------------------------------------------------------------------


async def test_an_unlabelled_single_server_yields_no_server_by_replica(
    start_sim: StartSim,
) -> None:
    sim = await start_sim()
    async with TargetMetricsSampler(metrics_url(sim), interval_s=60) as sampler:
        await exposition(sim)
    report = sampler.report()
    assert report["available"] is True
    assert report["samples"] == 2
    assert "by_replica" not in report
    assert "replica_label" not in report


async def test_the_sampler_counts_what_each_replica_finished_between_its_first_and_last_scrape(
    start_sim: StartSim,
) -> None:
    sim = await start_sim(replicas=3)
    await exposition(sim, requests=3)  # before the baseline: not the run's
    async with TargetMetricsSampler(metrics_url(sim), interval_s=60) as sampler:
        await exposition(sim, requests=7)
    server = sampler.report()
    assert server["replica_label"] == "replica"
    finished = {name: r["requests_finished"] for name, r in server["by_replica"].items()}
    assert finished == {"r0": 3, "r1": 2, "r2": 2}  # round robin from r0 again
    assert server["by_replica"]["r0"]["share"] == pytest.approx(3 / 7)


# -- runs through the fleet ------------------------------------------------------------------

_RUNS: dict[str, CliRun] = {}


async def fleet_run(start_sim: StartSim, tmp_path: Path, *, header: bool) -> CliRun:
    """`agentload run --scrape-target-metrics` through a simulated fleet of three replicas,
    reading their response header or not (the profile's `replica_headers: []`); each kind of
    run is made once per session and its summary shared."""
    key = "header" if header else "no-header"
    if key not in _RUNS:
        sim = await start_sim(replicas=3)
        spec = dict(PROFILE) if header else {**PROFILE, "replica_headers": []}
        profile = write_profile(tmp_path / "profile.yaml", spec)
        flags = ("--scrape-target-metrics", "--target-metrics-interval", "1")
        _RUNS[key] = await agentload_run(profile, tmp_path / "out", *flags, target=sim.base_url)
    return _RUNS[key]


async def test_the_servers_count_per_replica_matches_the_headers_within_the_requests_cut(
    start_sim: StartSim, tmp_path: Path
) -> None:
    summary = (await fleet_run(start_sim, tmp_path, header=True)).summary
    assert summary["by_replica_source"] == "response header"
    client = {name: r["requests"]["total"] for name, r in summary["by_replica"].items()}
    server = {name: r["requests_finished"] for name, r in summary["server"]["by_replica"].items()}
    assert set(server) == set(client) == {"r0", "r1", "r2"}
    assert sum(client.values()) > 60
    # The server's count is the client's plus the start-up probe (a request the server
    # finished and no step of the run), plus the requests the run's end cut off after the
    # server had finished them but before the client recorded them (a cut step is not
    # recorded): at most one per agent running at the end. The last scrape follows the stop,
    # so every request the client recorded is in it.
    cut = summary["sessions"]["running_at_end"]["count"]
    for name in client:
        assert 0 <= server[name] - client[name] <= cut + 1, (client, server, cut)
    assert 0 <= sum(server.values()) - (sum(client.values()) + 1) <= cut, (client, server, cut)


async def test_without_a_replica_header_summary_by_replica_comes_from_the_servers_metrics(
    start_sim: StartSim, tmp_path: Path
) -> None:
    summary = (await fleet_run(start_sim, tmp_path, header=False)).summary

    # No response named a replica: the run's own summary.json takes the server's view.
    assert summary["by_replica_source"] == "server metrics"
    server = summary["server"]
    assert set(server["by_replica"]) == {"r0", "r1", "r2"}
    by_replica = summary["by_replica"]
    assert {n: r["requests"]["total"] for n, r in by_replica.items()} == {
        n: r["requests_finished"] for n, r in server["by_replica"].items()
    }
    assert all("latency" not in r and "state_failures" not in r for r in by_replica.values())
    imbalance = summary["replica_imbalance"]
    assert imbalance["metric"] == "requests"
    assert imbalance["slowest"] is None
    assert 1.0 <= imbalance["max_over_mean"] < 1.1  # round robin: even
    assert imbalance["text"].startswith("requests evenly spread")


async def test_a_replica_header_keeps_the_summarys_by_replica_its_own(
    start_sim: StartSim, tmp_path: Path
) -> None:
    summary = (await fleet_run(start_sim, tmp_path, header=True)).summary
    assert summary["by_replica_source"] == "response header"
    assert set(summary["by_replica"]) == {"r0", "r1", "r2"}
    # The client's own counts, with latency: not the server's view of the same run.
    assert all("latency" in r for r in summary["by_replica"].values())
    assert summary["server"]["by_replica"]


async def test_the_printed_summary_names_the_server_as_source_without_latency_columns(
    start_sim: StartSim, tmp_path: Path
) -> None:
    summary = (await fleet_run(start_sim, tmp_path, header=False)).summary

    lines = format_summary(summary).splitlines()

    start = next(i for i, line in enumerate(lines) if line.startswith("replicas "))
    assert lines[start] == (
        "replicas        3, from the server's metrics (label replica): "
        "requests it finished, no latency"
    )
    assert lines[start + 1].split() == [
        "replica", "requests", "share", "out", "tok/s", "cache", "hit", "KV", "peak", "waiting",
    ]  # fmt: skip
    assert {line.split()[0] for line in lines[start + 2 : start + 5]} == {"r0", "r1", "r2"}
    assert not any("TTFT" in line or "e2e" in line for line in lines[start : start + 5])
    assert any(line.startswith("imbalance       requests evenly spread") for line in lines)


async def test_the_html_report_names_the_server_as_source_without_latency(
    start_sim: StartSim, tmp_path: Path
) -> None:
    summary = (await fleet_run(start_sim, tmp_path, header=False)).summary

    html = replica_section(summary)

    assert "from the server&#x27;s own metrics (their replica label)" in html
    assert "<th>requests finished</th>" in html
    assert "TTFT" not in html
    assert "e2e" not in html
    assert 'id="ttft-by-replica"' not in html
    for name in ("r0", "r1", "r2"):
        assert f"<td>{name}</td>" in html


async def test_the_html_report_keeps_latency_columns_for_header_named_replicas(
    start_sim: StartSim, tmp_path: Path
) -> None:
    summary = (await fleet_run(start_sim, tmp_path, header=True)).summary

    html = replica_section(summary)

    assert "named by the responses&#x27; replica header" in html
    assert "<th>TTFT p50</th>" in html
