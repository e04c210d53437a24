"""`agentload run` never passes a run that measured only failures, and says why."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

AGENTLOAD = [sys.executable, "-m", "loadgen"]

# Every request to the built-in simulator fails with a 500: a broken deployment.
BROKEN = """\
name: broken
duration: {duration}
seed: 1
time_scale: 0.01
arrival: {{mode: closed, agents: 12}}
agents:
  - kind: support
    params: {{output_tokens: 16}}
sim: {{preset: fast, faults: {{http_5xx: 1.0}}}}
"""


def _run(
    tmp_path: Path, duration: str, *flags: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    profile = tmp_path / "broken.yaml"
    profile.write_text(BROKEN.format(duration=duration))
    t0 = time.monotonic()
    result = subprocess.run(
        [*AGENTLOAD, "run", str(profile), "--quiet", "--out", str(tmp_path / "out"), *flags],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return result, time.monotonic() - t0


def test_a_run_whose_every_request_failed_exits_1_naming_the_servers_words(
    tmp_path: Path,
) -> None:
    result, _ = _run(tmp_path, "6s", "--storm-stop", "0")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["requests"]["ok"] == 0
    assert summary["requests"]["failed"] > 0
    assert result.returncode == 1, result.stderr
    assert "every one of" in summary["run_failed"]
    assert "http_error" in summary["run_failed"]
    assert "FAILED: every one of" in result.stderr
    # The reasons reach the printed summary and summary.json, not only steps.jsonl.
    assert "http_error:" in result.stdout
    assert summary["failure_reasons"]["http_error"][0]["count"] > 0
    assert "Traceback" not in result.stderr


def test_a_failure_storm_stops_the_run_early_and_exits_1(tmp_path: Path) -> None:
    result, elapsed = _run(tmp_path, "120s", "--storm-stop", "4s")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert result.returncode == 1, result.stderr
    assert summary["run_failed"].startswith("failure storm: all ")
    assert summary["duration_s"] < 60
    assert elapsed < 100


def test_failed_sessions_are_replaced_after_a_backoff_not_in_a_storm(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, "8s", "--storm-stop", "0")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # 12 agents for 8 s, each session failing within about a second: back to back they
    # started hundreds; with the doubling pause before each replacement, a few each.
    assert summary["sessions"]["started"] <= 12 * 6
    assert result.returncode == 1


def test_a_refused_key_at_start_up_exits_3_with_the_servers_words_and_no_key(
    tmp_path: Path,
) -> None:
    key = "sk-live-SECRET0123456789abcdef"
    with subprocess.Popen(
        [sys.executable, "-c", REFUSING_SERVER], stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            result = subprocess.run(
                [*AGENTLOAD, "run", "ci-smoke", "--target", f"http://127.0.0.1:{port}/v1",
                 "--model", "m", "--api-key", key, "--quiet", "--out", str(tmp_path / "out")],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        finally:
            server.terminate()
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "HTTP 401" in line
    assert "Incorrect API key provided" in line  # the server's own words
    assert key not in line
    assert "[redacted]" in line


# An OpenAI-style server that refuses every key, echoing it back as OpenAI's API does.
REFUSING_SERVER = """
import json, socket
from http.server import BaseHTTPRequestHandler, HTTPServer

class Refuse(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}.",
                                     "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Refuse)
print(server.server_address[1], flush=True)
server.serve_forever()
"""
