"""The wiring behind `agentload run`: overrides, target, built-in simulator, workers, metrics.

Heavy modules are imported inside the functions: `agentload run` patches gevent before
importing them (see entry.py), and `agentload --help` should stay fast.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from loadgen.observe.live_observation import ObservationSettings
    from loadgen.observe.prometheus_merge import MergedMetrics
    from loadgen.observe.prometheus_server import MetricsServer
    from loadgen.sim import SimConfig
    from loadgen.transport import TargetConfig

__all__ = [
    "close_metrics",
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
]


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
    """--header values as a dict; UsageError for one without a colon."""
    headers = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {item!r}: write it as 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


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
    """The command line of a local worker process for --processes (of `run` or `ceiling`)."""
    argv = [sys.executable, "-m", "loadgen", "run", args.profile, "--worker", "--quiet",
            "--master-host", master_host, "--master-port", str(port),
            "--target", target, "--out", str(out)]  # fmt: skip
    for flag, name in (("--duration", "duration"), ("--agents", "agents"), ("--rate", "rate"),
                       ("--seed", "seed"), ("--model", "model"),
                       ("--request-timeout", "request_timeout")):  # fmt: skip
        value = getattr(args, name, None)  # `agentload ceiling` has no --duration, --agents...
        if value is not None:
            argv += [flag, str(value)]
    if args.api_key:
        argv += ["--api-key", args.api_key]
    for header in args.header:
        argv += ["--header", header]
    if args.insecure:
        argv.append("--insecure")
    if args.kernel_timestamps is False:
        argv.append("--no-kernel-timestamps")
    return argv


def start_local_workers(argv: list[str], count: int) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes on this machine (--processes)."""
    return [subprocess.Popen(argv) for _ in range(count)]


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


def run_worker_processes(argv: list[str], count: int) -> int:
    """`--worker --processes N`: run N workers, pass Ctrl-C / SIGTERM on; the worst exit code."""
    import gevent

    # Their own process group: a terminal's Ctrl-C reaches this process alone, which passes
    # it on once (as it does SIGTERM from Kubernetes or `docker stop`); a worker that got it
    # twice would leave twice.
    workers = [subprocess.Popen(argv, process_group=0) for _ in range(count)]

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
    from loadgen.observe.prometheus_merge import MergedMetrics
    from loadgen.observe.prometheus_metrics import RunMetrics

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
    from loadgen.observe.prometheus_server import MetricsServer

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
