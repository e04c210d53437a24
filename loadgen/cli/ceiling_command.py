"""`agentload ceiling`: search for the highest load a target holds within its SLOs."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path
from typing import Any

from loadgen.cli.arguments import parse_duration, parse_port
from loadgen.cli.run_command import (
    add_master_arguments,
    add_target_arguments,
    check_master_flags,
)
from loadgen.cli.run_setup import default_out_dir, launch_for
from loadgen.errors import UsageError

__all__ = ["add_level_arguments", "level_flags", "register"]

_EXAMPLES = """\
examples:
  agentload ceiling support-chat --slo 'ttft_p95 < 2s' --slo 'session_success_rate >= 0.99'
  agentload ceiling coding-agent --target http://gpu-box:8000/v1 --slo 'itl_p99 < 100ms' \\
      --scrape-target-metrics --max-duration 30m --out results/ceiling
  agentload ceiling rag --by session-rate --start 0.5 --slo 'e2e_p95 < 10s'
  agentload ceiling coding-agent --target http://gpu-box:8000/v1 --slo 'ttft_p95 < 2s' \\
      --processes 4                      # the load from 4 Locust worker processes
  agentload ceiling day1-replay.yaml --slo 'ttft_p95 < 2s' --processes 2
      # a profile with `arrival: {mode: trace, ...}`: levels are speedups of the trace,
      # each worker replays every 2nd session of it

results: DIR/ceiling.json (every level, the ceiling, the knee, what failed first), DIR/summary.json
and the records of the whole search; `agentload report DIR` draws the ceiling curve.
each level: --warmup, then --window in --slices slices, extended slice by slice (up to
--max-window) while the level drifts or its window covers fewer than 3 typical sessions.
exit codes: 0 a ceiling was found; 1 no level held every SLO (or the search stopped, on an
            error storm, a saturated generator or --max-duration, before one did); 2 usage
            error (a bad flag or --slo); 3 target unreachable; 130/143 interrupted by
            Ctrl-C/SIGTERM (ceiling.json, rewritten after every level, keeps what was measured)
"""


# The level flags a command that runs ceiling searches (plan, route-study) passes on as given;
# one it was not given is left to the search's own default.
_LEVEL_FLAGS = ("--start", "--growth", "--resolution", "--warmup", "--window", "--max-window")


def add_level_arguments(p: argparse.ArgumentParser, load: str) -> None:
    """The ceiling search's level flags, for a command that runs searches of `load` levels."""
    p.add_argument("--start", type=float, metavar="LOAD",
                   help=f"ceiling: first level, in {load} (default 1)")  # fmt: skip
    p.add_argument("--growth", type=float, metavar="X",
                   help="ceiling: factor between levels (default 2)")  # fmt: skip
    p.add_argument("--resolution", type=float, metavar="SHARE",
                   help="ceiling: bisect to this share of the ceiling (default 0.1)")  # fmt: skip
    p.add_argument("--warmup", type=parse_duration, metavar="DURATION",
                   help="ceiling: warm-up per level (default 30s)")  # fmt: skip
    p.add_argument("--window", type=parse_duration, metavar="DURATION",
                   help="ceiling: measured window per level (default 60s)")  # fmt: skip
    p.add_argument("--max-window", type=parse_duration, metavar="DURATION",
                   help="ceiling: how far a level's window may be extended (default twice "
                   "--window)")  # fmt: skip


def level_flags(args: argparse.Namespace) -> list[str]:
    """The level flags given, and each --slo, as `agentload ceiling` takes them."""
    flags: list[str] = []
    for flag in _LEVEL_FLAGS:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            flags += [flag, str(value)]
    for slo in args.slo:
        flags += ["--slo", slo]
    return flags


