"""What `agentload record` adds to time to first token and inter-token latency.

Starts the simulator (`agentload sim`) and the recording proxy (`agentload record`) as their
own processes, as a user runs them, then streams chat completions at --concurrency from
this process: each request goes to the simulator directly or through the proxy (at
random), so both paths see the same engine load. Every request has the same shape: a shared system
prompt of --system-tokens and --prompt-tokens of its own (so the recorder tokenizes and
hashes real prompts and chains sessions), --output-tokens forced (min_tokens, ignore_eos).

Each worker pauses a random 0-2x --think-ms before each request and forces a random
output length (±50% around --output-tokens), so that streams do not run in lockstep (a
request a fraction of a millisecond late would then miss an engine step every time and
show a step's delay that no single request suffered); each request goes direct or through
the proxy at random.

Times are taken on this client: TTFT from sending to the event carrying the first content
token, ITL between consecutive content events (each event stamped with the time its read
returned). Added = proxy − direct, per percentile. The proxy's CPU per request (user +
system, from /proc) is reported too, with the time it spent runnable but waiting for a core
(the run-queue delay in /proc/PID/schedstat: on a shared machine, each hop through the
proxy is one more process that must be scheduled), and the trace is checked to hold every
proxied call.

    python bench/record_overhead.py                          # ~2 minutes, 1 and 8 streams
    python bench/record_overhead.py --concurrency 32 --requests 800
    python bench/record_overhead.py --proxy-core 0   # the proxy on a core of its own
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from loadgen.protocol.tokens import words_for_tokens

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Samples:
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)


async def _child(
    *args: str, pattern: str, cores: set[int] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadgen", *args, cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        preexec_fn=None if cores is None else (lambda: os.sched_setaffinity(0, cores)),
    )  # fmt: skip
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    found = re.search(pattern, line)
    if not found:
        raise SystemExit(f"could not start {args[0]}: {line}")
    return proc, found.group(1)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_queue_s(pid: int) -> float:
    """Time the process has spent runnable but not running (0 where schedstat is missing)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def _stream(
    http: aiohttp.ClientSession, base: str, body: bytes, samples: Samples, headers: dict[str, str]
) -> None:
    sent = time.perf_counter()
    stamps: list[float] = []
    buffer = b""
    async with http.post(f"{base}/chat/completions", data=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if b'"content":"' in event and b'"content":""' not in event:
                    stamps.append(now)
    samples.ttft.append(stamps[0] - sent)
    samples.itl.extend(b - a for a, b in itertools.pairwise(stamps))
    samples.events.append(len(stamps))


async def _level(
    sim: str, proxy: str, concurrency: int, requests: int, args: argparse.Namespace, tag: str
) -> dict[str, Samples]:
    samples = {"direct": Samples(), "proxy": Samples()}
    system = words_for_tokens(args.system_tokens)
    rng = random.Random(f"{tag}-{concurrency}")
    jobs = iter(range(requests * 2))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for n in jobs:
                # Random pauses and lengths keep the streams out of lockstep: in lockstep, a
                # request a fraction of a millisecond later misses an engine step every time.
                await asyncio.sleep(rng.uniform(0, 2 * args.think_ms / 1e3))
                own = words_for_tokens(args.prompt_tokens, offset=rng.randrange(1 << 20))
                output = rng.randint(args.output_tokens // 2, args.output_tokens * 3 // 2)
                body = json.dumps(
                    {
                        "model": "agentload-sim",
                        "stream": True,
                        "max_tokens": output,
                        "min_tokens": output,
                        "ignore_eos": True,
                        "messages": [
                            {"role": "system", "content": system},
                            {"role": "user", "content": f"request {tag} {n}: {own}"},
                        ],
                    }
                ).encode()
                path = rng.choice(("direct", "proxy"))
                base = proxy if path == "proxy" else sim
                headers = {"Authorization": "Bearer sk-bench", "x-session-id": f"{tag}-{n}"}
                await _stream(http, base, body, samples[path], headers)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _report(
    concurrency: int, samples: dict[str, Samples], cpu_per_request: float, waited: float
) -> None:
    direct, proxy = samples["direct"], samples["proxy"]
    print(
        f"\n{concurrency} concurrent streams: {len(direct.ttft)} / {len(proxy.ttft)} requests "
        f"direct / through the proxy, {len(direct.itl)} / {len(proxy.itl)} token gaps; proxy "
        f"CPU {cpu_per_request * 1e3:.2f} ms per proxied request, run-queue wait "
        f"{waited * 1e3:.2f} ms per proxied request; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(f"  {'':10}{'direct ms':>12}{'proxy ms':>12}{'added ms':>12}")
    for name in ("ttft", "itl"):
        for q in (50, 90, 99):
            a = _pct(getattr(direct, name), q) * 1e3
            b = _pct(getattr(proxy, name), q) * 1e3
            print(f"  {name} p{q:<4}{a:12.3f}{b:12.3f}{b - a:+12.3f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="llama-8b-h100")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated levels")
    parser.add_argument("--requests", type=int, default=300, help="per path, per level")
    parser.add_argument("--system-tokens", type=int, default=1500)
    parser.add_argument("--prompt-tokens", type=int, default=500)
    parser.add_argument("--output-tokens", type=int, default=64, help="mean (uniform ±50%%)")
    parser.add_argument("--think-ms", type=float, default=20.0, help="mean pause (uniform)")
    parser.add_argument(
        "--proxy-core",
        type=int,
        metavar="N",
        help="pin the proxy to core N and the simulator and this client to the others",
    )
    args = parser.parse_args()

    trace = Path(tempfile.mkdtemp()) / "trace.jsonl"
    proxy_cores = others = None
    if args.proxy_core is not None:
        # The proxy on a core of its own, the simulator and this client on the rest: what it
        # adds when it is not queued behind them for a CPU, as on a host with cores to spare.
        proxy_cores = {args.proxy_core}
        others = set(os.sched_getaffinity(0)) - proxy_cores
        if not others:
            raise SystemExit("--proxy-core: this machine has no other core for the rest")
        os.sched_setaffinity(0, others)
    sim_proc, sim = await _child(
        "sim", "--preset", args.preset, "--port", "0", pattern=r"on (http://\S+/v1)",
        cores=others,
    )  # fmt: skip
    rec_proc, proxy = await _child(
        "record", "--listen", "127.0.0.1:0", "--upstream", sim, "--out", str(trace),
        pattern=r"listening on (http://\S+) ", cores=proxy_cores,
    )  # fmt: skip
    print(f"sim {args.preset} at {sim}, proxy at {proxy}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    proxied = 0
    try:
        for level in (int(c) for c in args.concurrency.split(",")):
            warm = await _level(sim, proxy, level, max(level, 20), args, f"warm{level}")
            proxied += len(warm["proxy"].ttft)
            before, queued = _cpu_s(rec_proc.pid), _run_queue_s(rec_proc.pid)
            samples = await _level(sim, proxy, level, args.requests, args, f"run{level}")
            proxied += len(samples["proxy"].ttft)
            cpu = (_cpu_s(rec_proc.pid) - before) / len(samples["proxy"].ttft)
            waited = (_run_queue_s(rec_proc.pid) - queued) / len(samples["proxy"].ttft)
            _report(level, samples, cpu, waited)
    finally:
        rec_proc.send_signal(signal.SIGTERM)
        _out, err = await rec_proc.communicate()
        sim_proc.send_signal(signal.SIGTERM)
        await sim_proc.wait()
    lines = trace.read_text().splitlines()
    print(f"\ntrace: {len(lines) - 1} calls for {proxied} proxied requests; {err.decode().strip()}")
    assert len(lines) - 1 == proxied


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
