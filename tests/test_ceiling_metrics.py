"""`agentload ceiling --prometheus-port`: a search's live metrics, in one process or a swarm."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadgen.observe.result_files import CEILING_FILE
from tests.test_ceiling import SLO, _analytical, _profile
from tests.test_swarm import child_env
from tests.test_swarm_metrics import scrape, total

pytestmark = pytest.mark.slow

SIM = {"preset": "fast", **_analytical(10, 8)}
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@dataclass
class WatchedSearch:
    returncode: int
    out: Path
    scrapes: list[Samples]
    log: str

    def document(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.out / name).read_text())
        return result


def _watch(tmp_path: Path, *flags: str) -> WatchedSearch:
    """A short search with --prometheus-port 0, scraped like Prometheus until it exits."""
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    argv = [sys.executable, "-m", "loadgen", "ceiling", str(_profile(tmp_path, SIM)),
            "--slo", SLO, "--warmup", "0.5s", "--window", "1.5s", "--max-duration", "60s",
            "--prometheus-port", "0", "--out", str(out),
            # What is under test is the metrics, not the verdict: a 2-core machine busy with
            # the rest of the suite must not end the search as a saturated generator (CI did).
            "--generator-max-cpu", "1000", "--generator-max-loop-lag", "10s",
            "--generator-max-schedule-lag", "10s", *flags]  # fmt: skip
    scrapes: list[Samples] = []
    with log.open("w") as err:
        search = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                  env=child_env(), cwd=tmp_path)  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            url = None
            while search.poll() is None and time.monotonic() < deadline:
                if url is None:
                    found = re.findall(r"metrics on (http://[\d.:]+/metrics)", log.read_text())
                    url = found[0].replace("0.0.0.0", "127.0.0.1") if found else None
                elif (samples := scrape(url)) is not None:
                    scrapes.append(samples)
                time.sleep(0.3)
        finally:
            if search.poll() is None:
                search.kill()
            search.wait()
    return WatchedSearch(search.returncode, out, scrapes, log.read_text())


def test_one_process_search_serves_its_records_and_its_agents_level_by_level(
    tmp_path: Path,
) -> None:
    search = _watch(tmp_path, "--start", "4", "--resolution", "0.5")
    assert search.returncode == 0, search.log[-3000:]
    assert search.scrapes, search.log[-3000:]
    summary = search.document("summary.json")
    last = search.scrapes[-1]
    # The search kept serving until its final values were read: they equal summary.json.
    assert total(last, "agentload_requests_total") == summary["requests"]["total"] > 0
    assert total(last, "agentload_completion_tokens_total") == summary["tokens"]["completion"]
    # agentload_users follows the levels: every reading is a level's agents (or none yet).
    loads = {lv["load"] for lv in search.document(CEILING_FILE)["levels"]}
    users = {total(s, "agentload_users") for s in search.scrapes}
    assert users - {0.0}, users
    assert users <= loads | {0.0}, (users, loads)


def test_swarm_search_master_serves_the_merge_of_its_workers(tmp_path: Path) -> None:
    search = _watch(tmp_path, "--processes", "2", "--start", "8", "--resolution", "0.5")
    assert search.returncode == 0, search.log[-3000:]
    assert search.scrapes, search.log[-3000:]
    summary = search.document("summary.json")
    assert len(summary["workers"]["reported"]) == 2
    last = search.scrapes[-1]
    assert total(last, "agentload_requests_total") == summary["requests"]["total"] > 0
    assert total(last, "agentload_completion_tokens_total") == summary["tokens"]["completion"]
    # The ceiling's agents run outside Locust's users; the workers count them all the same
    # (each worker's share as of its last report, every 3 s: the sum can lag a level).
    loads = [lv["load"] for lv in search.document(CEILING_FILE)["levels"]]
    assert 0 < max(total(s, "agentload_users") for s in search.scrapes) <= max(loads)
