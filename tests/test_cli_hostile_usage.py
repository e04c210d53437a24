"""Hostile command lines and profile files: each is one line naming the flag (or file) and
the fix, exit 2, never a traceback, through the real CLI in a subprocess.

None of these starts a run: every one is refused before the simulator or Locust start.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def refused(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run `agentload ARGS`; assert exit 2 with one line on stderr; return that line."""
    result = subprocess.run(
        [*AGENTLOAD, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not (cwd / "results").exists()  # refused before any run started
    return lines[0]


@pytest.mark.parametrize("rate", ["inf", "nan", "-inf", "1e400", "-1", "0", "fast"])
def test_run_refuses_a_rate_that_is_not_finite_and_above_0(tmp_path: Path, rate: str) -> None:
    line = refused(["run", "ci-smoke", f"--rate={rate}", "--duration", "2s"], tmp_path)
    assert line.startswith("agentload run: error: argument --rate:"), line
    assert "finite number above 0" in line


@pytest.mark.parametrize("agents", ["0", "-3", "2.5"])
def test_run_refuses_agents_below_1(tmp_path: Path, agents: str) -> None:
    line = refused(["run", "ci-smoke", f"--agents={agents}", "--duration", "2s"], tmp_path)
    assert line.startswith("agentload run: error: argument --agents:"), line
    assert "at least 1" in line


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_sim_refuses_a_port_outside_0_to_65535(tmp_path: Path, port: str) -> None:
    # It used to announce "serving ... on http://127.0.0.1:99999/v1", a port it was not on.
    line = refused(["sim", "--preset", "fast", f"--port={port}"], tmp_path)
    assert line.startswith("agentload sim: error: argument --port:"), line
    assert "0-65535" in line


@pytest.mark.parametrize("port", ["99999", "-1", "web"])
def test_run_refuses_a_web_port_outside_0_to_65535(tmp_path: Path, port: str) -> None:
    line = refused(["run", "ci-smoke", "--web", f"--web-port={port}"], tmp_path)
    assert line.startswith("agentload run: error: argument --web-port:"), line
    assert "0-65535" in line


@pytest.mark.parametrize(
    "header",
    ["X-A: b\r\nX-Evil: 1", "X-A: b\nX-Evil: 1", "X-A: b\rX-Evil: 1", "X-A\r\nX-Evil: 1"],
    ids=["crlf-in-value", "lf-in-value", "cr-in-value", "crlf-in-name"],
)
def test_run_refuses_a_header_with_a_line_break(tmp_path: Path, header: str) -> None:
    line = refused(["run", "ci-smoke", "--duration", "2s", "--header", header], tmp_path)
    assert line.startswith("agentload run: error: --header 'X-A"), line
    assert "--header" in line.split(":", 2)[2]  # the fix names the flag again
    assert "X-Evil: 1" not in line  # the value, which may be a token, is not echoed


def test_run_refuses_a_header_name_with_a_space(tmp_path: Path) -> None:
    line = refused(["run", "ci-smoke", "--duration", "2s", "--header", "X A: b"], tmp_path)
    assert line.startswith("agentload run: error: --header 'X A': not a header name"), line


def test_run_refuses_an_api_key_with_a_line_break_without_echoing_it(tmp_path: Path) -> None:
    key = "sk-hostile-0123456789\r\nX-Evil: 1"
    line = refused(["run", "ci-smoke", "--duration", "2s", "--api-key", key], tmp_path)
    assert line.startswith("agentload run: error: --api-key"), line
    assert "sk-hostile" not in line


def test_run_refuses_a_profile_that_is_not_utf8_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"name: \xff\xfe\n")
    line = refused(["run", "latin.yaml", "--duration", "2s"], tmp_path)
    assert line.startswith("agentload run: error: latin.yaml: not UTF-8"), line
    assert "save the profile as UTF-8" in line


def test_a_profile_with_a_utf8_bom_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "profiles" / "ci-smoke.yaml").read_text()
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    # A valid profile: refused only for the flag after it, so loading it raised nothing.
    line = refused(["run", "bom.yaml", "--gate", "no such metric < 1"], tmp_path)
    assert "bom.yaml" not in line, line


def test_run_refuses_a_profile_name_too_long_for_a_path(tmp_path: Path) -> None:
    line = refused(["run", "p" * 5000, "--duration", "2s"], tmp_path)
    assert line.startswith("agentload run: error: 'ppp"), line
    assert "not a profile name or path" in line
    assert len(line) < 300
