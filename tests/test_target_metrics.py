"""The target's /metrics during a run: names of every server read, deltas, what ran out first."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from loadgen.observe.live_observation import LiveObservation, ObservationSettings
from loadgen.observe.target_metrics import (
    ServerSample,
    TargetMetricsSampler,
    parse_server_metrics,
    server_report,
)
from loadgen.sim import SimServer

StartSim = Callable[..., Awaitable[SimServer]]

VLLM = """\
# HELP vllm:num_requests_running Requests in the running batch.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
vllm:num_requests_waiting{model_name="m"} 2.0
vllm:kv_cache_usage_perc{model_name="m"} 0.5
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{model_name="m"} 4.0
vllm:prefix_cache_queries_total{model_name="m"} 1000.0
vllm:prefix_cache_hits_total{model_name="m"} 800.0
vllm:prompt_tokens_total{model_name="m"} 5000.0
vllm:generation_tokens_total{model_name="m"} 700.0
vllm:time_to_first_token_seconds_bucket{model_name="m",le="0.1"} 9.0
vllm:time_to_first_token_seconds_count{model_name="m"} 9.0
"""
VLLM_OLD = """\
vllm:num_requests_running{model_name="m"} 1.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
vllm:gpu_prefix_cache_queries_total{model_name="m"} 10.0
vllm:gpu_prefix_cache_hits_total{model_name="m"} 5.0
"""
SGLANG = """\
sglang:num_running_reqs{model_name="m"} 8.0
sglang:num_queue_reqs{model_name="m"} 1.0
sglang:token_usage{model_name="m"} 0.75
sglang:cache_hit_rate{model_name="m"} 0.6
sglang:num_retracted_reqs{model_name="m"} 2.0
sglang:prompt_tokens_total{model_name="m"} 300.0
sglang:generation_tokens_total{model_name="m"} 30.0
"""
LLAMACPP = """\
llamacpp:requests_processing 2
llamacpp:requests_deferred 5
llamacpp:prompt_tokens_total 120
llamacpp:tokens_predicted_total 40
"""


def samples(*values: Mapping[str, float]) -> list[ServerSample]:
    return [ServerSample(float(i), dict(v)) for i, v in enumerate(values)]


# -- reading the names --------------------------------------------------------------------


def test_parse_reads_current_vllm_names() -> None:
    assert parse_server_metrics(VLLM) == {
        "running": 3.0,
        "waiting": 2.0,
        "kv_cache_usage": 0.5,
        "preemptions": 4.0,
        "prefix_cache_queries": 1000.0,
        "prefix_cache_hits": 800.0,
        "prompt_tokens": 5000.0,
        "generation_tokens": 700.0,
    }


def test_parse_reads_older_vllm_names() -> None:
    assert parse_server_metrics(VLLM_OLD) == {
        "running": 1.0,
        "kv_cache_usage": 0.25,
        "prefix_cache_queries": 10.0,
        "prefix_cache_hits": 5.0,
    }


def test_parse_reads_sglang_names() -> None:
    assert parse_server_metrics(SGLANG) == {
        "running": 8.0,
        "waiting": 1.0,
        "kv_cache_usage": 0.75,
        "prefix_cache_hit_rate": 0.6,
        "retractions": 2.0,
        "prompt_tokens": 300.0,
        "generation_tokens": 30.0,
    }


def test_parse_reads_llamacpp_names() -> None:
    assert parse_server_metrics(LLAMACPP) == {
        "running": 2.0,
        "waiting": 5.0,
        "prompt_tokens": 120.0,
        "generation_tokens": 40.0,
    }


def test_parse_adds_up_queues_and_takes_the_fullest_cache_over_replicas() -> None:
    text = """\
