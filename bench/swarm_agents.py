"""Under Locust: thousands of long-lived agents in one process, and client CPU per token.

Two questions, each answered against the built-in simulator (`agentload sim --preset fast`)
in its own process pinned to core 1, with the generator pinned to core 0:

  agents   Can one Locust process hold --agents (default 5,000) concurrent long-lived agents
           that mostly wait (support agents: 20-40 turns, think time 30-60 s at time_scale 1,
           short replies), with steps starting on time? Figure: summary.json
           generator.schedule_lag_p99_s (every step; steps without a planned wait count 0)
           and the same p99 over think-time wake-ups only (steps.jsonl, kind "turn", step > 0).
           Goal: <= 10 ms.
  cpu      Client CPU per streamed token of each mode below, on the same profile and
           simulator, and each mode's ratio to local mode's. CPU is the generator process's
           utime+stime over a steady window of the hold stage (/proc/PID/stat), tokens the
           completion tokens of the steps.jsonl lines written in that window; whole-process
           CPU (startup and shutdown included) over the summary's tokens is shown too. Run
           for both profiles: the agents profile (mostly idle agents) and a streaming one
           (--stream-agents coding agents, time_scale 0.01, 128-384 output tokens).

Modes: locust (`agentload run`, Locust's local mode in one process: gevent hub + the
engine's uvloop thread), worker (a master on core 1 beside the sim and one `--worker`
process on core 0: the figures are the worker's). Each run starts a fresh simulator; modes
alternate, --repeats times. (Rounds before issue #18 also ran the engine bare, without
Locust, through a second run driver that no longer exists; bench/LOG.md keeps them.)

    python bench/swarm_agents.py                                  # both, about 15 minutes
    python bench/swarm_agents.py --only agents --agents 5000 --modes worker
    python bench/swarm_agents.py --only cpu --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")

AGENTS_PROFILE = """\
name: swarm-idle-agents
description: Long-lived support agents that mostly think; each sends about once a minute.
seed: 1
time_scale: 1.0
stages:
  - {{kind: ramp, duration: {ramp}s, target: {agents}}}
  - {{kind: hold, duration: {hold}s}}
arrival: {{mode: closed, agents: {agents}}}
agents:
  - kind: support
    params:
      system_prompt_tokens: 300
      turns: {{uniform: [20, 40]}}
      steps_per_turn: {{choice: {{1: 0.7, 2: 0.3}}}}
      user_tokens: {{uniform: [10, 40]}}
      output_tokens: {{uniform: [16, 48]}}
      tool_result_tokens: {{uniform: [20, 60]}}
      think_time_s: {{uniform: [30, 60]}}
sim: {{preset: fast}}
"""

STREAM_PROFILE = """\
name: swarm-streaming
description: Coding agents streaming longer replies back to back.
seed: 2
time_scale: 0.01
stages:
  - {{kind: ramp, duration: {ramp}s, target: {agents}}}
  - {{kind: hold, duration: {hold}s}}
arrival: {{mode: closed, agents: {agents}}}
agents:
  - kind: coding
    params:
      system_prompt_tokens: 1000
      turns: 1
      steps_per_turn: {{uniform: [3, 6]}}
      output_tokens: {{uniform: [128, 384]}}
      tool_result_tokens: {{uniform: [100, 400]}}
