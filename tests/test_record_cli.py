"""`agentload record` and `agentload export-trace` as users run them (child processes): the
proxy says where it listens, writes each call as it ends (a kill loses nothing written),
stops cleanly on SIGINT/SIGTERM, refuses bad flags in one line; a run made through it and
the same run's steps.jsonl exported give the same trace of calls."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from loadgen.record import RecordProxy
from loadgen.traces.formats.agentload import read_agentload
from tests.cli_runs import ROOT, agentload_run, write_profile
from tests.conftest import StartSim
from tests.test_record_proxy import KEY, SIM, converse

AGENTLOAD = [sys.executable, "-m", "loadgen"]


class RecordProcess:
    """`agentload record` in a child process, its first line read for the address."""

    def __init__(self, proc: asyncio.subprocess.Process, base_url: str, out: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.out = out

    @classmethod
    async def start(cls, upstream: str, out: Path, *flags: str) -> RecordProcess:
        proc = await asyncio.create_subprocess_exec(
            *AGENTLOAD, "record", "--listen", "127.0.0.1:0", "--upstream", upstream,
            "--out", str(out), *flags,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        found = re.search(r"listening on (http://\S+) ", line)
        assert found, line
        return cls(proc, found.group(1), out)

    async def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal it and wait; its exit code and what it wrote to stderr after the first line."""
        self.proc.send_signal(sig)
        _out, err = await asyncio.wait_for(self.proc.communicate(), 60)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


async def lines_of(path: Path, count: int) -> list[dict[str, Any]]:
    """The trace's lines once it has `count` of them (the recorder writes as calls end)."""
    for _ in range(400):
        text = await asyncio.to_thread(path.read_text)
        lines = [json.loads(x) for x in text.splitlines() if x.strip()]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.025)
    raise AssertionError(f"{path} has {len(lines)} lines, not {count}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_record_writes_each_call_as_it_ends_and_stops_cleanly(
    start_sim: StartSim, tmp_path: Path, sig: int
) -> None:
    sim = await start_sim(**SIM)
    out = tmp_path / "trace.jsonl"
    record = await RecordProcess.start(sim.base_url, out)
    assert record.base_url.endswith("/v1")
    async with AsyncOpenAI(base_url=record.base_url, api_key=KEY, max_retries=0) as client:
        await converse(client, ["stream", "plain", "stream"])
    lines = await lines_of(out, 4)  # written before any stop
    assert lines[0]["format"] == "agentload-trace"
    code, err = await record.stop(sig)
    assert code == 0, err
    assert "wrote 3 calls in 1 sessions" in err
    assert "Traceback" not in err
    trace = read_agentload(out)
    assert trace.request_count() == 3
    assert KEY not in out.read_text()


