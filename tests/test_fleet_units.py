"""A fleet's parts without a run: balancing, the replica a reply names, per-replica statistics
(merged exactly), the summary's imbalance, the printed table, the report and the metrics."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from raw_servers import Serve

from loadgen.cli.main import build_parser
from loadgen.cli.run_setup import parse_targets, target_config, worker_argv
from loadgen.errors import ConfigError
from loadgen.observe import RunStats, format_summary
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.sink import MAX_LABEL_VALUES, OTHER_LABEL
from loadgen.observe.records import StepRecord
from loadgen.observe.replicas import MAX_REPLICAS, OTHER_REPLICA
from loadgen.profile.schema import REPLICA_HEADERS
from loadgen.protocol import send
from loadgen.report.html.replicas import replica_section
from loadgen.transport import TargetConfig, Transport

TWO = (("a", "http://127.0.0.1:8001"), ("b", "http://127.0.0.1:8002/v1"))


def step(replica: str | None, **fields: Any) -> StepRecord:
    data: dict[str, Any] = {
        "session_id": "s0",
        "agent": "coding",
        "step": 1,
        "kind": "turn",
        "api": "chat",
        "started_unix": 0.0,
        "e2e_s": 0.5,
        "ttft_s": 0.1,
        "prompt_tokens": 1000,
        "completion_tokens": 20,
        "cached_tokens": 600,
        "replica": replica,
    }
    return StepRecord(**{**data, **fields})


def summary_of(stats: RunStats, **target: Any) -> dict[str, Any]:
    return stats.summary(
        target={"url": "http://x/v1", "model": "m", **target},
        profile="p",
        duration_s=10.0,
        generator={"saturated": False},
    )


# -- balancing ------------------------------------------------------------------------


def test_a_fleet_target_keeps_each_replica_url_normalised_and_the_first_as_base_url() -> None:
    fleet = TargetConfig.fleet(TWO, balance="session", api_key="k")
    assert fleet.replicas == (("a", "http://127.0.0.1:8001/v1"), ("b", "http://127.0.0.1:8002/v1"))
    assert fleet.base_url == "http://127.0.0.1:8001/v1"
    configs = fleet.replica_configs()
    assert [c.base_url for c in configs] == [url for _, url in fleet.replicas]
    assert all(c.api_key == "k" and not c.replicas for c in configs)
    one = TargetConfig.fleet(TWO[:1], balance="session")
    assert (one.replicas, one.replica_configs()) == ((), (one,))


def test_a_fleet_with_two_replicas_of_one_name_or_an_unknown_balance_is_refused() -> None:
    with pytest.raises(ConfigError, match="distinct"):
        TargetConfig.fleet([("a", "http://h:1"), ("a", "http://h:2")])
    with pytest.raises(ConfigError, match="balance"):
        TargetConfig.fleet(TWO, balance="random")


def test_round_robin_hands_each_request_to_the_next_replica_whatever_its_session() -> None:
    transport = Transport(TargetConfig.fleet([*TWO, ("c", "http://127.0.0.1:8003")]))
    picks = [transport.pick("same-session") for _ in range(7)]
    assert picks == [0, 1, 2, 0, 1, 2, 0]
    assert [transport.replica_name(i) for i in range(3)] == ["a", "b", "c"]


def test_session_balance_keeps_a_session_on_one_replica_in_any_process() -> None:
    target = TargetConfig.fleet(TWO, balance="session")
    first, second = Transport(target), Transport(target)  # two processes of one swarm
    sessions = [f"w{w}-coding-{i}-s{n}" for w in range(2) for i in range(20) for n in range(3)]
    picks = {s: first.pick(s) for s in sessions}
    assert all(first.pick(s) == picks[s] == second.pick(s) for s in sessions)
    share = sum(picks.values()) / len(picks)
    assert 0.3 < share < 0.7  # both replicas get sessions


def test_a_single_target_has_one_replica_and_no_name() -> None:
    transport = Transport(TargetConfig("http://127.0.0.1:8001"))
    assert [transport.pick(f"s{i}") for i in range(3)] == [0, 0, 0]
    assert transport.replica_name(0) is None


def test_a_fleet_with_an_https_replica_reads_every_replica_through_aiohttp() -> None:
    mixed = TargetConfig.fleet([("a", "http://127.0.0.1:8001"), ("b", "https://gpu:8443")])
    assert Transport(mixed).kernel_timestamps is False
    with pytest.raises(ConfigError, match="https://gpu:8443"):
        Transport(mixed, kernel_timestamps=True)


# -- the command line -----------------------------------------------------------------


def test_targets_are_named_by_name_or_by_host_and_port() -> None:
    args = build_parser().parse_args(
        ["run", "--target", "r0=http://gpu-0:8000/v1", "--target", "http://gpu-1:9000/v1"]
    )
    assert parse_targets(args) == [
        ("r0", "http://gpu-0:8000/v1"),
        ("gpu-1:9000", "http://gpu-1:9000/v1"),
    ]
    target = target_config(args, "unused")
    assert target.replicas == (
        ("r0", "http://gpu-0:8000/v1"),
        ("gpu-1:9000", "http://gpu-1:9000/v1"),
    )
    assert target.balance == "round-robin"


def test_local_workers_get_every_target_and_the_balance() -> None:
    fleet = ["--target", "a=http://h:1", "--target", "b=http://h:2", "--balance", "session"]
    args = build_parser().parse_args(["run", "ci-smoke", *fleet, "--processes", "2"])
    argv = worker_argv(args, 5557, "http://h:1", Path("out"))
    targets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--target"]
    assert targets == ["a=http://h:1", "b=http://h:2"]
    assert argv[argv.index("--balance") + 1] == "session"
    worker = build_parser().parse_args(argv[3:])
    assert target_config(worker, "unused") == target_config(args, "unused")


# -- the replica a reply names --------------------------------------------------------


async def _named(request: web.Request) -> web.Response:
    headers = {
        "x-litellm-model-id": "deployment-7",
        "x-agentload-replica": "r3",
        "x-long": "x" * 500,
    }
    body = (
        b'{"id":"c","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop",'
        b'"message":{"role":"assistant","content":"hi"}}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":1}}'
    )
    return web.Response(body=body, content_type="application/json", headers=headers)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (REPLICA_HEADERS, "r3"),
        (("x-litellm-model-id", "x-agentload-replica"), "deployment-7"),
        (("x-missing", "x-litellm-model-id"), "deployment-7"),
        (("x-missing",), None),
        (("x-long",), "x" * 120),
    ],
)
async def test_the_first_replica_header_present_names_the_replica(
    serve: Serve, names: tuple[str, ...], expected: str | None
) -> None:
    url = await serve(_named)
    async with Transport(TargetConfig(url)) as transport:
        reply = await send(transport, "chat", b"{}", replica_headers=names)
    assert reply.ok, reply.error
    assert reply.replica == expected


async def test_a_request_goes_to_the_replica_picked(serve: Serve) -> None:
    seen: list[str] = []

    def handler(name: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            seen.append(name)
            return await _named(request)

        return handle

    urls = [await serve(handler("a")), await serve(handler("b"))]
    target = TargetConfig.fleet(list(zip("ab", urls, strict=True)))
    async with Transport(target) as transport:
        for replica in (1, 0, 1):
            assert (await send(transport, "chat", b"{}", replica=replica)).ok
    assert seen == ["b", "a", "b"]


# -- statistics and the summary -------------------------------------------------------


def test_a_run_on_one_target_naming_no_replica_has_no_by_replica() -> None:
    stats = RunStats()
    stats.add_step(step(None))
    summary = summary_of(stats)
    assert "by_replica" not in summary
    assert "replica_imbalance" not in summary
    assert "replicas" not in format_summary(summary)


def test_by_replica_counts_load_latency_cache_hits_and_state_failures() -> None:
    stats = RunStats()
    for _ in range(3):
        stats.add_step(step("r0"))
    stats.add_step(step("r1", ok=False, ttft_s=None, completion_tokens=None, cached_tokens=None,
                        failures=["server_state_lost"]))  # fmt: skip
    stats.add_step(step("r1", cached_tokens=100))
    summary = summary_of(stats)
    r0, r1 = summary["by_replica"]["r0"], summary["by_replica"]["r1"]
    assert r0["requests"] == {"total": 3, "ok": 3, "failed": 0}
    assert r0["share"] == 0.6
    assert r0["tokens"] == {"prompt": 3000, "completion": 60, "cached": 1800}
    assert r0["cache_hit_ratio"] == 0.6
    assert r0["output_tokens_per_s"] == 6.0
    assert r0["latency"]["ttft_s"]["p50"] == pytest.approx(0.1, rel=0.01)
    assert r0["state_failures"] == {}
    assert r1["requests"] == {"total": 2, "ok": 1, "failed": 1}
    assert r1["state_failures"] == {"server_state_lost": 1}
    assert r1["cache_hit_ratio"] == 100 / 2000
    imbalance = summary["replica_imbalance"]
    assert imbalance["busiest"] == "r0"
    assert imbalance["idlest"] == "r1"
    assert imbalance["max_over_mean"] == pytest.approx(1.2)
    assert imbalance["text"].startswith("r0 served 60% of requests (1.20x the mean), r1 the fewest")


def test_a_replica_of_the_fleet_that_served_nothing_is_listed_at_zero() -> None:
    stats = RunStats()
    for _ in range(4):
        stats.add_step(step("a"))
    summary = summary_of(stats, replicas={"a": "http://h:1/v1", "b": "http://h:2/v1"})
    assert summary["by_replica"]["b"]["requests"]["total"] == 0
    assert summary["by_replica"]["b"]["cache_hit_ratio"] is None
    assert summary["replica_imbalance"]["idlest"] == "b"
    assert summary["replica_imbalance"]["max_over_mean"] == 2.0


def test_the_slowest_replica_is_named_by_its_median_ttft() -> None:
    stats = RunStats()
    for i in range(10):
        stats.add_step(step("quick", ttft_s=0.01 * (1 + i % 3)))
        stats.add_step(step("sluggish", ttft_s=0.3))
    slowest = summary_of(stats)["replica_imbalance"]["slowest"]
    assert (slowest["metric"], slowest["replica"]) == ("ttft_p50_s", "sluggish")
    assert slowest["value"] == pytest.approx(0.3, rel=0.01)
    text = summary_of(stats)["replica_imbalance"]["text"]
    assert "sluggish is the slowest, TTFT p50 300 ms" in text


def test_an_even_spread_is_said_so_and_the_slowest_named_only_when_it_stands_out() -> None:
    stats = RunStats()
    for _ in range(10):
        stats.add_step(step("a"))
        stats.add_step(step("b", ttft_s=0.11))
    imbalance = summary_of(stats)["replica_imbalance"]
    assert (
        imbalance["text"] == "requests evenly spread: the busiest, a, served 50% (1.00x the mean)"
    )
    assert imbalance["slowest"]["replica"] == "b"  # in the figures, not worth a word


def _fed(seed: int, replicas: int) -> RunStats:
    rng = random.Random(seed)
    stats = RunStats()
    for i in range(200):
        failed = i % 17 == 0
        record = step(f"r{rng.randrange(replicas)}", e2e_s=rng.uniform(0.1, 2), ok=not failed)
        record.ttft_s, record.cached_tokens = rng.uniform(0, 1), rng.randrange(1000)
        record.failures = ["http_error"] if failed else []
        stats.add_step(record)
    return stats


def test_replicas_merge_across_processes_exactly_as_if_counted_in_one() -> None:
    one = RunStats()
    parts = [_fed(seed, 3) for seed in (1, 2)]
    for seed in (1, 2):
        one.merge(_fed(seed, 3))
    master = RunStats()
    for part in parts:
        master.merge(RunStats.from_dict(part.to_dict()))  # as workers ship their deltas
    assert master.replicas == one.replicas
    expected: dict[str, int] = {}
    for seed in (1, 2):
        for name, r in _fed(seed, 3).replicas.items():
            expected[name] = expected.get(name, 0) + r.requests
    assert {n: r.requests for n, r in master.replicas.items()} == expected
    assert summary_of(master)["by_replica"] == summary_of(one)["by_replica"]


def test_a_worker_of_an_older_version_ships_no_replicas() -> None:
    shipped = _fed(3, 2).to_dict()
    del shipped["replicas"]
    assert RunStats.from_dict(shipped).replicas == {}


def test_replica_names_past_the_cap_are_counted_as_other() -> None:
    stats = RunStats()
    for i in range(MAX_REPLICAS + 10):
        stats.add_step(step(f"replica-{i}"))
    assert len(stats.replicas) == MAX_REPLICAS + 1
    assert stats.replicas[OTHER_REPLICA].requests == 10
    merged = RunStats()
    merged.merge(stats)
    merged.merge(_fed(4, 2))  # r0, r1: new names past the cap
    assert len(merged.replicas) == MAX_REPLICAS + 1
    assert merged.replicas[OTHER_REPLICA].requests == 210


# -- the printed summary and the report -----------------------------------------------


def _fleet_summary() -> dict[str, Any]:
    stats = RunStats()
    for i in range(41):
        stats.add_step(step("r2", ttft_s=0.8))
        if i < 9:
            stats.add_step(step("r0", ttft_s=0.05))
        if i < 25:
            stats.add_step(step("r1", ttft_s=0.1, failures=["cache_miss"]))
    return summary_of(stats, replicas={f"r{i}": f"http://h:{i}/v1" for i in range(4)},
                      balance="session")  # fmt: skip


def test_the_printed_summary_tables_the_replicas_busiest_first_and_names_the_imbalance() -> None:
    text = format_summary(_fleet_summary())
    lines = text.splitlines()
    assert "target 4 replicas: r0, r1, r2, r3 (m)" in lines[0]
    start = lines.index("replicas        4, balanced by this client (session)")
    table = lines[start + 2 : start + 6]
    assert [row.split()[0] for row in table] == ["r2", "r1", "r0", "r3"]
    assert "cache_miss 25" in table[1]
    assert "60.0%" in table[0]  # r2's cache hits
    flat = " ".join(text.split())
    assert "imbalance r2 served 55% of requests (2.19x the mean), r3 the fewest (0%)" in flat
    assert "r2 is the slowest, TTFT p50 800 ms" in flat


def test_the_report_draws_requests_and_cache_hits_per_replica() -> None:
    html = replica_section(_fleet_summary())
    assert html.startswith("<section><h2>Replicas</h2>")
    for chart in ("requests-by-replica", "cache-hits-by-replica", "ttft-by-replica"):
        assert f'data-chart="{chart}"' in html
    assert 'class="banner warn">Imbalance: r2 served 55% of requests' in html
    assert "<td>r3</td><td>0</td>" in html
    assert replica_section(summary_of(RunStats())) == ""


# -- live metrics -----------------------------------------------------------------------


def test_replica_metrics_count_each_replicas_requests_tokens_and_failures() -> None:
    metrics = RunMetrics()
    sink = metrics.sink("p")
    sink.step(step("r0"))
    sink.step(step("r0", ok=False, ttft_s=None, failures=["timeout"]))
    sink.step(step(None))  # one target, no header: no replica series

    def value(name: str, **labels: str) -> float:
        got = metrics.registry.get_sample_value(name, {"profile": "p", **labels})
        return 0.0 if got is None else got

    assert value("agentload_replica_requests_total", replica="r0", outcome="ok") == 1
    assert value("agentload_replica_requests_total", replica="r0", outcome="failed") == 1
    assert value("agentload_replica_prompt_tokens_total", replica="r0") == 2000
    assert value("agentload_replica_cached_tokens_total", replica="r0") == 1200
    assert value("agentload_replica_completion_tokens_total", replica="r0") == 40
    assert value("agentload_replica_ttft_seconds_count", replica="r0") == 1
    assert value("agentload_replica_request_duration_seconds_count", replica="r0") == 1
    assert value("agentload_replica_state_failures_total", replica="r0", kind="timeout") == 1
    assert value("agentload_replica_state_failures_total", replica="r0", kind="cache_miss") == 0
    assert value("agentload_requests_total", agent="coding", step_kind="turn", outcome="ok") == 2
    replicas = {
        s.labels["replica"]
        for family in metrics.registry.collect()
        for s in family.samples
        if "replica" in s.labels
    }
    assert replicas == {"r0"}


def test_replica_label_values_are_capped() -> None:
    metrics = RunMetrics()
    sink = metrics.sink("p")
    for i in range(MAX_LABEL_VALUES + 5):
        sink.step(step(f"replica-{i}"))
    other = metrics.registry.get_sample_value(
        "agentload_replica_requests_total",
        {"profile": "p", "replica": OTHER_LABEL, "outcome": "ok"},
    )
    assert other == 5
