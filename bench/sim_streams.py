"""How many concurrent streams one `agentload sim` process serves on one CPU core.

The simulator runs as a child process pinned to core 0; this process, pinned to core 1,
keeps --streams streaming chat completions open at once (uvloop + aiohttp, no connection
limit). After a warm-up it measures, over --duration seconds: streamed tokens/s (counted by
the client and cross-checked against the sim's /metrics), the sim's CPU seconds from
/proc/PID/stat, CPU per token, and the TTFT/ITL the client and the sim each saw.

    python bench/sim_streams.py                               # 1,000 streams, 50 ms steps
    python bench/sim_streams.py --streams 2000 --decode-step-ms 100
    python bench/sim_streams.py --preset llama-8b-h100        # roofline preset, no ceiling
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
import uvloop

BANNER = re.compile(r"on (http://\S+/v1)")
CEILING = re.compile(r"ceiling (\d+) output tokens/s")
METRIC = re.compile(r"^(vllm:[a-z_]+)(?:\{([^}]*)\})? (\S+)$", re.M)
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Stats:
    """What the clients saw; tokens and samples count only while `measuring`."""

    measuring: bool = False
    hanging_up: bool = False
    open: int = 0
    peak_open: int = 0
    window_min_open: int = 1 << 30
    tokens: int = 0
    chunks: int = 0
    requests: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)

    def content(self, text: str, first: bool, gap: float) -> None:
        """One content chunk; the first of a reply gives a TTFT sample, the others an ITL."""
        if self.measuring:
            self.chunks += 1
            self.tokens += text.count(" ") + first  # the sim sends one word per token
            (self.ttft if first else self.itl).append(gap)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def core_busy(core: int) -> float:
    """Seconds core `core` spent not idle (any process, irq and steal included), /proc/stat."""
    with open("/proc/stat") as f:
        line = next(x for x in f if x.startswith(f"cpu{core} "))
    ticks = [int(v) for v in line.split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """The sim's vllm:* samples, keyed by name plus labels (only `le` kept)."""
    async with session.get(base.removesuffix("/v1") + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for name, labels, value in METRIC.findall(text):
        le = re.search(r'le="([^"]+)"', labels or "")
        out[name + (f"@{le.group(1)}" if le else "")] = float(value)
    return out


def hist_q(before: dict[str, float], after: dict[str, float], name: str, q: float) -> float:
    """Quantile of a histogram's observations between two scrapes (linear within a bucket)."""
    edges = sorted(
        (float(k.split("@")[1]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(name + "_bucket@")
    )
    total = edges[-1][1] if edges else 0.0
    lo, seen = 0.0, 0.0
    for le, cum in edges:
        if cum >= q * total and total > 0 and cum > seen:
            return lo if math.isinf(le) else lo + (le - lo) * (q * total - seen) / (cum - seen)
        lo, seen = le, cum
    return math.nan


def pct(samples: list[float], q: float) -> float:
    """The q-quantile of samples (nearest rank), or NaN when there are none."""
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))] if samples else math.nan


async def one_stream(
    i: int, session: aiohttp.ClientSession, url: str, args: argparse.Namespace, st: Stats
) -> None:
    """Request after request until cancelled; the first is shortened to stagger the streams."""
    max_tokens = 1 + i * args.max_tokens // args.streams
    while True:
        body = {
            "model": "agentload-sim",
            "messages": [{"role": "user", "content": f"stream {i}: tell me a story"}],
            "stream": True,
            "ignore_eos": True,
            "max_tokens": max_tokens,
        }
        max_tokens = args.max_tokens
        start = last = time.perf_counter()
        first, buf = True, b""
        try:
            async with session.post(url, data=orjson.dumps(body)) as resp:
                resp.raise_for_status()
                st.open += 1
                st.peak_open = max(st.peak_open, st.open)
                try:
                    async for data in resp.content.iter_any():
                        events = (buf + data).split(b"\n\n")
                        buf = events.pop()
                        now = time.perf_counter()
                        for event in events:
                            if not event.startswith(b"data: {"):
                                continue  # the role chunk has no content, [DONE] no JSON
                            delta = (orjson.loads(event[6:])["choices"] or [{}])[0].get("delta")
                            if delta and (text := delta.get("content")):
                                st.content(text, first, now - (start if first else last))
                                first, last = False, now
                    st.requests += st.measuring
                finally:
                    st.open -= 1
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            st.errors += 1
            if st.errors <= 3:
                print(f"stream {i}: {exc!r}", file=sys.stderr)
            await asyncio.sleep(0.1)


def sim_command(args: argparse.Namespace) -> list[str]:
    """`agentload sim --port 0` with the benchmark's engine settings and --sim-args."""
    cmd = [sys.executable, "-m", "loadgen", "sim", "--port", "0"]
    if args.preset:
        cmd += ["--preset", args.preset]
    else:
        cmd += ["--decode-step-ms", str(args.decode_step_ms)]
    if args.max_num_seqs:
        cmd += ["--max-num-seqs", str(args.max_num_seqs)]
    # Room for every stream's prompt and reply twice over: no preemption muddies the numbers.
    blocks = max(65536, 2 * args.streams * math.ceil((args.max_tokens + 64) / 16))
    return [*cmd, "--num-kv-blocks", str(blocks), *shlex.split(args.sim_args)]


async def read_banner(
    proc: asyncio.subprocess.Process, args: argparse.Namespace
) -> tuple[str, float]:
    """The sim's base URL from its start-up line, and its ceiling at --streams (NaN: none)."""
    assert proc.stderr is not None
    async with asyncio.timeout(60):
        while line := (await proc.stderr.readline()).decode():
            if match := BANNER.search(line):
                ceiling = CEILING.search(line)
                if not ceiling:
                    return match.group(1), math.nan
                # Fewer streams than batch slots: each open stream gets one token per step.
                return match.group(1), float(ceiling.group(1)) * min(
                    1, args.streams / args.max_num_seqs
                )
            sys.stderr.write(line)
    raise SystemExit(f"the simulator exited ({await proc.wait()}) before serving")


