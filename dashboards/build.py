"""Writes the Grafana dashboards in grafana/dashboards/ from the panel lists beside it."""

# Run `python dashboards/build.py` after editing a panel; `--check` (the tests run it) fails
# when a JSON file differs from what this script writes. The panel lists are in
# agentload_dashboards.py (with reasoning_panels.py), server_dashboards.py and
# fleet_dashboards.py, the model they are written in and its rendering to Grafana JSON in
# grafana_model.py, their PromQL in promql.py.

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agentload_dashboards import AGENT_STATE, LATENCY, OVERVIEW
from fleet_dashboards import FLEET
from grafana_model import Dashboard, render
from server_dashboards import CEILING, SERVER_DASHBOARD

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"

DASHBOARDS = (OVERVIEW, LATENCY, AGENT_STATE, SERVER_DASHBOARD, CEILING, FLEET)
FILES = {
    "agentload-overview": "overview.json",
    "agentload-latency": "latency.json",
    "agentload-agent-state": "agent-state.json",
    "agentload-server": "server.json",
    "agentload-ceiling": "ceiling.json",
    "agentload-fleet": "fleet.json",
}


def _text(dashboard: Dashboard) -> str:
    return json.dumps(render(dashboard, DASHBOARDS), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with --check, compare) every dashboard file; 1 when --check finds a change."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for dashboard in DASHBOARDS:
        path = OUT / FILES[dashboard.uid]
        text = _text(dashboard)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python dashboards/build.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
