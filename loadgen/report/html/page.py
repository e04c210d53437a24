"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no network)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from loadgen import __version__
from loadgen.errors import UsageError
from loadgen.gates.gates import format_value
from loadgen.gates.metrics import METRICS, Unit
from loadgen.observe.result_files import CEILING_FILE
from loadgen.observe.summary_text import (
    ENGINE_NAMES,
    SATURATED_RESOURCES,
    server_verdict,
    workers_missing,
    workers_reported,
)
from loadgen.observe.target_metrics import KV_CACHE_BINDING, KV_CACHE_SATURATED
from loadgen.report.html.ceiling import ceiling_section, parse_ceiling
from loadgen.report.html.charts import Section, record_sections
from loadgen.report.html.reasoning import (
    REASONING_TITLE,
    group_cells,
    group_head,
    reasoning_cards,
    reasoning_table,
    saw_reasoning,
    with_reasoning,
)
from loadgen.report.html.replicas import replica_section
from loadgen.report.results import RunResults, load_results
from loadgen.report.run_data import Group, ReportData, gather

__all__ = ["REPORT_FILE", "render_report", "write_report", "write_report_of"]

REPORT_FILE = "report.html"

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f5f7fa;color:#1f2933;
 font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}
main{max-width:1340px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 4px;padding-bottom:6px;border-bottom:1px solid #d9dee4}
.sub{color:#52606d;margin:0}
.note{color:#52606d;margin:6px 0 12px;max-width:900px}
.banner{margin:18px 0 0;padding:12px 16px;border-radius:8px;font-weight:600}
.banner.pass{background:#e3f4e1;color:#1e5b1a;border:1px solid #a8d5a2}
.banner.fail{background:#fde8e8;color:#8a1c1c;border:1px solid #f1a7a7}
.banner.none{background:#eef1f5;color:#3e4c59;border:1px solid #d9dee4}
.banner.warn{background:#fff6dd;color:#7a5800;border:1px solid #f0d58a}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px;
 margin-top:18px}
.card{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:12px 14px}
.card .label{color:#52606d;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:22px;font-weight:650;margin-top:2px}
.card .detail{color:#52606d;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:16px}
.tables{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:0 16px;
 align-items:start}
.tables table{width:100%}
figure{margin:0;background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:8px}
figure svg{width:100%;height:auto;display:block}
table{border-collapse:collapse;background:#fff;margin:12px 0;font-size:13px;
 border:1px solid #e4e7eb}
th,td{padding:5px 8px;white-space:nowrap;border-bottom:1px solid #eef1f5;text-align:right}
th{background:#f0f3f7;font-weight:600;color:#3e4c59}
th:first-child,td:first-child,th.reason{text-align:left}
td.pass{color:#1e7b17;font-weight:600}td.fail{color:#c0262d;font-weight:600}
td.reason{text-align:left;color:#52606d;white-space:normal}
footer{margin-top:40px;color:#7b8794;font-size:12px}
"""


def _seconds(value: Any) -> str:
    return format_value(value if isinstance(value, int | float) else None, Unit.SECONDS)


def _card(label: str, value: str, detail: str = "") -> str:
    extra = f'<div class="detail">{escape(detail)}</div>' if detail else ""
    return (
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div>{extra}</div>'
    )


def _cards(s: Mapping[str, Any]) -> str:
    sessions, requests = s.get("sessions") or {}, s.get("requests") or {}
    thr, lat = s.get("throughput") or {}, s.get("latency") or {}
    failures = sum((s.get("state_failures") or {}).values())
    recoveries = sum((s.get("recoveries") or {}).values())

    def ratio(name: str) -> str:
        return format_value(METRICS[name].read(s), Unit.RATIO)

    def rate(name: str) -> str:
        value = thr.get(name)
        return "n/a" if value is None else f"{value:,.1f}"

    def q(name: str, *stats: str) -> str:
        return " · ".join(f"{st} {_seconds((lat.get(name) or {}).get(st))}" for st in stats)

    ttft, itl, e2e = lat.get("ttft_s") or {}, lat.get("itl_s") or {}, lat.get("e2e_s") or {}
    running = sessions.get("running_at_end") or {}
    still = f" · {running['count']:,} still running at the end" if running.get("count") else ""
    cards = [
        _card(
            "sessions completed",
            f"{sessions.get('completed', 0):,}",
            f"{sessions.get('failed', 0):,} failed · {sessions.get('aborted', 0):,} aborted"
            f"{still} · success {ratio('session_success_rate')}",
        ),
        _card(
            "requests",
            f"{requests.get('total', 0):,}",
            f"{requests.get('failed', 0):,} failed · error rate {ratio('error_rate')}",
        ),
        _card(
            "output tokens/s",
            rate("output_tokens_per_s"),
            f"{rate('requests_per_s')} req/s · {rate('sessions_per_min')} sessions/min",
        ),
        _card("TTFT p95", _seconds(ttft.get("p95")), q("ttft_s", "p50", "p99")),
        _card("ITL p99", _seconds(itl.get("p99")), q("itl_s", "p50", "p95")),
        _card("end-to-end p95", _seconds(e2e.get("p95")), q("e2e_s", "p50", "p99")),
        _card("prefix cache hits", ratio("cache_hit_ratio"), "cached / prompt tokens"),
        _card("state failures", f"{failures:,}", f"{recoveries:,} recovered"),
    ]
    # A reasoning model's cards go beside their counterparts: answer tokens/s after output
    # tokens/s, TTFAT after TTFT.
    for after, extra in reasoning_cards(s).items():
        at = next((i for i, c in enumerate(cards) if f">{escape(after)}<" in c), len(cards)) + 1
        cards[at:at] = [_card(*card) for card in extra]
    return f'<div class="cards">{"".join(cards)}</div>'


def _gates(s: Mapping[str, Any]) -> str:
    gates = s.get("gates")
    if not isinstance(gates, list) or not gates:
        return '<div class="banner none">No gates were set for this run.</div>'
    failed = [g for g in gates if g.get("verdict") != "pass"]
    if failed:
        banner = f'<div class="banner fail">{len(failed)} of {len(gates)} gates failed</div>'
    else:
        banner = f'<div class="banner pass">All {len(gates)} gates passed</div>'
    rows = []
    for g in gates:
        metric = METRICS.get(str(g.get("metric")))
        unit = metric.unit if metric else Unit.NUMBER
        verdict = "pass" if g.get("verdict") == "pass" else "fail"
        rows.append(
            f"<tr><td>{escape(str(g.get('gate')))}</td>"
            f"<td>{escape(format_value(g.get('value'), unit))}</td>"
            f'<td class="{verdict}">{verdict.upper()}</td>'
            f'<td class="reason">{escape(str(g.get("reason", "")))}</td></tr>'
        )
    head = '<tr><th>gate</th><th>value</th><th>verdict</th><th class="reason">why</th></tr>'
    return f"{banner}<table>{head}{''.join(rows)}</table>"


def _warnings(s: Mapping[str, Any]) -> str:
    banners = []
    if s.get("run_failed"):
        banners.append(f'<div class="banner fail">The run failed: {escape(s["run_failed"])}.</div>')
    generator = s.get("generator") or {}
    if generator.get("saturated"):
        reasons = "; ".join(generator.get("reasons") or []) or "see summary.json"
        banners.append(
            f'<div class="banner warn">The load generator was saturated ({escape(reasons)}): '
            "latencies include its own delays. Add workers or CPU.</div>"
        )
    if incomplete := s.get("results_incomplete"):
        banners.append(
            f'<div class="banner warn">Results incomplete: {escape(str(incomplete))}. The '
            "headline figures count the whole run; the charts and tables drawn from the record "
            "files stop early.</div>"
        )
    workers = s.get("workers")
    if isinstance(workers, Mapping) and (missing := workers_missing(workers)) is not None:
        banners.append(
            f'<div class="banner warn">Incomplete swarm: {escape(missing)} from every figure of '
            "this report.</div>"
        )
    return "".join(banners)


def _workers_reported(s: Mapping[str, Any]) -> str:
    workers = s.get("workers")
    if not isinstance(workers, Mapping):
        return ""
    said = f" · {workers_reported(workers, noun='workers ')}"
    lost = workers.get("lost") or []
    if lost:
        # "2 of 2 reported" alone reads as complete beside the banner saying it is not.
        said += f", {len(lost)} lost"
    return said


# What each onset in summary["server"]["saturation_onset_s"] means, as target_metrics decides it.
_SATURATION_MEANINGS = {
    "kv_cache": f"KV-cache usage reached {KV_CACHE_SATURATED:.0%}, or requests kept waiting "
    f"while usage was at least {KV_CACHE_BINDING:.0%} (waiting for blocks, not batch slots)",
    "preemptions": "the server began preempting (SGLang: retracting) running requests to free "
    "KV blocks; they are recomputed later",
    "queue": "requests kept waiting for a batch slot in consecutive samples",
}


def _onset_table(server: Mapping[str, Any]) -> str:
    onsets, first = server.get("saturation_onset_s") or {}, server.get("saturated_first")
    rows = []
    for name, meaning in _SATURATION_MEANINGS.items():
        at = onsets.get(name)
        if isinstance(at, int | float):
            cell = f'<td class="fail">{at:.1f} s{" · first" if name == first else ""}</td>'
        else:
            cell = '<td class="pass">never</td>'
        rows.append(
            f"<tr><td>{escape(SATURATED_RESOURCES[name])}</td>{cell}"
            f'<td class="reason">{escape(meaning)}</td></tr>'
        )
    head = '<tr><th>resource</th><th>saturated at</th><th class="reason">when it counts</th></tr>'
    return f"<table>{head}{''.join(rows)}</table>"


def _server(s: Mapping[str, Any]) -> str:
    """The Server section: what the target ran out of first, and its peaks (or why not read)."""
    server = s.get("server")
    if not isinstance(server, Mapping):
        return ""
    verdict = server_verdict(server)
    if not server.get("available"):
        return (
            '<section><h2>Server</h2><div class="banner none">The target\'s metrics were '
            f"requested (--scrape-target-metrics) but not read: {escape(verdict)}.</div></section>"
        )
    engine = str(ENGINE_NAMES.get(str(server.get("engine")), server.get("engine") or "target"))
    style = "none" if server.get("saturated_first") is None else "warn"
    errors = int(server.get("scrape_errors") or 0)
    note = (
        f"The target's own metrics, {int(server.get('samples') or 0):,} samples from "
        f"{server.get('metrics_url')} during the run ({errors:,} failed scrapes); times count "
        "from the first sample. Counters include other clients' traffic on a shared server."
    )

    def figure(name: str, unit: Unit) -> str:
        value = server.get(name)
        return format_value(value if isinstance(value, int | float) else None, unit)

    cards = [
        _card("KV cache peak", figure("kv_cache_usage_peak", Unit.RATIO), "the fullest replica"),
        _card(
            "waiting peak",
            figure("waiting_peak", Unit.NUMBER),
            f"requests queued · running peak {figure('running_peak', Unit.NUMBER)}",
        ),
        _card("preemptions", figure("preemptions", Unit.NUMBER), "over the run"),
        _card(
            "prefix cache hits (server)",
            figure("prefix_cache_hit_ratio", Unit.RATIO),
            "the server's own count, over the run",
        ),
    ]
    if server.get("generation_tokens") is not None:
        note += (
            f" It counted {figure('prompt_tokens', Unit.NUMBER)} prompt and "
            f"{figure('generation_tokens', Unit.NUMBER)} generation tokens."
        )
    return (
        f'<section><h2>Server</h2><p class="note">{escape(note)}</p>'
        f'<div class="banner {style}">{escape(engine)}: {escape(verdict)}.</div>'
        f'<div class="cards">{"".join(cards)}</div>{_onset_table(server)}</section>'
    )


def _group_table(title: str, groups: Mapping[str, Group], reasoning: bool = False) -> str:
    if not groups:
        return ""
    head = (
        f"<tr><th>{escape(title)}</th><th>requests</th><th>failed</th><th>TTFT p50</th>"
        "<th>TTFT p95</th><th>TTFT p99</th><th>e2e p50</th><th>e2e p95</th>"
        f"{group_head() if reasoning else ''}</tr>"
    )
    rows = [
        f"<tr><td>{escape(name)}</td><td>{g.ok + g.failed:,}</td><td>{g.failed:,}</td>"
        + "".join(
            f"<td>{_seconds(h.percentile(q))}</td>"
            for h, q in ((g.ttft, 50), (g.ttft, 95), (g.ttft, 99), (g.e2e, 50), (g.e2e, 95))
        )
        + (group_cells(g) if reasoning else "")
        + "</tr>"
        for name, g in groups.items()
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _session_row(name: str, sessions: Mapping[str, Any], durations: Mapping[str, Any]) -> str:
    running = sessions.get("running_at_end") or {}
    older = running.get("older_than_finished_p90")
    counted = (running.get("session_s") or {}).get("p90")
    if counted is None and running.get("count"):
        # Kaplan-Meier puts it beyond every session seen: it is known to exceed that, no more.
        shown = f"> {_seconds((running.get('session_s') or {}).get('max'))}"
    else:
        shown = _seconds(counted if running.get("count") else durations.get("p90"))
    cells = [
        f"{int(sessions.get('completed') or 0):,}",
        *(_seconds(durations.get(k)) for k in ("p50", "p90", "max")),
        f"{int(running.get('count') or 0):,}",
        *(_seconds(running.get(k)) for k in ("age_p50_s", "age_p90_s", "age_max_s")),
        "n/a" if older is None else f"{int(older):,}",
        shown,
    ]
    return f"<tr><td>{escape(name)}</td>{''.join(f'<td>{escape(c)}</td>' for c in cells)}</tr>"


def _session_table(s: Mapping[str, Any]) -> str:
    """Session durations next to the sessions the run's end cut off, whole run and by agent."""
    sessions = s.get("sessions") or {}
    if not isinstance(sessions.get("running_at_end"), Mapping):
        return ""  # a summary from before sessions.running_at_end
    head = (
        "<tr><th>sessions</th><th>completed</th><th>duration p50</th><th>p90</th><th>max</th>"
        "<th>still running at the end</th><th>age p50</th><th>p90</th><th>max</th>"
        "<th>older than the finished p90</th><th>p90 counting those running</th></tr>"
    )
    rows = [_session_row("all", sessions, (s.get("latency") or {}).get("session_s") or {})]
    for name, agent in (s.get("by_agent") or {}).items():
        if isinstance(agent, Mapping):
            durations = (agent.get("latency") or {}).get("session_s") or {}
            rows.append(_session_row(str(name), agent.get("sessions") or {}, durations))
    note = (
        "Durations are of completed sessions. A session still running when the run ended "
        "lasted at least its age: when the run is not much longer than its sessions, the "
        "finished ones are the short ones, and their percentiles flatter. The last column "
        "counts the running sessions at their ages (Kaplan-Meier), as session gates do; "
        "“> X” means beyond every session seen."
    )
    return f'<p class="note">{escape(note)}</p><table>{head}{"".join(rows)}</table>'


def _failure_table(s: Mapping[str, Any]) -> str:
    failures, recoveries = s.get("state_failures") or {}, s.get("recoveries") or {}
    kinds = [k for k in failures if failures.get(k) or recoveries.get(k)]
    if not kinds:
        return '<p class="note">No state failures in this run.</p>'
    reasons = s.get("failure_reasons") or {}

    def why(kind: str) -> str:
        # The first distinct messages, each with how often it came: the server's own words.
        lines = []
        for r in reasons.get(kind) or ():
            count = int(r.get("count", 0))
            message = escape(str(r.get("message", "")))
            lines.append(f'{message} <span class="note">×{count:,}</span>')
        return "<br>".join(lines)

    rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{failures.get(k, 0):,}</td>"
        f'<td>{recoveries.get(k, 0):,}</td><td class="reason">{why(k)}</td></tr>'
        for k in kinds
    )
    head = '<tr><th>kind</th><th>failures</th><th>recovered</th><th class="reason">why</th></tr>'
    return f"<table>{head}{rows}</table>"


def _section(section: Section, extra: str = "") -> str:
    note = f'<p class="note">{escape(section.note)}</p>' if section.note else ""
    figures = "".join(f"<figure>{svg}</figure>" for svg in section.charts)
    head = f"<h2>{escape(section.title)}</h2>{note}"
    return f'<section>{head}<div class="grid">{figures}</div>{extra}</section>'


def _started(data: Mapping[str, Any]) -> str:
    start = data.get("started_unix")
    if not isinstance(start, int | float):
        return ""
    return dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_report(results: RunResults, data: ReportData | None = None) -> str:
    """The whole report page for a results folder."""
    s = results.summary
    data = data or gather(results)
    target = s.get("target") or {}
    where = str(target.get("url", "?"))
    if isinstance(replicas := target.get("replicas"), Mapping) and replicas:
        where = f"{len(replicas)} replicas: {', '.join(map(str, replicas))}"
    where += f" ({target['model']})" if target.get("model") else ""
    first = next(iter(results.steps()), {})
    when = _started(first)
    subtitle = f"target {where} · {float(s.get('duration_s') or 0):.1f} s measured"
    subtitle += _workers_reported(s)
    body = [
        f"<header><h1>agentload report · {escape(str(s.get('profile', '?')))}</h1>"
        f'<p class="sub">{escape(subtitle)}{" · started " + escape(when) if when else ""}</p>'
        "</header>",
        _gates(s),
        _warnings(s),
        _cards(s),
        _server(s),
        replica_section(s),
    ]
    sections = with_reasoning(record_sections(s, data), s, data)
    reasoned = saw_reasoning(s)
    for section in sections:
        extra = ""
        if section.title.startswith("Latency by agent"):
            tables = _group_table("agent", data.by_agent, reasoned)
            tables += _group_table("step kind", data.by_kind, reasoned)
            # With TTFAT columns the tables are too wide to sit side by side: one above the other.
            wide = ' style="grid-template-columns:1fr"' if reasoned else ""
            extra = f'<div class="tables"{wide}>{tables}</div>'
        if section.title == REASONING_TITLE:
            extra = reasoning_table(s)
        if section.title == "State failures":
            extra = _failure_table(s)
        if section.title == "Sessions":
            extra = _session_table(s)
        body.append(_section(section, extra))
    if not any(sec.title == "State failures" for sec in sections):
        body.append(f"<section><h2>State failures</h2>{_failure_table(s)}</section>")
    ceiling = parse_ceiling(data.ceiling, CEILING_FILE) if data.ceiling is not None else None
    if ceiling is not None and ceiling.levels:  # a search that tried nothing draws nothing
        body.append(_section(ceiling_section(ceiling)))
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body.append(
        f"<footer>agentload {escape(__version__)} · {escape(str(s.get('schema')))} · "
        f"{escape(str(results.path))} · generated {generated}</footer>"
    )
    title = f"agentload report · {s.get('profile', '')}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def write_report(
    where: str | os.PathLike[str], html_path: str | os.PathLike[str] | None = None
) -> Path:
    """Render the report of results folder `where` to `html_path` (default DIR/report.html)."""
    return write_report_of(load_results(where), html_path)


def write_report_of(results: RunResults, html_path: str | os.PathLike[str] | None = None) -> Path:
    """Render the report of already loaded `results` (default: DIR/report.html)."""
    out = Path(html_path) if html_path is not None else results.path / REPORT_FILE
    page = render_report(results)
    try:
        if out.parent != Path():
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    return out
