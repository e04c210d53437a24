"""How large a simulated fleet one `agentload sim` process serves at its token rate.

For each replica count N, starts `python -m loadgen sim --replicas N` in analytical mode
(--decode-step-ms, --seqs batch slots per replica, so the fleet's ceiling is exactly
N x seqs / step tokens/s) as a child process pinned to core 0, and from this process (core 1)
keeps N x seqs streaming chat completions open (bench/sim_streams.py's clients: uvloop +
aiohttp, one connection each, 200-token replies, staggered). The least-loaded router keeps
every replica's batch full. After a warm-up it measures one window and prints, per N:
streamed tokens/s against the ceiling, the sim's own count (summed over its engines), how
evenly the replicas were loaded, the sim's CPU, and client TTFT/ITL; then the largest N
served at >= 90 % of its ceiling.

    python bench/sim_fleet.py                                 # 8 replicas x 64 at 20 ms
    python bench/sim_fleet.py --replicas 1,4,8,12,16,24       # where one process stops
    python bench/sim_fleet.py --router round-robin --sim-args="--seed 3"
    python bench/sim_fleet.py --replicas 8 --processes 2      # spread over 2 processes

With --processes P the fleet is a front and P shard processes (all on the sim's core or
cores, --sim-cores); the sim's CPU is then the whole process tree's.
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
from dataclasses import dataclass

import aiohttp
import uvloop
from sim_streams import Stats, core_busy, cpu_seconds, drain, one_stream, pct

BANNER = re.compile(r"on (http://\S+/v1)")
CEILING = re.compile(r"ceiling (\d+) output tokens/s")
SAMPLE = re.compile(r"^(vllm:[a-z_]+)(?:\{([^}]*)\})? (\S+)$", re.M)
ENGINE = re.compile(r'engine="(\d+)"')
TOKEN_COUNTS = ("vllm:time_to_first_token_seconds_count", "vllm:inter_token_latency_seconds_count")


@dataclass
class Row:
    """One replica count's measurement."""

    replicas: int
    streams: int
    ceiling: float
    wall: float
    client_tokens: int
    sim_tokens: float
    spread: tuple[float, float]  # fewest / most tokens of one engine, over the mean
    sim_cpu: float
    cores_busy: float
    client_cpu: float
    errors: int
    ttft: tuple[float, float]
    itl: tuple[float, float]

    @property
    def rate(self) -> float:
        return self.client_tokens / self.wall

    @property
    def achieved(self) -> float:
        return self.rate / self.ceiling


async def engine_tokens(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """Tokens each engine generated so far: every token is one TTFT or ITL observation."""
    async with session.get(base.removesuffix("/v1") + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for name, labels, value in SAMPLE.findall(text):
        if name in TOKEN_COUNTS:
            engine = ENGINE.search(labels or "")
            key = engine.group(1) if engine else "0"
            out[key] = out.get(key, 0.0) + float(value)
    return out


def sim_command(args: argparse.Namespace, replicas: int) -> list[str]:
    cmd = [sys.executable, "-m", "loadgen", "sim", "--port", "0"]
    cmd += ["--decode-step-ms", str(args.decode_step_ms), "--max-num-seqs", str(args.seqs)]
    if replicas > 1:
        cmd += ["--replicas", str(replicas), "--router", args.router]
    if args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    # Room for every stream's prompt and reply twice over: no preemption muddies the numbers.
    blocks = max(65536, 2 * args.seqs * math.ceil((args.max_tokens + 64) / 16))
    return [*cmd, "--num-kv-blocks", str(blocks), *shlex.split(args.sim_args)]


async def measure(args: argparse.Namespace, replicas: int) -> Row:
    """Start a fleet of `replicas`, drive it, measure one window, stop it."""
    two_cores = (os.cpu_count() or 1) > 1
    cmd = sim_command(args, replicas)
    print("sim:", shlex.join(cmd[1:]), file=sys.stderr)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, args.sim_cores)) if two_cores else None,
    )
    try:
        assert proc.stderr is not None
        base, ceiling = "", math.nan
        async with asyncio.timeout(60):
            while line := (await proc.stderr.readline()).decode():
                if match := BANNER.search(line):
                    base = match.group(1)
                    found = CEILING.search(line)
                    ceiling = float(found.group(1)) if found else math.nan
                    break
                sys.stderr.write(line)
        if not base:
            raise SystemExit(f"the simulator exited ({await proc.wait()}) before serving")
        st = Stats()
        drainer = asyncio.create_task(drain(proc.stderr, st))
        try:
            return await drive(args, replicas, proc.pid, base, ceiling, st)
        finally:
            drainer.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of every process below it (a fleet's shards)."""
    total = cpu_seconds(pid)
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return total
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(tree_cpu_seconds(int(child)) for child in f.read().split())
        except FileNotFoundError:
            continue
    return total


def sim_cores_busy(args: argparse.Namespace) -> float:
    return sum(core_busy(core) for core in args.sim_cores)


async def drive(
    args: argparse.Namespace, replicas: int, pid: int, base: str, ceiling: float, st: Stats
) -> Row:
    streams = replicas * args.seqs
    stream_args = argparse.Namespace(streams=streams, max_tokens=args.max_tokens)
    conn = aiohttp.TCPConnector(limit=0)
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=conn, headers=headers, timeout=timeout) as session:
        url = base + "/chat/completions"
        tasks = [
            asyncio.create_task(one_stream(i, session, url, stream_args, st))
            for i in range(streams)
        ]
        try:
            await asyncio.sleep(args.warmup)
            m0, t0 = await engine_tokens(session, base), time.perf_counter()
            before = (tree_cpu_seconds(pid), sim_cores_busy(args), sum(os.times()[:2]))
            st.measuring = True
            end = t0 + args.duration
            while (now := time.perf_counter()) < end:
                st.window_min_open = min(st.window_min_open, st.open)
                await asyncio.sleep(min(0.25, end - now))
            st.measuring = False
            after = (tree_cpu_seconds(pid), sim_cores_busy(args), sum(os.times()[:2]))
            wall = time.perf_counter() - t0
            m1 = await engine_tokens(session, base)
        finally:
            st.hanging_up = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    per_engine = [m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1]
    mean = sum(per_engine) / len(per_engine) if per_engine else 0.0
    spread = (min(per_engine) / mean, max(per_engine) / mean) if mean else (math.nan, math.nan)
    return Row(
        replicas=replicas,
        streams=streams,
        ceiling=ceiling,
        wall=wall,
        client_tokens=st.tokens,
        sim_tokens=sum(per_engine),
        spread=spread,
        sim_cpu=(after[0] - before[0]) / wall,
        cores_busy=(after[1] - before[1]) / wall,
        client_cpu=(after[2] - before[2]) / wall,
        errors=st.errors,
        ttft=(pct(st.ttft, 0.5), pct(st.ttft, 0.99)),
        itl=(pct(st.itl, 0.5), pct(st.itl, 0.99)),
    )


