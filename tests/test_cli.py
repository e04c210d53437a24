"""The `agentload` command line: help with examples, one-line errors, exit codes, a real server."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTLOAD, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_console_script_is_installed_as_agentload() -> None:
    scripts = entry_points(group="console_scripts", name="agentload")
    assert [ep.value for ep in scripts] == ["loadgen.cli.entry:main"]


def test_top_level_help_lists_subcommands_and_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "sim" in result.stdout
    assert "exit codes" in result.stdout


def test_sim_help_has_examples_presets_and_fault_flags() -> None:
    result = run_cli("sim", "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    for text in (
        "llama-8b-h100",
        "llama-70b-4xh100",
        "fast",
        "--fault-stream-cut",
        "--decode-step-ms",
    ):
        assert text in result.stdout


def test_no_subcommand_prints_help_and_exits_2() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "COMMAND" in result.stdout


def test_unknown_flag_is_one_line_error_with_exit_2() -> None:
    assert_one_line_error(run_cli("sim", "--no-such-flag"), "--no-such-flag")


def test_out_of_range_fault_rate_names_the_flag_and_the_fix() -> None:
    assert_one_line_error(run_cli("sim", "--fault-http-5xx", "1.5"), "--fault-http-5xx", "0..1")


def test_invalid_engine_value_names_the_flag() -> None:
    assert_one_line_error(run_cli("sim", "--max-num-seqs", "0"), "--max-num-seqs")


def test_context_larger_than_kv_cache_is_refused_with_the_fix() -> None:
    result = run_cli("sim", "--num-kv-blocks", "8", "--max-model-len", "4096")
    assert_one_line_error(result, "--max-model-len", "--num-kv-blocks")


def test_prefill_rate_without_decode_step_is_a_usage_error() -> None:
    assert_one_line_error(run_cli("sim", "--prefill-tokens-per-s", "1000"), "--decode-step-ms")


def test_port_in_use_is_one_line_error_with_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("sim", "--preset", "fast", "--port", str(port))
    assert_one_line_error(result, f"--port {port}", "in use")


@pytest.fixture
def sim_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [*AGENTLOAD, "sim", "--preset", "fast", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", banner)
        assert match, banner
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_sim_serves_until_sigterm_then_exits_0(
    sim_process: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base_url = sim_process
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=10) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(base_url + "/models", timeout=10) as resp:
        assert b"agentload-sim" in resp.read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
