"""A short human-readable rendering of a summary.json document, for the terminal."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from loadgen.observe.server_replicas import SERVER_METRICS_SOURCE

__all__ = [
    "ENGINE_NAMES",
    "SATURATED_RESOURCES",
    "format_summary",
    "replica_lines",
    "running_at_end_text",
    "server_verdict",
    "workers_missing",
    "workers_reported",
]

_MISSING = "n/a"
_INDENT = " " * 16  # continuation lines line up with the figures above them

# summary["server"]["saturated_first"] and its onsets, as people call them.
SATURATED_RESOURCES = {"kv_cache": "KV cache", "preemptions": "preemptions", "queue": "queue"}
ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang", "llamacpp": "llama.cpp"}


def _seconds(value: float | None) -> str:
    """A latency with a unit that keeps three significant figures readable."""
    if value is None:
        return _MISSING
    if value < 1.0:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def _age(value: Any) -> str:
    """A session's length: seconds under two minutes, minutes under two hours, else hours."""
    if not isinstance(value, int | float) or value < 120:
        return _seconds(value)
    return f"{value / 60:.3g} min" if value < 7200 else f"{value / 3600:.3g} h"


def running_at_end_text(sessions: Mapping[str, Any], latency: Mapping[str, Any]) -> str | None:
    """'still running at the end: 12, ages p50 4.1 min, max 11.8 min; 9 older than the
    finished sessions' p90 (7.2 min), the oldest longer than every finished session', from
    summary.json's `sessions` and `latency.session_s`; None when every session had ended."""
    running = sessions.get("running_at_end")
    if not isinstance(running, Mapping) or not running.get("count"):
        return None
    oldest = running.get("age_max_s")
    text = (
        f"still running at the end: {int(running['count']):,}, ages p50 "
        f"{_age(running.get('age_p50_s'))}, max {_age(oldest)}; "
    )
    longest = latency.get("max")
    if not isinstance(longest, int | float):
        return text + "no session completed"
    text += (
        f"{int(running.get('older_than_finished_p90') or 0):,} older than the finished "
        f"sessions' p90 ({_age(latency.get('p90'))})"
    )
    if isinstance(oldest, int | float) and oldest > longest:
        text += ", the oldest longer than every finished session"
    return text


def _rate(value: float | None, unit: str) -> str:
    return _MISSING if value is None else f"{value:,.1f} {unit}"


def _quantiles(latency: Mapping[str, Any], *names: str) -> str:
    return "  ".join(f"{name} {_seconds(latency.get(name))}" for name in names)


