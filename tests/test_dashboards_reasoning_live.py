"""A real Prometheus scrapes a run whose model reasons; the reasoning panels draw it.

Coding agents that ask for `reasoning_effort: low` against the simulator (each request
thinks for exactly 64 tokens before it answers), through `agentload run` with its exporter,
scraped every second by Debian's `prometheus`. tests/test_observe_prometheus_live.py runs
every other query (its agents do not reason: the reasoning token panels read 0 there).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.sim import PRESETS, SimConfig, SimServer
from tests.test_observe_prometheus_live import (
    ROOT,
    LiveRun,
    Prometheus,
    dashboard_queries,
    free_port,
    substituted,
)

pytestmark = pytest.mark.slow

RUN_S = 8.0
THINKING = 64  # reasoning tokens per request at effort "low" (spread 0: exactly)
PROFILE: dict[str, Any] = {
    "name": "reasoning-live",
    "seed": 7,
    "time_scale": 0.01,
    "arrival": {"mode": "closed", "agents": 6},
    "agents": [
        {
            "kind": "coding",
            "reasoning_effort": "low",
            "params": {
                "system_prompt_tokens": 400,
                "turns": 2,
                "steps_per_turn": {"uniform": [2, 4]},
                "output_tokens": {"uniform": [24, 64]},
                "tool_result_tokens": 200,
                "think_time_s": 0,
            },
        }
    ],
}
SIM = {"reasoning": {"tokens": {"low": THINKING}, "spread": 0}}

QUERIES = dashboard_queries()
REASONING_QUERIES = [
    (name, expr)
    for name, expr in QUERIES
    if "agentload_reasoning_tokens_total" in expr or "agentload_ttfat_seconds" in expr
]


async def _reasoning_run(tmp: Path, prometheus: Prometheus) -> LiveRun:
    profile = tmp / "profile.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    sim = SimServer(SimConfig.model_validate({**PRESETS["fast"].model_dump(), **SIM}))
    await sim.start()
    log = (tmp / "agentload.log").open("wb")
    try:
        port = free_port()
        prometheus.start({"agentload": [port]})
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadgen", "run", str(profile), "--target", sim.base_url,
            "--duration", f"{RUN_S:g}s", "--prometheus-port", str(port), "--quiet",
            "--out", str(tmp / "results"), cwd=ROOT, stdout=log, stderr=log,
        )  # fmt: skip
        launched = time.time()
        await prometheus.wait_until("sum(agentload_users)", 1.0, count=1, timeout_s=60)
        code = await asyncio.wait_for(run.wait(), timeout=120)
        assert code == 0, (tmp / "agentload.log").read_text()[-3000:]
        ended = time.time()
        await prometheus.wait_until("timestamp(up)", ended + 0.1, count=1)
        busy_until = prometheus.last_time("sum(agentload_users) > 0", launched, ended)
    finally:
        log.close()
        await sim.stop()
    return LiveRun(
        prometheus=prometheus.url,
        summary=json.loads((tmp / "results" / "summary.json").read_text()),
        live_at=busy_until - 1.0,
        window=f"{math.ceil(RUN_S + 5)}s",
        test_config=prometheus.config,
        final_at=ended,
    )


@pytest.fixture(scope="module")
def reasoning(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """The reasoning run, shared by every test of this module."""
    tmp = tmp_path_factory.mktemp("reasoning-live")
    prometheus = Prometheus(tmp)
    try:
        yield asyncio.run(asyncio.wait_for(_reasoning_run(tmp, prometheus), timeout=150))
    finally:
        prometheus.stop()


def test_the_reasoning_panels_are_found() -> None:
    panels = {name.rsplit(" / ", 1)[0] for name, _ in REASONING_QUERIES}
    assert panels == {
        "latency / Time to first answer token (TTFAT)",
        "overview / Answer vs reasoning tokens/s",
        "overview / Reasoning share",
    }


@pytest.mark.parametrize(
    ("panel", "expr"), REASONING_QUERIES, ids=[n for n, _ in REASONING_QUERIES]
)
def test_reasoning_query_returns_data_from_a_reasoning_run(
    reasoning: LiveRun, panel: str, expr: str
) -> None:
    result = reasoning.query(substituted(expr, reasoning.window), at=reasoning.live_at)
    values = [float(r["value"][1]) for r in result]
    assert values, f"{panel}: no series"
    assert all(math.isfinite(v) and v > 0 for v in values), f"{panel}: {values}"


def _one(run: LiveRun, panel: str, ref: str) -> float:
    """The one value of a dashboard query at the run's live time."""
    (expr,) = [e for n, e in QUERIES if n == f"{panel} / {ref}"]
    (found,) = run.query(substituted(expr, run.window), at=run.live_at)
    return float(found["value"][1])


def test_answer_and_reasoning_add_up_to_the_output_tokens(reasoning: LiveRun) -> None:
    tokens = reasoning.summary["tokens"]
    assert tokens["reasoning"] > 0
    assert reasoning.value("sum(agentload_reasoning_tokens_total)") == tokens["reasoning"]
    panel = "overview / Answer vs reasoning tokens/s"
    answer, thinking = _one(reasoning, panel, "A"), _one(reasoning, panel, "B")
    output = _one(reasoning, "overview / Output tokens per second", "A")
    assert math.isclose(answer + thinking, output, rel_tol=1e-9)
    share = _one(reasoning, "overview / Reasoning share", "A")
    assert math.isclose(share, thinking / (answer + thinking), rel_tol=1e-9)


def test_ttfat_waits_for_the_thinking_that_ttft_does_not(reasoning: LiveRun) -> None:
    ttfat = _one(reasoning, "latency / Time to first answer token (TTFAT)", "A")  # p50
    ttft = _one(reasoning, "latency / Time to first token", "A")
    assert ttfat > ttft > 0
