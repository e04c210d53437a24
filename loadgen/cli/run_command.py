"""`agentload run`: drive a profile's agent swarm against a target (default: the built-in sim)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loadgen.cli.arguments import parse_count, parse_duration, parse_per_second, parse_port
from loadgen.cli.run_setup import (
    check_api_key,
    check_web_address,
    default_out_dir,
    launch_for,
    parse_headers,
    parse_targets,
    profile_overrides,
    worker_argv,
    worker_env,
)
from loadgen.errors import UsageError

if TYPE_CHECKING:
    from loadgen.profile.loader import LoadedProfile

__all__ = [
    "MASTER_BIND_HOST",
    "MASTER_PORT",
    "add_run_options",
    "check_swarm_flags",
    "register",
    "run_swarm_command",
]

# loadgen.transport.BALANCES, spelled out: importing the transport here would load aiohttp
# before `agentload run` patches gevent (entry.py), and slow down --help.
_BALANCES = ("round-robin", "session")

# Locust's defaults: where a master listens for its workers.
MASTER_BIND_HOST = "*"
MASTER_PORT = 5557

_EXAMPLES = """\
examples:
  agentload run                                   the quickstart against the built-in simulator
  agentload run coding-agent --agents 200 --duration 10m --target http://gpu-box:8000/v1
  agentload run support-chat --rate 5 --target https://api.openai.com/v1 --model gpt-4o-mini
  agentload run ./my-profile.yaml --out results/nightly
  agentload run coding-agent --target r0=http://gpu-0:8000 --target r1=http://gpu-1:8000 \
      --balance session                           a fleet of two without a router
  agentload run coding-agent --processes 4        4 worker processes on this machine
  agentload run coding-agent --master --expect-workers 8 --target http://gpu-box:8000/v1
  agentload run coding-agent --worker --master-host master-box --processes -1 --target URL
                                                  one worker per CPU core, of a remote master
  agentload profiles                              list the built-in profiles

