"""`agentload run`: drive a profile's agent swarm against a target (default: the built-in sim)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loadgen.cli.arguments import parse_duration
from loadgen.errors import ConfigError, TargetUnreachableError, UsageError
from loadgen.observe import format_summary
from loadgen.profile.loader import load_profile
from loadgen.runtime.run import RunOptions, run_load
from loadgen.sim import PRESETS, SimConfig, SimServer
from loadgen.transport import TargetConfig

__all__ = ["register"]

_EXAMPLES = """\
examples:
  agentload run                                   the quickstart against the built-in simulator
  agentload run coding-agent --agents 200 --duration 10m --target http://gpu-box:8000/v1
  agentload run support-chat --rate 5 --target https://api.openai.com/v1 --model gpt-4o-mini
  agentload run ./my-profile.yaml --out results/nightly
  agentload profiles                              list the built-in profiles

results: DIR/steps.jsonl and DIR/sessions.jsonl (appended as they happen), DIR/summary.json
"""


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    """The options every command that sends load shares."""
    g = p.add_argument_group("target")
    g.add_argument(
        "--target",
        metavar="URL",
        help="OpenAI-compatible base URL, with or without /v1 "
        "(default: start the built-in simulator in-process)",
    )
    g.add_argument("--model", help="model name (default: the target's first model)")
    g.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get("OPENAI_API_KEY"),
        help="bearer token (default: $OPENAI_API_KEY)",
    )
    g.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable)",
    )
    g.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    g.add_argument(
        "--request-timeout",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="limit for one whole request (default 10m)",
    )


def register(commands: Any) -> None:
    """Add the `run` and `profiles` subcommands."""
    p = commands.add_parser(
        "run",
        help="run a workload profile's agent swarm against a target",
        description="Run synthetic agents with long-lived state through many multi-step "
        "sessions against an OpenAI-compatible endpoint, and record what they measured.",
        epilog=_EXAMPLES,
    )
    p.add_argument(
        "profile",
        nargs="?",
        default="quickstart",
        help="built-in profile name or YAML path (default quickstart)",
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="results folder (default results/PROFILE-TIMESTAMP)"
    )
    p.add_argument(
        "--duration",
        type=parse_duration,
        metavar="DURATION",
        help="run length, e.g. 30s or 10m (replaces the profile's stages)",
    )
    p.add_argument("--agents", type=int, metavar="N", help="closed loop: N concurrent agents")
    p.add_argument("--rate", type=float, metavar="R", help="open loop: R new sessions per second")
    p.add_argument("--seed", type=int, help="seed for every random choice")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_target_arguments(p)
    p.set_defaults(handler=run)

    q = commands.add_parser(
        "profiles",
        help="list the built-in profiles",
        description="List the built-in workload profiles.",
    )
    q.set_defaults(handler=list_profiles)


def list_profiles(args: argparse.Namespace) -> int:
    """Print each built-in profile with its description."""
    from loadgen.profile.loader import builtin_profiles

    for name, description in builtin_profiles().items():
        print(f"{name:18} {description}")
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    if args.agents is not None and args.rate is not None:
        raise UsageError("--agents (closed loop) and --rate (open loop) exclude each other")
    out: dict[str, Any] = {}
    if args.duration is not None:
        out["duration"] = args.duration
        out["stages"] = []
    if args.agents is not None:
        out["arrival"] = {"mode": "closed", "agents": args.agents, "rate": None}
    if args.rate is not None:
        out["arrival"] = {"mode": "open", "rate": args.rate, "agents": None}
    if args.seed is not None:
        out["seed"] = args.seed
    return out


def _headers(raw: list[str]) -> dict[str, str]:
    headers = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {item!r}: write it as 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _sim_config(settings: dict[str, Any]) -> SimConfig:
    data = dict(settings)
    preset = str(data.pop("preset", "fast"))
    if preset not in PRESETS:
        raise ConfigError(
            f"profile sim.preset {preset!r} is unknown; use one of {', '.join(PRESETS)}"
        )
    try:
        return SimConfig.model_validate({**PRESETS[preset].model_dump(), **data})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"profile sim.{where}: {err['msg']}") from exc


@contextlib.asynccontextmanager
async def _target(
    args: argparse.Namespace, sim_settings: dict[str, Any]
) -> AsyncIterator[tuple[TargetConfig, dict[str, Any]]]:
    common = {
        "api_key": args.api_key,
        "headers": _headers(args.header),
        "verify_tls": not args.insecure,
        "request_timeout_s": args.request_timeout,
    }
    if args.target:
        yield TargetConfig.from_url(args.target, **common), {}
        return
    config = _sim_config(sim_settings)
    async with SimServer(config) as sim:
        yield TargetConfig.from_url(sim.base_url, **common), {"builtin_sim": config.preset}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    loaded = load_profile(args.profile, _overrides(args))
    profile = loaded.profile
    out = args.out or Path("results") / f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress = None if args.quiet else sys.stderr
    async with _target(args, profile.sim) as (target, label):
        if progress is not None:
            where = "the built-in simulator" if label else target.base_url
            print(
                f"agentload run: {profile.name} for {profile.total_duration:.0f}s against "
                f"{where}; results in {out}",
                file=progress,
                flush=True,
            )
        options = RunOptions(out_dir=out, model=args.model, progress=progress, target_label=label)
        summary = await run_load(loaded, target, options)
    print(format_summary(summary))
    print(f"results: {out}")
    return summary


def run(args: argparse.Namespace) -> int:
    """Run the profile; exit 3 when nothing could be measured."""
    try:
        import uvloop

        summary = uvloop.run(_main(args))
    except ImportError:
        summary = asyncio.run(_main(args))
    if summary["requests"]["total"] == 0:
        raise TargetUnreachableError("the run measured no request at all")
    return 0
