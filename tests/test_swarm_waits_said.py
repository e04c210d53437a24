"""A swarm that waits says what it waits for: silence looks like a hang."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_master_waiting_for_its_workers_says_so_at_once(tmp_path: Path) -> None:
    port = _free_port()
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "ci-smoke", "--master", "--expect-workers", "2",
         "--expect-workers-max-wait", "4s", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(port), "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert f"master waiting for workers: 0 of 2 connected (port {port})" in result.stderr
    assert time.monotonic() - t0 < 60


def test_a_worker_pointed_at_a_missing_master_says_what_it_waits_for(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", "ci-smoke", "--worker", "--master-host",
         "127.0.0.1", "--master-port", str(port), "--target", "http://127.0.0.1:9/v1",
         "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(8)
    finally:
        proc.kill()
        _out, stderr = proc.communicate(timeout=30)
    assert f"worker waiting for its master at 127.0.0.1:{port}" in stderr
    assert "worker connected" not in stderr
