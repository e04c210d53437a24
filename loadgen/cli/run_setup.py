"""What `agentload run` and `ceiling` read from their command lines: overrides, the target,
headers and key, workers' command lines, and the Launch handed to orchestration.

Heavy modules are imported inside the functions: `agentload run` patches gevent before
importing them (see entry.py), and `agentload --help` should stay fast.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loadgen.errors import UsageError

if TYPE_CHECKING:
    from loadgen.orchestration.launch_plan import Launch
    from loadgen.transport import TargetConfig

__all__ = [
    "API_KEY_ENV",
    "check_api_key",
    "check_web_address",
    "default_out_dir",
    "launch_for",
    "parse_headers",
    "parse_targets",
    "profile_overrides",
    "target_config",
    "worker_argv",
    "worker_env",
]

# Where --api-key takes its default from, and how workers get the key: never on their
# command lines, which any user of the machine can read (ps, /proc/PID/cmdline).
API_KEY_ENV = "OPENAI_API_KEY"

# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Control characters (CR and LF above all) would end the header line and start another.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A replica's name (--target NAME=URL): a label in results and metrics, so a short word.
_REPLICA_NAME = re.compile(r"^[A-Za-z0-9][\w.:-]{0,63}$")
# What a results folder's name keeps of a profile's name: no separators, no "..".
_UNSAFE_NAME = re.compile(r"[^\w.-]+")


def profile_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The profile fields the command line overrides."""
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


def parse_headers(raw: list[str]) -> dict[str, str]:
    """--header values as a dict; UsageError for one without a colon, or that is not one header.

    A CR or LF (or another control character) would end the header line on the wire and
    inject another header: refused, as is a name that is not an HTTP token.
    """
    headers = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {item!r}: write it as 'Name: value'")
        if _CONTROL.search(value):  # the value is not echoed: it may be a token
            raise UsageError(
                f"--header {name.strip()!r}: its value contains a line break or another control "
                "character; pass each header with its own --header, on one line"
            )
        if not _HEADER_NAME.match(name.strip()):
            raise UsageError(
                f"--header {name.strip()!r}: not a header name (no spaces, line breaks or "
                "control characters); use letters, digits and -, e.g. --header 'X-Team: a'"
            )
        headers[name.strip()] = value.strip()
    return headers


def parse_targets(args: argparse.Namespace) -> list[tuple[str, str]]:
    """--target values as (replica name, URL), none for the built-in simulator; UsageError
    for a bad name, two replicas of one name, or --balance without several targets.

    NAME=URL names a replica; a bare URL is named by its host:port.
    """
    raw: list[str] = list(getattr(args, "target", None) or [])
    balance = getattr(args, "balance", None)
    if balance is not None and len(raw) < 2:
        raise UsageError(
            f"--balance {balance} shares the load of several --target URLs; give two or "
            "more, or leave it out"
        )
    targets = []
    for item in raw:
        name, sep, url = item.partition("=")
        if not sep or "://" in name or "/" in name:  # a bare URL, "=" somewhere in it
            name, url = "", item
        name, url = name.strip(), url.strip()
        if not name:
            name = urlsplit(url).netloc.rpartition("@")[2] or url
        elif not _REPLICA_NAME.match(name):
            raise UsageError(
                f"--target {item!r}: {name!r} is not a replica name; use letters, digits and "
                "._:- (at most 64), e.g. --target r0=http://gpu-0:8000/v1"
            )
        targets.append((name, url))
    names = [name for name, _ in targets]
    if twice := next((n for i, n in enumerate(names) if n in names[:i]), None):
        raise UsageError(
            f"--target: two replicas named {twice!r}; name each with NAME=URL, "
            "e.g. --target r0=http://gpu-0:8000/v1 --target r1=http://gpu-1:8000/v1"
        )
    return targets


def check_api_key(key: str | None) -> None:
    """A key that would break the Authorization header line is a UsageError (never echoed)."""
    if key and _CONTROL.search(key):
        raise UsageError(
            f"--api-key (or ${API_KEY_ENV}) contains a line break or another control "
            "character; pass the key alone, without a trailing newline"
        )


def default_out_dir(name: str, prefix: str = "") -> Path:
    """results/PREFIX+NAME-TIMESTAMP, with the profile's name made a single safe folder name.

    A profile's `name:` is free text: "../x" or "/tmp/x" must not put the results (or create
    folders) outside results/.
    """
    safe = _UNSAFE_NAME.sub("_", name).replace("..", "_").strip("._-") or "profile"
    return Path("results") / f"{prefix}{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def target_config(args: argparse.Namespace, url: str) -> TargetConfig:
    """The target with the command line's key, headers, TLS and timeout: what --target says
    (several: a fleet balanced by --balance), else the built-in simulator at `url`."""
    from loadgen.transport import TargetConfig

    check_api_key(args.api_key)
    return TargetConfig.fleet(
        parse_targets(args) or [("", url)],
        balance=getattr(args, "balance", None) or "round-robin",
        api_key=args.api_key,
        headers=parse_headers(args.header),
        verify_tls=not args.insecure,
        request_timeout_s=args.request_timeout,
        kernel_timestamps=getattr(args, "kernel_timestamps", None),
    )


