"""`--metrics-dialect`: the simulator's /metrics named as vLLM, older vLLM, SGLang or llama.cpp."""

# tests/test_server_dialects_live.py scrapes each dialect with a real Prometheus and runs the
# dashboards against it; these tests pin down the names, types and semantics one by one.

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from loadgen.cli.main import build_parser
from loadgen.cli.sim_command import config_from_args
from loadgen.errors import ConfigError
from loadgen.sim import SimServer
from loadgen.sim.config import METRICS_DIALECTS, profile_sim_config
from loadgen.sim.engine import Engine
from loadgen.sim.metric_dialects import SGLANG_LOG_INTERVAL_S, server_metrics
from tests.conftest import StartSim, sim_config

# The simulator's own counters, whatever server it names its engine metrics after.
SIM_OWN = {
    "agentload_sim_faults_injected_total",
    "agentload_sim_client_disconnects_total",
    "agentload_sim_reasoning_tokens_total",
    "agentload_sim_response_lookups_total",
    "agentload_sim_engine_clock_seconds",
}
VLLM_COMMON = {
    "vllm:cache_config_info",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
}
EXPECTED = {
    "vllm": VLLM_COMMON
    | {
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:inter_token_latency_seconds",
    },
    "vllm-v0": VLLM_COMMON
    | {
        "vllm:gpu_cache_usage_perc",
        "vllm:gpu_prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_hits_total",
        "vllm:time_per_output_token_seconds",
    },
    "sglang": {
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:cache_hit_rate",
        "sglang:gen_throughput",
        "sglang:num_retracted_reqs",
        "sglang:prompt_tokens_total",
        "sglang:generation_tokens_total",
        "sglang:cached_tokens_total",
        "sglang:time_to_first_token_seconds",
        "sglang:inter_token_latency_seconds",
        "sglang:e2e_request_latency_seconds",
        "sglang:queue_time_seconds",
    },
    # A build that still has the KV-cache gauges (some newer ones dropped them).
    "llamacpp": {
        "llamacpp:prompt_tokens_total",
        "llamacpp:prompt_seconds_total",
        "llamacpp:tokens_predicted_total",
        "llamacpp:tokens_predicted_seconds_total",
        "llamacpp:n_decode_total",
        "llamacpp:n_busy_slots_per_decode",
        "llamacpp:prompt_tokens_seconds",
        "llamacpp:predicted_tokens_seconds",
        "llamacpp:kv_cache_usage_ratio",
        "llamacpp:kv_cache_tokens",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
    },
}
PROMPT_AND_GENERATION = {
    "vllm": ("vllm:prompt_tokens_total", "vllm:generation_tokens_total"),
    "vllm-v0": ("vllm:prompt_tokens_total", "vllm:generation_tokens_total"),
    "sglang": ("sglang:prompt_tokens_total", "sglang:generation_tokens_total"),
    "llamacpp": ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"),
}


