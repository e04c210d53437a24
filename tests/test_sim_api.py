"""Specification of the simulator's HTTP surface: vLLM-shaped errors, knobs, SSE and /metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.protocol import count_tokens
from loadgen.protocol.tokens import words_for_tokens
from loadgen.sim import SimServer

StartSim = Callable[..., Awaitable[SimServer]]
Scrape = Callable[..., Awaitable[float]]

METRIC_NAMES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
)


def root(server: SimServer) -> str:
    """The server's address without /v1, where /health and /metrics live."""
    return server.base_url.removesuffix("/v1")


def chat_body(server: SimServer, content: str = "Fix the bug.", **fields: Any) -> dict[str, Any]:
    return {
        "model": server.config.served_model_name,
        "messages": [{"role": "user", "content": content}],
        **fields,
    }


async def post(
    http: aiohttp.ClientSession, server: SimServer, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """POST to the OpenAI API; the status and the decoded JSON body."""
    async with http.post(f"{server.base_url}{path}", **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def chat(http: aiohttp.ClientSession, server: SimServer, **fields: Any) -> dict[str, Any]:
    """A successful non-streaming chat completion's body."""
    status, body = await post(http, server, "/chat/completions", json=chat_body(server, **fields))
    assert status == 200, body
    return dict(body)


def assert_error(body: Any, status: int, error_type: str) -> str:
    """The body is vLLM's error shape for `status`; returns its message."""
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["code"] == status
    assert isinstance(error["message"], str)
    assert error["message"]
    return str(error["message"])


async def health_status(http: aiohttp.ClientSession, server: SimServer) -> int:
    async with http.get(f"{root(server)}/health") as resp:
        return resp.status


# --- errors -------------------------------------------------------------------------------


async def test_malformed_json_is_a_bad_request(http: aiohttp.ClientSession, sim: SimServer) -> None:
    status, body = await post(
        http,
        sim,
        "/chat/completions",
        data=b'{"model": ',
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert "JSON" in assert_error(body, 400, "BadRequestError")


async def test_json_array_body_is_a_bad_request(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    status, body = await post(http, sim, "/chat/completions", json=[chat_body(sim)])
    assert status == 400
    assert_error(body, 400, "BadRequestError")


async def test_missing_messages_is_a_bad_request_naming_the_field(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    status, body = await post(
        http, sim, "/chat/completions", json={"model": sim.config.served_model_name}
    )
    assert status == 400
    assert "messages" in assert_error(body, 400, "BadRequestError")


async def test_unknown_model_is_not_found(http: aiohttp.ClientSession, sim: SimServer) -> None:
    body = chat_body(sim, model="no-such-model")
    status, reply = await post(http, sim, "/chat/completions", json=body)
    assert status == 404
    message = assert_error(reply, 404, "NotFoundError")
    assert "no-such-model" in message
    assert "does not exist" in message


async def test_prompt_longer_than_context_is_rejected_with_its_token_count(
    http: aiohttp.ClientSession, start_sim: StartSim
) -> None:
    server = await start_sim(max_model_len=256)
    fits = await chat(http, server, content=words_for_tokens(100), max_tokens=1)
    template = fits["usage"]["prompt_tokens"] - 100
    status, body = await post(
        http, server, "/chat/completions", json=chat_body(server, words_for_tokens(300))
    )
    assert status == 400
    message = assert_error(body, 400, "BadRequestError")
    assert "maximum context length is 256 tokens" in message
    assert f"your prompt contains {template + 300} input tokens" in message


async def test_server_answers_after_malformed_json(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    for _ in range(3):
        status, _body = await post(http, sim, "/chat/completions", data=b"{not json")
        assert status == 400
    reply = await chat(http, sim, max_tokens=4)
    assert reply["choices"][0]["message"]["content"]


async def test_body_over_the_limit_is_413_and_server_stays_up(
    http: aiohttp.ClientSession, start_sim: StartSim
) -> None:
    server = await start_sim(max_body_bytes=4096)
    status, body = await post(
        http, server, "/chat/completions", json=chat_body(server, "x" * 10_000)
    )
    assert status == 413
    assert "4096" in assert_error(body, 413, "BadRequestError")
    assert await health_status(http, server) == 200


# --- output-length knobs ------------------------------------------------------------------


async def test_max_tokens_is_clamped_silently_to_the_room_left(
    http: aiohttp.ClientSession, start_sim: StartSim
) -> None:
    server = await start_sim(max_model_len=256)
    reply = await chat(
        http, server, content=words_for_tokens(200), max_tokens=1000, ignore_eos=True
    )
    usage = reply["usage"]
    assert reply["choices"][0]["finish_reason"] == "length"
    assert usage["completion_tokens"] == 256 - usage["prompt_tokens"]
    assert 0 < usage["completion_tokens"] < 1000


async def test_ignore_eos_generates_exactly_max_tokens(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    reply = await chat(http, sim, max_tokens=150, ignore_eos=True)
    (choice,) = reply["choices"]
    assert reply["usage"]["completion_tokens"] == 150
    assert count_tokens(choice["message"]["content"]) == 150
    assert choice["finish_reason"] == "length"


async def test_min_tokens_sets_a_floor_on_output_length(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    for seed in range(3):
        reply = await chat(http, sim, min_tokens=150, max_tokens=2000, seed=seed)
        assert reply["usage"]["completion_tokens"] >= 150


async def a_reply_with_words(
    http: aiohttp.ClientSession, server: SimServer, **fields: Any
) -> tuple[int, list[str], dict[str, Any]]:
    """The first seed (bounded search) whose reply has at least 8 words: seed, words, body."""
    for seed in range(20):
        reply = await chat(http, server, seed=seed, **fields)
        words = reply["choices"][0]["message"]["content"].split()
        if len(words) >= 8:
            return seed, words, reply
    raise AssertionError("no seed gave a reply of 8 words or more")


async def test_stop_string_cuts_output_before_it(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    seed, words, free = await a_reply_with_words(http, sim, max_tokens=80)
    text, stop = " ".join(words), words[len(words) // 2]
    cut = await chat(http, sim, seed=seed, max_tokens=80, stop=[stop])
    (choice,) = cut["choices"]
    assert choice["message"]["content"] == text[: text.index(stop)]
    assert choice["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < free["usage"]["completion_tokens"]


async def test_stop_string_still_applies_with_ignore_eos(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    # vLLM's ignore_eos only stops the EOS token from ending the reply; stop strings still do.
    seed, words, _free = await a_reply_with_words(http, sim, max_tokens=40, ignore_eos=True)
    text, stop = " ".join(words), words[len(words) // 2]
    cut = await chat(http, sim, seed=seed, max_tokens=40, ignore_eos=True, stop=[stop])
    (choice,) = cut["choices"]
    assert choice["message"]["content"] == text[: text.index(stop)]
    assert choice["finish_reason"] == "stop"


async def test_same_seed_at_temperature_zero_repeats_the_reply(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    first, second = [await chat(http, sim, seed=11, temperature=0, max_tokens=60) for _ in "ab"]
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["usage"]["completion_tokens"] == second["usage"]["completion_tokens"]


# --- streaming ----------------------------------------------------------------------------


async def wait_for_metric(
    scrape: Scrape, server: SimServer, name: str, want: float, timeout_s: float = 5.0
) -> float:
    """Poll /metrics (bounded in time) until `name` equals `want`; the last value seen."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    value = await scrape(server, name)
    while value != want and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        value = await scrape(server, name)
    return value


async def open_stream_and_read(
    http: aiohttp.ClientSession, server: SimServer, body: dict[str, Any], events: int
) -> aiohttp.ClientResponse:
    """Start a streaming chat and read its first `events` SSE events; the open response."""
    resp = await http.post(f"{server.base_url}/chat/completions", json=body)
    try:
        assert resp.status == 200
        for _ in range(events):
            assert (await resp.content.readline()).startswith(b"data: {")
            assert await resp.content.readline() == b"\n"
    except BaseException:
        resp.close()
        raise
    return resp


async def test_clients_that_disconnect_mid_stream_free_their_work(
    http: aiohttp.ClientSession, sim: SimServer, scrape: Scrape
) -> None:
    body = chat_body(sim, stream=True, max_tokens=20_000, ignore_eos=True)
    opened = await asyncio.gather(
        *(open_stream_and_read(http, sim, body, 3) for _ in range(20)), return_exceptions=True
    )
    streams = [r for r in opened if isinstance(r, aiohttp.ClientResponse)]
    try:
        assert len(streams) == 20, [r for r in opened if isinstance(r, BaseException)]
        assert await scrape(sim, "vllm:num_requests_running") == 20
    finally:
        for resp in streams:
            resp.close()  # drops the connection, not just the response

    assert await wait_for_metric(scrape, sim, "vllm:num_requests_running", 0.0) == 0.0
    assert await scrape(sim, "agentload_sim_client_disconnects_total") == 20
    reply = await chat(http, sim, max_tokens=5, ignore_eos=True)
    assert reply["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(
    ("path", "field"), [("/chat/completions", "messages"), ("/completions", "prompt")]
)
async def test_stream_is_data_lines_ending_with_done(
    http: aiohttp.ClientSession, sim: SimServer, path: str, field: str
) -> None:
    payload: Any = [{"role": "user", "content": "hello"}] if field == "messages" else "hello"
    body = {
        "model": sim.config.served_model_name,
        field: payload,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 40,
    }
    async with http.post(f"{sim.base_url}{path}", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()

    assert raw.endswith("\n\n")
    events = raw.removesuffix("\n\n").split("\n\n")
    assert len(events) > 3
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        assert "\n" not in event
        assert event.startswith("data: ")
        assert isinstance(json.loads(event.removeprefix("data: ")), dict)


# --- health and metrics -------------------------------------------------------------------


async def test_health_is_ok(http: aiohttp.ClientSession, sim: SimServer) -> None:
    assert await health_status(http, sim) == 200


async def test_metrics_expose_vllm_names_labelled_with_model_name(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    await chat(http, sim, max_tokens=8)
    async with http.get(f"{root(sim)}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    labels: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, []).append(sample.labels)
    for name in METRIC_NAMES:
        samples = labels.get(name) or labels.get(f"{name}_count")
        assert samples, f"{name} missing from /metrics"
        assert {"model_name": sim.config.served_model_name} in [
            {k: v for k, v in s.items() if k == "model_name"} for s in samples
        ], f"{name} lacks the model_name label"


async def test_token_counters_equal_the_usage_clients_saw(
    http: aiohttp.ClientSession, sim: SimServer, scrape: Scrape
) -> None:
    prompt = completion = 0
    for i in range(4):
        reply = await chat(http, sim, content=words_for_tokens(50 + i * 30, i), seed=i)
        prompt += reply["usage"]["prompt_tokens"]
        completion += reply["usage"]["completion_tokens"]
    body = chat_body(sim, stream=True, stream_options={"include_usage": True}, max_tokens=30)
    async with http.post(f"{sim.base_url}/chat/completions", json=body) as resp:
        raw = (await resp.read()).decode()
    last = json.loads(raw.split("\n\n")[-3].removeprefix("data: "))
    prompt += last["usage"]["prompt_tokens"]
    completion += last["usage"]["completion_tokens"]

    assert await scrape(sim, "vllm:prompt_tokens_total") == prompt
    assert await scrape(sim, "vllm:generation_tokens_total") == completion
