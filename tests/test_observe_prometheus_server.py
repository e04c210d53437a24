"""The /metrics endpoint of a live run, and the generator's own live gauges."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.observe.prometheus.generator import GeneratorSampler
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.server import MetricsServer


async def test_server_on_port_0_serves_the_registry_in_text_format(
    http: aiohttp.ClientSession,
) -> None:
    metrics = RunMetrics()
    metrics.set_target("p", "http://gpu:8000/v1", "llama")

    async with (
        MetricsServer(metrics.registry, host="127.0.0.1") as server,
        http.get(server.url) as r,
    ):
        text = await r.text()

    assert server.port > 0
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"agentload_target_info", "agentload_requests", "agentload_ttft_seconds"} <= names


async def test_wait_for_scrape_returns_true_after_the_next_scrape(
    http: aiohttp.ClientSession,
) -> None:
    async with MetricsServer(RunMetrics().registry, host="127.0.0.1") as server:
        waiter = asyncio.create_task(server.wait_for_scrape(timeout_s=10))
        await asyncio.sleep(0)
        async with http.get(server.url) as r:
            await r.read()

        assert await waiter is True
        assert server.scrapes == 1


async def test_wait_for_scrape_returns_false_when_nobody_scrapes() -> None:
    async with MetricsServer(RunMetrics().registry, host="127.0.0.1") as server:
        assert await server.wait_for_scrape(timeout_s=0.05) is False


async def test_taken_port_raises_oserror() -> None:
    async with MetricsServer(RunMetrics().registry, host="127.0.0.1") as first:
        second = MetricsServer(RunMetrics().registry, host="127.0.0.1", port=first.port)
        with pytest.raises(OSError, match="in use"):
            await second.start()


def test_port_outside_the_tcp_range_is_refused() -> None:
    with pytest.raises(ValueError, match="65535"):
        MetricsServer(RunMetrics().registry, port=70000)


async def test_sampler_publishes_users_cpu_ratio_and_new_arrival_lags() -> None:
    metrics = RunMetrics()
    wall = itertools.count(start=0.0, step=1.0)  # each reading one second later
    cpu = itertools.count(start=0.0, step=0.25)  # a quarter of a core
    lags = [0.5, 0.01]
    sampler = GeneratorSampler(
        metrics,
        "p",
        users=lambda: 7,
        arrival_lags=lags,
        interval_s=1.0,
        clock=lambda: next(wall),
        cpu_clock=lambda: next(cpu),
    )

    sampler.sample()
    lags.append(2.0)
    sampler.sample()

    reg = metrics.registry
    assert reg.get_sample_value("agentload_users", {"profile": "p"}) == 7
    assert reg.get_sample_value("agentload_generator_cpu_ratio", {"profile": "p"}) == 0.25
    lag = "agentload_generator_schedule_lag_seconds"
    assert reg.get_sample_value(f"{lag}_count", {"profile": "p"}) == 3
    assert reg.get_sample_value(f"{lag}_sum", {"profile": "p"}) == pytest.approx(2.51)


async def test_sampling_leaves_the_final_user_count_on_exit() -> None:
    metrics = RunMetrics()
    users = [5]

    async with metrics.sampling("p", users=lambda: users[0], interval_s=60):
        assert metrics.registry.get_sample_value("agentload_users", {"profile": "p"}) == 5
        users[0] = 0

    assert metrics.registry.get_sample_value("agentload_users", {"profile": "p"}) == 0
