"""The wiring behind `agentload run`: overrides, target, built-in simulator, workers, metrics.

Heavy modules are imported inside the functions: `agentload run` patches gevent before
importing them (see entry.py), and `agentload --help` should stay fast.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from loadgen.observe.live_observation import ObservationSettings
    from loadgen.observe.prometheus.merge import MergedMetrics
    from loadgen.observe.prometheus.server import MetricsServer
    from loadgen.sim import SimConfig
    from loadgen.transport import TargetConfig

__all__ = [
    "API_KEY_ENV",
    "check_api_key",
    "check_web_address",
    "close_metrics",
    "default_out_dir",
    "final_scrape",
    "free_port",
    "live_metrics",
    "local_workers_exited",
    "parse_headers",
    "profile_overrides",
    "reap_workers",
    "run_worker_processes",
    "serve_metrics",
    "sim_config",
    "start_local_workers",
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


def sim_config(settings: dict[str, Any]) -> SimConfig:
    """The built-in simulator's config from a profile's `sim:` mapping."""
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


def target_config(args: argparse.Namespace, url: str) -> TargetConfig:
    """The target at `url` with the command line's key, headers, TLS and timeout."""
    from loadgen.transport import TargetConfig

    check_api_key(args.api_key)
    return TargetConfig.from_url(
        url,
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
    """
    argv = [sys.executable, "-m", "loadgen", "run", args.profile, "--worker", "--quiet",
            "--master-host", master_host, "--master-port", str(port),
            "--target", target, "--out", str(out)]  # fmt: skip
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


def start_local_workers(
    argv: list[str], count: int, env: dict[str, str] | None = None
) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes on this machine (--processes), with `env` (see worker_env)."""
    return [subprocess.Popen(argv, env=env) for _ in range(count)]


def local_workers_exited(workers: list[subprocess.Popen[bytes]]) -> Callable[[], str | None]:
    """Why a master should stop waiting for its local workers: some already exited, or None."""

    def reason() -> str | None:
        codes = [str(proc.returncode) for proc in workers if proc.poll() is not None]
        if not codes:
            return None
        return (
            f"{len(codes)} of {len(workers)} local worker processes exited (exit code"
            f"{'s' if len(codes) > 1 else ''} {', '.join(codes)}) before every worker "
            "connected; see their errors above"
        )

    return reason


def run_worker_processes(argv: list[str], count: int, env: dict[str, str] | None = None) -> int:
    """`--worker --processes N`: run N workers, pass Ctrl-C / SIGTERM on; the worst exit code."""
    import gevent

    # Their own process group: a terminal's Ctrl-C reaches this process alone, which passes
    # it on once (as it does SIGTERM from Kubernetes or `docker stop`); a worker that got it
    # twice would leave twice.
    workers = [subprocess.Popen(argv, process_group=0, env=env) for _ in range(count)]

    def pass_on(sig: int) -> None:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(sig)

    handlers = [gevent.signal_handler(sig, pass_on, sig) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        codes = [proc.wait() for proc in workers]
    finally:
        for handler in handlers:
            handler.cancel()
    return max(1 if code < 0 else code for code in codes)  # < 0: ended by a signal


def reap_workers(workers: list[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """Wait for local workers to exit after their master; kill the ones that do not."""
    for proc in workers:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a local master)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# How long a run that was being scraped waits for the scrape that reads its final values:
# longer than Prometheus's default 15 s interval.
_FINAL_SCRAPE_WAIT_S = 30.0


def live_metrics(
    args: argparse.Namespace, target: TargetConfig, mode: str, bridge: Any
) -> tuple[ObservationSettings, MetricsServer | None, MergedMetrics | None]:
    """What to observe live, the started /metrics server, and (master) the workers' merge."""
    from loadgen.observe.live_observation import ObservationSettings
    from loadgen.observe.prometheus.merge import MergedMetrics
    from loadgen.observe.prometheus.metrics import RunMetrics

    url = args.target_metrics_url
    if url is None and args.scrape_target_metrics:
        url = f"{target.root_url}/metrics"
    served = args.prometheus_port is not None or args.web  # the web UI serves /metrics too
    merged = MergedMetrics() if served and mode == "master" else None
    metrics = RunMetrics() if served and mode != "master" else None
    source = merged if merged is not None else metrics
    server = None
    if args.prometheus_port is not None and source is not None:
        server = bridge.run(serve_metrics(source, args.prometheus_port, "run"), timeout=10)
    if args.target_metrics_interval <= 0:
        raise UsageError("--target-metrics-interval must be above 0, e.g. 2s")
    observe = ObservationSettings(
        metrics=metrics,
        target_metrics_url=url,
        target_metrics_interval_s=args.target_metrics_interval,
    )
    return observe, server, merged


async def serve_metrics(source: Any, port: int, command: str) -> MetricsServer:
    """Serve `source` (RunMetrics or MergedMetrics) on PORT; a port in use is a usage error."""
    from loadgen.observe.prometheus.server import MetricsServer

    server = MetricsServer(source, port=port)
    try:
        await server.start()
    except OSError as exc:
        raise UsageError(
            f"--prometheus-port {port}: {exc.strerror or exc}; "
            "pick another port, or 0 for a free one"
        ) from exc
    print(f"agentload {command}: metrics on http://{server.host}:{server.port}/metrics",
          file=sys.stderr, flush=True)  # fmt: skip
    return server


async def close_metrics(server: MetricsServer, progress: Any, command: str) -> None:
    """Keep serving until a scraper that was reading the run has read its final values."""
    if server.scrapes:
        if progress is not None:
            print(f"agentload {command}: waiting up to {_FINAL_SCRAPE_WAIT_S:.0f}s for "
                  "Prometheus to scrape the final values", file=progress, flush=True)  # fmt: skip
        await server.wait_for_scrape(_FINAL_SCRAPE_WAIT_S)
    await server.stop()


def final_scrape(server: MetricsServer, bridge: Any, progress: Any) -> None:
    """close_metrics() for `agentload run`, on the bridge's loop."""
    bridge.run(close_metrics(server, progress, "run"), timeout=_FINAL_SCRAPE_WAIT_S + 15)
