"""The report's Replicas section: a fleet's load, latency, cache hits and state failures per
replica (summary.json `by_replica`), and the imbalance named."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from loadgen.gates.gates import format_value
from loadgen.gates.metrics import Unit
from loadgen.observe.server_replicas import SERVER_METRICS_SOURCE
from loadgen.report.html.charts import BLUE, GREEN, ORANGE, RED, seconds_format
from loadgen.report.html.svg import Axis, Bars, bar_chart

__all__ = ["replica_section"]

# The busiest replica at a quarter above its even share: the imbalance banner turns amber.
_IMBALANCED = 1.25


def _number(value: Any, unit: Unit) -> str:
    return format_value(value if isinstance(value, int | float) else None, unit)


def _cells(name: str, cells: list[str]) -> str:
    """A row's cells: the replica's name, then its figures."""
    return f"<td>{escape(name)}</td>" + "".join(f"<td>{escape(c)}</td>" for c in cells)


def _row(name: str, r: Mapping[str, Any]) -> str:
    requests = r.get("requests") or {}
    latency = r.get("latency") or {}
    ttft, e2e = latency.get("ttft_s") or {}, latency.get("e2e_s") or {}
    failures = ", ".join(f"{k} {n:,}" for k, n in (r.get("state_failures") or {}).items() if n)
    cells = [
        _number(requests.get("total"), Unit.NUMBER),
        _number(r.get("share"), Unit.RATIO),
        _number(requests.get("failed"), Unit.NUMBER),
        _number(r.get("output_tokens_per_s"), Unit.NUMBER),
        _number(ttft.get("p50"), Unit.SECONDS),
        _number(ttft.get("p95"), Unit.SECONDS),
        _number(e2e.get("p50"), Unit.SECONDS),
        _number(e2e.get("p95"), Unit.SECONDS),
        _number(r.get("cache_hit_ratio"), Unit.RATIO),
    ]
    reason = f'<td class="reason">{escape(failures or "none")}</td>'
    return f"<tr>{_cells(name, cells)}{reason}</tr>"


def _server_row(name: str, r: Mapping[str, Any]) -> str:
    cells = [
        _number((r.get("requests") or {}).get("total"), Unit.NUMBER),
        _number(r.get("share"), Unit.RATIO),
        _number(r.get("output_tokens_per_s"), Unit.NUMBER),
        _number(r.get("cache_hit_ratio"), Unit.RATIO),
        _number(r.get("kv_cache_usage_peak"), Unit.RATIO),
        _number(r.get("running_peak"), Unit.NUMBER),
        _number(r.get("waiting_peak"), Unit.NUMBER),
    ]
    return f"<tr>{_cells(name, cells)}</tr>"


def _charts(by_replica: Mapping[str, Mapping[str, Any]], server: bool) -> list[str]:
    names = list(by_replica)
    requests = [r.get("requests") or {} for r in by_replica.values()]
    if server:
        bars = [Bars("finished", [float(q.get("total") or 0) for q in requests], GREEN)]
    else:
        bars = [
            Bars("ok", [float(q.get("ok") or 0) for q in requests], GREEN),
            Bars("failed", [float(q.get("failed") or 0) for q in requests], RED),
        ]
    load = bar_chart(
        "requests-by-replica",
        "Requests per replica",
        names,
        bars,
        Axis("requests", lambda v: f"{v:,.0f}"),
        x_label="replica",
    )
    ratios = [r.get("cache_hit_ratio") for r in by_replica.values()]
    cache = bar_chart(
        "cache-hits-by-replica",
        "Prefix-cache hit ratio per replica",
        names,
        [
            Bars(
                "server's hits / queries" if server else "cached / prompt tokens",
                [v if isinstance(v, float) else None for v in ratios],
            )
        ],
        Axis("hit ratio", lambda v: f"{v:.0%}", low=0.0, high=1.0),
        x_label="replica",
    )
    if server:
        return [load, cache]  # the servers' counters carry no latency per request
    ttft = [((r.get("latency") or {}).get("ttft_s") or {}) for r in by_replica.values()]
    p50 = [q.get("p50") for q in ttft]
    p95 = [q.get("p95") for q in ttft]
    values = [v for v in (*p50, *p95) if isinstance(v, float)]
    latency = bar_chart(
        "ttft-by-replica",
        "TTFT per replica",
        names,
        [Bars("p50", p50, BLUE), Bars("p95", p95, ORANGE)],
        Axis("TTFT", seconds_format(max(values, default=None))),
        x_label="replica",
    )
    return [load, cache, *([latency] if values else [])]


def replica_section(summary: Mapping[str, Any]) -> str:
    """The Replicas section; empty when the run saw a single target naming no replica."""
    given = summary.get("by_replica")
    if not isinstance(given, Mapping):
        return ""
    by_replica = {str(name): r for name, r in given.items() if isinstance(r, Mapping)}
    if not by_replica:
        return ""
    target = summary.get("target") or {}
    server = summary.get("by_replica_source") == SERVER_METRICS_SOURCE
    if server:
        label = (summary.get("server") or {}).get("replica_label") or "replica"
        note = (
            f"{len(by_replica)} replicas, from the server's own metrics (their {label} "
            "label): no response named a replica. Requests are those each replica finished "
            "over the run, cache hits its prefix-cache hits over queries, and the peaks its "
            "highest sample; the server's counters give no latency per replica."
        )
    else:
        how = (
            f"balanced by agentload ({target['balance']})"
            if target.get("balance")
            else "named by the responses' replica header"
        )
        note = (
            f"{len(by_replica)} replicas, {how}. A request counts for the replica a response "
            "header named, else the --target it was sent to; cache hits are cached prompt "
            "tokens over prompt tokens, as each replica reported them."
        )
    imbalance = summary.get("replica_imbalance")
    banner = ""
    if isinstance(imbalance, Mapping) and imbalance.get("text"):
        over = imbalance.get("max_over_mean")
        style = "warn" if isinstance(over, int | float) and over >= _IMBALANCED else "none"
        banner = f'<div class="banner {style}">Imbalance: {escape(str(imbalance["text"]))}.</div>'
    if server:
        head = (
            "<tr><th>replica</th><th>requests finished</th><th>share</th><th>output tok/s</th>"
            "<th>cache hits</th><th>KV peak</th><th>running peak</th><th>waiting peak</th></tr>"
        )
        rows = "".join(_server_row(name, r) for name, r in by_replica.items())
    else:
        head = (
            "<tr><th>replica</th><th>requests</th><th>share</th><th>failed</th>"
            "<th>output tok/s</th><th>TTFT p50</th><th>TTFT p95</th><th>e2e p50</th>"
            '<th>e2e p95</th><th>cache hits</th><th class="reason">state failures</th></tr>'
        )
        rows = "".join(_row(name, r) for name, r in by_replica.items())
    figures = "".join(f"<figure>{svg}</figure>" for svg in _charts(by_replica, server))
    return (
        f'<section><h2>Replicas</h2><p class="note">{escape(note)}</p>{banner}'
        f'<div class="grid">{figures}</div><table>{head}{rows}</table></section>'
    )
