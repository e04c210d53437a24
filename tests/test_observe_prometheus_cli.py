"""`agentload run --prometheus-port / --scrape-target-metrics` through the real CLI."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def _requests(port: int) -> float | None:
    """agentload_requests_total summed, or None while the port does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "agentload_requests_total"
    )


def test_run_serves_live_metrics_on_the_printed_port_and_reports_the_server(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*AGENTLOAD, "run", "ci-smoke", "--duration", "5s", "--out", str(out),
         "--prometheus-port", "0", "--scrape-target-metrics"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        match = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", first)
        assert match, first
        port = int(match.group(1))
        seen: list[float] = []
        # Scrape like Prometheus until the process ends: during the run, then the final values.
        while proc.poll() is None:
            value = _requests(port)
            if value is not None:
                seen.append(value)
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < max(seen) == summary["requests"]["total"]
    assert summary["server"]["available"] is True
    assert summary["server"]["generation_tokens"] >= summary["tokens"]["completion"]


def test_taken_prometheus_port_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*AGENTLOAD, "run", "ci-smoke", "--duration", "2s", "--out", str(tmp_path),
             "--prometheus-port", str(port)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"--prometheus-port {port}" in lines[0]


def test_prometheus_port_outside_the_tcp_range_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*AGENTLOAD, "run", "--prometheus-port", "70000", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--prometheus-port" in result.stderr
