"""Locust's web UI for a swarm, with agentload's own views and endpoints added."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from locust.env import Environment
from prometheus_client import generate_latest
from prometheus_client.registry import Collector

from loadgen.observe import RunStats

__all__ = ["start_web_ui"]

# The classic text format: every Prometheus 2.x understands it.
_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def start_web_ui(
    env: Environment,
    host: str,
    port: int,
    stats: Callable[[], RunStats],
    registry: Collector | None = None,
) -> None:
    """Serve Locust's web UI, plus /agentload/stats and (given a registry) /metrics."""
    # Locust's web UI re-parses sys.argv with its own parser to list "extra" options, and
    # agentload's flags (--web, --out...) are ambiguous or unknown there; ours are parsed.
    del sys.argv[1:]
    web_ui = env.create_web_ui(host, port)
    if web_ui is None or web_ui.app is None:
        return

    def agentload_stats() -> Any:
        from flask import jsonify

        current = stats()
        return jsonify(
            {
                "sessions": current.sessions.to_dict(),
                "requests": {"ok": current.requests_ok, "failed": current.requests_failed},
                "state_failures": current.failures,
                "agents": {name: a.to_dict() for name, a in current.agents.items()},
            }
        )

    web_ui.app.add_url_rule("/agentload/stats", "agentload_stats", agentload_stats)
    if registry is not None:
        served = registry

        def metrics() -> Any:
            from flask import Response

            return Response(generate_latest(served), content_type=_METRICS_CONTENT_TYPE)

        web_ui.app.add_url_rule("/metrics", "agentload_metrics", metrics)
