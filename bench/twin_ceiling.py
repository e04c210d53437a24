"""The twin's ceiling against the original's: issue 17's first must-show, end to end.

Starts `agentload sim` with settings that `agentload calibrate` is not told (the engine of
tests/test_twin_calibrate.py's HIDDEN, with a 32K window and a KV cache that a fleet of
coding agents outgrows), calibrates it into twin.yaml, serves the twin (`agentload sim
--config twin.yaml`), and runs the same `agentload ceiling` of a scaled coding agent
against both: the original twice (its run-to-run spread is the noise to judge the twin
by) and the twin once, in the order original, twin, original; each search against a fresh
server process, with the same seed. Prints the fitted values beside the hidden ones, then
each search's ceiling (agents, output tokens/s) and the twin's error against the mean of
the original's runs, with the load average beside each. Keeps twin.yaml, the profile and
every search's results under --out.

    python bench/twin_ceiling.py                       # ~16 min on 2 cores
    python bench/twin_ceiling.py --twin twin.yaml      # reuse a fitted twin
    python bench/twin_ceiling.py --original-runs 1 --window 15s
"""

from __future__ import annotations

import argparse
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

from real_servers import SimProcess  # noqa: E402

AGENTLOAD = [sys.executable, "-m", "loadgen"]

# tests/test_twin_calibrate.py's HIDDEN engine (12 ms + 0.5 ms per sequence, 16 sequences,
# 20,000 prefill tokens/s, 100 ms per request before admission) with a 32K window and
# 8192 KV blocks of 16 (131K tokens: about ten of the profile's contexts), so that the KV
# cache, and not only the batch limit, binds as agents are added. The preset is the tests'
# (`fast`): what calibration does not measure (its 16384-token chunked-prefill budget) is
# left as a server has it, not aligned with the twin's base preset.
HIDDEN: dict[str, float] = {
    "decode_step_ms": 12.0,
    "decode_step_per_seq_ms": 0.5,
    "max_num_seqs": 16,
    "prefill_tokens_per_s": 20_000.0,
    "request_overhead_ms": 100.0,
    "num_kv_blocks": 8192,
    "max_model_len": 32768,
}
HIDDEN_PRESET = "fast"

# examples/profiles/fleet-coding.yaml's coding agent (12 tool steps over 6-16K of context,
# 2K shared) on a 32K window: compacted at 90% of 24K, so no step outgrows the window.
# time_scale shortens tool and think times twentyfold; lengths are forced by the target.
PROFILE = """\
name: twin-ceiling-coding
description: coding agents on a 32K window, for the twin's ceiling against the original's
seed: 1
time_scale: 0.05
arrival: {mode: closed, agents: 8}
agents:
- kind: coding
  params:
    system_prompt_tokens: 2000
    session_context_tokens: {lognormal: {median: 6000, p90: 12000}, high: 16000}
    tool_result_tokens: {lognormal: {median: 400, p90: 1500}, high: 6000}
    output_tokens: {lognormal: {median: 200, p90: 500}, low: 1, high: 1000}
    first_turn_steps: 12
    turns: 1
    context_budget_tokens: 24000
    compact_keep_tokens: 10000
"""
SLOS = ["ttft_p95 < 2s", "itl_p99 < 250ms"]


def original(log_dir: Path) -> SimProcess:
    """A fresh original: the hidden settings, its KV and prefix cache empty."""
    args = [a for k, v in HIDDEN.items() for a in (f"--{k.replace('_', '-')}", f"{v:g}")]
    return SimProcess(preset=HIDDEN_PRESET, extra_args=args, log_dir=log_dir)


@dataclass
class Search:
    """One ceiling search: its ceiling, what broke first, how long it took, the load then."""

    name: str
    agents: float | None
    tokens_per_s: float | None
    sessions_per_min: float | None
    failed_first: str
    levels: str
    duration_s: float
    load: tuple[float, float]  # 1-minute load average at its start and end


