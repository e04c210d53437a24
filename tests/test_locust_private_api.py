"""The few private parts of Locust that agentload's adapter relies on are still there.

pyproject.toml bounds Locust below its next major version; within it, a release that
renames one of these fails here, by name, rather than somewhere inside a swarm run. Checked
in a subprocess: importing Locust patches the standard library, which this process must
not have.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = {
    # membership.create_master/create_worker: Locust's own path, which also wires the shape.
    "Environment._create_runner(runner_class, ...)": (
        "'runner_class' in inspect.signature(Environment._create_runner).parameters"
    ),
    # swarm._run_worker's leave(): the last report goes out before the goodbye.
    "WorkerRunner._send_stats()": "callable(getattr(WorkerRunner, '_send_stats', None))",
    "WorkerRunner.greenlet": "'self.greenlet' in inspect.getsource(WorkerRunner.__init__)",
    "WorkerRunner.connect_to_master()": "callable(WorkerRunner.connect_to_master)",
    "MasterRunner.rebalancing_enabled()": "callable(MasterRunner.rebalancing_enabled)",
    # locust_stats.StepTotalStats: a request event reaches the stats through these two...
    "Runner: request event -> stats.log_request/log_error": (
        "all(f'self.stats.{m}(' in inspect.getsource(Runner.__init__)"
        " for m in ('log_request', 'log_error'))"
    ),
    # ...which add to `total` (it leaves that out for SESSION, and copies the rest of
    # log_error: the entry's count and the Failures tab's StatsError)...
    "RequestStats.log_request/log_error: total, entry, errors": (
        "all(s in inspect.getsource(RequestStats.log_request) for s in"
        " ('self.total.log(', 'self.entries[(name, method)].log('))"
        " and all(s in inspect.getsource(RequestStats.log_error) for s in"
        " ('self.total.log_error(', 'self.entries[(name, method)].log_error(',"
        " 'StatsError.create_key(', 'StatsError(method, name, error)', '.occurred()'))"
    ),
    # ...and a master's total is its workers' totals, not the sum of their rows.
    "worker report: stats_total, merged into the master's total": (
        "all(s in inspect.getsource(setup_distributed_stats_event_listeners) for s in"
        " ('data[\"stats_total\"] = stats.total.', 'stats.total.extend('))"
    ),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_locust_internal_agentload_uses_is_still_there(name: str) -> None:
    script = (
        "import inspect\n"
        "from locust.env import Environment\n"
        "from locust.runners import MasterRunner, Runner, WorkerRunner\n"
        "from locust.stats import RequestStats, setup_distributed_stats_event_listeners\n"
        f"assert {CHECKS[name]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"Locust changed {name}:\n{result.stderr}"


def test_the_adapter_still_uses_exactly_these() -> None:
    # When the adapter stops using one, drop it here and from the list above.
    source = "".join(
        p.read_text() for p in (Path(__file__).parents[1] / "loadgen/orchestration").glob("*.py")
    )
    assert "env._create_runner(" in source
    assert "runner._send_stats()" in source
    assert "runner.greenlet" in source
    assert "class StepTotalStats(RequestStats):" in source
