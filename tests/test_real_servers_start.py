"""The real-server helpers start llama-server, LiteLLM and `transformers serve` for real.

Each test starts its servers on tiny local models and proves one reply end to end: the
framing a client sees (SSE, usage, tool calls), so the tests that load these servers can
rely on the helpers. Without `.ci/install-real-servers` they skip (fail under CI).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import gguf
import pytest
from openai import AsyncOpenAI

from loadgen.sim import SimServer
from tests import real_servers
from tests.real_servers import (
    LiteLLMProxy,
    LlamaServer,
    TransformersServe,
    write_tiny_gguf,
    write_tiny_hf_llama,
)

ROOT = Path(__file__).resolve().parents[1]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def read_sse(response: aiohttp.ClientResponse) -> tuple[list[dict[str, Any]], bool]:
    """A stream's JSON events, and whether it ended with `data: [DONE]`."""
    events: list[dict[str, Any]] = []
    done = False
    async for raw in response.content:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            done = True
        else:
            events.append(json.loads(data))
    return events, done


def streamed_text(events: list[dict[str, Any]]) -> str:
    """The content deltas of chat.completion.chunk events, joined."""
    parts = []
    for event in events:
        for choice in event.get("choices") or []:
            parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


def test_install_script_pins_the_versions_the_helpers_look_for() -> None:
    script = (ROOT / ".ci" / "install-real-servers").read_text()
    pins = dict(re.findall(r"^([A-Z_]+)=(\S+)$", script, re.MULTILINE))
    assert pins["LLAMA_BUILD"] == str(real_servers.LLAMA_BUILD)
    assert pins["LITELLM_VERSION"] == real_servers.LITELLM_VERSION
    assert pins["TRANSFORMERS_VERSION"] == real_servers.TRANSFORMERS_VERSION
    assert ".ci/install-real-servers" in (ROOT / ".ci" / "run").read_text()


def test_require_fails_under_ci_and_skips_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTLOAD_SERVERS_CACHE", str(tmp_path))
    assert real_servers.llama_server_path().is_relative_to(tmp_path)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install-real-servers"):
        real_servers.require("llama-server")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install-real-servers"):
        real_servers.require("litellm")


def test_tiny_gguf_is_deterministic_and_a_llama(tmp_path: Path) -> None:
    first = write_tiny_gguf(tmp_path / "a.gguf", tool_calls=True)
    second = write_tiny_gguf(tmp_path / "b.gguf", tool_calls=True)
    assert first.read_bytes() == second.read_bytes()
    reader = gguf.GGUFReader(first)
    fields = reader.fields
    arch = fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    template = fields["tokenizer.chat_template"]
    assert "<tool_call>" in bytes(template.parts[template.data[0]]).decode()
    names = {tensor.name for tensor in reader.tensors}
    assert {"token_embd.weight", "blk.1.ffn_down.weight", "output.weight"} <= names


async def test_llama_server_streams_a_chat_completion_with_usage(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    async with LlamaServer(model, log_dir=tmp_path) as server, aiohttp.ClientSession() as http:
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": "hello world"}],
            "max_tokens": 16,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with http.post(f"{server.base_url}/chat/completions", json=body) as response:
            assert response.status == 200
            assert response.content_type == "text/event-stream"
            events, done = await read_sse(response)
        async with http.get(f"{server.root_url}/metrics") as response:
            metrics = await response.text()
    assert done
    assert streamed_text(events)
    usage = events[-1]["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] <= 16
    assert "llamacpp:tokens_predicted_total" in metrics
    assert "listening on" in server.log_text()


async def test_llama_server_parses_the_tool_model_s_calls(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tools.gguf", tool_calls=True)
    async with LlamaServer(model) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        reply = await client.chat.completions.create(
            model=server.model,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL],
            max_tokens=100,
        )
        await client.close()
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": ":"}


async def test_litellm_proxies_the_simulator(sim: SimServer) -> None:
    async with LiteLLMProxy([(sim.base_url, sim.config.served_model_name)]) as proxy:
        client = AsyncOpenAI(base_url=proxy.base_url, api_key="none", max_retries=0)
        reply = await client.chat.completions.create(
            model=proxy.model,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
        )
        await client.close()
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert "Uvicorn running on" in proxy.log_text()


async def test_litellm_proxies_llama_server_streaming(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    async with (
        LlamaServer(model) as backend,
        LiteLLMProxy([(backend.base_url, backend.model)]) as proxy,
        aiohttp.ClientSession() as http,
    ):
        body = {
            "model": proxy.model,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 12,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with http.post(f"{proxy.base_url}/chat/completions", json=body) as response:
            assert response.status == 200
            events, done = await read_sse(response)
    assert done
    assert streamed_text(events)
    usages = [event["usage"] for event in events if event.get("usage")]
    finish = [
        c["finish_reason"] for e in events for c in e.get("choices") or [] if c.get("finish_reason")
    ]
    # The tiny model samples its end token now and then: 12 tokens unless it stopped early.
    if finish[-1] == "length":
        assert usages[-1]["completion_tokens"] == 12
    else:
        assert finish[-1] == "stop"
        assert 0 < usages[-1]["completion_tokens"] < 12  # CI once saw 8


@pytest.mark.slow
async def test_transformers_serve_streams_a_chat_completion(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_llama(tmp_path / "hf-llama")
    async with TransformersServe(model_dir) as server, aiohttp.ClientSession() as http:
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 8,
            "stream": True,
        }
        async with http.post(f"{server.base_url}/chat/completions", json=body) as response:
            assert response.status == 200
            events, done = await read_sse(response)
    # transformers serve ends the body after the finish_reason chunk (which carries usage),
    # without `data: [DONE]`.
    assert not done
    text = streamed_text(events)
    assert text
    assert text.isascii()
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == 8