def ceiling(name: str, target: str, profile: Path, out: Path, args: argparse.Namespace) -> Search:
    """`agentload ceiling PROFILE --by agents` against `target`, read back from ceiling.json."""
    slos = [f for s in args.slo for f in ("--slo", s)]
    load0, started = os.getloadavg()[0], time.monotonic()
    done = subprocess.run(
        [*AGENTLOAD, "ceiling", str(profile), "--target", target, "--by", "agents", *slos,
         "--start", str(args.start), "--growth", str(args.growth),
         "--resolution", str(args.resolution), "--warmup", args.warmup, "--window", args.window,
         "--max-window", args.max_window or args.window, "--max-duration", args.max_duration,
         "--seed", str(args.seed), "--scrape-target-metrics", "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    duration = time.monotonic() - started
    if done.returncode not in (0, 1) or not (out / "ceiling.json").exists():
        raise SystemExit(f"{name}: agentload ceiling failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-3000:]}")  # fmt: skip
    doc: dict[str, Any] = json.loads((out / "ceiling.json").read_text())
    mark, failed = doc["ceiling"] or {}, doc["failed_first"] or {}
    # Each broken SLO without its window details: "ttft_p95 = 6.047 s, needs < 2 s".
    broke = "; ".join(slo.split(" (window")[0] for slo in failed.get("slo") or [])
    broke = broke or doc["stopped_by"]
    if failed.get("server_resource"):
        broke += f" [{failed['server_resource']}]"
    levels = " ".join(
        f"{lv['load']:g}{'' if lv['passed'] else 'x'}" for lv in doc["levels"]
    )  # the levels in the order measured, x where one broke
    print(f"{name}: ceiling {mark.get('load')} agents, "
          f"{mark.get('output_tokens_per_s') or 0:.0f} output tok/s in {duration:.0f} s "
          f"(levels {levels}); failed first at {failed.get('load')}: {broke}",
          flush=True)  # fmt: skip
    return Search(
        name, mark.get("load"), mark.get("output_tokens_per_s"), mark.get("sessions_per_min"),
        f"{failed.get('load')}: {broke}", levels, duration, (load0, os.getloadavg()[0]),
    )  # fmt: skip


def calibrate(target: str, out: Path) -> Path:
    """`agentload calibrate` with its defaults into out/twin.yaml."""
    twin = out / "twin.yaml"
    started = time.monotonic()
    done = subprocess.run(
        [*AGENTLOAD, "calibrate", "--target", target, "--out", str(twin)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    print(done.stdout, end="")
    if done.returncode != 0:
        raise SystemExit(f"calibration failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"calibrated in {time.monotonic() - started:.0f} s", flush=True)
    return twin


def fitted_table(twin: dict[str, Any]) -> str:
    """Each hidden setting beside the twin's value and the error."""
    perf = twin["perf"]
    hidden_batched = {"fast": 16384}.get(HIDDEN_PRESET, 8192)
    rows = [
        ("decode step", HIDDEN["decode_step_ms"], perf["decode_step_ms"], "ms"),
        ("per decoding sequence", HIDDEN["decode_step_per_seq_ms"],
         perf["decode_step_per_seq_ms"], "ms"),
        ("batch limit", HIDDEN["max_num_seqs"], twin["max_num_seqs"], "sequences"),
        ("prefill", HIDDEN["prefill_tokens_per_s"], perf["prefill_tokens_per_s"], "tokens/s"),
        ("request overhead", HIDDEN["request_overhead_ms"], perf["request_overhead_ms"], "ms"),
        ("KV capacity", HIDDEN["num_kv_blocks"], twin["num_kv_blocks"], "blocks"),
        ("block size", 16, twin["block_size"], "tokens"),
        ("window", HIDDEN["max_model_len"], twin["max_model_len"], "tokens"),
        ("chunked-prefill budget (not measured)", hidden_batched,
         twin.get("max_num_batched_tokens", 8192), "tokens"),
    ]  # fmt: skip
    lines = ["| value | hidden | fitted | error |", "|---|---|---|---|"]
    for name, truth, value, unit in rows:
        shown = f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"
        lines.append(f"| {name} | {truth:,g} {unit} | {shown} | {value / truth - 1:+.1%} |")
    return "\n".join(lines)


def ceiling_table(originals: list[Search], twin: Search, tolerance: float) -> str:
    """Each search's ceiling, the originals' spread and the twin's error against their mean."""
    lines = [
        "| run | ceiling agents | output tok/s | sessions/min | failed first | levels "
        "| time | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in [*originals, twin]:
        lines.append(
            f"| {s.name} | {s.agents} | {s.tokens_per_s or 0:.0f} | {s.sessions_per_min or 0:.1f} "
            f"| {s.failed_first} | {s.levels} | {s.duration_s:.0f} s "
            f"| {s.load[0]:.1f} → {s.load[1]:.1f} |"
        )
    out = ["\n".join(lines)]
    for label, pick in (("agents", "agents"), ("output tok/s", "tokens_per_s")):
        values = [getattr(s, pick) for s in originals]
        mine = getattr(twin, pick)
        if None in values or mine is None:
            out.append(f"{label}: a search found no ceiling")
            continue
        mean = statistics.fmean(values)
        spread = (max(values) - min(values)) / mean
        err = mine / mean - 1.0
        verdict = "within" if abs(err) <= tolerance else "NOT within"
        out.append(
            f"{label}: original {' / '.join(f'{v:.0f}' for v in values)} (spread {spread:.0%}),"
            f" twin {mine:.0f}: {err:+.1%}, {verdict} {tolerance:.0%}"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="results folder (default: a temp one)")
    parser.add_argument("--twin", type=Path, help="serve this twin instead of calibrating")
    parser.add_argument("--original-runs", type=int, default=2, help="searches of the original")
    parser.add_argument("--slo", action="append", help=f"SLO (default: {' and '.join(SLOS)})")
    parser.add_argument("--start", type=int, default=4, help="first level (default 4)")
    parser.add_argument("--growth", type=float, default=2.0, help="ceiling --growth")
    parser.add_argument("--resolution", type=float, default=0.1, help="ceiling --resolution")
    parser.add_argument("--warmup", default="20s", help="each level's warm-up (default 20s)")
    parser.add_argument("--window", default="30s", help="each level's window (default 30s)")
    parser.add_argument("--max-window", help="default: --window (no extensions)")
    parser.add_argument("--max-duration", default="10m", help="each search's cap")
    parser.add_argument("--seed", type=int, default=1, help="every search's seed")
    parser.add_argument("--tolerance", type=float, default=0.10, help="the must-show's 10%%")
    args = parser.parse_args()
    args.slo = args.slo or SLOS
    out = args.out or Path(tempfile.mkdtemp(prefix="twin-ceiling-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"results in {out}; load average {os.getloadavg()} at the start", flush=True)
    profile = out / "coding.yaml"
    profile.write_text(PROFILE)
    logs = out / "logs"
    if args.twin is None:
        with original(logs) as sim:
            twin_path = calibrate(sim.base_url, out)
    else:
        twin_path = args.twin
    twin_doc = yaml.safe_load(twin_path.read_text())
    print(fitted_table(twin_doc), flush=True)
    searches: list[Search] = []
    twin_search: Search | None = None
    for i in range(args.original_runs):
        with original(logs) as sim:
            searches.append(ceiling(f"original {i + 1}", sim.base_url, profile,
                                    out / f"original-{i + 1}", args))  # fmt: skip
        if i == 0:  # the twin between the original's runs: drift shows as their spread
            with SimProcess(config=twin_path, log_dir=logs) as sim:
                twin_search = ceiling("twin", sim.base_url, profile, out / "twin", args)
    assert twin_search is not None
    print()
    print(fitted_table(twin_doc))
    print()
    print(ceiling_table(searches, twin_search, args.tolerance))
    took = time.monotonic() - started
    print(f"SLOs: {', '.join(args.slo)}; warm-up {args.warmup}, window {args.window}, "
          f"resolution {args.resolution:g}, seed {args.seed}; {took:.0f} s in all; "
          f"load average {os.getloadavg()} at the end")  # fmt: skip
    (out / "searches.json").write_text(
        json.dumps({"originals": [vars(s) for s in searches], "twin": vars(twin_search)}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