sim: {{preset: fast}}
"""


@dataclass
class Result:
    """One generator run."""

    mode: str
    profile: str
    summary: dict[str, Any]
    window_cpu_s: float
    window_tokens: int
    whole_cpu_s: float
    max_rss_mb: float
    other_core0: float  # share of core 0 busy with anything but the generator, in the window
    waited_ms_per_s: float  # generator threads runnable but not running, ms per s of window
    think_lag_p99_s: float | None

    @property
    def window_us_per_token(self) -> float:
        return self.window_cpu_s / max(self.window_tokens, 1) * 1e6

    @property
    def whole_us_per_token(self) -> float:
        return self.whole_cpu_s / max(self.summary["tokens"]["completion"], 1) * 1e6


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), out.get("PYTHONPATH")]))
    return out


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def simulator(logs: Path) -> Iterator[str]:
    """A fresh `agentload sim --preset fast` on core 1; yields its base URL."""
    err = logs / "sim.err"
    with err.open("wb") as f:
        argv = [sys.executable, "-m", "loadgen", "sim", "--preset", "fast", "--port", "0"]
        proc = subprocess.Popen(pinned(1, argv), stdout=subprocess.DEVNULL, stderr=f, env=env())
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"on (http://\S+/v1)", err.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start: {err.read_text()}")
            time.sleep(0.1)
        yield found.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def core_busy_seconds(core: int) -> float:
    """Seconds core `core` spent busy (anything but idle and iowait) since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(x) for x in line.split()[1:]]
            return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK
    raise ValueError(f"no cpu{core} in /proc/stat")


def run_delay_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (/proc schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
    return total / 1e9


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) / 100)) - 1]


