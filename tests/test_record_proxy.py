"""`agentload record`'s proxy with the openai SDK in front and a real simulator behind it:
the client gets what it would get directly, and the trace holds one line per call, grouped
into the right sessions, with the server's token counts and the prompt's chained blocks."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from loadgen.record import RecordProxy
from loadgen.sim import SimServer
from loadgen.traces.formats.agentload import read_agentload
from tests.conftest import StartSim

MODEL = "agentload-sim"
KEY = "sk-test-5f1d9a0c-never-in-a-trace"
MARKER = "zebraquasar"  # a word only the prompts carry: the trace must not hold it
SYSTEM = "You are a careful coding agent working in a large repository. " * 12 + MARKER
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the repository.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_tests",
            "parameters": {"type": "object", "properties": {"filter": {"type": "string"}}},
        },
    },
]
SIM = {"tool_call_probability": 1.0, "output_tokens_median": 24}


@dataclass
class Call:
    """What the client got from one call."""

    content: str
    tool_calls: list[tuple[str, str, str]]  # (id, name, arguments)
    usage: Any = None  # the SDK's usage object, when the server sent one


@dataclass
class Conversation:
    """One agent's calls, in order."""

    calls: list[Call] = field(default_factory=list)


async def chat_call(client: AsyncOpenAI, messages: list[Any], mode: str, **kwargs: Any) -> Call:
    """One chat call: mode plain, stream or stream+usage."""
    if mode == "plain":
        reply = await client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, temperature=0, **kwargs
        )
        message = reply.choices[0].message
        calls = [
            (c.id, c.function.name, c.function.arguments)
            for c in message.tool_calls or ()
            if c.type == "function"
        ]
        return Call(message.content or "", calls, reply.usage)
    options = {"stream_options": {"include_usage": True}} if mode == "stream+usage" else {}
    stream = await client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, temperature=0, stream=True, **options,
        **kwargs,
    )  # fmt: skip
    content: list[str] = []
    parts: dict[int, list[str]] = {}
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            for tc in choice.delta.tool_calls or ():
                part = parts.setdefault(tc.index, ["", "", ""])
                part[0] += tc.id or ""
                if tc.function is not None:
                    part[1] += tc.function.name or ""
                    part[2] += tc.function.arguments or ""
    calls = [(p[0], p[1], p[2]) for _i, p in sorted(parts.items())]
    return Call("".join(content), calls, usage)


async def converse(
    client: AsyncOpenAI,
    modes: Sequence[str],
    *,
    task: str = "The test suite fails on the parser; find out why and fix it.",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Conversation:
    """A tool-calling conversation of len(modes) calls: tools run between calls, the last
    call may not call a tool (so it answers in text)."""
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{task} {MARKER}"},
    ]
    conversation = Conversation()
    for i, mode in enumerate(modes):
        last = i == len(modes) - 1
        call = await chat_call(
            client, messages, mode, tool_choice="none" if last else "auto",
            extra_headers=headers, **kwargs,
        )  # fmt: skip
        conversation.calls.append(call)
        messages.append(
            {
                "role": "assistant",
                "content": call.content or None,
                "tool_calls": [
                    {"id": cid, "type": "function", "function": {"name": n, "arguments": a}}
                    for cid, n, a in call.tool_calls
                ]
                or None,
            }
        )
        for cid, _name, _args in call.tool_calls:
            output = f"tool output {MARKER} " + "parser.py line 42: expected token " * 12
            messages.append({"role": "tool", "tool_call_id": cid, "content": output})
    return conversation


