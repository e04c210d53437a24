"""The master of a distributed swarm: waits for workers, merges their reports, writes results."""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner
from prometheus_client import generate_latest

from loadgen.errors import AgentloadError, TargetUnreachableError
from loadgen.observe import ResultFiles, RunStats, combine_reports
from loadgen.observe.prometheus.merge import MergedMetrics
from loadgen.observe.summary import add_server_section
from loadgen.observe.target_metrics import TargetMetricsSampler
from loadgen.orchestration.bridge import native_socket_factory, process_bridge
from loadgen.orchestration.environment import (
    SwarmOptions,
    interruption,
    run_shape,
    stop_on_signals,
    swarm_environment,
    watch_ticks,
)
from loadgen.orchestration.membership import SwarmMembership, create_master
from loadgen.orchestration.process_engine import SwarmSettings
from loadgen.orchestration.shape import ProfileShape
from loadgen.orchestration.web_ui import start_web_ui
from loadgen.runtime.engine import profile_sections

__all__ = [
    "MasterAggregator",
    "run_master",
    "wait_for_final_reports",
    "wait_for_workers",
]

_log = logging.getLogger(__name__)
# How often a master still waiting for its workers says so.
_ANNOUNCE_WAIT_S = 10.0


class MasterAggregator:
    """Merges what each worker reports; keeps the share of workers that vanish mid-run."""

    def __init__(self, environment: Environment, metrics: MergedMetrics | None = None) -> None:
        self.environment = environment
        self.metrics = metrics
        self.per_worker: dict[str, RunStats] = {}
        self.health: dict[str, dict[str, Any]] = {}
        self.target: dict[str, Any] = {}
        self.final: set[str] = set()
        self.final_missing: set[str] = set()  # live at the end, final report never came
        self.left: set[str] = set()  # stopped on purpose, after a last report
        self.connected: set[str] = set()  # every worker that connected, reported or not
        self.names: dict[str, str] = {}  # Locust client id -> "worker-<index>"
        self.stop_requested_at: float | None = None
        environment.events.worker_report.add_listener(self._on_report)
        environment.events.worker_connect.add_listener(self._on_connect)

    def _on_connect(self, client_id: str, **_kw: Any) -> None:
        self.connected.add(client_id)

    def _on_report(self, client_id: str, data: dict[str, Any]) -> None:
        part = data.get("agentload")
        if not part:
            return
        self.per_worker.setdefault(client_id, RunStats()).merge(RunStats.from_dict(part["stats"]))
        self.health[client_id] = part["health"]
        self.target = part.get("target") or self.target
        self.names[client_id] = part.get("worker") or client_id
        if part.get("leaving"):
            self.left.add(client_id)
        if self.metrics is not None and "metrics" in part:
            self.metrics.update(client_id, part["metrics"])
            self.metrics.set_live(self.live_workers())
        if part.get("final") and self.stop_requested_at is not None:
            self.final.add(client_id)

    def merged(self) -> RunStats:
        """Every worker's statistics merged (exactly: histograms are mergeable)."""
        total = RunStats()
        for stats in self.per_worker.values():
            total.merge(stats)
        return total

    def lost_workers(self) -> list[str]:
        """Workers that went missing (killed, crashed, cut off), before or after reporting."""
        runner = self.environment.runner
        clients = runner.clients if isinstance(runner, MasterRunner) else {}
        lost = []
        for client_id in self.connected | set(self.per_worker):
            node = clients.get(client_id)
            if client_id in self.left:
                continue
            if (node is None and client_id not in self.final) or (
                node is not None and node.state == STATE_MISSING
            ):
                lost.append(client_id)
        return sorted(lost)

    def name(self, client_id: str) -> str:
        """A worker by its results folder (worker-<index>), as users find it on disk."""
        if client_id in self.names:
            return self.names[client_id]
        # Never reported: the index Locust acked it with is the one its folder would have.
        runner = self.environment.runner
        indexes = runner.worker_indexes if isinstance(runner, MasterRunner) else {}
        return f"worker-{indexes[client_id]}" if client_id in indexes else client_id

    def named(self, client_ids: Any) -> list[str]:
        """Workers by their results folder, sorted."""
        return sorted(self.name(c) for c in client_ids)

    def workers_section(self, expected: int) -> dict[str, Any]:
        """summary.json's "workers": who reported, left, was lost; each one's own counts."""
        return {
            "expected": expected,
            "reported": self.named(self.per_worker),
            "left": self.named(self.left),
            "lost": self.named(self.lost_workers()),
            "final_report_missing": self.named(self.final_missing),
            "by_worker": {
                self.name(client_id): _counts(stats)
                for client_id, stats in sorted(
                    self.per_worker.items(), key=lambda item: self.name(item[0])
                )
            },
        }

    def log_unreported_lost(self) -> None:
        """One line naming the workers lost before their first report, if any.

        Workers lost after reporting are named with the summary; these would otherwise show
        only as a worker count that falls short.
        """
        unreported = [self.name(c) for c in self.lost_workers() if c not in self.per_worker]
        if unreported:
            _log.warning(
                "agentload: lost worker %s before its first report: nothing it measured is in "
                "summary.json",
                ", ".join(sorted(unreported)),
            )

    def live_workers(self) -> list[str]:
        """Workers the master still hears from."""
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner):
            return []
        return [c.id for c in runner.clients.values() if c.state != STATE_MISSING]


