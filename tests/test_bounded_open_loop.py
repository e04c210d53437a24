"""Open-loop arrival lags take memory that does not grow with the run, and still count every one."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import cast

import pytest

import loadgen.runtime.load as load_module
from loadgen.agents import Agent
from loadgen.observe import LatencyHistogram
from loadgen.observe.prometheus.generator import GeneratorSampler
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.profile.schema import Arrival
from loadgen.runtime.load import ArrivalLags, OpenLoop


def test_lags_keep_a_bounded_tail_and_count_every_one_in_the_histogram() -> None:
    lags = ArrivalLags(keep=1000)
    rng = random.Random(1)
    values = [rng.uniform(0.0, 0.05) for _ in range(100_000)]
    for value in values:
        lags.append(value)
        assert len(lags._kept) < 2000
    assert len(lags) == 100_000
    expected = LatencyHistogram()
    expected.record_many(values)
    assert lags.histogram == expected
    assert lags[-1] == values[-1]
    assert lags[99_000:] == values[99_000:]
    assert lags[len(lags) - 5 :: 2] == values[-5::2]
    assert list(lags) == values[-len(lags._kept) :]  # iterating gives the kept ones only
    with pytest.raises(IndexError, match="not kept"):
        lags[0]


def test_a_reader_that_keeps_up_sees_every_lag_in_order() -> None:
    lags = ArrivalLags(keep=100)
    seen: list[float] = []
    read = 0
    for n in range(10_000):
        lags.append(n / 1000)
        if n % 97 == 0:  # less than `keep` arrivals between reads, as the live sampler
            seen += lags[read:]
            read = len(lags)
    seen += lags[read:]
    assert seen == [n / 1000 for n in range(10_000)]


def test_the_live_sampler_publishes_every_lag_across_trims() -> None:
    metrics = RunMetrics()
    lags = ArrivalLags(keep=10)
    sampler = GeneratorSampler(metrics, "p", users=lambda: 0, arrival_lags=lags)
    for n in range(1000):
        lags.append(0.001)
        if n % 7 == 0:
            sampler.sample()
    sampler.sample()
    name = "agentload_generator_schedule_lag_seconds_count"
    assert metrics.registry.get_sample_value(name, {"profile": "p"}) == 1000


async def test_a_long_open_loop_run_keeps_its_lag_memory_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(load_module, "_KEPT_LAGS", 1000)
    sessions = 0

    def make_agent(slot: int) -> tuple[Agent, str]:
        return cast(Agent, SimpleNamespace(id=f"a{slot}")), "a"

    async def run_session(agent: Agent, label: str, session_id: str) -> None:
        nonlocal sessions
        sessions += 1

    # 100,000 arrivals planned within 0.5 s: far more than one loop can start on time, so
    # every one is late and its lag recorded; the run takes as long as starting them takes.
    arrival = Arrival(mode="open", rate=200_000.0)
    driver = OpenLoop(arrival, [], make_agent, run_session, seed=5)
    await driver.run(0.5)
    await asyncio.sleep(0)
    lags = driver.schedule_lag
    assert 90_000 < len(lags) < 110_000
    assert lags.histogram.count == len(lags)
    assert len(lags._kept) < 2000  # not one float per arrival
    assert sessions + driver.dropped <= len(lags)
