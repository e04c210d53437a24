"""Locust's web UI for a swarm, with agentload's own views and endpoints added."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from locust.env import Environment
from locust.web import WebUI

from loadgen.errors import UsageError
from loadgen.observe import RunStats
from loadgen.orchestration.web_ui_tables import (
    AGENT_COLUMNS,
    AGENTS_TAB,
    AGENTS_TITLE,
    STATE_COLUMNS,
    STATE_TAB,
    STATE_TITLE,
    agent_rows,
    state_rows,
)

__all__ = ["start_web_ui"]

# The classic text format: every Prometheus 2.x understands it.
_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_AGENTS_CSV_PATH = "/agentload/agents.csv"
# Locust registers its stats view as request_stats in its "locust" blueprint; matching the
# endpoint rather than the path keeps working under Locust's --web-base-path.
_STATS_ENDPOINT = "locust.request_stats"


def _structure(columns: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"key": key, "title": title} for key, title in columns]


def _extend_ui(template_args: dict[str, Any]) -> None:
    """Declare agentload's tabs, their tables and the CSV link to the UI's page.

    Locust merges these into the page's window.templateArgs on every GET / and keeps keys
    it does not set itself, so setting them once is enough.
    """
    template_args["extended_tabs"] = [
        {"key": AGENTS_TAB, "title": AGENTS_TITLE},
        {"key": STATE_TAB, "title": STATE_TITLE},
    ]
    template_args["extended_tables"] = [
        {"key": AGENTS_TAB, "structure": _structure(AGENT_COLUMNS)},
        {"key": STATE_TAB, "structure": _structure(STATE_COLUMNS)},
    ]
    template_args["extended_csv_files"] = [
        {"href": _AGENTS_CSV_PATH, "title": "Download agents CSV (agentload)"}
    ]


def _agents_csv(current: RunStats) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([title for _, title in AGENT_COLUMNS])
    for row in agent_rows(current):
        writer.writerow(["" if row[key] is None else row[key] for key, _ in AGENT_COLUMNS])
    return out.getvalue()


def start_web_ui(
    env: Environment,
    host: str,
    port: int,
    stats: Callable[[], RunStats],
    metrics_text: Callable[[], bytes] | None = None,
) -> None:
    """Serve Locust's web UI with "Agents" and "Agent state" tabs added; print its URL.

    The address is bound before this returns: a busy port is a UsageError raised here, where
    Locust's own start would only log it from a greenlet and leave the run without a UI.
    Also serves /agentload/stats (JSON), /agentload/agents.csv and, given `metrics_text`
    (the exposition, rendered where the metrics are written), /metrics. `stats` returns the
    run's statistics so far (on a master, the merge of the workers' reports); it is called
    on every poll of the UI.
    """
    # Locust's web UI re-parses sys.argv with its own parser to list "extra" options, and
    # agentload's flags (--web, --out...) are ambiguous or unknown there; ours are parsed.
    del sys.argv[1:]
    web_ui = env.create_web_ui(host, port, delayed_start=True)
    if web_ui is None or web_ui.app is None:
        return
    from flask import Response, jsonify, request

    _extend_ui(web_ui.template_args)

    def add_extended_stats(response: Response) -> Response:
        # The UI reads the tabs' rows from the stats JSON it already polls; Locust offers no
        # other hook, so the reply is rewritten here. Locust caches that reply for a moment,
        # so this may see it twice: the key is replaced, never appended to.
        if request.endpoint != _STATS_ENDPOINT or response.status_code != 200:
            return response
        report = response.get_json(silent=True)
        if not isinstance(report, dict):
            return response
        current = stats()
        report["extended_stats"] = [
            {"key": AGENTS_TAB, "data": agent_rows(current)},
            {"key": STATE_TAB, "data": state_rows(current)},
        ]
        response.set_data(json.dumps(report))
        return response

    web_ui.app.after_request(add_extended_stats)

    def agentload_stats() -> Any:
        current = stats()
        return jsonify(
            {
                "sessions": current.sessions.to_dict(),
                "requests": {"ok": current.requests_ok, "failed": current.requests_failed},
                "state_failures": current.failures,
                "agents": {name: a.to_dict() for name, a in current.agents.items()},
            }
        )

    def agents_csv() -> Response:
        return Response(
            _agents_csv(stats()),
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": "attachment; filename=agentload_agents.csv"},
        )

    web_ui.app.add_url_rule("/agentload/stats", "agentload_stats", agentload_stats)
    web_ui.app.add_url_rule(_AGENTS_CSV_PATH, "agentload_agents_csv", agents_csv)
    if metrics_text is not None:
        render = metrics_text

        def metrics() -> Any:
            return Response(render(), content_type=_METRICS_CONTENT_TYPE)

        web_ui.app.add_url_rule("/metrics", "agentload_metrics", metrics)
    _serve(web_ui)


def _serve(web_ui: WebUI) -> None:
    """Bind the UI's address now (UsageError if it cannot be), serve it, and print its URL.

    What Locust's WebUI.start() does, except that the socket is bound before returning
    rather than in the greenlet that serves it.
    """
    import gevent
    from gevent import pywsgi

    server = pywsgi.WSGIServer(
        (web_ui.host, web_ui.port), web_ui.app, log=None, error_log=logging.getLogger("locust.web")
    )
    try:
        server.start()  # binds and accepts now, not in a greenlet that could only log a failure
    except OSError as exc:  # taken since `agentload run` checked it (check_web_address)
        raise UsageError(
            f"--web-port {web_ui.port}: cannot serve the web UI on {web_ui.host or '0.0.0.0'} "
            f"({exc.strerror or exc}); pick another port, or --web-port 0 for a free one"
        ) from exc
    web_ui.server = server
    web_ui.port = server.socket.getsockname()[1]  # --web-port 0: the one picked
    web_ui.greenlet = gevent.spawn(server.serve_forever)  # waits for WebUI.stop()
    host = web_ui.host or "0.0.0.0"
    shown = f"[{host}]" if ":" in host else host
    print(f"agentload run: web UI on http://{shown}:{web_ui.port}", file=sys.stderr, flush=True)