def print_rows(rows: list[Row], header: bool = True) -> None:
    head = (
        "| replicas x seqs | ceiling tok/s | streamed tok/s (client) | sim tok/s | achieved "
        "| engines min/max of mean | sim CPU / its cores busy | CPU per token | client CPU "
        "| TTFT p50/p99 ms | ITL p50/p99 ms | errors |"
    )
    if header:
        print(head)
        print("|" + "---|" * (head.count(" | ") + 1))
    for r in rows:
        per_token = r.sim_cpu * r.wall / max(r.client_tokens, 1) * 1e6
        print(
            f"| {r.replicas} x {r.streams // r.replicas} | {r.ceiling:,.0f} | {r.rate:,.0f} "
            f"| {r.sim_tokens / r.wall:,.0f} | {r.achieved:.1%} "
            f"| {r.spread[0]:.2f} / {r.spread[1]:.2f} | {r.sim_cpu:.0%} / {r.cores_busy:.0%} "
            f"| {per_token:.1f} us | {r.client_cpu:.0%} "
            f"| {r.ttft[0] * 1e3:.0f} / {r.ttft[1] * 1e3:.0f} "
            f"| {r.itl[0] * 1e3:.1f} / {r.itl[1] * 1e3:.1f} | {r.errors} |",
            flush=True,
        )


async def run(args: argparse.Namespace) -> list[Row]:
    if (os.cpu_count() or 1) > 1:
        clients = set(range(os.cpu_count() or 1)) - args.sim_cores
        os.sched_setaffinity(0, clients or {1})
    rows = []
    for n in args.replicas:
        rows.append(await measure(args, n))
        print_rows(rows[-1:], header=len(rows) == 1)  # as it goes; the table again at the end
        await asyncio.sleep(1.0)  # let the last fleet's sockets close
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--replicas", default="8", help="replica counts, comma-separated (default 8)")
    p.add_argument("--seqs", type=int, default=64, help="batch slots per replica (default 64)")
    p.add_argument("--decode-step-ms", type=float, default=20.0, help="analytical step (20)")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens per reply (default 200)")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (3)")
    p.add_argument("--router", default="least-loaded", help="fleet router (least-loaded)")
    p.add_argument("--sim-args", default="", help='more sim flags: --sim-args="--seed 3"')
    p.add_argument("--processes", type=int, default=1, help="spread the fleet over P processes")
    p.add_argument(
        "--sim-cores",
        type=lambda text: {int(c) for c in text.split(",")},
        default={0},
        help="cores of the sim (and its shards), comma-separated; the clients get the rest (0)",
    )
    args = p.parse_args()
    args.replicas = [int(n) for n in args.replicas.split(",")]
    try:
        rows = uvloop.run(run(args))
    except KeyboardInterrupt:
        return 130
    print()
    print_rows(rows)
    held = [r.replicas for r in rows if r.achieved >= 0.9]
    print(
        f"\nlargest fleet one process served at >= 90% of its ceiling: "
        f"{max(held)} x {args.seqs} at {args.decode_step_ms:g} ms steps"
        if held
        else "\nno fleet here was served at >= 90% of its ceiling"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
