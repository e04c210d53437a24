"""Worker processes on this machine (--processes): started, watched, signalled and reaped."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable, Mapping

__all__ = [
    "free_port",
    "local_workers_exited",
    "reap_workers",
    "run_worker_processes",
    "start_local_workers",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a local master)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_local_workers(
    argv: list[str], count: int, env: Mapping[str, str] | None = None
) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes on this machine, each running `argv` with `env`."""
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


def run_worker_processes(argv: list[str], count: int, env: Mapping[str, str] | None = None) -> int:
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