def trace_rows(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the request lines of a trace file."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines[0], lines[1:]


@pytest_asyncio.fixture
async def recording(
    tmp_path: Path,
) -> AsyncIterator[Any]:
    """Start RecordProxy(upstream, ...) proxies; each is stopped (trace closed) afterwards."""
    proxies: list[RecordProxy] = []

    async def start(upstream: str, name: str = "trace.jsonl", **kwargs: Any) -> RecordProxy:
        proxy = RecordProxy(upstream, tmp_path / name, **kwargs)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        await proxy.stop()


@pytest_asyncio.fixture
async def sdk() -> AsyncIterator[Any]:
    """sdk(base_url): an AsyncOpenAI client with KEY as its key; all closed afterwards."""
    clients: list[AsyncOpenAI] = []

    def make(base_url: str) -> AsyncOpenAI:
        clients.append(AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=60))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def stopped(proxy: RecordProxy) -> Path:
    """Stop the proxy (every call written) and give its trace's path."""
    await proxy.stop()
    return Path(proxy.out)


MODES = ["stream", "plain", "stream+usage", "stream", "plain", "stream"]


async def test_a_tool_calling_conversation_through_the_proxy_is_the_direct_one(
    sdk: Any, start_sim: StartSim, recording: Any
) -> None:
    direct_sim = await start_sim(**SIM)
    proxied_sim = await start_sim(**SIM)
    direct = await converse(sdk(direct_sim.base_url), ["plain"] * len(MODES))
    proxy = await recording(proxied_sim.base_url)
    through = await converse(sdk(proxy.base_url), MODES)

    assert [(c.content, c.tool_calls) for c in through.calls] == [
        (c.content, c.tool_calls) for c in direct.calls
    ]
    assert all(c.tool_calls for c in through.calls[:-1])
    assert through.calls[-1].content

    header, rows = trace_rows(await stopped(proxy))
    assert header["format"] == "agentload-trace"
    assert header["block_size"] == 64
    assert len(rows) == len(MODES)
    assert {r["session"] for r in rows} == {"s1"}  # no header: one prefix chain
    for row, call, mode in zip(rows, direct.calls, MODES, strict=True):
        # The server's counts where it reported usage; where it did not (streams without
        # include_usage), the recorder's own count, which is exact against the simulator.
        assert row["in"] == call.usage.prompt_tokens
        assert row["out"] == call.usage.completion_tokens
        assert row.get("counted", False) == (mode == "stream")
        reported = mode != "stream"
        assert row["cached"] == (
            call.usage.prompt_tokens_details.cached_tokens if reported else None
        )
        assert (row["ttft"] is not None) == mode.startswith("stream")
        assert row["duration"] > 0
        assert row["api"] == "chat"
    assert any(r["cached"] for r in rows[1:])
    for earlier, later in itertools.pairwise(rows):
        assert later["hash_ids"][: len(earlier["hash_ids"])] == earlier["hash_ids"]
        assert len(later["hash_ids"]) > len(earlier["hash_ids"])
        assert later["t"] >= earlier["t"] + earlier["duration"] - 1e-3
        assert later["gap"] is not None
        assert later["gap"] >= 0
    assert rows[0]["gap"] is None
    assert rows[0]["t"] == 0.0
    assert all(len(r["hash_ids"]) == r["in"] // 64 for r in rows)
    # An id covers 64 of the server's tokens once usage showed its units (the simulator
    # counts as the stand-in does); the first call, a stream without usage, cannot say.
    assert "block_in" not in rows[0]
    assert [r["block_in"] for r in rows[1:]] == [64.0] * (len(MODES) - 1)

    trace = read_agentload(Path(proxy.out))
    assert trace.request_count() == len(MODES)
    assert len(trace.sessions) == 1
    assert trace.block_size == 64


async def test_the_trace_holds_no_key_and_no_text_unless_asked(
    sdk: Any, sim: SimServer, recording: Any
) -> None:
    plain = await recording(sim.base_url, "plain.jsonl")
    await converse(sdk(plain.base_url), ["stream", "plain"], headers={"x-session-id": "sess-9q"})
    text = (await stopped(plain)).read_text()
    assert KEY not in text
    assert "Bearer" not in text
    assert MARKER not in text
    assert "parser" not in text
    assert "sess-9q" not in text  # session header values are not written either

    kept = await recording(sim.base_url, "kept.jsonl", keep_text=True)
    conversation = await converse(sdk(kept.base_url), ["stream", "plain"])
    path = await stopped(kept)
    assert KEY not in path.read_text()
    _header, rows = trace_rows(path)
    assert [MARKER in r["text"]["prompt"] for r in rows] == [True, True]
    assert rows[-1]["text"]["reply"] == conversation.calls[-1].content
    name = conversation.calls[0].tool_calls[0][1]
    assert name in rows[0]["text"]["reply"]
    assert rows[0]["text"]["prompt"].startswith("<s>\n<|tools|>")


async def test_sessions_by_header_by_user_field_and_by_prefix_chain(
    sdk: Any, start_sim: StartSim, recording: Any
) -> None:
    sim = await start_sim(**SIM)
    proxy = await recording(sim.base_url)
    client = sdk(proxy.base_url)
    same = "Rename the config loader and update its callers."
    runs = await asyncio.gather(
        # Two identical conversations: only their header tells them apart.
        converse(client, ["plain"] * 3, task=same, headers={"x-session-id": "alpha"}),
        converse(client, ["plain"] * 3, task=same, headers={"x-session-id": "beta"}),
        converse(client, ["plain"] * 4, task="Why is the build slow?"),
        converse(client, ["plain"] * 2, task="Add a --verbose flag to the command line tool."),
        converse(client, ["plain"] * 3, task="Port the tests to pytest.", user="user-1234"),
    )
    path = await stopped(proxy)
    _header, rows = trace_rows(path)
    assert len(rows) == 15
    by_session: dict[str, list[int]] = {}
    for row in rows:
        by_session.setdefault(row["session"], []).append(row["in"])
    expected = [[c.usage.prompt_tokens for c in run.calls] for run in runs]
    assert sorted(by_session.values()) == sorted(expected)
    assert sorted(by_session) == ["s1", "s2", "s3", "s4", "s5"]
    for value in ("alpha", "beta", "user-1234"):
        assert value not in path.read_text()


async def test_responses_chained_by_previous_response_id_are_one_session(
    sdk: Any, sim: SimServer, recording: Any
) -> None:
    proxy = await recording(sim.base_url)
    client = sdk(proxy.base_url)
    tools: Any = [
        {"type": "function", "name": "read_file", "parameters": {
            "type": "object", "properties": {"path": {"type": "string"}}}},
    ]  # fmt: skip
    first = await client.responses.create(
        model=MODEL, instructions=SYSTEM, input="Summarise the open issues.", tools=tools,
        tool_choice="required", temperature=0,
    )  # fmt: skip
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls
    stream = await client.responses.create(
        model=MODEL, previous_response_id=first.id, stream=True, temperature=0,
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": "ok " * 80}
               for c in calls],
    )  # fmt: skip
    second = None
    async for event in stream:
        if event.type == "response.completed":
            second = event.response
    assert second is not None
    assert second.usage is not None
    assert first.usage is not None
    third = await client.responses.create(
        model=MODEL, previous_response_id=second.id, input="Thanks. And the closed ones?"
    )
    assert third.usage is not None
    _header, rows = trace_rows(await stopped(proxy))
    assert [r["session"] for r in rows] == ["s1"] * 3
    assert [r["in"] for r in rows] == [
        first.usage.input_tokens, second.usage.input_tokens, third.usage.input_tokens
    ]  # fmt: skip
    assert [r["api"] for r in rows] == ["responses"] * 3
    assert rows[1]["ttft"] is not None
    assert rows[0]["ttft"] is None
    # The stored history is rendered before the new input, as the server renders it.
    for earlier, later in itertools.pairwise(rows):
        assert later["hash_ids"][: len(earlier["hash_ids"])] == earlier["hash_ids"]
    assert all(len(r["hash_ids"]) == r["in"] // 64 for r in rows)


async def test_completions_are_recorded_streamed_or_not(
    sdk: Any, sim: SimServer, recording: Any
) -> None:
    proxy = await recording(sim.base_url)
    client = sdk(proxy.base_url)
    prompt = "def parse(tokens):\n    " + "state = step(state, token) " * 40
    whole = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=20)
    stream = await client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=20, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
    assert whole.usage is not None
    assert usage is not None
    _header, rows = trace_rows(await stopped(proxy))
    assert [r["api"] for r in rows] == ["completions", "completions"]
    assert [r["in"] for r in rows] == [whole.usage.prompt_tokens, usage.prompt_tokens]
    assert [r["out"] for r in rows] == [whole.usage.completion_tokens, usage.completion_tokens]
    assert rows[1]["cached"] == usage.prompt_tokens_details.cached_tokens > 0
    assert rows[0]["hash_ids"] == rows[1]["hash_ids"]
    assert [r["session"] for r in rows] == ["s1", "s1"]  # the same prompt again