async def drain(stream: asyncio.StreamReader, st: Stats) -> None:
    """Pass the sim's stderr on (a full pipe would block it) until the clients hang up."""
    while line := await stream.readline():
        if not st.hanging_up:  # then the sim logs writes to closed connections: noise
            sys.stderr.write(line.decode(errors="replace"))


async def run(args: argparse.Namespace) -> None:
    """Start the sim on core 0, drive it from core 1, measure, stop it (whatever happens)."""
    two_cores = (os.cpu_count() or 1) > 1
    if two_cores:
        os.sched_setaffinity(0, {1})
    cmd = sim_command(args)
    print("sim:", shlex.join(cmd[1:]), file=sys.stderr)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches only us; the finally below stops it
        preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if two_cores else None,
    )
    try:
        base, ceiling = await read_banner(proc, args)
        assert proc.stderr is not None
        st = Stats()
        drainer = asyncio.create_task(drain(proc.stderr, st))
        await drive(args, proc.pid, base, ceiling, st)
        drainer.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()


async def drive(args: argparse.Namespace, pid: int, base: str, ceiling: float, st: Stats) -> None:
    """Open the streams, measure one window, print the report."""
    conn = aiohttp.TCPConnector(limit=0)  # no pool limit: every stream has its own connection
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=conn, headers=headers, timeout=timeout) as session:
        url = base + "/chat/completions"
        tasks = [
            asyncio.create_task(one_stream(i, session, url, args, st)) for i in range(args.streams)
        ]
        try:
            await asyncio.sleep(args.warmup)
            m0, t0 = await scrape(session, base), time.perf_counter()
            before = (cpu_seconds(pid), core_busy(0), sum(os.times()[:2]))
            st.measuring = True
            end = t0 + args.duration
            while (now := time.perf_counter()) < end:
                st.window_min_open = min(st.window_min_open, st.open)
                await asyncio.sleep(min(0.25, end - now))
            st.measuring = False
            after = (cpu_seconds(pid), core_busy(0), sum(os.times()[:2]))
            wall = time.perf_counter() - t0
            m1 = await scrape(session, base)
        finally:
            st.hanging_up = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    cpu = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    report(args, st, ceiling, wall, cpu, m0, m1)


def report(
    args: argparse.Namespace,
    st: Stats,
    ceiling: float,
    wall: float,
    cpus: tuple[float, float, float],
    m0: dict[str, float],
    m1: dict[str, float],
) -> None:
    cpu, core, mine = cpus

    def delta(name: str) -> float:
        return m1.get(name, 0.0) - m0.get(name, 0.0)

    itl, ttft = "vllm:inter_token_latency_seconds", "vllm:time_to_first_token_seconds"
    # Every generated token is one TTFT or ITL observation; generation_tokens_total only
    # grows when a request ends, so over a short window it lags.
    sim_tokens = delta(itl + "_count") + delta(ttft + "_count")
    finished = delta("vllm:generation_tokens_total")
    rate, ok = st.tokens / wall, not math.isnan(ceiling)

    def ms(p50: float, p99: float) -> str:
        return f"{p50 * 1e3:.1f} / {p99 * 1e3:.1f}"

    rows = [
        ("streams requested", f"{args.streams}"),
        ("streams open: peak / min in window", f"{st.peak_open} / {st.window_min_open}"),
        ("measured window (s)", f"{wall:.1f}"),
        ("requests completed in window", f"{st.requests}  (client errors {st.errors})"),
        ("streamed tokens/s (client)", f"{rate:,.0f}  ({st.chunks / wall:,.0f} chunks/s)"),
        ("generated tokens/s (sim /metrics)", f"{sim_tokens / wall:,.0f}"),
        ("  of requests that ended (generation_tokens)", f"{finished / wall:,.0f}"),
        ("analytical ceiling at these streams", f"{ceiling:,.0f}" if ok else "n/a (roofline)"),
        ("achieved / ceiling", f"{rate / ceiling:.1%}" if ok else "n/a"),
        ("sim CPU seconds", f"{cpu:.2f}"),
        ("sim process CPU / core 0 busy", f"{cpu / wall:.0%} / {core / wall:.0%}"),
        ("sim CPU per token (us)", f"{cpu / max(st.tokens, 1) * 1e6:.1f}"),
        ("client process CPU", f"{mine / wall:.0%}"),
        ("TTFT p50 / p99 client (ms)", ms(pct(st.ttft, 0.5), pct(st.ttft, 0.99))),
        ("ITL p50 / p99 client (ms)", ms(pct(st.itl, 0.5), pct(st.itl, 0.99))),
        ("ITL p50 / p99 sim (ms)", ms(hist_q(m0, m1, itl, 0.5), hist_q(m0, m1, itl, 0.99))),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--streams", type=int, default=1000, help="concurrent streams (default 1000)")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens per reply (default 200)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (3)")
    p.add_argument("--decode-step-ms", type=float, default=50.0, help="analytical step (50)")
    p.add_argument("--max-num-seqs", type=int, help="batch slots (default 2^k >= streams)")
    p.add_argument("--preset", help="use this roofline preset instead of analytical mode")
    p.add_argument("--sim-args", default="", help='more sim flags: --sim-args="--seed 3"')
    args = p.parse_args()
    if not args.preset and not args.max_num_seqs:
        args.max_num_seqs = max(1024, 1 << (args.streams - 1).bit_length())
    try:
        uvloop.run(run(args))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