def _number(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else _MISSING


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else _MISSING


def _scrapes(server: Mapping[str, Any]) -> str:
    errors = int(server.get("scrape_errors") or 0)
    return f"{errors:,} failed scrape{'s' if errors != 1 else ''}"


def server_verdict(server: Mapping[str, Any]) -> str:
    """What saturated first on the target and when, or why its metrics are missing: one clause."""
    url = server.get("metrics_url") or "the target's /metrics"
    if not server.get("available"):
        if server.get("scrape_errors"):
            last = f", last: {server['last_error']}" if server.get("last_error") else ""
            return f"metrics unavailable from {url} ({_scrapes(server)}{last})"
        return f"metrics unavailable: no vLLM, SGLang or llama.cpp figures at {url}"
    onsets = server.get("saturation_onset_s") or {}
    first = server.get("saturated_first")
    if first is None:
        return "nothing saturated (no full KV cache, no preemptions, no lasting queue)"
    at = onsets.get(first)
    when = f", {at:.1f} s into the run" if isinstance(at, int | float) else ""
    later = [
        f"{SATURATED_RESOURCES.get(name, name)} at {t:.1f} s"
        for name, t in sorted(
            ((n, t) for n, t in onsets.items() if isinstance(t, int | float) and n != first),
            key=lambda item: item[1],
        )
    ]
    then = f" (then {', '.join(later)})" if later else ""
    return f"{SATURATED_RESOURCES.get(first, first)} saturated first{when}{then}"


def _server_lines(server: Mapping[str, Any]) -> list[str]:
    if not server.get("available"):
        return [f"server          {server_verdict(server)}"]
    engine = ENGINE_NAMES.get(str(server.get("engine")), server.get("engine") or "target")
    figures = (
        f"KV cache peak {_percent(server.get('kv_cache_usage_peak'))}, "
        f"waiting peak {_number(server.get('waiting_peak'))}, "
        f"preemptions {_number(server.get('preemptions'))}, "
        f"prefix-cache hits {_percent(server.get('prefix_cache_hit_ratio'))}"
    )
    if server.get("scrape_errors"):
        figures += f" ({_scrapes(server)})"
    return [f"server          {engine}: {server_verdict(server)}", _INDENT + figures]


def _names(names: Sequence[str], singular: str, plural: str) -> str:
    return f"{', '.join(names)} {singular if len(names) == 1 else plural}"


def _they(names: Sequence[str]) -> str:
    return "it" if len(names) == 1 else "they"


def _their(names: Sequence[str]) -> str:
    return "its" if len(names) == 1 else "their"


def workers_missing(workers: Mapping[str, Any]) -> str | None:
    """Whose share of a swarm run is missing, in one sentence; None when every worker's is in."""
    reported = set(workers.get("reported") or [])
    lost: Sequence[str] = workers.get("lost") or []
    lost_mid_run = [name for name in lost if name in reported]
    lost_unreported = [name for name in lost if name not in reported]
    late: Sequence[str] = workers.get("final_report_missing") or []
    # A worker lost before its first report is named above; one never heard of at all is not.
    silent = int(workers.get("expected") or 0) - len(reported) - len(lost_unreported)
    parts = []
    if lost_mid_run:
        parts.append(
            f"{_names(lost_mid_run, 'was', 'were')} lost mid-run (killed, crashed or cut off): "
            f"what {_they(lost_mid_run)} measured after {_their(lost_mid_run)} last report is "
            "missing"
        )
    if lost_unreported:
        parts.append(
            f"{_names(lost_unreported, 'was', 'were')} lost before {_their(lost_unreported)} "
            f"first report: {_their(lost_unreported)} whole share is missing"
        )
    if late:
        parts.append(
            f"{', '.join(late)} sent no final report: what {_they(late)} measured after "
            f"{_their(late)} previous report is missing"
        )
    if silent > 0:
        parts.append(
            f"{silent} of {workers['expected']} expected workers never reported: "
            f"{'its' if silent == 1 else 'their'} whole share is missing"
        )
    return "; ".join(parts) or None


def workers_reported(workers: Mapping[str, Any], noun: str = "") -> str:
    """'2 of 2 reported', or, when workers joined the running swarm, how many did."""
    reported = len(workers.get("reported") or [])
    expected = int(workers.get("expected", reported))
    if reported > expected:  # a scale-up: the master waited for `expected`, others joined
        joined = reported - expected
        return f"{reported} {noun}reported ({expected} awaited at the start, {joined} joined)"
    return f"{reported} of {expected} {noun}reported"


def _workers_lines(workers: Mapping[str, Any]) -> list[str]:
    left = workers.get("left") or []
    line = f"workers         {workers_reported(workers)}"
    if workers.get("lost"):
        line += f", LOST: {', '.join(workers['lost'])}"
    if left:
        line += f", stopped on purpose (whole share in): {', '.join(left)}"
    lines = [line]
    if (missing := workers_missing(workers)) is not None:
        lines += textwrap.wrap(
            f"WARNING: {missing} from every figure above.",
            width=92,
            subsequent_indent=" " * 9,
            break_on_hyphens=False,  # keep worker-<index> names whole
        )
    return lines


def _reason_lines(reasons: Mapping[str, Any]) -> list[str]:
    """The most frequent message of each failure kind: why, in the server's own words."""
    lines = []
    for kind, messages in sorted(reasons.items()):
        if not messages:
            continue
        top = messages[0]
        text = textwrap.shorten(str(top["message"]), width=150, placeholder="...")
        lines.append(f"{_INDENT}{kind}: {text} (x{int(top['count']):,})")
    return lines


def _capability_lines(summary: Mapping[str, Any]) -> list[str]:
    """What the target does not do, said once (not counted as a failure per step)."""
    lines = []
    target = summary.get("target") or {}
    if target.get("server_state") == "unsupported":
        note = target.get("server_state_note") or "previous_response_id refused"
        lines.append(
            f"target          keeps no server-side state ({note}); sessions resent their history"
        )
    cache = summary.get("prefix_cache") or {}
    if cache.get("state") in ("off", "not reported") and summary["requests"]["ok"]:
        lines.append("prefix caching  off or not reported by the target: cache_miss was not judged")
    return lines


# Replicas listed in the printed table, busiest first; summary.json has every one.
_REPLICA_ROWS = 16


def _replica_row(name: str, r: Mapping[str, Any]) -> str:
    requests = r.get("requests") or {}
    latency = r.get("latency") or {}
    ttft, e2e = latency.get("ttft_s") or {}, latency.get("e2e_s") or {}
    failures = ", ".join(f"{k} {n:,}" for k, n in (r.get("state_failures") or {}).items() if n)
    return (
        f"  {textwrap.shorten(name, 22, placeholder='…'):22} {int(requests.get('total') or 0):>8,} "
        f"{_percent(r.get('share')):>6} {int(requests.get('failed') or 0):>6,} "
        f"{_seconds(ttft.get('p50')):>9} {_seconds(ttft.get('p95')):>9} "
        f"{_seconds(e2e.get('p50')):>9} {_percent(r.get('cache_hit_ratio')):>9}  "
        f"{failures or '-'}"
    ).rstrip()


def _server_replica_row(name: str, r: Mapping[str, Any]) -> str:
    requests = r.get("requests") or {}
    return (
        f"  {textwrap.shorten(name, 22, placeholder='…'):22} {_number(requests.get('total')):>8} "
        f"{_percent(r.get('share')):>6} {_number(r.get('output_tokens_per_s')):>9} "
        f"{_percent(r.get('cache_hit_ratio')):>9} {_percent(r.get('kv_cache_usage_peak')):>8} "
        f"{_number(r.get('waiting_peak')):>8}"
    )


def _replicas_how(summary: Mapping[str, Any]) -> str:
    """Where the replicas' figures came from, for the table's title line."""
    target = summary.get("target") or {}
    source = summary.get("by_replica_source")
    if source == SERVER_METRICS_SOURCE:
        label = (summary.get("server") or {}).get("replica_label") or "replica"
        return f"from the server's metrics (label {label}): requests it finished, no latency"
    if source == "targets" or target.get("balance"):
        return f"balanced by this client ({target.get('balance') or 'targets'})"
    return "as the responses named them"


def replica_lines(summary: Mapping[str, Any]) -> list[str]:
    """The by-replica table and the imbalance, named; none for a single target."""
    by_replica = summary.get("by_replica")
    if not isinstance(by_replica, Mapping) or not by_replica:
        return []
    order = sorted(
        by_replica, key=lambda n: -int((by_replica[n].get("requests") or {}).get("total") or 0)
    )
    if summary.get("by_replica_source") == SERVER_METRICS_SOURCE:
        head = (
            f"  {'replica':22} {'requests':>8} {'share':>6} {'out tok/s':>9} {'cache hit':>9} "
            f"{'KV peak':>8} {'waiting':>8}"
        )
        rows = [_server_replica_row(name, by_replica[name]) for name in order[:_REPLICA_ROWS]]
    else:
        head = (
            f"  {'replica':22} {'requests':>8} {'share':>6} {'failed':>6} {'TTFT p50':>9} "
            f"{'TTFT p95':>9} {'e2e p50':>9} {'cache hit':>9}  state failures"
        )
        rows = [_replica_row(name, by_replica[name]) for name in order[:_REPLICA_ROWS]]
    lines = [f"replicas        {len(by_replica)}, {_replicas_how(summary)}", head, *rows]
    if len(order) > _REPLICA_ROWS:
        lines.append(f"  ... {len(order) - _REPLICA_ROWS} more in summary.json by_replica")
    imbalance = summary.get("replica_imbalance")
    if isinstance(imbalance, Mapping) and imbalance.get("text"):
        lines += textwrap.wrap(
            str(imbalance["text"]),
            width=100,
            initial_indent="imbalance       ",
            subsequent_indent=_INDENT,
        )
    return lines


def _saw_reasoning(summary: Mapping[str, Any]) -> bool:
    tokens = summary.get("tokens")
    return isinstance(tokens, Mapping) and bool(tokens.get("reasoning"))


def _reasoning_line(summary: Mapping[str, Any]) -> list[str]:
    """How much of the output was thinking, beside the answer's rate; none for a run without."""
    if not _saw_reasoning(summary):
        return []
    tokens = summary["tokens"]
    answer = (summary.get("throughput") or {}).get("answer_tokens_per_s")
    return [
        f"reasoning       {_number(tokens['reasoning'])} tokens, "
        f"{_percent(tokens.get('reasoning_share'))} of output, "
        f"{_number(tokens.get('reasoning_per_session_mean'))} per session; "
        f"{_rate(answer, 'answer tok/s')}"
    ]


def _ttfat_line(summary: Mapping[str, Any]) -> list[str]:
    """Time to first answer token, for a run that saw reasoning (else it reads as TTFT)."""
    if not _saw_reasoning(summary):
        return []
    ttfat = summary["latency"].get("ttfat_s") or {}
    return [f"TTFAT           {_quantiles(ttfat, 'p50', 'p95', 'p99')}  (first answer token)"]


def _where(target: Mapping[str, Any]) -> str:
    replicas = target.get("replicas")
    if isinstance(replicas, Mapping) and replicas:
        where = f"{len(replicas)} replicas: {', '.join(map(str, replicas))}"
    else:
        where = str(target.get("url", _MISSING))
    if target.get("model"):
        where += f" ({target['model']})"
    return where


def format_summary(summary: Mapping[str, Any]) -> str:
    """About a dozen lines: what was run, how it went, what the server ran out of, who kept up."""
    where = _where(summary.get("target", {}))
    sessions = summary["sessions"]
    requests = summary["requests"]
    throughput = summary["throughput"]
    latency = summary["latency"]
    failures = {k: n for k, n in summary["state_failures"].items() if n}
    recovered = sum(summary.get("recoveries", {}).values())
    lines = [
        f"agentload · profile {summary.get('profile', _MISSING)} · target {where}",
        f"duration        {summary['duration_s']:.1f} s",
        f"sessions        {sessions['completed']:,} completed, {sessions['failed']:,} failed, "
        f"{sessions['aborted']:,} aborted ({sessions['started']:,} started)",
        *textwrap.wrap(
            running_at_end_text(sessions, latency.get("session_s") or {}) or "",
            width=100,
            initial_indent=_INDENT,
            subsequent_indent=_INDENT,
        ),
        f"requests        {requests['ok']:,} ok, {requests['failed']:,} failed",
        f"throughput      {_rate(throughput['output_tokens_per_s'], 'output tok/s')}, "
        f"{_rate(throughput['sessions_per_min'], 'sessions/min')}, "
        f"{_rate(throughput['requests_per_s'], 'req/s')}",
        *_reasoning_line(summary),
        f"TTFT            {_quantiles(latency['ttft_s'], 'p50', 'p95', 'p99')}",
        *_ttfat_line(summary),
        f"ITL             {_quantiles(latency['itl_s'], 'p50', 'p99')}",
        f"end-to-end      {_quantiles(latency['e2e_s'], 'p50', 'p95')}",
    ]
    if failures:
        listed = ", ".join(f"{kind} {n:,}" for kind, n in sorted(failures.items()))
        lines.append(f"state failures  {listed} ({recovered:,} recovered)")
        lines += _reason_lines(summary.get("failure_reasons") or {})
    else:
        lines.append("state failures  none")
    lines += _capability_lines(summary)
    lines += replica_lines(summary)
    if isinstance(server := summary.get("server"), Mapping):
        lines += _server_lines(server)
    if isinstance(workers := summary.get("workers"), Mapping):
        lines += _workers_lines(workers)
    if incomplete := summary.get("results_incomplete"):
        lines += textwrap.wrap(
            f"WARNING: results incomplete: {incomplete}; the figures above count every "
            "request, the record files stop early",
            width=100,
            subsequent_indent=" " * 9,
        )
    generator = summary.get("generator", {})
    if generator.get("saturated"):
        reasons = "; ".join(generator.get("reasons", [])) or "see generator in summary.json"
        lines.append(f"WARNING: the load generator was saturated ({reasons});")
        lines.append("         measured latencies include its own delays, add workers or CPU")
    return "\n".join(lines)