async def test_other_paths_and_refusals_pass_through_unrecorded(
    sdk: Any, sim: SimServer, recording: Any, http: Any
) -> None:
    proxy = await recording(sim.base_url)
    direct, through = sdk(sim.base_url), sdk(proxy.base_url)
    assert [m.id for m in (await through.models.list()).data] == [
        m.id for m in (await direct.models.list()).data
    ]
    base = proxy.base_url.removesuffix("/v1")
    async with http.get(f"{base}/health") as resp:
        assert resp.status == 200
    async with http.get(f"{proxy.base_url}/nothing-here?x=1") as resp:
        assert resp.status == 404
    errors = []
    for client in (direct, through):
        try:
            await client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}]
            )
        except Exception as exc:  # the SDK's NotFoundError, the same both ways
            errors.append((type(exc).__name__, str(exc)))
    assert len(errors) == 2
    assert errors[0] == errors[1]
    assert proxy.recorder is not None
    stats = proxy.recorder.stats
    _header, rows = trace_rows(await stopped(proxy))
    assert rows == []
    assert stats.refused == 1
    assert stats.recorded == 0


async def test_headers_body_and_query_reach_the_upstream_as_sent(
    serve: Any, recording: Any, http: Any
) -> None:
    seen: list[dict[str, Any]] = []

    async def upstream(request: Any) -> Any:
        from aiohttp import web

        seen.append(
            {
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        return web.json_response({"ok": True}, headers={"X-Upstream": "yes"})

    base = await serve(upstream)
    proxy = await recording(f"{base}/v1")
    body = b'{"model":"m", "messages": [ {"role":"user","content":"hi"} ],"extra":1}'
    headers = {
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
        "X-Custom": "kept", "Accept-Encoding": "gzip, br", "Proxy-Authorization": "Basic xyz",
    }  # fmt: skip
    async with http.post(
        f"{proxy.base_url}/embeddings?api-version=2", data=body, headers=headers
    ) as r:
        assert r.status == 200
        assert r.headers["X-Upstream"] == "yes"
        assert await r.json() == {"ok": True}
    # Paths go as they came: the proxy's base URL is the upstream's, host and port swapped.
    async with http.get(f"{proxy.base_url.removesuffix('/v1')}/health") as r:
        assert r.status == 200
    first, second = seen
    assert first["path"] == "/v1/embeddings?api-version=2"
    assert second["path"] == "/health"
    assert first["body"] == body  # byte for byte: the request body is never changed
    sent = {k.lower(): v for k, v in first["headers"].items()}
    assert sent["authorization"] == f"Bearer {KEY}"
    assert sent["x-custom"] == "kept"
    assert sent["accept-encoding"] == "identity"
    assert "proxy-authorization" not in sent
    assert sent["host"] == base.removeprefix("http://")


@pytest.mark.slow
async def test_streams_are_relayed_as_they_come_not_buffered(
    sdk: Any, start_sim: StartSim, recording: Any
) -> None:
    sim = await start_sim(perf={"kind": "analytical", "decode_step_ms": 40.0})
    proxy = await recording(sim.base_url)
    client = sdk(proxy.base_url)
    sent = time.perf_counter()
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], stream=True,
        max_tokens=40, extra_body={"min_tokens": 40, "ignore_eos": True},
    )  # fmt: skip
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - sent)
    total = time.perf_counter() - sent
    assert total > 1.2  # 40 steps of 40 ms
    assert arrivals[0] < total / 5  # the first token came long before the last
    assert len(arrivals) >= 20  # one by one, not as one late lump
    _header, rows = trace_rows(await stopped(proxy))
    assert rows[0]["ttft"] < rows[0]["duration"] / 5
    assert rows[0]["out"] == 40


