"""The twin against the server it was fitted to: llama-server on this machine's CPU.

Starts llama.cpp's llama-server (installed by `.ci/install-real-servers`; found by
tests/real_servers.py) on a random-weight GGUF larger than the tests' tiny one (F32, hidden
512, 6 layers, FFN 1536, ~20M parameters: the engine, not HTTP, sets the timings), with 4
slots, a 16384-token context (4096 a slot) and one thread. Calibrates it (`agentload
calibrate`), serves the twin (`agentload sim --config twin.yaml`), and runs the same
closed-loop support workload against both: 1, 2 and 4 agents, user turns of 8 and 64
words, 15 s each, against llama-server twice (its run-to-run spread is the machine's noise)
and the twin once, in the order server, twin, server at each level, each run with its own
seed (llama-server keeps finished prompts in RAM: a run repeating another's conversations
would find them cached). Prints the table of docs/twin.md ("Against llama-server on this
machine's CPU") with the load average beside each level, and keeps every run's
summary.json and the twin under --out.

    python bench/twin_vs_llama_server.py                     # ~6 min on 2 cores
    python bench/twin_vs_llama_server.py --twin twin.yaml    # reuse a fitted twin
    python bench/twin_vs_llama_server.py --agents 1,4 --duration 10s
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from real_servers import LlamaServer, SimProcess, installed, write_tiny_gguf  # noqa: E402

AGENTLOAD = [sys.executable, "-m", "loadgen"]
PARALLEL = 4
CTX_PER_SLOT = 4096

# tests/test_ceiling.py's support workload: a 16-word system prompt, 2 turns of one step,
# a forced 48-token reply, no think time; only the user turn's length varies.
PROFILE = """
name: twin-vs-llama-server
duration: 15s
seed: 7
time_scale: 0.001
force_output_length: always
arrival: {{mode: closed, agents: 1}}
agents:
  - kind: support
    params: {{system_prompt_tokens: 16, turns: 2, steps_per_turn: 1, user_tokens: {user},
             output_tokens: 48, think_time_s: 0}}
"""


@dataclass
class Measured:
    """One run's figures: output tokens/s and TTFT p50 (seconds), the load average at its end."""

    tokens_per_s: float
    ttft_p50_s: float
    load: float


