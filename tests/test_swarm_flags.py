"""`agentload run`'s swarm flags: Locust's names and defaults, and no silent overrides.

Parsed in this process (parsing imports neither Locust nor gevent); one test goes through
the real CLI for the exit code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from loadgen.cli.main import build_parser
from loadgen.cli.run_command import check_swarm_flags
from loadgen.errors import UsageError

AGENTLOAD = [sys.executable, "-m", "loadgen"]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_swarm_flags_default_to_locusts_own_values() -> None:
    args = parse()
    assert args.processes == 1
    assert (args.master, args.worker, args.web) == (False, False, False)
    assert args.expect_workers == 1
    assert args.expect_workers_max_wait == 0  # Locust's: wait forever
    assert (args.master_bind_host, args.master_bind_port) == ("*", 5557)
    assert (args.master_host, args.master_port) == ("127.0.0.1", 5557)
    assert args.web_port == 8089


def test_web_host_defaults_to_this_machine_only_unlike_locusts_all_interfaces() -> None:
    # Deliberate: a load generator's UI (with a Stop button) is not published by default.
    assert parse().web_host == "127.0.0.1"


def test_headless_is_accepted_for_locust_users_and_changes_nothing() -> None:
    assert check_swarm_flags(parse("--headless")) == check_swarm_flags(parse()) == 1


def test_processes_minus_one_means_one_worker_per_cpu_core() -> None:
    assert check_swarm_flags(parse("--processes", "-1")) == os.cpu_count()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--processes", "0"], "--processes 0"),
        (["--processes", "-2"], "--processes -2"),
        (["--master", "--worker"], "--master and --worker"),
        (["--master", "--processes", "2"], "--master cannot be combined with --processes"),
        (["--worker", "--web"], "--web on a --worker"),
        (["--headless", "--web"], "--headless and --web"),
        (["--processes", "2", "--master-bind-port", "6000"], "--master-bind-port"),
        (["--processes", "2", "--master-bind-host", "0.0.0.0"], "--master-bind-host"),
        (["--worker", "--processes", "2", "--prometheus-port", "9646"], "--prometheus-port"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_contradicting_swarm_flags_are_a_usage_error_naming_them(
    argv: list[str], named: str
) -> None:
    with pytest.raises(UsageError, match=named) as raised:
        check_swarm_flags(parse(*argv))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["--worker", "--processes", "4", "--master-host", "master-box", "--master-port", "6000"],
        ["--master", "--master-bind-port", "6000", "--expect-workers", "3"],
        ["--processes", "2", "--web"],
    ],
    ids=" ".join,
)
def test_swarm_flags_locust_accepts_are_accepted(argv: list[str]) -> None:
    check_swarm_flags(parse(*argv))


def test_a_usage_error_exits_2_with_one_line_through_the_cli() -> None:
    done = subprocess.run(
        [*AGENTLOAD, "run", "--master", "--processes", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("agentload run: error: --master cannot be combined with --processes")