def _counts(stats: RunStats) -> dict[str, Any]:
    """One worker's requests and sessions, as the summary's own sections count them."""
    return {
        "requests": {
            "total": stats.requests_total,
            "ok": stats.requests_ok,
            "failed": stats.requests_failed,
        },
        "sessions": stats.sessions.to_dict(),
    }


def wait_for_workers(runner: MasterRunner, options: SwarmOptions) -> int:
    """Wait until `options.expect_workers` are ready; TargetUnreachableError past the wait."""
    deadline = time.monotonic() + options.expect_workers_max_wait_s
    said = -1.0  # when the wait was last announced: a silent wait looks like a hang
    while len(runner.clients.ready) < options.expect_workers:
        if time.monotonic() - said >= _ANNOUNCE_WAIT_S:
            said = time.monotonic()
            print(
                f"agentload: master waiting for workers: {len(runner.clients.ready)} of "
                f"{options.expect_workers} connected (port {options.master_bind_port})",
                file=sys.stderr,
                flush=True,
            )
        reason = options.stop_waiting() if options.stop_waiting is not None else None
        if reason is not None:
            runner.quit()
            raise TargetUnreachableError(reason)
        if time.monotonic() > deadline:
            runner.quit()
            raise TargetUnreachableError(
                f"only {len(runner.clients.ready)} of {options.expect_workers} workers connected "
                f"within {options.expect_workers_max_wait_s:.0f}s; start workers with "
                f"--worker --master-host HOST --master-port {options.master_bind_port}, "
                "or wait longer with --expect-workers-max-wait"
            )
        gevent.sleep(0.2)
    return len(runner.clients.ready)


def wait_for_final_reports(aggregator: MasterAggregator, timeout_s: float) -> list[str]:
    """Wait for each live worker's report after the stop; names (and logs) the ones never sent.

    Only workers that reported before are waited for: one that never had an agent (more
    workers than agents) has nothing to send.
    """
    wait_until = time.monotonic() + timeout_s
    while True:
        pending = (set(aggregator.live_workers()) & set(aggregator.per_worker)) - aggregator.final
        if not pending or time.monotonic() >= wait_until:
            break
        gevent.sleep(0.2)
    aggregator.final_missing = pending
    late = aggregator.named(pending)
    if late:
        _log.warning(
            "agentload: no final report from %s within %.0fs of the stop: what it measured "
            "after its last report is missing from summary.json (its own files have it)",
            ", ".join(late),
            timeout_s,
        )
    return late


def _target_sampler(settings: SwarmSettings) -> TargetMetricsSampler | None:
    """The master samples the target's /metrics itself: one scraper, however many workers."""
    url = settings.observe.target_metrics_url
    if url is None:
        return None
    sampler = TargetMetricsSampler(
        url,
        interval_s=settings.observe.target_metrics_interval_s,
        socket_factory=native_socket_factory,
    )
    process_bridge().run(sampler.__aenter__(), timeout=30)
    return sampler


def run_master(settings: SwarmSettings, options: SwarmOptions) -> dict[str, Any]:
    """Run the swarm from the master; returns summary.json's content."""
    profile = settings.loaded.profile
    env = swarm_environment(settings, options.expect_workers)
    runner = create_master(env, options.master_bind_host, options.master_bind_port)
    assert isinstance(env.shape_class, ProfileShape)
    membership = SwarmMembership(runner, env.shape_class, metrics=options.metrics is not None)
    aggregator = MasterAggregator(env, options.metrics)
    files = ResultFiles(settings.out_dir, records=False)  # workers write their own
    if options.web:
        merged = options.metrics  # copy-on-write per worker: readable from the hub
        text = None if merged is None else functools.partial(generate_latest, merged)
        start_web_ui(env, options.web_host, options.web_port, aggregator.merged, text)
    # Open loop: one arrival user per worker, each at 1/N of the rate. Sent before the first
    # spawn message on the same socket, so every worker knows N (and whether to ship
    # metrics) before its engine starts; workers that join later are told as they connect.
    membership.start(wait_for_workers(runner, options))
    sampler = _target_sampler(settings)
    watcher = watch_ticks(env, options, aggregator.merged)
    t0 = time.perf_counter()
    signals: list[tuple[int, float]] = []
    started = time.monotonic()
    handlers = stop_on_signals(runner, signals)
    try:
        run_shape(runner)
        membership.stop()  # before the stop: workers leaving it are not a new share to tell
        aggregator.stop_requested_at = time.monotonic()
        runner.stop()
        duration = time.perf_counter() - t0
        wait_for_final_reports(aggregator, options.final_report_wait_s)
    finally:
        membership.stop()
        for handler in handlers:
            handler.cancel()
        if watcher is not None:
            watcher.kill()
        if sampler is not None:
            process_bridge().run(sampler.__aexit__(None, None, None), timeout=30)
    stats = aggregator.merged()
    summary = stats.summary(
        target={**aggregator.target, **settings.extra},
        profile=profile.name,
        duration_s=duration,
        generator=combine_reports(aggregator.health.values()),
    )
    summary.update(profile_sections(settings.loaded))
    if sampler is not None:
        add_server_section(summary, sampler.report())
    summary["workers"] = aggregator.workers_section(options.expect_workers)
    if (interrupted := interruption(signals, started)) is not None:
        summary["interrupted"] = interrupted
    aggregator.log_unreported_lost()
    files.write_summary(summary)
    files.close()
    if env.web_ui is not None:
        env.web_ui.stop()
    runner.quit()
    if not aggregator.per_worker:
        raise AgentloadError("no worker reported any measurement")
    return summary
