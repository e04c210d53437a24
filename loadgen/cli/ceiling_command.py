"""`agentload ceiling`: search for the highest load a target holds within its SLOs."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from loadgen.cli.arguments import parse_duration
from loadgen.cli.run_command import add_target_arguments
from loadgen.cli.run_setup import sim_config, target_config
from loadgen.errors import UsageError

__all__ = ["register"]

_EXAMPLES = """\
examples:
  agentload ceiling support-chat --slo 'ttft_p95 < 2s' --slo 'session_success_rate >= 0.99'
  agentload ceiling coding-agent --target http://gpu-box:8000/v1 --slo 'itl_p99 < 100ms' \\
      --scrape-target-metrics --max-duration 30m --out results/ceiling
  agentload ceiling rag --by session-rate --start 0.5 --slo 'e2e_p95 < 10s'

results: DIR/ceiling.json (every level, the ceiling, the knee, what failed first), DIR/summary.json
and the records of the whole search; `agentload report DIR` draws the ceiling curve.
exit codes: 0 a ceiling was found, 1 no level held every SLO, 2 usage error (a bad --slo),
            3 target unreachable
"""


def register(commands: Any) -> None:
    """Add the `ceiling` subcommand."""
    p = commands.add_parser(
        "ceiling",
        help="find the highest load that holds every SLO, and what breaks first",
        description="Raise the load level by level (geometric growth, then bisection) until an "
        "SLO breaks; report the highest load that held every SLO. Runs in one process.",
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
        "(open loop); default: the profile's arrival mode",
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
        help="measured steady window at each level; longer than a session (default 60s)",
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
    p.add_argument("--quiet", action="store_true", help="no per-level progress")
    add_target_arguments(p)
    p.set_defaults(handler=ceiling)


def _check(args: argparse.Namespace) -> None:
    if args.start <= 0 or args.growth <= 1:
        raise UsageError("--start must be > 0 and --growth > 1")
    if not 0 < args.resolution < 1:
        raise UsageError("--resolution is a share from 0 to 1, e.g. 0.1")
    if args.window <= 0:
        raise UsageError("--window must be longer than 0s")


def ceiling(args: argparse.Namespace) -> int:
    """Run the search; 0 with a ceiling, 1 without one."""
    from loadgen.ceiling import CeilingOptions, SearchSettings, build_slos, format_ceiling
    from loadgen.ceiling.measure import Windows
    from loadgen.profile.loader import load_profile

    _check(args)
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
    out = args.out or Path("results") / f"ceiling-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    scrape = args.scrape_target_metrics or args.target_metrics_url is not None
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
        windows=Windows(warmup_s=args.warmup, window_s=args.window),
        max_duration_s=args.max_duration,
        model=args.model,
        progress=None if args.quiet else sys.stderr,
    )
    doc = asyncio.run(_search(args, loaded, options, scrape))
    print(format_ceiling(doc))
    print(f"results: {out}")
    return 0 if doc["ceiling"] is not None else 1


async def _search(args: argparse.Namespace, loaded: Any, options: Any, scrape: bool) -> Any:
    """Start the built-in simulator when no --target is given, then search on this loop."""
    import dataclasses

    from loadgen.ceiling import run_ceiling
    from loadgen.sim import SimServer

    sim = None
    if args.target:
        target = target_config(args, args.target)
    else:
        config = sim_config(loaded.profile.sim)
        sim = SimServer(config, host="127.0.0.1")
        await sim.start()
        target = target_config(args, sim.base_url)
        options = dataclasses.replace(options, target_label={"builtin_sim": config.preset})
    if scrape:
        url = args.target_metrics_url or f"{target.root_url}/metrics"
        windows = dataclasses.replace(options.windows, metrics_url=url)
        options = dataclasses.replace(options, windows=windows)
    try:
        return await run_ceiling(loaded, target, options)
    finally:
        if sim is not None:
            await sim.stop()