async def test_the_proxy_adds_little_to_time_to_first_token(
    sdk: Any, sim: SimServer, recording: Any
) -> None:
    # A loose bound for a noisy 2-core machine; bench/record_overhead.py measures it.
    proxy = await recording(sim.base_url)
    ttfts: dict[str, list[float]] = {"direct": [], "proxy": []}
    clients = {"direct": sdk(sim.base_url), "proxy": sdk(proxy.base_url)}
    messages: Any = [{"role": "user", "content": "say something " * 30}]
    for _round in range(20):
        for name, client in clients.items():
            sent = time.perf_counter()
            stream = await client.chat.completions.create(
                model=MODEL, messages=messages, stream=True, max_tokens=8
            )
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - sent
            assert first is not None
            ttfts[name].append(first)
    added = statistics.median(ttfts["proxy"]) - statistics.median(ttfts["direct"])
    assert added < 0.020, ttfts


async def test_an_upstream_that_breaks_its_reply_breaks_the_clients_and_is_not_recorded(
    serve: Any, recording: Any, http: Any
) -> None:
    from aiohttp import web

    async def upstream(request: Any) -> Any:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"hal"}}]}\n\n')
        request.transport.close()  # mid-body: the chunked framing never ends
        return resp

    proxy = await recording(f"{await serve(upstream)}/v1")
    async with http.post(f"{proxy.base_url}/chat/completions", json={"stream": True}) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    assert proxy.recorder is not None
    stats = proxy.recorder.stats
    _header, rows = trace_rows(await stopped(proxy))
    assert rows == []
    assert stats.unfinished == 1


