"""`agentload route-study`: the same workload under each router, and one table to compare."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.cli.arguments import parse_count, parse_duration
from loadgen.cli.ceiling_command import add_level_arguments, level_flags
from loadgen.cli.run_setup import default_out_dir
from loadgen.errors import UsageError

if TYPE_CHECKING:
    from loadgen.orchestration.route_study import StudyArm
    from loadgen.sim.config import SimConfig

__all__ = ["register"]

_EXAMPLES = """\
examples:
  agentload route-study coding-agent --replicas 4 --routers round-robin,session,prefix-load
  agentload route-study coding-agent --replicas 4 --ceiling --slo 'ttft_p95 < 2s'
  agentload route-study coding-agent --replicas 4 --ceiling --slo 'ttft_p95 < 2s' --speedup 4
  agentload route-study assistant-memory --replicas 4 --routers round-robin,session --shared-store
  agentload route-study coding-agent --target rr=http://router-a/v1 --target kv=http://router-b/v1

results: DIR/route_study.json, DIR/route_study.html, and each router's run in DIR/ROUTER/
"""


def register(commands: Any) -> None:
    """Add the `route-study` subcommand."""
    p = commands.add_parser(
        "route-study",
        help="compare routers: the same workload against a fleet under each",
        description="Run one seeded workload against a simulated fleet under each router (or "
        "against several real router URLs) and compare throughput, TTFT, goodput, prefix-cache "
        "hits, state failures and, with --ceiling, the ceiling.",
        epilog=_EXAMPLES,
    )
    p.add_argument("profile", help="built-in profile name or YAML path")
    p.add_argument("--replicas", type=parse_count, default=4, metavar="N",
                   help="simulated fleet size (default 4)")  # fmt: skip
    p.add_argument(
        "--routers",
        default="round-robin,session,prefix-load",
        metavar="LIST",
        help="simulated routers to compare, comma-separated (default "
        "round-robin,session,prefix-load)",
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a real router to measure instead of simulated ones (repeatable)",
    )
    p.add_argument("--shared-store", action="store_true",
                   help="simulated fleet: one Responses store for every replica")  # fmt: skip
    p.add_argument("--prefix-load-weight", type=float, metavar="W",
                   help="simulated prefix-load router's load weight")  # fmt: skip
    p.add_argument(
        "--sim-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a simulator setting of the profile's sim:, e.g. num_kv_blocks=4000",
    )
    p.add_argument("--duration", type=parse_duration, metavar="DURATION",
                   help="each run's length (default: the profile's)")  # fmt: skip
    p.add_argument("--agents", type=parse_count, metavar="N", help="closed loop: N agents")
    p.add_argument("--seed", type=int, default=0, help="the workload's seed (default 0)")
    p.add_argument("--ceiling", action="store_true", help="also search each router's ceiling")
    p.add_argument("--slo", action="append", default=[], metavar="EXPR",
                   help="the ceiling's SLOs, e.g. 'ttft_p95 < 2s' (repeatable)")  # fmt: skip
    add_level_arguments(p, "agents or sessions/s")
    p.add_argument("--max-duration", type=parse_duration, metavar="DURATION",
                   help="ceiling: at most this long per router")  # fmt: skip
    p.add_argument("--speedup", type=float, default=1.0, metavar="K",
                   help="run the simulated fleet's clock K times faster than real time: the "
                   "study takes about 1/K of the time; durations, SLOs and figures stay in "
                   "modelled time, and the study says whether the fleet kept its pace "
                   "(default 1; docs/twin.md, 'Faster than real time')")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="results folder (default results/route-study-PROFILE-TIME)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="print only the table")
    p.set_defaults(handler=route_study)


def _sim_overrides(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    settings: dict[str, Any] = {
        "replicas": args.replicas,
        "shared_store": args.shared_store,
        "speedup": args.speedup,
    }
    if args.prefix_load_weight is not None:
        settings["prefix_load_weight"] = args.prefix_load_weight
    for item in args.sim_set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--sim-set {item!r}: write it as KEY=VALUE, e.g. num_kv_blocks=4000")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def route_study(args: argparse.Namespace) -> int:
    """Run each arm, print and write the comparison; 0 when every arm was measured."""
    from loadgen.observe.generator_health import generator_saturated
    from loadgen.orchestration.route_study import StudySettings, run_study
    from loadgen.orchestration.time_warp import TimeWarp, pace_check, pace_lines
    from loadgen.profile.loader import load_profile
    from loadgen.report.route_study import (
        STUDY_FILE,
        STUDY_REPORT,
        format_study,
        study_rows,
        write_study_report,
    )

    profile = load_profile(args.profile).profile  # a bad profile: exit 2 before anything runs
    if args.target and args.speedup != 1.0:
        raise UsageError("--speedup: only a simulated fleet runs faster than real time; drop it "
                         "with --target")  # fmt: skip
    warp = TimeWarp.from_flags(args.speedup, args.slo, profile.gates)
    arms, sim = _arms(args, profile.sim)
    run_flags = ["--seed", str(args.seed)]
    if args.duration is not None:
        run_flags += ["--duration", str(args.duration)]
    if args.agents is not None:
        run_flags += ["--agents", str(args.agents)]
    ceiling_flags = _ceiling_flags(args) if args.ceiling else None
    out = args.out or default_out_dir(profile.name, prefix="route-study-")
    out.mkdir(parents=True, exist_ok=True)
    settings = StudySettings(
        profile=args.profile,
        out_dir=out,
        run_flags=tuple(run_flags),
        ceiling_flags=None if ceiling_flags is None else tuple(ceiling_flags),
        sim=sim,
        progress=None if args.quiet else sys.stderr,
        speedup=args.speedup,
    )
    results = run_study(arms, settings)
    rows = study_rows(results, args.speedup)
    document: dict[str, Any] = {
        "profile": profile.name,
        "replicas": None if args.target else args.replicas,
        "speedup": args.speedup,
        "rows": rows,
    }
    if warp.active:
        saturated = [r["name"] for r in results if generator_saturated(r["summary"])]
        document["engine_clock"] = pace_check((r["lost_share"] for r in rows), saturated)
    (out / STUDY_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    write_study_report(rows, profile.name, out / STUDY_REPORT)
    print(format_study(rows))
    if warp.active:
        print("\n".join(pace_lines(document["engine_clock"], args.speedup, "fleet", "study")))
    print(f"results: {out}")
    return 0


def _arms(
    args: argparse.Namespace, profile_sim: dict[str, Any]
) -> tuple[list[StudyArm], SimConfig | None]:
    """The study's arms, and the fleet its simulated ones run on (None for real routers)."""
    from loadgen.orchestration.route_study import StudyArm
    from loadgen.sim.config import ROUTERS, profile_sim_config

    if args.target:
        arms: list[StudyArm] = []
        for item in args.target:
            name, sep, url = item.partition("=")
            if not sep or not name or "://" not in url:
                raise UsageError(f"--target {item!r}: write it as NAME=URL, e.g. rr=http://a/v1")
            arms.append(StudyArm(name=name, url=url))
        return arms, None
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    unknown = [r for r in routers if r not in ROUTERS]
    if unknown or not routers:
        raise UsageError(
            f"--routers {args.routers!r}: use some of {', '.join(ROUTERS)}, comma-separated"
        )
    if args.replicas < 2:
        raise UsageError("--replicas: a routing study needs a fleet of 2 or more")
    sim = profile_sim_config({**profile_sim, **_sim_overrides(args)})
    return [StudyArm(name=r, router=r) for r in routers], sim


def _ceiling_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--seed", str(args.seed), *level_flags(args)]
    if args.max_duration is not None:
        flags += ["--max-duration", str(args.max_duration)]
    return flags
