"""A routing study's verdict: one row per router, as a printed table, JSON and HTML."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from loadgen.gates import read_metric
from loadgen.report.html.svg import Axis, Bars, bar_chart

__all__ = ["STUDY_FILE", "STUDY_REPORT", "format_study", "study_rows", "write_study_report"]

STUDY_FILE = "route_study.json"
STUDY_REPORT = "route_study.html"


def _hit_ratio(summary: Mapping[str, Any]) -> float | None:
    tokens = summary.get("tokens") or {}
    prompt = tokens.get("prompt") or 0
    return (tokens.get("cached") or 0) / prompt if prompt else None


def study_rows(results: Sequence[Mapping[str, Any]], speedup: float = 1.0) -> list[dict[str, Any]]:
    """The figures each router is compared on; at a speedup, brought back to modelled time
    (the runs measured wall time against a fleet whose clock ran `speedup` times faster)."""

    def per_modelled(rate: float | None) -> float | None:
        return None if rate is None else rate / speedup

    rows = []
    for result in results:
        s = result["summary"]
        failures = {k: n for k, n in (s.get("state_failures") or {}).items() if n}
        ceiling = result.get("ceiling")
        mark = ceiling.get("ceiling") if ceiling else None
        unit = None if ceiling is None else ceiling.get("load_unit")
        load = None if mark is None else mark["load"]
        if load is not None and "/" in str(unit):  # an open loop's arrival rate
            load = per_modelled(load)
        ttft = read_metric(s, "ttft_p95")
        rows.append({
            "router": result["name"],
            "output_tokens_per_s": per_modelled(read_metric(s, "output_tokens_per_s")),
            "ttft_p95_s": None if ttft is None else ttft * speedup,
            "goodput": read_metric(s, "goodput_ratio"),
            "session_success": read_metric(s, "session_success_rate"),
            "cache_hit_ratio": _hit_ratio(s),
            "state_failures": failures,
            "ceiling": load,
            "ceiling_unit": unit,
            # At the ceiling's level, over its measured window (the run's is cache_hit_ratio).
            "ceiling_cache_hit_ratio": None if mark is None else mark.get("cache_hit_ratio"),
            "lost_share": result.get("lost_share"),
        })  # fmt: skip
    return rows


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_study(rows: Sequence[Mapping[str, Any]]) -> str:
    """The comparison as a terminal table, best hit ratio first as measured."""
    head = (f"{'router':16} {'out tok/s':>10} {'ttft p95':>9} {'goodput':>8} {'success':>8} "
            f"{'cache hit':>9} {'ceiling':>8}  state failures")  # fmt: skip
    lines = [head]
    for r in rows:
        failures = ", ".join(f"{k} {n}" for k, n in r["state_failures"].items()) or "none"
        ttft = "-" if r["ttft_p95_s"] is None else f"{r['ttft_p95_s'] * 1000:.0f}ms"
        lines.append(
            f"{r['router']:16} {_num(r['output_tokens_per_s'], '.0f'):>10} {ttft:>9} "
            f"{_num(r['goodput'], '.0%'):>8} {_num(r['session_success'], '.0%'):>8} "
            f"{_num(r['cache_hit_ratio'], '.2f'):>9} {_num(r['ceiling'], 'g'):>8}  {failures}"
        )
    return "\n".join(lines)


def write_study_report(rows: Sequence[Mapping[str, Any]], profile: str, path: Path) -> Path:
    """A self-contained HTML page: the table and a chart per compared figure."""
    names = [str(r["router"]) for r in rows]

    def chart(key: str, title: str, axis: Axis) -> str:
        values = [r[key] for r in rows]
        if all(v is None for v in values):
            return ""
        return bar_chart(key, title, names, [Bars(title, values)], axis)

    charts = [
        chart("output_tokens_per_s", "Output tokens/s", Axis("tokens/s")),
        chart("cache_hit_ratio", "Prefix-cache hit ratio", Axis("cached / prompt tokens")),
        chart("ttft_p95_s", "TTFT p95", Axis("seconds")),
        chart("ceiling", "Ceiling", Axis(str(rows[0].get("ceiling_unit") or "load"))),
    ]
    table = escape(format_study(rows))
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Routing study: "
        f"{escape(profile)}</title><style>body{{font-family:system-ui,sans-serif;margin:2em;"
        "color:#1f2933}}pre{{background:#f5f7fa;padding:1em}}svg{{margin:1em 0}}</style>"
        f"</head><body><h1>Routing study: {escape(profile)}</h1><p>generated {generated}; "
        "the same seeded workload against each router</p>"
        f"<pre>{table}</pre>{''.join(charts)}</body></html>\n",
        encoding="utf-8",
    )
    return path
