"""The rows of agentload's tabs in Locust's web UI, built from a run's statistics so far.

Values are numbers (or None where there is no data yet) rather than formatted strings, so
that clicking a column header in the UI sorts them as numbers; units are in the titles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.observe import LatencyHistogram, RunStats, SessionCounts
from loadgen.protocol.failures import CLIENT_FAILURES, STATE_FAILURES, FailureKind

__all__ = [
    "AGENTS_TAB",
    "AGENTS_TITLE",
    "AGENT_COLUMNS",
    "FAILURE_MEANINGS",
    "STATE_COLUMNS",
    "STATE_TAB",
    "STATE_TITLE",
    "TOTAL_ROW",
    "agent_rows",
    "state_rows",
]

Row = dict[str, Any]

AGENTS_TAB = "agents"
AGENTS_TITLE = "Agents"
STATE_TAB = "agent_state"
STATE_TITLE = "Agent state"
# Locust's own name for its all-requests row, so the table reads like its Statistics tab.
TOTAL_ROW = "Aggregated"

# (key, title). The UI camel-cases keys of both the structure and the rows, so any key works;
# none is "name", because the UI sorts by "name" by default and would then put the
# capitalised total row first instead of last.
AGENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("agent", "Agent"),
    ("started", "Sessions started"),
    ("active", "Active"),
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("aborted", "Aborted"),
    ("success", "Session success %"),
    ("steps", "Steps OK"),
    ("errors", "Steps failed"),
    ("ttft50", "TTFT p50 (ms)"),
    ("ttft95", "TTFT p95 (ms)"),
    ("e2e95", "Step e2e p95 (ms)"),
    ("session50", "Session p50 (s)"),
    ("session90", "Session p90 (s)"),
    ("tokens", "Output tokens"),
)
STATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("kind", "Failure kind"),
    ("layer", "Layer"),
    ("count", "Count"),
    ("recovered", "Recovered"),
    ("rate", "Per 1,000 steps"),
    ("agents", "By agent"),
    ("meaning", "Meaning"),
)

FAILURE_MEANINGS: Mapping[FailureKind, str] = {
    FailureKind.CONTEXT_OVERFLOW: "The prompt no longer fits: the server refused it as too "
    "long, or the agent's own context window was exceeded.",
    FailureKind.CONTEXT_TRUNCATED: "The server counted fewer prompt tokens than the "
    "session's history holds: context was silently dropped.",
    FailureKind.SERVER_STATE_LOST: "The server no longer knows a response or conversation "
    "id it issued: stored session state was lost.",
    FailureKind.CACHE_MISS: "Far fewer cached prompt tokens than the prefix the session "
    "reuses: KV cache evicted or session affinity lost.",
    FailureKind.STREAM_TRUNCATED: "The stream ended without a finish_reason or [DONE], or "
    "the connection dropped mid-stream.",
    FailureKind.ABNORMAL_FINISH: "finish_reason abort, error or null, or 'length' before the "
    "requested minimum (a silent clamp).",
    FailureKind.MALFORMED_TOOL_CALL: "Tool-call arguments that are not valid JSON, break the "
    "tool's schema, or name an unknown tool.",
    FailureKind.TIMEOUT: "No complete reply within the request timeout.",
    FailureKind.HTTP_ERROR: "An HTTP error status other than 429 (and not a context or "
    "lost-state refusal).",
    FailureKind.RATE_LIMITED: "HTTP 429: the server or a gateway is shedding load.",
    FailureKind.CONNECTION_ERROR: "Could not connect, or the connection failed before the "
    "reply began.",
    FailureKind.AGENT_ERROR: "The agent's own code raised (a custom agent's bug): the session "
    "ended failed; the traceback is in the run's log.",
}


def _layer(kind: FailureKind) -> str:
    if kind in STATE_FAILURES:
        return "agent state"
    return "agent code" if kind in CLIENT_FAILURES else "transport"


def _ms(hist: LatencyHistogram, q: float) -> float | None:
    value = hist.percentile(q)
    return None if value is None else round(value * 1000.0, 1)


def _s(hist: LatencyHistogram, q: float) -> float | None:
    value = hist.percentile(q)
    return None if value is None else round(value, 2)


def _session_columns(sessions: SessionCounts) -> Row:
    ended = sessions.completed + sessions.failed + sessions.aborted
    # Aborted sessions were stopped by the client, so they count neither way (as in gates).
    judged = sessions.completed + sessions.failed
    return {
        "started": sessions.started,
        # On a master, workers report every few seconds: a session can be seen ending
        # before it is seen starting, so never show a negative count.
        "active": max(sessions.started - ended, 0),
        "completed": sessions.completed,
        "failed": sessions.failed,
        "aborted": sessions.aborted,
        "success": round(100.0 * sessions.completed / judged, 1) if judged else None,
    }


def agent_rows(stats: RunStats) -> list[Row]:
    """One row per agent archetype (by name), then the run's total; none before any agent."""
    # The engine's thread may add an agent while this runs: iterate over a snapshot.
    agents = sorted(list(stats.agents.items()), key=lambda item: item[0])
    if not agents:
        return []
    rows: list[Row] = []
    for name, agent in agents:
        rows.append(
            {
                "agent": name,
                **_session_columns(agent.sessions),
                "steps": agent.requests_ok,
                "errors": agent.requests_failed,
                "ttft50": _ms(agent.ttft_s, 50),
                "ttft95": _ms(agent.ttft_s, 95),
                "e2e95": _ms(agent.e2e_s, 95),
                "session50": _s(agent.session_s, 50),
                "session90": _s(agent.session_s, 90),
                "tokens": agent.completion_tokens,
            }
        )
    rows.append(
        {
            "agent": TOTAL_ROW,
            **_session_columns(stats.sessions),
            "steps": stats.requests_ok,
            "errors": stats.requests_failed,
            "ttft50": _ms(stats.ttft_s, 50),
            "ttft95": _ms(stats.ttft_s, 95),
            "e2e95": _ms(stats.e2e_s, 95),
            "session50": _s(stats.session_s, 50),
            "session90": _s(stats.session_s, 90),
            "tokens": stats.completion_tokens,
        }
    )
    return rows


def state_rows(stats: RunStats) -> list[Row]:
    """One row per canonical failure kind, agent-state kinds first, zero counts included.

    Every kind is listed so that "none so far" reads as a zero, not as a missing row.
    """
    steps = stats.requests_total
    agents = sorted(list(stats.agents.items()), key=lambda item: item[0])
    rows: list[Row] = []
    for kind in FailureKind:
        count = stats.failures.get(kind.value, 0)
        by_agent = [(name, a.failures.get(kind.value, 0)) for name, a in agents]
        rows.append(
            {
                "kind": kind.value,
                "layer": _layer(kind),
                "count": count,
                "recovered": stats.recoveries.get(kind.value, 0),
                "rate": round(1000.0 * count / steps, 1) if steps else None,
                "agents": ", ".join(f"{name} {n}" for name, n in by_agent if n),
                "meaning": FAILURE_MEANINGS[kind],
            }
        )
    return rows