@pytest.mark.slow
async def test_a_stop_lets_calls_in_flight_finish_and_records_them(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(perf={"kind": "analytical", "decode_step_ms": 40.0})
    out = tmp_path / "trace.jsonl"
    record = await RecordProcess.start(sim.base_url, out)
    async with AsyncOpenAI(base_url=record.base_url, api_key=KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="agentload-sim", messages=[{"role": "user", "content": "count"}],
            stream=True, max_tokens=30, extra_body={"min_tokens": 30, "ignore_eos": True},
        )  # fmt: skip
        tokens = 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                tokens += 1
                if tokens == 1:
                    record.proc.send_signal(signal.SIGTERM)  # ~1.2 s of stream still to come
    assert tokens == 30
    _out, err = await asyncio.wait_for(record.proc.communicate(), 60)
    assert record.proc.returncode == 0, err
    assert b"wrote 1 calls" in err
    assert read_agentload(out).request_count() == 1


async def test_a_killed_recorder_keeps_every_call_it_wrote(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(**SIM)
    out = tmp_path / "trace.jsonl"
    record = await RecordProcess.start(sim.base_url, out, "--block-size", "16", "--keep-text")
    async with AsyncOpenAI(base_url=record.base_url, api_key=KEY, max_retries=0) as client:
        await converse(client, ["plain", "stream"])
    lines = await lines_of(out, 3)
    assert all("prompt" in line["text"] for line in lines[1:])  # --keep-text
    code, _err = await record.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    trace = read_agentload(out)
    assert trace.block_size == 16
    assert trace.request_count() == 2
    requests = list(trace.requests())
    assert len(requests[1].hash_ids) > len(requests[0].hash_ids) >= 16


def _usage_error(*args: str) -> str:
    result = subprocess.run(
        [*AGENTLOAD, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_flags_are_one_line_usage_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "t.jsonl")
    up = "http://127.0.0.1:9/v1"
    assert "--upstream" in _usage_error("record", "--upstream", "ftp://x/v1", "--out", out)
    assert "--upstream" in _usage_error("record", "--out", out)
    error = _usage_error("record", "--upstream", "http://me:s3cret@h/v1", "--out", out)
    assert "credentials" in error
    assert "s3cret" not in error
    assert "--listen" in _usage_error("record", "--listen", "here", "--upstream", up, "--out", out)
    assert "--listen" in _usage_error(
        "record", "--listen", "127.0.0.1:70000", "--upstream", up, "--out", out
    )
    assert "--block-size" in _usage_error(
        "record", "--block-size", "0", "--upstream", up, "--out", out
    )
    assert "--session-header" in _usage_error(
        "record", "--session-header", "not a header", "--upstream", up, "--out", out
    )
    missing = str(tmp_path / "no" / "such" / "dir" / "t.jsonl")
    assert "--out" in _usage_error("record", "--upstream", up, "--out", missing)
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text("an earlier trace\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for where in (out, str(earlier)):
            error = _usage_error("record", "--listen", f"127.0.0.1:{port}", "--upstream", up,
                                 "--out", where)  # fmt: skip
            assert "address in use" in error
    assert not Path(out).exists()  # nothing left behind
    assert earlier.read_text() == "an earlier trace\n"  # nor overwritten
    assert "no steps.jsonl" in _usage_error("export-trace", str(tmp_path))
    assert "no such results folder" in _usage_error("export-trace", str(tmp_path / "nope"))


PROFILE: dict[str, Any] = {
    "name": "record-export",
    "seed": 3,
    "time_scale": 0.01,
    "arrival": {"mode": "closed", "agents": 4},
    "agents": [
        {"kind": "coding", "params": {"turns": 1, "system_prompt_tokens": 1000}},
        {"kind": "research", "params": {"subagent_probability": 1.0, "system_prompt_tokens": 800}},
    ],
}


def _calls(requests: Any) -> Counter[tuple[int, int, int | None]]:
    return Counter((r.input_tokens, r.output_tokens, r.cached_tokens) for r in requests)


@pytest.mark.slow
async def test_a_run_recorded_through_the_proxy_and_its_exported_steps_agree(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim()
    proxy = RecordProxy(sim.base_url, tmp_path / "recorded.jsonl")
    await proxy.start()
    try:
        profile = write_profile(tmp_path / "p.yaml", PROFILE)
        await agentload_run(profile, tmp_path / "run", "--duration", "4s", target=proxy.base_url)
    finally:
        await proxy.stop()
    exported_path = tmp_path / "exported.jsonl"
    result = await asyncio.to_thread(
        subprocess.run,
        [*AGENTLOAD, "export-trace", str(tmp_path / "run"), "--out", str(exported_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    assert "sub-agents" in result.stdout

    # Before its agents start, the run checks the target with one tiny call: traffic, no step.
    recorded = read_agentload(tmp_path / "recorded.jsonl")
    probe = {s.id for s in recorded.sessions if all(not r.hash_ids for r in s.all_requests())}
    assert len(probe) <= 2
    exported = read_agentload(exported_path)
    recorded_calls = _calls(r for s in recorded.sessions if s.id not in probe
                            for r in s.all_requests())  # fmt: skip
    exported_calls = _calls(exported.requests())
    assert exported.request_count() >= 8
    # Every step the run kept is a call the proxy recorded, with the same counts; the proxy
    # may also hold a call whose reply ended as the run cancelled its client.
    assert not exported_calls - recorded_calls
    assert sum((recorded_calls - exported_calls).values()) <= 2

    # The run sends x-session-id (a sub-agent: its parent's), so the sessions agree too.
    def per_session(trace: Any) -> list[list[int]]:
        return sorted(
            sorted(r.input_tokens for r in s.all_requests())
            for s in trace.sessions
            if s.id not in probe
        )

    exported_sessions, recorded_sessions = per_session(exported), per_session(recorded)
    assert len(exported_sessions) == len(recorded_sessions)
    subagents = [sub for s in exported.sessions for _after, sub in s.subagents]
    assert subagents
    assert all(after >= 0 for s in exported.sessions for after, _sub in s.subagents)
    # Synthesized blocks: a growing session's request repeats the previous one's blocks.
    for session in exported.sessions:
        for earlier, later in zip(session.requests, session.requests[1:], strict=False):
            if later.input_tokens >= earlier.input_tokens:
                assert later.hash_ids[: len(earlier.hash_ids)] == earlier.hash_ids
                assert later.gap_s is not None
                assert later.gap_s >= 0
        assert all(len(r.hash_ids) == r.input_tokens // 64 for r in session.all_requests())