results: DIR/steps.jsonl and DIR/sessions.jsonl (appended as they happen), DIR/summary.json
"""


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    """The options every command that sends load shares."""
    g = p.add_argument_group("target")
    g.add_argument(
        "--target",
        action="append",
        metavar="[NAME=]URL",
        help="OpenAI-compatible base URL, with or without /v1 (default: start the built-in "
        "simulator in-process); repeat it for a fleet without a router, balanced by "
        "--balance, each replica called NAME (default: its host:port)",
    )
    g.add_argument(
        "--balance",
        choices=_BALANCES,
        metavar="{" + ",".join(_BALANCES) + "}",
        help="how several --target share the load: round-robin, each request to the next "
        "(default), or session, each session's requests to one replica (by its id's hash)",
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
        "--no-kernel-timestamps",
        dest="kernel_timestamps",
        action="store_const",
        const=False,
        default=None,
        help="read streams through aiohttp with event-loop timestamps instead of the kernel's "
        "receive times (on by default for http:// targets on Linux)",
    )
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
    p.add_argument(
        "--agents", type=parse_count, metavar="N", help="closed loop: N concurrent agents"
    )
    p.add_argument(
        "--rate", type=parse_per_second, metavar="R", help="open loop: R new sessions per second"
    )
    p.add_argument("--seed", type=int, help="seed for every random choice")
    add_run_options(p)
    p.set_defaults(handler=run)

    q = commands.add_parser(
        "profiles",
        help="list the built-in profiles",
        description="List the built-in workload profiles.",
    )
    q.set_defaults(handler=list_profiles)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """What `run` and `replay` share: target, gates and reports, live metrics, the swarm."""
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_target_arguments(p)
    checks = p.add_argument_group("gates and reports (docs/ci.md)")
    checks.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="EXPR",
        help="pass/fail threshold over summary.json, e.g. 'ttft_p95 < 2s' or "
        "'session_success_rate >= 0.99 abort after 30s' (repeatable; adds to the profile's)",
    )
    checks.add_argument(
        "--storm-stop",
        type=parse_duration,
        default=30.0,
        metavar="DURATION",
        help="stop the run (exit 1) when every request of the last DURATION failed, at least "
        "20 of them (default 30s; 0: never stop, the run still exits 1 if nothing succeeded)",
    )
    checks.add_argument("--junit", type=Path, metavar="FILE", help="write one testcase per gate")
    checks.add_argument("--html", type=Path, metavar="FILE", help="write the HTML report")
    live = p.add_argument_group("live metrics (docs/observability.md)")
    live.add_argument(
        "--prometheus-port",
        type=parse_port,
        metavar="PORT",
        help="serve Prometheus metrics on PORT while running (0: a free port, printed; "
        "the dashboards' Prometheus scrapes 9646)",
    )
    live.add_argument(
        "--scrape-target-metrics",
        action="store_true",
        help="sample the target's own /metrics (vLLM, SGLang, llama.cpp) during the run into "
        "summary.json 'server': preemptions, cache hits, peak KV and queue, what ran out first",
    )
    live.add_argument(
        "--target-metrics-url",
        metavar="URL",
        help="where the target's metrics are (default: the target's root + /metrics; "
        "implies --scrape-target-metrics)",
    )
    live.add_argument(
        "--target-metrics-interval",
        type=parse_duration,
        default=2.0,
        metavar="DURATION",
        help="how often the target's metrics are sampled (default 2s); peaks shorter than "
        "this can be missed",
    )
    swarm = p.add_argument_group(
        "swarm (Locust's flag names and defaults, except --web-host; docs/deployment.md)"
    )
    swarm.add_argument("--web", action="store_true", help="serve Locust's web UI while running")
    swarm.add_argument(
        "--headless",
        action="store_true",
        help="accepted for Locust's sake: agentload run is headless unless --web",
    )
    swarm.add_argument(
        "--web-host",
        default="127.0.0.1",
        help="web UI address (default 127.0.0.1, this machine only; Locust's is all "
        "interfaces: pass 0.0.0.0 for that)",
    )
    swarm.add_argument(
        "--web-port",
        type=parse_port,
        default=8089,
        help="web UI port (default 8089; 0: a free one); its URL is printed once it is up",
    )
    add_master_arguments(
        swarm,
        processes_help="fork N worker processes on this machine, -1 one per CPU core (this one "
        "becomes their master; with --worker, they connect to --master-host instead)",
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
        default=MASTER_PORT,
        metavar="P",
        help="worker: the master's port (default 5557)",
    )


def add_master_arguments(
    group: Any,
    processes_help: str = (
        "fork N worker processes on this machine, -1 one per CPU core (this one becomes master)"
    ),
) -> None:
    """The flags of a swarm's master (--processes, --master, ...), Locust's names and defaults."""
    group.add_argument("--processes", type=int, default=1, metavar="N", help=processes_help)
    group.add_argument("--master", action="store_true", help="run as master of remote workers")
    group.add_argument(
        "--expect-workers",
        type=int,
        default=1,
        metavar="N",
        help="master: wait for N workers before starting (default 1)",
    )
    group.add_argument(
        "--expect-workers-max-wait",
        type=parse_duration,
        default=0.0,
        metavar="DURATION",
        help="master: give up (exit 3) when fewer workers connected by then, e.g. 2m "
        "(default 0: wait forever, as Locust)",
    )
    group.add_argument(
        "--master-bind-host",
        default=MASTER_BIND_HOST,
        help=f"master: bind address (default {MASTER_BIND_HOST}: all interfaces)",
    )
    group.add_argument(
        "--master-bind-port",
        type=int,
        default=MASTER_PORT,
        metavar="P",
        help="master: port workers connect to (default 5557)",
    )


def local_process_count(args: argparse.Namespace) -> int:
    """--processes as a count of processes on this machine (-1: one per CPU core)."""
    if args.processes == 0 or args.processes < -1:
        raise UsageError(
            f"--processes {args.processes}: use N of at least 1, or -1 for one per CPU core"
        )
    count: int = (os.cpu_count() or 1) if args.processes == -1 else args.processes
    return count


def check_master_flags(args: argparse.Namespace) -> int:
    """The local worker process count; master flags that contradict it are a UsageError."""
    processes = local_process_count(args)
    local = args.processes != 1
    if args.master and local:
        raise UsageError(
            "--master cannot be combined with --processes (as in Locust): --processes makes this "
            "process the master of its own workers; drop --master, or --processes to wait for "
            "remote workers"
        )
    bind_given = args.master_bind_host != MASTER_BIND_HOST or args.master_bind_port != MASTER_PORT
    if local and bind_given:
        raise UsageError(
            "--master-bind-host/--master-bind-port do not apply to --processes, whose workers "
            "connect on a free loopback port; leave them out, or use --master for remote workers"
        )
    return processes


def check_swarm_flags(args: argparse.Namespace) -> int:
    """The worker process count (-1: one per core); flags that contradict are a UsageError.

    Nothing is silently overridden: where Locust refuses a combination, or where one flag
    would make another one moot, the message names both and the fix.
    """
    if args.master and args.worker:
        raise UsageError("--master and --worker exclude each other: a process is one or the other")
    if args.headless and args.web:
        raise UsageError("--headless and --web exclude each other: leave out --headless")
    if not args.worker:
        return check_master_flags(args)
    processes = local_process_count(args)
    if args.web:
        raise UsageError("--web on a --worker: the master serves the web UI; pass --web to it")
    if args.processes != 1 and args.prometheus_port is not None:
        raise UsageError(
            "--prometheus-port with --worker --processes: the worker processes cannot share one "
            "port; leave it out, the master serves the whole swarm's metrics"
        )
    return processes


def list_profiles(args: argparse.Namespace) -> int:
    """Print each built-in profile with its description."""
    from loadgen.profile.loader import builtin_profiles

    for name, description in builtin_profiles().items():
        print(f"{name:18} {description}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the profile under Locust; exit 1 when a gate failed, 3 when nothing was measured."""

    def profile() -> LoadedProfile:
        from loadgen.profile.loader import load_profile

        return load_profile(args.profile, profile_overrides(args))

    return run_swarm_command(args, profile)


