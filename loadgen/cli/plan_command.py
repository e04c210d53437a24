"""`agentload plan`: how many replicas of a twin N agents need at the SLOs, and what it costs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from loadgen.cli.arguments import parse_count, parse_duration
from loadgen.cli.ceiling_command import add_level_arguments, level_flags
from loadgen.cli.run_setup import default_out_dir
from loadgen.errors import UsageError

__all__ = ["register"]


_EXAMPLES = """\
examples:
  agentload plan coding-agent --twin twin.yaml --slo 'ttft_p95 < 2s' --agents 200 \\
      --gpu-hour-cost 2.5 --gpus-per-replica 1
  agentload plan support-chat --twin twin.yaml --slo 'ttft_p95 < 1s' --agents 50 \\
      --router prefix-load --verify-duration 5m --max-duration 30m
  agentload plan coding-agent --twin twin.yaml --slo 'ttft_p95 < 2s' --agents 200 \\
      --what-if output_scale=2 --what-if reasoning_effort=low,high --what-if router=session
  agentload plan coding-agent --twin twin.yaml --slo 'ttft_p95 < 2s' --agents 200 --speedup 4

method: one replica's ceiling (agentload ceiling on the twin alone), replicas = ceil(agents /
ceiling), then the fleet of R replicas and of R-1 run at the agents for --verify-duration:
the SLOs should hold at R and break at R-1; when R breaks, R+1, R+2 ... run until one
holds (--max-extra-replicas) (docs/twin.md, "agentload plan").
what-if: each variant varies one thing and is planned again the same way (a router variant
reuses the baseline's one-replica ceiling); a table compares them with the baseline.
results: DIR/plan.json, DIR/ceiling-1-replica/, DIR/verify-R-replicas/, DIR/what-if-KIND-VALUE/
exit codes: 0 the named fleet held the SLOs (the baseline's; variants do not change it);
            1 it did not, or one replica holds no load;
            2 usage error (a bad flag, twin file or profile)
"""


def register(commands: Any) -> None:
    """Add the `plan` subcommand."""
    from loadgen.orchestration.plan import DEFAULT_ROUTER
    from loadgen.sim.config import ROUTERS

    p = commands.add_parser(
        "plan",
        help="capacity plan on a twin: replicas for N agents at the SLOs, and the cost",
        description="Search one replica's ceiling on a twin (agentload calibrate's twin.yaml), "
        "size the fleet for N agents, and verify it: the named fleet and one replica fewer "
        "are run at N agents in the simulator.",
        epilog=_EXAMPLES,
    )
    p.add_argument("profile", help="built-in profile name or YAML path")
    p.add_argument("--twin", type=Path, required=True, metavar="FILE",
                   help="the twin: agentload calibrate's twin.yaml, or any sim config")  # fmt: skip
    p.add_argument("--slo", action="append", default=[], metavar="EXPR",
                   help="an SLO in gate syntax, e.g. 'ttft_p95 < 2s' (repeatable; adds to the "
                   "profile's slos and gates)")  # fmt: skip
    p.add_argument("--agents", type=parse_count, required=True, metavar="N",
                   help="concurrent agents to plan for")  # fmt: skip
    p.add_argument("--gpu-hour-cost", type=float, metavar="DOLLARS",
                   help="price of one GPU-hour, for the cost figures")  # fmt: skip
    p.add_argument("--gpus-per-replica", type=parse_count, default=1, metavar="N",
                   help="GPUs one replica occupies (default 1)")  # fmt: skip
    p.add_argument("--router", default=DEFAULT_ROUTER, metavar="NAME",
                   help=f"the fleet's router in the verification runs: one of "
                   f"{', '.join(ROUTERS)} (default {DEFAULT_ROUTER}: it spreads agents evenly, "
                   "as the sizing assumes)")  # fmt: skip
    p.add_argument("--what-if", action="append", default=[], metavar="KIND=VALUE[,VALUE...]",
                   help="plan again with one thing varied, and compare (repeatable; each value "
                   "is a variant): context_budget=TOKENS (every agent's context budget), "
                   "reasoning_effort=LEVEL (none|minimal|low|medium|high), output_scale=X "
                   "(every agent's reply length times X), router=NAME (the verification "
                   "runs' router)")  # fmt: skip
    p.add_argument("--verify-duration", type=parse_duration, default=120.0, metavar="DURATION",
                   help="length of each verification run (default 2m)")  # fmt: skip
    p.add_argument("--max-extra-replicas", type=int, default=2, metavar="N",
                   help="when the sized fleet breaks, run fleets up to N replicas larger "
                   "until one holds (default 2; 0: only report the break)")  # fmt: skip
    p.add_argument("--max-duration", type=parse_duration, default=1200.0, metavar="DURATION",
                   help="cap on the ceiling search (default 20m)")  # fmt: skip
    add_level_arguments(p, "agents")
    p.add_argument("--speedup", type=float, default=1.0, metavar="K",
                   help="run the twin's clock K times faster than real time: the plan takes "
                   "about 1/K of the time; every duration, SLO and figure stays in modelled "
                   "time, and the plan says whether the twin kept its pace (default 1; "
                   "docs/twin.md, 'Faster than real time')")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="the workload's seed (default 0)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="results folder (default results/plan-PROFILE-TIME)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="print only the plan")
    p.set_defaults(handler=plan)


def _ceiling_flags(args: argparse.Namespace) -> list[str]:
    return ["--by", "agents", "--max-duration", str(args.max_duration), *level_flags(args)]


def plan(args: argparse.Namespace) -> int:
    """Search, size, verify; print the plan and write plan.json. 0 when the fleet held."""
    from loadgen.ceiling import build_slos
    from loadgen.orchestration.plan import PlanSettings, format_plan, run_plan
    from loadgen.orchestration.time_warp import TimeWarp
    from loadgen.orchestration.what_if import (
        format_what_if,
        parse_what_if,
        run_what_ifs,
        variants_of,
    )
    from loadgen.profile.loader import load_profile
    from loadgen.sim.config import ROUTERS, sim_config_from_file

    if args.router not in ROUTERS:
        raise UsageError(f"--router {args.router!r}: use one of {', '.join(ROUTERS)}")
    if args.gpu_hour_cost is not None and args.gpu_hour_cost < 0:
        raise UsageError(f"--gpu-hour-cost {args.gpu_hour_cost:g}: a price is 0 or more")
    if args.verify_duration <= 0 or args.max_duration <= 0:
        raise UsageError("--verify-duration and --max-duration: give a length above 0")
    if args.max_extra_replicas < 0:
        raise UsageError("--max-extra-replicas: give 0 or more")
    what_ifs = parse_what_if(args.what_if)  # an unknown kind or a bad value: exit 2 here
    twin = sim_config_from_file(args.twin)  # a missing or bad twin: one line, exit 2
    loaded = load_profile(args.profile)  # a bad profile: exit 2 before anything runs
    profile = loaded.profile
    build_slos(args.slo, profile.slos, profile.gates)  # a bad or no SLO: exit 2 here
    TimeWarp.from_flags(args.speedup, args.slo, profile.gates)
    variants = variants_of(loaded, what_ifs)  # a variant that is no valid profile: exit 2
    out = args.out or default_out_dir(profile.name, prefix="plan-")
    settings = PlanSettings(
        profile=args.profile,
        twin=twin,
        agents=args.agents,
        out_dir=out,
        router=args.router,
        ceiling_flags=tuple(_ceiling_flags(args)),
        verify_duration=args.verify_duration,
        seed=args.seed,
        gpu_hour_cost=args.gpu_hour_cost,
        gpus_per_replica=args.gpus_per_replica,
        extra_replicas=args.max_extra_replicas,
        progress=None if args.quiet else sys.stderr,
        speedup=args.speedup,
    )
    doc = run_plan(settings)
    if variants:
        run_what_ifs(settings, doc, variants)
    print(format_plan(doc))
    if variants:
        print(format_what_if(doc))
    print(f"results: {out}")
    return 0 if doc["answer"] and doc["answer"]["holds"] else 1