def run_level(
    target: str,
    profile: Path,
    agents: int,
    duration: str,
    out: Path,
    model: str | None,
    seed: int,
) -> Measured:
    """`agentload run` of the profile at `agents` agents against `target`, its conversations
    drawn with `seed`: each run its own, or llama-server's prompt cache (it keeps finished
    prompts in RAM) would serve a second run's conversations from the first's."""
    flags = ["--model", model] if model else []
    done = subprocess.run(
        [*AGENTLOAD, "run", str(profile), "--target", target, "--agents", str(agents),
         "--duration", duration, "--out", str(out), "--quiet", "--seed", str(seed), *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"agentload run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    if summary["requests"]["failed"]:
        raise SystemExit(f"{out}: {summary['requests']['failed']} requests failed")
    return Measured(
        summary["throughput"]["output_tokens_per_s"],
        summary["latency"]["ttft_s"]["p50"],
        os.getloadavg()[0],
    )


def calibrate(target: str, out: Path, repeats: int, max_noise: float, tries: int) -> Path:
    """Fit the twin of `target` into out/twin.yaml (the bounds of docs/twin.md's run); a
    calibration refused for noise or a saturated generator (a busy machine) is tried again,
    up to `tries` times in all."""
    twin = out / "twin.yaml"
    for attempt in range(1, tries + 1):
        started = time.monotonic()
        done = subprocess.run(
            [*AGENTLOAD, "calibrate", "--target", target, "--out", str(twin),
             "--max-prompt-tokens", "2048", "--max-concurrency", "16", "--repeats", str(repeats),
             "--max-noise", str(max_noise), "--max-duration", "5m"],
            cwd=ROOT, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        print(done.stdout, end="")
        if done.returncode == 0:
            print(f"calibrated in {time.monotonic() - started:.0f} s (try {attempt})", flush=True)
            return twin
        refusal = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        print(f"try {attempt}: {refusal} (load average {os.getloadavg()[0]:.2f})", flush=True)
        if done.returncode != 1 or not ("noisy" in refusal or "saturated" in refusal):
            break
    raise SystemExit(f"calibration failed ({done.returncode}):\n{done.stderr[-3000:]}")


def spread(values: list[float]) -> float:
    """(max - min) / mean: how far the server's own runs of one level disagree."""
    return (max(values) - min(values)) / statistics.fmean(values) if len(values) > 1 else 0.0


def error(twin: float, server: list[float]) -> float:
    """The twin against the mean of the server's runs."""
    return twin / statistics.fmean(server) - 1.0


def table(rows: list[dict[str, Any]]) -> str:
    """docs/twin.md's table: per level, the server's runs and spread, the twin, its error."""
    lines = [
        "| user turn | agents | output tok/s: server (spread) | twin | error "
        "| TTFT p50: server (spread) | twin | error | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tok, ttft = r["server_tokens_per_s"], [t * 1000 for t in r["server_ttft_p50_s"]]
        twin_ttft = r["twin_ttft_p50_s"] * 1000
        lines.append(
            f"| {r['user_words']} words | {r['agents']} "
            f"| {' / '.join(f'{t:.0f}' for t in tok)} ({spread(tok):.0%}) "
            f"| {r['twin_tokens_per_s']:.0f} | {error(r['twin_tokens_per_s'], tok):+.0%} "
            f"| {' / '.join(f'{t:.1f}' for t in ttft)} ms ({spread(ttft):.0%}) "
            f"| {twin_ttft:.1f} ms | {error(twin_ttft, ttft):+.0%} "
            f"| {' / '.join(f'{x:.1f}' for x in r['load'])} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, help="folder for twin.yaml and the runs (default: a temp one)"
    )
    parser.add_argument("--twin", type=Path, help="serve this twin instead of calibrating")
    parser.add_argument("--agents", default="1,2,4", help="closed-loop levels (default 1,2,4)")
    parser.add_argument("--user-words", default="8,64", help="user-turn sizes (default 8,64)")
    parser.add_argument("--duration", default="15s", help="each run's length (default 15s)")
    parser.add_argument(
        "--server-runs", type=int, default=2, help="runs per level against llama-server"
    )
    parser.add_argument("--repeats", type=int, default=3, help="calibrate --repeats (default 3)")
    parser.add_argument("--max-noise", type=float, default=0.25, help="calibrate --max-noise")
    parser.add_argument(
        "--calibrate-tries", type=int, default=3, help="calibrations refused for noise, at most"
    )
    args = parser.parse_args()
    if installed("llama-server") is None:
        print("llama-server is not installed: run .ci/install-real-servers", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="twin-vs-llama-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"results in {out}; load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    model = write_tiny_gguf(out / "small.gguf", n_embd=512, n_layer=6, n_ff=1536)
    rows: list[dict[str, Any]] = []
    seeds = itertools.count(1)
    # One thread (LlamaServer's): llama.cpp's threads spin at barriers, and two of them on two
    # shared cores stall each other for hundreds of ms whenever anything else runs.
    with LlamaServer(model, ctx=PARALLEL * CTX_PER_SLOT, parallel=PARALLEL) as server:
        twin = args.twin or calibrate(
            server.base_url, out, args.repeats, args.max_noise, args.calibrate_tries
        )
        print(yaml.safe_dump({"perf": yaml.safe_load(twin.read_text())["perf"]}), end="")
        with SimProcess(config=twin) as sim:
            for user in (int(u) for u in args.user_words.split(",")):
                profile = out / f"support-{user}.yaml"
                profile.write_text(PROFILE.format(user=user))
                for agents in (int(a) for a in args.agents.split(",")):
                    where = out / f"u{user}-a{agents}"
                    runs: list[Measured] = []
                    twin_run: Measured | None = None
                    for i in range(args.server_runs):
                        name = where / f"server-{i + 1}"
                        runs.append(run_level(server.base_url, profile, agents, args.duration,
                                              name, "tiny-llama", next(seeds)))  # fmt: skip
                        if i == 0:  # the twin between the server's runs: drift shows as spread
                            twin_run = run_level(sim.base_url, profile, agents, args.duration,
                                                 where / "twin", None, next(seeds))  # fmt: skip
                    assert twin_run is not None
                    rows.append(
                        {
                            "user_words": user,
                            "agents": agents,
                            "server_tokens_per_s": [m.tokens_per_s for m in runs],
                            "server_ttft_p50_s": [m.ttft_p50_s for m in runs],
                            "twin_tokens_per_s": twin_run.tokens_per_s,
                            "twin_ttft_p50_s": twin_run.ttft_p50_s,
                            "load": [runs[0].load, twin_run.load, *(m.load for m in runs[1:])],
                        }
                    )
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))
    print("load avg: 1-minute load average after each run (server, twin, server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