def register(commands: Any) -> None:
    """Add the `ceiling` subcommand."""
    p = commands.add_parser(
        "ceiling",
        help="find the highest load that holds every SLO, and what breaks first",
        description="Raise the load level by level (geometric growth, then bisection) until an "
        "SLO breaks; report the highest load that held every SLO. Runs in one process, or "
        "as the master of Locust workers (--processes N, --master).",
        epilog=_EXAMPLES,
    )
    p.add_argument("profile", nargs="?", default="quickstart", help="profile name or YAML path")
    p.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="EXPR",
        help="an SLO in gate syntax, e.g. 'ttft_p95 < 2s' (repeatable; adds to the "
        "profile's slos and gates)",
    )
    p.add_argument(
        "--by",
        choices=("agents", "session-rate"),
        help="load unit: concurrent agents (closed loop) or new sessions per second "
        "(open loop); default: the profile's arrival mode (a trace's: its speedup)",
    )
    p.add_argument("--start", type=float, default=1.0, help="first level (default 1)")
    p.add_argument("--growth", type=float, default=2.0, help="factor between levels (default 2)")
    p.add_argument(
        "--resolution",
        type=float,
        default=0.1,
        help="stop bisecting within this share of the ceiling (default 0.1)",
    )
    p.add_argument(
        "--warmup",
        type=parse_duration,
        default=30.0,
        metavar="DURATION",
        help="settling time at each level, not measured (default 30s)",
    )
    p.add_argument(
        "--window",
        type=parse_duration,
        default=60.0,
        metavar="DURATION",
        help="measured steady window at each level, judged in --slices rolling slices; "
        "cover a few sessions (default 60s)",
    )
    p.add_argument(
        "--slices",
        type=int,
        default=4,
        metavar="N",
        help="slices per window: steadiness compares the window's halves (default 4)",
    )
    p.add_argument(
        "--max-window",
        type=parse_duration,
        metavar="DURATION",
        help="how far a level still drifting, or shorter than 3 typical sessions, may be "
        "extended (default: twice --window)",
    )
    p.add_argument(
        "--max-duration",
        type=parse_duration,
        default=1200.0,
        metavar="DURATION",
        help="stop the search at this length (default 20m)",
    )
    p.add_argument("--seed", type=int, help="seed for every random choice")
    p.add_argument("--out", type=Path, metavar="DIR", help="results folder")
    p.add_argument(
        "--scrape-target-metrics",
        action="store_true",
        help="sample the target's /metrics at each level: KV usage, queue, "
        "preemptions, and which ran out first",
    )
    p.add_argument(
        "--target-metrics-url",
        metavar="URL",
        help="the target's metrics URL (implies --scrape-target-metrics)",
    )
    p.add_argument(
        "--prometheus-port",
        type=parse_port,
        metavar="PORT",
        help="serve the search's live metrics on PORT (0: a free port, printed); the "
        "ceiling dashboard draws throughput against concurrency as the levels climb",
    )
    p.add_argument("--quiet", action="store_true", help="no per-level progress")
    health = p.add_argument_group(
        "generator saturation: past any of these the search stops, its latencies would be ours"
    )
    health.add_argument(
        "--generator-max-cpu",
        type=float,
        metavar="PERCENT",
        help="CPU, in percent of one core, of the busiest process (default 90)",
    )
    health.add_argument(
        "--generator-max-loop-lag",
        type=parse_duration,
        metavar="DURATION",
        help="event-loop lag p99, and in at least 3 probes: one stall is not saturation "
        "(default 50ms)",
    )
    health.add_argument(
        "--generator-max-schedule-lag",
        type=parse_duration,
        metavar="DURATION",
        help="how late steps start against their schedule, p99 and in at least 3 steps "
        "(default 100ms)",
    )
    add_target_arguments(p)
    swarm = p.add_argument_group(
        "swarm: levels carried by Locust workers (`agentload run PROFILE --worker`)"
    )
    add_master_arguments(swarm)
    p.set_defaults(handler=ceiling)


def _check(args: argparse.Namespace) -> None:
    """Every bad value is a one-line usage error naming its flag and a valid example."""
    if args.start <= 0:
        raise UsageError(f"--start {args.start:g} must be above 0, e.g. --start 1")
    if args.growth <= 1:
        raise UsageError(f"--growth {args.growth:g} must be above 1, e.g. --growth 2")
    if not 0 < args.resolution < 1:
        raise UsageError(f"--resolution {args.resolution:g} is a share between 0 and 1, e.g. 0.1")
    if args.window <= 0:
        raise UsageError("--window must be longer than 0s, e.g. --window 60s")
    if args.slices < 2:
        raise UsageError(f"--slices {args.slices} must be at least 2 (the window's two halves)")
    if args.max_window is not None and args.max_window < args.window:
        raise UsageError(
            f"--max-window {args.max_window:g}s is shorter than --window {args.window:g}s; "
            "raise it or leave it out"
        )
    if args.generator_max_cpu is not None and args.generator_max_cpu < 0:
        raise UsageError(
            f"--generator-max-cpu {args.generator_max_cpu:g} is a percentage of one core, "
            "e.g. --generator-max-cpu 90"
        )
    if args.max_duration < args.warmup + args.window:
        raise UsageError(
            f"--max-duration {args.max_duration:g}s is shorter than one level "
            f"(--warmup + --window = {args.warmup + args.window:g}s); raise it"
        )


