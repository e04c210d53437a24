"""A distributed run's one Prometheus endpoint: the master serves what every worker counted."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_swarm import AGENTLOAD, ROOT, SMOKE, Processes, procs, sim_url, wait_for

__all__ = ["procs", "sim_url"]  # fixtures used here

pytestmark = pytest.mark.slow


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]  # by name, then by labels


def scrape(url: str) -> Samples | None:
    """Samples by name and labels, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    out: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v
        for k, v in samples.get(name, {}).items()
        if all((key, val) in k for key, val in labels.items())
    )


def assert_scraped_totals_are_the_summarys(samples: Samples, summary: dict[str, Any]) -> None:
    """The master's last scrape counts exactly what summary.json does."""
    assert total(samples, "agentload_requests_total") == summary["requests"]["total"] > 0
    failed = total(samples, "agentload_requests_total", outcome="failed")
    assert failed == summary["requests"]["failed"]
    assert total(samples, "agentload_request_duration_seconds_count") == summary["requests"]["ok"]
    for outcome in ("completed", "failed", "aborted"):
        sessions = total(samples, "agentload_sessions_total", outcome=outcome)
        assert sessions == summary["sessions"][outcome], outcome
    assert total(samples, "agentload_completion_tokens_total") == summary["tokens"]["completion"]


def scrape_until_it_exits(
    procs: Processes, name: str, run: subprocess.Popen[bytes], timeout: float = 60
) -> Samples:
    """Scrape the metrics URL `name` printed, like Prometheus, until the process exits;
    returns the last scrape (it keeps serving until the final read)."""
    found: list[str] = []

    def printed_url() -> bool:
        assert run.poll() is None, procs.output(name)
        found.extend(re.findall(r"metrics on (http://[\d.:]+/metrics)", procs.output(name)))
        return bool(found)

    wait_for("the metrics URL", printed_url, timeout)
    url = found[0].replace("0.0.0.0", "127.0.0.1")
    last = None
    while run.poll() is None:
        samples = scrape(url)
        if samples is not None:
            last = samples
        time.sleep(0.5)
    assert last is not None, procs.output(name)
    return last


def test_master_serves_the_merged_metrics_of_its_workers_and_samples_the_target(
    sim_url: str, procs: Processes, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    run = procs.start(
        "run",
        [*AGENTLOAD, "run", *SMOKE, "--duration", "8s", "--processes", "2",
         "--prometheus-port", "0", "--scrape-target-metrics",
         "--target", sim_url, "--out", str(out)],
    )  # fmt: skip
    last = scrape_until_it_exits(procs, "run", run)
    assert run.returncode == 0, procs.output("run")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["workers"]["reported"]) == 2
    assert_scraped_totals_are_the_summarys(last, summary)
    # The master sampled the target itself, once, for the whole swarm.
    assert summary["server"]["available"] is True
    assert summary["server"]["generation_tokens"] >= summary["tokens"]["completion"]
    # The swarm's fields are exactly the documented ones.
    doc = (ROOT / "docs" / "summary-schema.md").read_text().split("## Sections some runs add")[1]
    documented = re.findall(r"^\| `workers\.(\w+)` \|", doc, flags=re.MULTILINE)
    assert sorted(documented) == sorted(summary["workers"])
    # Records live in each worker's folder; the master writes only the summary.
    assert not (out / "steps.jsonl").exists()
    assert (out / "worker-0" / "steps.jsonl").exists()