vllm:num_requests_waiting{engine="0"} 2
vllm:num_requests_waiting{engine="1"} 3
vllm:kv_cache_usage_perc{engine="0"} 0.4
vllm:kv_cache_usage_perc{engine="1"} 0.9
"""
    assert parse_server_metrics(text) == {"waiting": 5.0, "kv_cache_usage": 0.9}


def test_parse_prefers_the_current_name_when_both_are_exposed() -> None:
    text = 'vllm:kv_cache_usage_perc{m="a"} 0.3\nvllm:gpu_cache_usage_perc{m="a"} 0.9\n'

    assert parse_server_metrics(text) == {"kv_cache_usage": 0.3}


# -- deltas and saturation ----------------------------------------------------------------


def test_report_counts_counter_increases_from_the_first_sample() -> None:
    report = server_report(
        samples(
            {"prompt_tokens": 1000, "generation_tokens": 50, "preemptions": 2},
            {"prompt_tokens": 1600, "generation_tokens": 80, "preemptions": 2},
            {"prompt_tokens": 2000, "generation_tokens": 90, "preemptions": 5},
        )
    )

    assert report["prompt_tokens"] == 1000
    assert report["generation_tokens"] == 40
    assert report["preemptions"] == 3


def test_report_counts_a_counter_that_restarted_from_zero() -> None:
    report = server_report(samples(*({"prompt_tokens": v} for v in (500, 900, 100))))

    assert report["prompt_tokens"] == 400 + 100


def test_report_takes_the_prefix_hit_ratio_of_the_run_not_of_the_server_lifetime() -> None:
    report = server_report(
        samples(
            {"prefix_cache_queries": 10_000, "prefix_cache_hits": 9_000},
            {"prefix_cache_queries": 11_000, "prefix_cache_hits": 9_100},
        )
    )

    assert report["prefix_cache_hit_ratio"] == 0.1


def test_report_falls_back_to_sglang_cached_over_prompt_tokens() -> None:
    report = server_report(
        samples(
            {"cached_tokens": 0, "prompt_tokens": 0},
            {"cached_tokens": 300, "prompt_tokens": 1000},
        )
    )

    assert report["prefix_cache_hit_ratio"] == 0.3


def test_full_kv_cache_first_is_named_saturated_first() -> None:
    report = server_report(
        samples(
            {"kv_cache_usage": 0.5, "waiting": 0, "preemptions": 0},
            {"kv_cache_usage": 0.97, "waiting": 0, "preemptions": 0},
            {"kv_cache_usage": 0.99, "waiting": 4, "preemptions": 1},
            {"kv_cache_usage": 0.99, "waiting": 6, "preemptions": 3},
        )
    )

    assert report["saturated_first"] == "kv_cache"
    assert report["saturation_onset_s"] == {"kv_cache": 1.0, "preemptions": 2.0, "queue": 3.0}
    assert report["kv_cache_usage_peak"] == 0.99
    assert report["waiting_peak"] == 6


def test_queue_counts_as_saturated_only_when_non_empty_in_two_samples_in_a_row() -> None:
    report = server_report(
        samples(
            {"kv_cache_usage": 0.2, "waiting": 3},
            {"kv_cache_usage": 0.2, "waiting": 0},
            {"kv_cache_usage": 0.3, "waiting": 1},
            {"kv_cache_usage": 0.3, "waiting": 2},
        )
    )

    assert report["saturated_first"] == "queue"
    assert report["saturation_onset_s"]["queue"] == 3.0


def test_a_queue_that_forms_while_the_cache_is_nearly_full_names_the_kv_cache() -> None:
    report = server_report(
        samples(
            {"kv_cache_usage": 0.5, "waiting": 0},
            {"kv_cache_usage": 0.85, "waiting": 2},
            {"kv_cache_usage": 0.88, "waiting": 3},
        )
    )

    assert report["saturated_first"] == "kv_cache"
    assert report["saturation_onset_s"] == {"kv_cache": 2.0, "preemptions": None, "queue": 2.0}


def test_a_queue_beside_a_roomy_cache_names_the_queue() -> None:
    report = server_report(
        samples(
            {"kv_cache_usage": 0.5, "waiting": 2},
            {"kv_cache_usage": 0.6, "waiting": 3},
        )
    )

    assert report["saturated_first"] == "queue"
    assert report["saturation_onset_s"]["kv_cache"] is None


def test_preemptions_before_a_full_cache_are_named_first() -> None:
    report = server_report(
        samples(
            {"kv_cache_usage": 0.6, "preemptions": 10},
            {"kv_cache_usage": 0.9, "preemptions": 12},
            {"kv_cache_usage": 0.96, "preemptions": 15},
        )
    )

    assert report["saturated_first"] == "preemptions"


def test_resources_running_out_in_the_same_sample_name_the_kv_cache() -> None:
    report = server_report(
        samples(
            {"kv_cache_usage": 0.5, "preemptions": 0, "waiting": 1},
            {"kv_cache_usage": 0.99, "preemptions": 2, "waiting": 5},
        )
    )

    assert report["saturated_first"] == "kv_cache"


def test_sglang_retractions_count_as_preemptions() -> None:
    report = server_report(samples({"retractions": 0}, {"retractions": 2}, {"retractions": 1}))

    assert report["preemptions"] == 3
    assert report["saturated_first"] == "preemptions"


def test_a_server_that_never_ran_out_reports_null() -> None:
    report = server_report(samples({"kv_cache_usage": 0.1, "waiting": 0, "preemptions": 0}))

    assert report["saturated_first"] is None
    assert report["saturation_onset_s"] == {"kv_cache": None, "preemptions": None, "queue": None}


# -- sampling a real server ---------------------------------------------------------------


async def _chat(http: aiohttp.ClientSession, sim: SimServer, n: int) -> dict[str, Any]:
    body = {
        "model": "agentload-sim",
        "messages": [{"role": "user", "content": "count to ten please"}],
        "max_tokens": n,
        "min_tokens": n,
        "ignore_eos": True,
    }
    async with http.post(f"{sim.base_url}/chat/completions", json=body) as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def test_sampler_measures_the_tokens_the_sim_generated_during_sampling(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    url = sim.base_url.removesuffix("/v1") + "/metrics"
    await _chat(http, sim, 7)  # before sampling: not in the delta

    async with TargetMetricsSampler(url, session=http, interval_s=0.05) as sampler:
        replies = [await _chat(http, sim, n) for n in (5, 11, 13)]

    report = sampler.report()
    assert report["available"] is True
    assert report["engine"] == "vllm"
    assert report["samples"] >= 2
    assert report["scrape_errors"] == 0
    assert report["generation_tokens"] == 5 + 11 + 13
    assert report["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in replies)


async def test_sampler_without_a_reachable_endpoint_reports_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async with TargetMetricsSampler(f"http://127.0.0.1:{port}/metrics", interval_s=0.05) as sampler:
        pass

    report = sampler.report()
    assert report["available"] is False
    assert report["scrape_errors"] == 2  # the baseline and the final scrape
    assert report["last_error"]
    assert report["saturated_first"] is None


async def test_sampler_counts_a_non_200_answer_as_a_scrape_error(sim: SimServer) -> None:
    url = sim.base_url + "/no-metrics-here"

    async with TargetMetricsSampler(url, interval_s=60) as sampler:
        pass

    assert sampler.errors == 2
    assert sampler.last_error is not None
    assert "HTTP 404" in sampler.last_error


# -- lending the run's session -------------------------------------------------------------


async def _observe_once(metrics_url: str, target_url: str, session: aiohttp.ClientSession) -> None:
    live = LiveObservation(ObservationSettings(target_metrics_url=metrics_url))
    await live.start(
        profile="p",
        slos={},
        target_url=target_url,
        model="m",
        users=lambda: 0,
        target_session=session,
    )
    await live.stop()


async def test_run_session_with_its_api_key_is_lent_only_to_the_target_origin() -> None:
    seen: list[str | None] = []

    async def metrics(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(text=VLLM)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-x"}) as run_session:
            await _observe_once(url, f"http://127.0.0.1:{port}/v1", run_session)
            await _observe_once(url, "http://gateway.example:443/v1", run_session)
    finally:
        await runner.cleanup()

    assert seen == ["Bearer sk-x"] * 2 + [None] * 2  # baseline and final scrape of each