async def metrics_text(http: aiohttp.ClientSession, server: SimServer) -> str:
    async with http.get(f"{server.base_url.removesuffix('/v1')}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def chat_usage(http: aiohttp.ClientSession, server: SimServer, words: int) -> dict[str, int]:
    body = {
        "model": server.config.served_model_name,
        "messages": [{"role": "user", "content": "word " * words}],
        "max_tokens": 12,
    }
    async with http.post(f"{server.base_url}/chat/completions", json=body) as resp:
        assert resp.status == 200
        usage: dict[str, int] = (await resp.json())["usage"]
        return usage


def exposed_names(text: str) -> set[str]:
    """The names the TYPE lines declare, as Prometheus stores them (no _created series)."""
    # Read from the text: prometheus_client's parser would append _total to llama.cpp's
    # n_busy_slots_per_decode, which Prometheus stores under the name the server wrote.
    declared = (line.split()[2] for line in text.splitlines() if line.startswith("# TYPE "))
    return {name for name in declared if not name.endswith("_created")}


def sample_value(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not on /metrics")


@pytest.mark.parametrize("dialect", METRICS_DIALECTS)
async def test_dialect_exposes_exactly_its_servers_names_and_the_sims_own(
    start_sim: StartSim, http: aiohttp.ClientSession, dialect: str
) -> None:
    server = await start_sim(metrics_dialect=dialect)
    await chat_usage(http, server, 40)
    assert exposed_names(await metrics_text(http, server)) == EXPECTED[dialect] | SIM_OWN


@pytest.mark.parametrize("dialect", METRICS_DIALECTS)
async def test_token_counters_equal_the_usage_clients_saw_in_every_dialect(
    start_sim: StartSim, http: aiohttp.ClientSession, dialect: str
) -> None:
    server = await start_sim(metrics_dialect=dialect)
    usages = [await chat_usage(http, server, words) for words in (30, 60, 90)]
    text = await metrics_text(http, server)
    prompt, generation = PROMPT_AND_GENERATION[dialect]
    assert sample_value(text, prompt) == sum(u["prompt_tokens"] for u in usages)
    assert sample_value(text, generation) == sum(u["completion_tokens"] for u in usages)


async def test_llamacpp_samples_carry_no_labels_as_llama_server_writes_them(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    server = await start_sim(metrics_dialect="llamacpp")
    await chat_usage(http, server, 40)
    lines = (await metrics_text(http, server)).splitlines()
    samples = [line for line in lines if line.startswith("llamacpp:")]
    assert len(samples) == len(EXPECTED["llamacpp"])
    assert all("{" not in line for line in samples)
    assert sample_value("\n".join(lines) + "\n", "llamacpp:n_decode_total") > 0


def test_sglang_interval_gauges_hold_what_its_last_logging_interval_saw() -> None:
    now = [0.0]
    registry = CollectorRegistry()
    sglang = server_metrics("sglang", "m", registry, clock=lambda: now[0])
    engine = Engine(sim_config())
    engine.prefix_queries, engine.prefix_hits, engine.preemptions = 1000, 800, 3

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(name, {"model_name": "m"})

    sglang.on_step(engine)  # inside the first interval: nothing logged yet
    assert (gauge("sglang:cache_hit_rate"), gauge("sglang:num_retracted_reqs")) == (0.0, 0.0)
    now[0] = SGLANG_LOG_INTERVAL_S
    sglang.on_step(engine)
    assert gauge("sglang:cache_hit_rate") == 0.8
    assert gauge("sglang:num_retracted_reqs") == 3
    assert gauge("sglang:cached_tokens_total") == 800  # a counter: it keeps adding up
    engine.prefix_queries, engine.prefix_hits = 1100, 810
    now[0] = 2 * SGLANG_LOG_INTERVAL_S
    sglang.on_step(engine)
    assert gauge("sglang:cache_hit_rate") == pytest.approx(0.1)
    assert gauge("sglang:num_retracted_reqs") == 0  # none in this interval
    assert gauge("sglang:cached_tokens_total") == 810


def test_sim_config_refuses_an_unknown_dialect_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"^profile sim\.metrics_dialect: .*'sglang'.*$"):
        profile_sim_config({"metrics_dialect": "tgi"})


def test_profile_sim_block_chooses_the_dialect() -> None:
    assert profile_sim_config({"metrics_dialect": "llamacpp"}).metrics_dialect == "llamacpp"


def test_metrics_dialect_flag_sets_the_config_and_defaults_to_vllm() -> None:
    parser = build_parser()
    chosen = config_from_args(parser.parse_args(["sim", "--metrics-dialect", "vllm-v0"]))
    default = config_from_args(parser.parse_args(["sim"]))
    assert (chosen.metrics_dialect, default.metrics_dialect) == ("vllm-v0", "vllm")


def test_unknown_metrics_dialect_flag_is_a_usage_error_listing_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["sim", "--metrics-dialect", "tgi"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1
    assert "--metrics-dialect" in err[0]
    assert "llamacpp" in err[0]