def run_swarm_command(args: argparse.Namespace, load: Callable[[], LoadedProfile]) -> int:
    """`run` or `replay` of the profile `load` gives, under Locust; the exit code."""
    processes = check_swarm_flags(args)  # before the heavy imports: a usage error is quick
    if args.worker and not args.target:
        raise UsageError("--worker needs --target: the master's built-in simulator is not shared")
    parse_headers(args.header)
    parse_targets(args)
    check_api_key(args.api_key)
    if args.web:
        check_web_address(args.web_host, args.web_port)
    # Heavy imports only here: `agentload run` patched gevent before any of them (entry.py).
    from loadgen.cli.run_verdict import RunWatch, finish_run
    from loadgen.gates import parse_gates
    from loadgen.orchestration.environment import SwarmOptions
    from loadgen.orchestration.launch import launch_run
    from loadgen.orchestration.local_workers import run_worker_processes

    loaded = load()
    profile = loaded.profile
    gates = parse_gates([*profile.gates, *args.gate])  # a bad gate is a usage error, up front
    out = args.out or default_out_dir(profile.name)
    if args.worker and processes > 1:
        # As Locust's --worker --processes N: N workers of the remote master on this machine;
        # this process only starts them, passes signals on and waits.
        argv = worker_argv(
            args, args.master_port, args.target[0], out, master_host=args.master_host
        )
        return run_worker_processes(argv, processes, worker_env(args))
    quiet = args.quiet or args.worker
    watch = RunWatch(profile.name, gates, args.storm_stop, quiet=quiet)
    mode: Literal["local", "master", "worker"] = "local"
    if args.worker:
        mode = "worker"
    elif args.master or processes > 1:
        mode = "master"
    options = SwarmOptions(
        mode=mode,
        web=args.web, web_host=args.web_host, web_port=args.web_port,
        master_host=args.master_host, master_port=args.master_port,
        master_bind_host=args.master_bind_host, master_bind_port=args.master_bind_port,
        expect_workers=processes if processes > 1 else args.expect_workers,  # as Locust
        expect_workers_max_wait_s=args.expect_workers_max_wait or math.inf,
        on_tick=None if args.worker else watch.on_tick,
    )  # fmt: skip
    launch = launch_for(args, out, max(processes, 1), quiet=quiet)
    summary = launch_run(
        loaded, launch, options, running=lambda: watch.running(profile.total_duration)
    )
    if summary is None:  # a worker: the master reports
        return 0
    return finish_run(args, out, summary, gates, watch)