def run_once(mode: str, profile: Path, name: str, ramp: float, hold: float, work: Path) -> Result:
    """One generator run of `mode` against a fresh simulator; CPU sampled in the hold stage."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    agentload = [sys.executable, "-m", "loadgen", "run", str(profile), "--quiet"]
    procs: list[subprocess.Popen[bytes]] = []
    with simulator(logs) as url:
        try:

            def start(tag: str, argv: list[str]) -> subprocess.Popen[bytes]:
                with (logs / f"{tag}.out").open("wb") as o, (logs / f"{tag}.err").open("wb") as e:
                    proc = subprocess.Popen(argv, stdout=o, stderr=e, env=env())
                procs.append(proc)
                return proc

            steps = out / "steps.jsonl"
            if mode == "locust":
                gen = start("gen", pinned(0, [*agentload, "--target", url, "--out", str(out)]))
            elif mode == "worker":
                port = free_port()
                start("master", pinned(1, [*agentload, "--master", "--expect-workers", "1",
                      "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                      "--target", url, "--out", str(out)]))  # fmt: skip
                gen = start("gen", pinned(0, [*agentload, "--worker", "--master-host",
                            "127.0.0.1", "--master-port", str(port), "--target", url,
                            "--out", str(out)]))  # fmt: skip
                steps = out / "worker-0" / "steps.jsonl"
            else:
                raise ValueError(mode)

            # The clock starts with the first step written; the window is the hold stage less
            # a margin each side.
            deadline = time.monotonic() + 120
            while not (steps.exists() and steps.stat().st_size):
                if gen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: no step written; see {logs}")
                time.sleep(0.05)
            margin = min(10.0, hold / 6)
            time.sleep(ramp + margin)
            w1, busy1, delay1 = time.monotonic(), core_busy_seconds(0), run_delay_seconds(gen.pid)
            cpu1, size1 = cpu_seconds(gen.pid), steps.stat().st_size
            time.sleep(hold - 2 * margin)
            cpu2, size2 = cpu_seconds(gen.pid), steps.stat().st_size
            w2, busy2, delay2 = time.monotonic(), core_busy_seconds(0), run_delay_seconds(gen.pid)
            rss = peak_rss_mb(gen.pid)

            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            rc = gen.wait(timeout=ramp + hold + 300)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            for proc in procs:
                proc.wait(timeout=120)
            if rc != 0 or any(p.returncode for p in procs):
                raise RuntimeError(f"{mode}: exit {[p.returncode for p in procs]}; see {logs}")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    summary = json.loads((out / "summary.json").read_text())
    tokens, offset, think_lags = 0, 0, []
    for line in steps.read_bytes().splitlines(keepends=True):
        offset += len(line)
        record = json.loads(line)
        if size1 < offset <= size2:
            tokens += record["completion_tokens"] or 0
        if record["kind"] == "turn" and record["step"] > 0:
            think_lags.append(record["schedule_lag_s"])
    whole = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Result(
        mode=mode,
        profile=name,
        summary=summary,
        window_cpu_s=cpu2 - cpu1,
        window_tokens=tokens,
        whole_cpu_s=whole,
        max_rss_mb=rss,
        other_core0=max(0.0, (busy2 - busy1) - (cpu2 - cpu1)) / (w2 - w1),
        waited_ms_per_s=(delay2 - delay1) / (w2 - w1) * 1000,
        think_lag_p99_s=nearest_rank(think_lags, 99),
    )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def report(r: Result) -> str:
    s, g = r.summary, r.summary["generator"]
    return (
        f"{r.profile:8} {r.mode:6} started {s['sessions']['started']:6} "
        f"aborted@end {s['sessions']['aborted']:6} req {s['requests']['total']:6} "
        f"fail {s['requests']['failed']:3} tok {s['tokens']['completion']:8} | "
        f"sched p99 {ms(g['schedule_lag_p99_s'])} ms, think-wake p99 {ms(r.think_lag_p99_s)} "
        f"ms, loop p99 {ms(g['loop_lag_p99_s'])} ms, cpu {g['cpu_percent']:.0f}% | "
        f"window {r.window_cpu_s:.1f} s / {r.window_tokens} tok = "
        f"{r.window_us_per_token:.1f} us/tok; whole {r.whole_cpu_s:.1f} s = "
        f"{r.whole_us_per_token:.1f} us/tok; rss {r.max_rss_mb:.0f} MB; "
        f"core 0 busy with others {r.other_core0:.0%}, waited for CPU {r.waited_ms_per_s:.0f} ms/s"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", choices=("agents", "cpu"), help="one question (default both)")
    ap.add_argument("--agents", type=int, default=5000, help="agents profile size")
    ap.add_argument("--ramp", type=float, default=30.0, help="agents profile ramp, seconds")
    ap.add_argument("--hold", type=float, default=90.0, help="agents profile hold, seconds")
    ap.add_argument("--stream-agents", type=int, default=100, help="streaming profile size")
    ap.add_argument("--stream-hold", type=float, default=40.0, help="streaming hold, seconds")
    ap.add_argument("--modes", default="locust,worker", help="comma-separated: locust,worker")
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode and profile")
    ap.add_argument("--keep", type=Path, help="keep every run's folder under this path")
    args = ap.parse_args()
    modes = args.modes.split(",")
    work = args.keep or Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    plans = []
    if args.only in (None, "agents"):
        text = AGENTS_PROFILE.format(agents=args.agents, ramp=int(args.ramp), hold=int(args.hold))
        plans.append(("agents", text, args.ramp, args.hold))
    if args.only in (None, "cpu"):
        text = STREAM_PROFILE.format(agents=args.stream_agents, ramp=5, hold=int(args.stream_hold))
        plans.append(("stream", text, 5.0, args.stream_hold))
    results: list[Result] = []
    for name, text, ramp, hold in plans:
        profile = work / f"{name}.yaml"
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(text)
        for i in range(args.repeats):
            for mode in modes:
                result = run_once(mode, profile, name, ramp, hold, work / f"{name}-{mode}-{i}")
                results.append(result)
                print(report(result), flush=True)
    print()
    for name, *_ in plans:
        per_mode = {m: [r for r in results if r.profile == name and r.mode == m] for m in modes}
        medians = {
            m: (
                statistics.median(r.window_us_per_token for r in rs),
                statistics.median(r.whole_us_per_token for r in rs),
            )
            for m, rs in per_mode.items()
            if rs
        }
        line = ", ".join(f"{m} {w:.1f} us/tok (whole {a:.1f})" for m, (w, a) in medians.items())
        print(f"{name}: median CPU per completion token: {line}")
        if "locust" in medians:
            for m, (w, a) in medians.items():
                if m != "locust":
                    lw, la = medians["locust"]
                    ratios = f"{w / lw:.2f}x in the window, {a / la:.2f}x whole"
                    print(f"{name}: {m} / locust = {ratios}")
    print(f"runs kept in {work}" if args.keep else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
