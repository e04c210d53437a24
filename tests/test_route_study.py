"""`agentload route-study`: one seeded workload under each router, compared in one table."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from loadgen.sim import SimServer

ROOT = Path(__file__).resolve().parents[1]
AGENTLOAD = [sys.executable, "-m", "loadgen"]


def test_each_simulated_router_is_run_and_compared_in_one_table(tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = subprocess.run(
        [*AGENTLOAD, "route-study", "quickstart", "--replicas", "4", "--routers",
         "round-robin,session", "--duration", "12s", "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads((out / "route_study.json").read_text())
    rows = {row["router"]: row for row in document["rows"]}
    assert set(rows) == {"round-robin", "session"}
    for name in rows:  # each router's own run, as `agentload run` leaves it
        assert (out / name / "run" / "summary.json").is_file()
    # Sessions resend their history: only session affinity finds it cached every time.
    assert rows["session"]["cache_hit_ratio"] > rows["round-robin"]["cache_hit_ratio"] + 0.1
    assert "cache_miss" not in rows["session"]["state_failures"]
    table = result.stdout.splitlines()
    assert table[0].split()[:3] == ["router", "out", "tok/s"]
    assert any(line.startswith("round-robin") for line in table)
    page = (out / "route_study.html").read_text()
    assert "Prefix-cache hit ratio" in page
    assert page.count('class="mark"') >= 4  # bars for both routers on each chart


async def test_real_router_urls_are_arms_of_the_study(
    start_sim: Callable[..., Awaitable[SimServer]], tmp_path: Path
) -> None:
    a, b = await start_sim(), await start_sim()
    out = tmp_path / "study"
    proc = await asyncio.create_subprocess_exec(
        *AGENTLOAD, "route-study", "ci-smoke", "--target", f"a={a.base_url}",
        "--target", f"b={b.base_url}", "--duration", "5s", "--quiet", "--out", str(out),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(240):
        _stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    rows = json.loads((out / "route_study.json").read_text())["rows"]
    assert [row["router"] for row in rows] == ["a", "b"]
    assert all(row["output_tokens_per_s"] > 0 for row in rows)


def test_a_study_at_a_speedup_runs_in_a_quarter_of_the_time_and_reports_modelled_time(
    tmp_path: Path,
) -> None:
    out = tmp_path / "study"
    result = subprocess.run(
        [*AGENTLOAD, "route-study", "quickstart", "--replicas", "4", "--routers",
         "round-robin,session", "--duration", "12s", "--speedup", "4", "--quiet",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads((out / "route_study.json").read_text())
    assert document["speedup"] == 4
    assert (out / "profile-at-speedup-4.yaml").is_file()  # what the runs loaded
    rows = {row["router"]: row for row in document["rows"]}
    for name, row in rows.items():
        summary = json.loads((out / name / "run" / "summary.json").read_text())
        assert summary["duration_s"] < 6.0  # 12 modelled seconds took 3 of wall time
        assert row["ttft_p95_s"] == pytest.approx(4 * summary["latency"]["ttft_s"]["p95"])
        wall_rate = summary["throughput"]["output_tokens_per_s"]
        assert row["output_tokens_per_s"] == pytest.approx(wall_rate / 4)
        assert row["lost_share"] is not None
    # The same answer as in real time: only session affinity finds histories cached.
    assert rows["session"]["cache_hit_ratio"] > rows["round-robin"]["cache_hit_ratio"] + 0.1
    assert "clock: the fleet ran 4x faster than real time" in result.stdout
    assert document["engine_clock"]["limit"] == 0.02


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--speedup", "0.5"], "--speedup"),
        (["--speedup", "4", "--target", "a=http://127.0.0.1:9/v1"], "--speedup"),
        (["--speedup", "4", "--ceiling", "--slo", "output_tokens_per_s > 100"], "--slo"),
    ],
    ids=["below-real-time", "real-routers", "rate-slo"],
)
def test_a_speedup_the_study_cannot_honour_is_a_one_line_usage_error(
    flags: list[str], named: str
) -> None:
    result = subprocess.run(
        [*AGENTLOAD, "route-study", "quickstart", *flags],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_router_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*AGENTLOAD, "route-study", "quickstart", "--routers", "round-robin,magic"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--routers" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command", [["route-study"], ["plan", "--twin", "twin.yaml", "--agents", "100"]]
)
def test_the_ceiling_level_flags_given_are_passed_on_to_each_search_and_the_rest_left_out(
    command: list[str],
) -> None:
    from loadgen.cli.ceiling_command import level_flags
    from loadgen.cli.main import build_parser

    given = ["--resolution", "0.05", "--max-window", "90s", "--slo", "ttft_p95 < 2s"]
    args = build_parser().parse_args([*command, "coding-agent", *given])

    assert level_flags(args) == ["--resolution", "0.05", "--max-window", "90.0",
                                 "--slo", "ttft_p95 < 2s"]  # fmt: skip
