"""`agentload run --web` through the real CLI: a port it cannot serve is a usage error before
the run starts (it used to log a traceback and run on without a UI, exit 0), and the UI's
URL is printed once it is up.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

AGENTLOAD = [sys.executable, "-m", "loadgen"]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another socket listens on for the test's length."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_web(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTLOAD, "run", "ci-smoke", "--duration", "3s", "--web", *flags,
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip


def assert_refused_before_the_run(result: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not (tmp_path / "out").exists()  # no run started: nothing written
    assert result.stdout == ""
    return lines[0]


def test_web_on_a_busy_port_is_a_usage_error_before_the_run(tmp_path: Path, busy_port: int) -> None:
    t0 = time.monotonic()
    result = run_web(tmp_path, "--web-port", str(busy_port))
    line = assert_refused_before_the_run(result, tmp_path)
    assert line.startswith(f"agentload run: error: --web-port {busy_port}: address already in use")
    assert "--web-port 0" in line  # the fix
    assert time.monotonic() - t0 < 60  # the 3 s run did not go on without its UI


def test_web_on_an_address_not_of_this_machine_is_a_usage_error(tmp_path: Path) -> None:
    result = run_web(tmp_path, "--web-host", "no-such-host.invalid")
    line = assert_refused_before_the_run(result, tmp_path)
    assert line.startswith("agentload run: error: --web-host 'no-such-host.invalid':"), line


@pytest.mark.slow
def test_web_prints_its_url_once_up_even_with_quiet(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*AGENTLOAD, "run", "ci-smoke", "--duration", "5s", "--quiet", "--web",
         "--web-port", "0", "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # --quiet: the URL is the first thing said
        found = re.fullmatch(r"agentload run: web UI on (http://127\.0\.0\.1:(\d+))\n", line)
        assert found, line
        assert int(found.group(2)) != 0  # --web-port 0: the port picked, not 0
        with urllib.request.urlopen(found.group(1) + "/agentload/stats", timeout=10) as resp:
            assert resp.status == 200  # up when announced
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
