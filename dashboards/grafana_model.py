"""Dashboards described as panels of PromQL queries, and their Grafana JSON model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Query:
    """One PromQL query and its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel, described as what it shows, what a bad reading means, what to check next."""

    title: str
    shows: str
    bad: str
    check: str
    queries: Sequence[Query]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | heatmap | xychart
    width: int = 12
    height: int = 8
    stacked: bool = False
    overrides: Sequence[dict[str, Any]] = field(default_factory=tuple)

    @property
    def description(self) -> str:
        """The description Grafana shows, in the one form every panel follows."""
        return f"{self.shows} Bad: {self.bad} Next: {self.check}"


@dataclass(frozen=True)
class Dashboard:
    """One dashboard file."""

    uid: str
    title: str
    description: str
    panels: Sequence[Panel]
    target_filter: bool = False  # offer the $target (server instance) variable


_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_TARGET_QUERY = (
    'label_values({__name__=~"vllm:num_requests_running|sglang:num_running_reqs'
    '|llamacpp:requests_processing"}, instance)'
)


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": _DATASOURCE,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def _templating(dashboard: Dashboard) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        },
        _variable("profile", "Profile", "label_values(agentload_target_info, profile)"),
    ]
    if dashboard.target_filter:
        variables.append(_variable("target", "Target (server instance)", _TARGET_QUERY))
    return {"list": variables}


def _field_config(panel: Panel) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    if panel.kind == "timeseries":
        custom = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stacked else 5,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }
    elif panel.kind == "xychart":
        custom = {"show": "points", "pointSize": {"fixed": 5}}
    defaults: dict[str, Any] = {"unit": panel.unit, "custom": custom}
    if panel.kind in ("timeseries", "xychart"):
        defaults["min"] = 0
    return {"defaults": defaults, "overrides": list(panel.overrides)}


def _options(panel: Panel) -> dict[str, Any]:
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "name",
            "colorMode": "none",
            "graphMode": "none",
        }
    if panel.kind == "heatmap":
        return {
            "calculate": False,
            "yAxis": {"unit": "short"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "tooltip": {"show": True, "yHistogram": True},
        }
    if panel.kind == "xychart":
        return {
            "seriesMapping": "auto",
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "single"},
        }
    return {
        "legend": {
            "showLegend": True,
            "displayMode": "table",
            "placement": "bottom",
            "calcs": ["mean", "max", "lastNotNull"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, query in enumerate(panel.queries):
        target: dict[str, Any] = {
            "refId": chr(ord("A") + i),
            "datasource": _DATASOURCE,
            "expr": query.expr,
            "legendFormat": query.legend,
            "range": True,
            "instant": False,
        }
        if panel.kind == "heatmap":
            target["format"] = "heatmap"
        targets.append(target)
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": _field_config(panel),
        "options": _options(panel),
        "targets": targets,
    }
    if panel.kind == "xychart":
        # Both queries become columns of one table keyed by time: x is the first, y the second.
        out["transformations"] = [
            {"id": "joinByField", "options": {"byField": "Time", "mode": "inner"}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ]
    return out


def render(dashboard: Dashboard, dashboards: Sequence[Dashboard]) -> dict[str, Any]:
    """The Grafana JSON model of `dashboard` (schema 39: Grafana 10.2 and later).

    Its header links to every other one of `dashboards`, in their order.
    """
    panels, x, y, row_height = [], 0, 0, 0
    for i, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel(panel, i, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    links = [
        {
            "title": d.title,
            "type": "link",
            "url": f"/d/{d.uid}",
            "keepTime": True,
            "includeVars": True,
        }
        for d in dashboards
        if d.uid != dashboard.uid
    ]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["agentload"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": links,
        "templating": _templating(dashboard),
        "panels": panels,
    }
