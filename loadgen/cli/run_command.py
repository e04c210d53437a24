"""`agentload run`: drive a profile's agent swarm against a target (default: the built-in sim)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loadgen.cli.arguments import parse_duration
from loadgen.errors import ConfigError, TargetUnreachableError, UsageError

if TYPE_CHECKING:
    from loadgen.sim import SimConfig
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
    swarm = p.add_argument_group("swarm (Locust's own flag names and defaults)")
    swarm.add_argument("--web", action="store_true", help="serve Locust's web UI while running")
    swarm.add_argument("--web-host", default="127.0.0.1", help="web UI address (default 127.0.0.1)")
    swarm.add_argument("--web-port", type=int, default=8089, help="web UI port (default 8089)")
    swarm.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="fork N worker processes on this machine (this one becomes master)",
    )
    swarm.add_argument("--master", action="store_true", help="run as master of remote workers")
    swarm.add_argument(
        "--expect-workers",
        type=int,
        default=1,
        metavar="N",
        help="master: wait for N workers before starting (default 1)",
    )
    swarm.add_argument("--master-bind-host", default="*", help="master: bind address (default *)")
    swarm.add_argument(
        "--master-bind-port",
        type=int,
        default=5557,
        metavar="P",
        help="master: port workers connect to (default 5557)",
    )
    swarm.add_argument("--worker", action="store_true", help="run as a worker of a master")
    swarm.add_argument(
        "--master-host",
        default="127.0.0.1",
        metavar="H",
        help="worker: the master's address (default 127.0.0.1)",
    )
    swarm.add_argument(
        "--master-port",
        type=int,
        default=5557,
        metavar="P",
        help="worker: the master's port (default 5557)",
    )
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
    from pydantic import ValidationError

    from loadgen.sim.config import PRESETS, SimConfig

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


def _target_config(args: argparse.Namespace, url: str) -> TargetConfig:
    from loadgen.transport import TargetConfig

    return TargetConfig.from_url(
        url,
        api_key=args.api_key,
        headers=_headers(args.header),
        verify_tls=not args.insecure,
        request_timeout_s=args.request_timeout,
    )


def _worker_argv(args: argparse.Namespace, port: int, target: str, out: Path) -> list[str]:
    """The command line of a local worker process for --processes."""
    argv = [sys.executable, "-m", "loadgen", "run", args.profile, "--worker", "--quiet",
            "--master-host", "127.0.0.1", "--master-port", str(port),
            "--target", target, "--out", str(out)]  # fmt: skip
    for flag, value in (("--duration", args.duration), ("--agents", args.agents),
                        ("--rate", args.rate), ("--seed", args.seed), ("--model", args.model),
                        ("--request-timeout", args.request_timeout)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    if args.api_key:
        argv += ["--api-key", args.api_key]
    for header in args.header:
        argv += ["--header", header]
    if args.insecure:
        argv.append("--insecure")
    return argv


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(args: argparse.Namespace) -> int:
    """Run the profile under Locust; exit 3 when nothing could be measured."""
    # Heavy imports only here: `agentload run` patched gevent before any of them (entry.py).
    import subprocess

    from loadgen.observe import format_summary
    from loadgen.orchestration.bridge import process_bridge
    from loadgen.orchestration.process_engine import SwarmSettings
    from loadgen.orchestration.swarm import SwarmOptions, run_swarm
    from loadgen.profile.loader import load_profile
    from loadgen.sim import SimServer

    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    if args.worker and not args.target:
        raise UsageError("--worker needs --target: the master's built-in simulator is not shared")
    loaded = load_profile(args.profile, _overrides(args))
    profile = loaded.profile
    out = args.out or Path("results") / f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress = None if (args.quiet or args.worker) else sys.stderr
    bridge = process_bridge()
    sim = None
    extra: dict[str, Any] = {}
    workers: list[subprocess.Popen[bytes]] = []
    try:
        if args.target:
            target = _target_config(args, args.target)
        else:
            config = _sim_config(profile.sim)
            sim = SimServer(config, host="127.0.0.1")
            bridge.run(sim.start(), timeout=60)
            target = _target_config(args, sim.base_url)
            extra = {"builtin_sim": config.preset}
        processes = max(args.processes, args.expect_workers if args.master else 1)
        settings = SwarmSettings(
            loaded, target, out, model=args.model, processes=processes, extra=extra
        )
        mode: Literal["local", "master", "worker"] = "local"
        if args.worker:
            mode = "worker"
        elif args.master or args.processes > 1:
            mode = "master"
        options = SwarmOptions(
            mode=mode,
            web=args.web, web_host=args.web_host, web_port=args.web_port,
            master_host=args.master_host, master_port=args.master_port,
            master_bind_host=args.master_bind_host, master_bind_port=args.master_bind_port,
            expect_workers=args.processes if args.processes > 1 else args.expect_workers,
            progress=progress,
        )  # fmt: skip
        if args.processes > 1:
            port = _free_port()
            options = dataclasses.replace(
                options, master_bind_host="127.0.0.1", master_bind_port=port
            )
            workers = [subprocess.Popen(_worker_argv(args, port, target.base_url, out))
                       for _ in range(args.processes)]  # fmt: skip
        if progress is not None and not args.worker:
            where = "the built-in simulator" if sim else target.base_url
            print(f"agentload run: {profile.name} for {profile.total_duration:.0f}s against "
                  f"{where}; results in {out}", file=progress, flush=True)  # fmt: skip
        summary = run_swarm(settings, options)
    finally:
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if sim is not None:
            bridge.run(sim.stop(), timeout=30)
    if summary is None:  # a worker: the master reports
        return 0
    print(format_summary(summary))
    print(f"results: {out}")
    if summary["requests"]["total"] == 0:
        raise TargetUnreachableError("the run measured no request at all")
    return 0