async def test_a_head_request_gets_the_upstreams_headers_and_no_body(
    serve: Any, recording: Any, http: Any
) -> None:
    from aiohttp import web

    async def upstream(request: Any) -> Any:
        return web.Response(body=b"x" * 1000, headers={"X-Upstream": request.method})

    proxy = await recording(f"{await serve(upstream)}/v1")
    async with http.head(f"{proxy.base_url}/models") as r:
        assert r.status == 200
        assert r.headers["X-Upstream"] == "HEAD"
        assert await r.read() == b""
    async with http.get(f"{proxy.base_url}/models") as r:  # the connection still works
        assert await r.read() == b"x" * 1000


async def test_an_unreachable_upstream_is_a_502_and_the_proxy_goes_on(
    recording: Any, http: Any, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = await recording(f"http://127.0.0.1:{port}/v1")
    for _ in range(2):
        async with http.post(f"{proxy.base_url}/chat/completions", json={"model": "m"}) as r:
            assert r.status == 502
            error = (await r.json())["error"]
            assert error["type"] == "upstream_unreachable"
            assert "unreachable" in error["message"]


async def test_a_client_that_leaves_mid_stream_is_not_recorded(
    sdk: Any, start_sim: StartSim, recording: Any, scrape: Any
) -> None:
    sim = await start_sim(perf={"kind": "analytical", "decode_step_ms": 30.0})
    proxy = await recording(sim.base_url)
    client = sdk(proxy.base_url)
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True,
        max_tokens=200, extra_body={"min_tokens": 200, "ignore_eos": True},
    )  # fmt: skip
    async for _chunk in stream:
        break
    await stream.close()
    # The upstream request is abandoned too (the simulator counts a disconnect).
    for _ in range(200):
        if await scrape(sim, "agentload_sim_client_disconnects_total") >= 1:
            break
        await asyncio.sleep(0.05)
    assert await scrape(sim, "agentload_sim_client_disconnects_total") >= 1
    await converse(client, ["plain"], task="Then a whole call.")
    assert proxy.recorder is not None
    stats = proxy.recorder.stats
    _header, rows = trace_rows(await stopped(proxy))
    assert len(rows) == 1
    assert stats.unfinished == 1