def _generator_limits(args: argparse.Namespace) -> Any:
    """GeneratorLimits from the --generator-max-* flags given, its defaults for the rest."""
    from loadgen.ceiling.measure import GeneratorLimits

    given = {
        "cpu_percent": args.generator_max_cpu,
        "loop_lag_s": args.generator_max_loop_lag,
        "schedule_lag_s": args.generator_max_schedule_lag,
    }
    return GeneratorLimits(**{k: v for k, v in given.items() if v is not None})


def ceiling(args: argparse.Namespace) -> int:
    """Run the search; 0 with a ceiling, 1 without one (see the exit codes in --help)."""
    from loadgen.ceiling import CeilingOptions, SearchSettings, build_slos, format_ceiling
    from loadgen.ceiling.measure import Windows
    from loadgen.ceiling.run import search_unit
    from loadgen.orchestration.ceiling_launch import launch_ceiling
    from loadgen.profile.loader import load_profile

    _check(args)
    processes = check_master_flags(args)
    overrides: dict[str, Any] = {"stages": []}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.by == "agents":
        overrides["arrival"] = {"mode": "closed", "agents": max(1, round(args.start))}
    elif args.by == "session-rate":
        overrides["arrival"] = {"mode": "open", "rate": args.start}
    loaded = load_profile(args.profile, overrides)
    profile = loaded.profile
    slos = build_slos(args.slo, profile.slos, profile.gates)  # a bad --slo: exit 2, up front
    out = args.out or default_out_dir(profile.name, prefix="ceiling-")
    out.mkdir(parents=True, exist_ok=True)
    search = SearchSettings(
        start=args.start,
        growth=args.growth,
        resolution=args.resolution,
        integer=profile.arrival.mode == "closed",
    )
    options = CeilingOptions(
        out_dir=out,
        slos=slos,
        search=search,
        windows=Windows(
            warmup_s=args.warmup,
            window_s=args.window,
            slices=args.slices,
            max_window_s=args.max_window,
        ),
        max_duration_s=args.max_duration,
        generator=_generator_limits(args),
        model=args.model,
        progress=None if args.quiet else sys.stderr,
    )
    if not args.quiet:
        # The first level's verdict is a warm-up and a window away: say what is under way.
        print(f"agentload ceiling: searching {profile.name} by {search_unit(profile)} from "
              f"{args.start:g}, {args.warmup:g}s warm-up + {args.window:g}s window per level, "
              f"at most {args.max_duration:g}s; results in {out}", file=sys.stderr,
              flush=True)  # fmt: skip
    launch = launch_for(args, out, max(processes, 1), quiet=args.quiet)
    swarm = None
    if args.master or processes > 1:
        from loadgen.orchestration.environment import SwarmOptions

        swarm = SwarmOptions(
            mode="master",
            master_bind_host=args.master_bind_host,
            master_bind_port=args.master_bind_port,
            expect_workers=args.expect_workers,
            expect_workers_max_wait_s=args.expect_workers_max_wait or math.inf,
        )
    outcome = launch_ceiling(loaded, launch, options, swarm)
    doc = outcome.document
    print(format_ceiling(doc))
    print(f"results: {out}")
    if (sig := outcome.interrupted_by) is not None:
        # As a shell reports a command a signal ended; ceiling.json holds what was measured.
        print(f"agentload ceiling: interrupted by {signal.Signals(sig).name}; the "
              f"levels measured are in {out}", file=sys.stderr)  # fmt: skip
        return 128 + sig
    return 0 if doc["ceiling"] is not None else 1