def worker_argv(
    args: argparse.Namespace, port: int, target: str, out: Path, master_host: str = "127.0.0.1"
) -> list[str]:
    """The command line of a local worker process for --processes (of `run` or `ceiling`).

    The API key is not on it (see worker_env): command lines are readable by every user.
    Workers get every --target as given (`target`: the built-in simulator's URL when none).
    """
    command = getattr(args, "worker_command", None) or ["run", args.profile]
    targets = list(getattr(args, "target", None) or []) or [target]
    argv = [sys.executable, "-m", "loadgen", *command, "--worker", "--quiet",
            "--master-host", master_host, "--master-port", str(port),
            *(arg for given in targets for arg in ("--target", given)),
            "--out", str(out)]  # fmt: skip
    if getattr(args, "balance", None) is not None:
        argv += ["--balance", args.balance]
    for flag, name in (("--duration", "duration"), ("--agents", "agents"), ("--rate", "rate"),
                       ("--seed", "seed"), ("--model", "model"),
                       ("--request-timeout", "request_timeout")):  # fmt: skip
        value = getattr(args, name, None)  # `agentload ceiling` has no --duration, --agents...
        if value is not None:
            argv += [flag, str(value)]
    for header in args.header:
        argv += ["--header", header]
    if args.insecure:
        argv.append("--insecure")
    if args.kernel_timestamps is False:
        argv.append("--no-kernel-timestamps")
    return argv


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of local worker processes: this one's, with --api-key as $OPENAI_API_KEY.

    A worker's --api-key defaults to $OPENAI_API_KEY, so the key reaches it without
    appearing on its command line; without a key, the variable is removed, so that a worker
    does not pick up one that this process was told not to use.
    """
    env = dict(os.environ)
    if args.api_key:
        env[API_KEY_ENV] = args.api_key
    else:
        env.pop(API_KEY_ENV, None)
    return env


def check_web_address(host: str, port: int) -> None:
    """--web-host/--web-port that cannot be listened on are a UsageError, before the run starts.

    Locust binds its web UI in a greenlet whose failure is only logged, and the run would
    go on without a UI; binding here first turns a busy port or a wrong address into a
    one-line error. Binds as gevent's server does (SO_REUSEADDR), so that a port left in
    TIME_WAIT by a previous run is not refused.
    """
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(
            f"--web-host {host!r}: not an address of this machine ({exc}); "
            "use e.g. 127.0.0.1, or 0.0.0.0 for every interface"
        ) from exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"--web-port {port}: address already in use on {host}; pick another port, "
                    "or --web-port 0 for a free one"
                ) from exc
            raise UsageError(
                f"--web-host {host} --web-port {port}: cannot listen there "
                f"({exc.strerror or exc}); use an address of this machine and a free port"
            ) from exc


def launch_for(args: argparse.Namespace, out: Path, processes: int, *, quiet: bool) -> Launch:
    """Where the run goes and how it is spread, as orchestration takes it (`run`, `ceiling`)."""
    from loadgen.orchestration.launch_plan import Launch
    from loadgen.orchestration.metrics_endpoint import MetricsSettings

    interval = getattr(args, "target_metrics_interval", 2.0)  # `ceiling` samples per window
    if not interval > 0:
        raise UsageError("--target-metrics-interval must be above 0, e.g. 2s")
    if len(parse_targets(args)) > 1 and args.scrape_target_metrics and not args.target_metrics_url:
        raise UsageError(
            "--scrape-target-metrics with several --target: which replica's /metrics? Pass "
            "--target-metrics-url (one replica's, or an aggregate such as a router's)"
        )
    check_api_key(args.api_key)
    return Launch(
        out=out,
        connect=lambda url: target_config(args, url),
        target_url=args.target[0] if args.target else None,  # target_config reads them all
        model=args.model,
        processes=processes,
        worker_argv=lambda port, url: worker_argv(args, port, url, out),
        worker_env=worker_env(args),
        metrics=MetricsSettings(
            prometheus_port=args.prometheus_port,
            web=getattr(args, "web", False),
            target_metrics_url=args.target_metrics_url,
            scrape_target=args.scrape_target_metrics,
            target_metrics_interval_s=interval,
        ),
        progress=None if quiet else sys.stderr,
    )
