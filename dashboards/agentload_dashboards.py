"""The dashboards of the run as agentload measures it: Overview, Latency, Agent state health."""

# Run `python dashboards/build.py` after editing a panel. Every query here is also run
# against a real Prometheus by tests/test_observe_prometheus_live.py.

from __future__ import annotations

from fleet_dashboards import FLEET_PANELS
from grafana_model import Dashboard, Panel, Query
from promql import AGENTLOAD, SERVER_TTFT, matchers, quantile, rate, server_quantile, total
from reasoning_panels import REASONING_TOKEN_PANELS, TTFAT_PANEL


def _percentiles(metric: str, extra: str = "") -> list[Query]:
    return [Query(quantile(q, metric, extra=extra), f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)]


def _success_ratio(numerator: str) -> str:
    ended = total("agentload_sessions_total", extra='outcome=~"completed|failed"')
    return f"{numerator} / {ended}"


OVERVIEW = Dashboard(
    uid="agentload-overview",
    title="agentload / Overview",
    description="Is the swarm running as planned, is it getting work done, and is the "
    "generator itself healthy?",
    panels=[
        Panel(
            "Target under test",
            shows="The endpoint and model the selected runs send to.",
            bad="empty: Prometheus does not scrape the agentload exporter.",
            check="`--prometheus-port` on the run, and the agentload job's targets on "
            "Prometheus's Status > Targets page.",
            queries=[
                Query(
                    f"max by (url, model) (agentload_target_info{matchers(AGENTLOAD)})",
                    "{{url}} {{model}}",
                )
            ],
            kind="stat",
            width=24,
            height=3,
        ),
        Panel(
            "Active agents and sessions",
            shows="Agents (Locust users) and sessions in progress.",
            bad="agents below the profile's stage level: the generator is saturated or the "
            "shape has not got there yet; sessions far below agents: agents sit idle "
            "between sessions, as the profile's idle time says.",
            check="Generator CPU and lag below, then the profile's stages.",
            queries=[
                Query(f"sum(agentload_users{matchers(AGENTLOAD)})", "agents"),
                Query(f"sum(agentload_sessions_active{matchers(AGENTLOAD)})", "sessions"),
            ],
        ),
        Panel(
            "Sessions per minute by outcome",
            shows="Ended sessions per minute; aborted ones were stopped by the client (the "
            "end of a run), not by a fault.",
            bad="failed sessions: the target broke them beyond what the reactions absorb.",
            check="'Errors by kind', then the Agent state dashboard.",
            queries=[
                Query(total("agentload_sessions_total", "outcome", scale=" * 60"), "{{outcome}}")
            ],
            stacked=True,
        ),
        Panel(
            "Output tokens per second",
            shows="Completion tokens the agents received.",
            bad="flat while agents rise: the target is at its ceiling.",
            check="the Ceiling dashboard for the knee, the Server dashboard for what ran "
            "out (KV cache or batch slots).",
            queries=[Query(total("agentload_completion_tokens_total"), "output tok/s")],
        ),
        Panel(
            "Requests per second by outcome",
            shows="LLM requests sent, ok and failed.",
            bad="flat while agents rise: each request takes longer; a growing failed share: "
            "the target refuses or breaks requests.",
            check="the Latency dashboard for the first, 'Errors by kind' for the second.",
            queries=[Query(total("agentload_requests_total", "outcome"), "{{outcome}}")],
            unit="reqps",
            stacked=True,
        ),
        *REASONING_TOKEN_PANELS,
        Panel(
            "Session success and goodput ratio",
            shows="Success: completed / (completed + failed). Goodput: completed sessions in "
            "which every step met the profile's TTFT and end-to-end caps and the session "
            "met its duration cap (docs/observability.md).",
            bad="goodput well under success: the target answers, but too slowly; success "
            "falling: sessions break.",
            check="the Latency dashboard's percentiles against the profile's SLOs for "
            "goodput, 'Errors by kind' for success.",
            queries=[
                Query(
                    _success_ratio(total("agentload_sessions_total", extra='outcome="completed"')),
                    "success",
                ),
                Query(_success_ratio(total("agentload_goodput_sessions_total")), "goodput"),
            ],
            unit="percentunit",
        ),
        Panel(
            "Errors by kind",
            shows="Failed requests by the failure kind that failed them.",
            bad="http_error / rate_limited / timeout: the target or a gateway is overloaded; "
            "stream_truncated: a proxy or server cut streams; server_state_lost: a "
            "Responses store lost state (replica switch, restart, eviction).",
            check="the Server dashboard's queue and KV usage for overload, the proxy's idle "
            "timeout for cut streams, session affinity for lost state.",
            queries=[Query(total("agentload_request_errors_total", "kind"), "{{kind}}")],
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Generator CPU",
            shows="CPU of each generator process, in cores.",
            bad="near 1.0: the event loop is saturated, and measured latencies include the "
            "generator's own queueing.",
            check="add worker processes (--processes) and watch Generator lag fall before "
            "trusting the numbers.",
            queries=[
                Query(
                    f"max by (instance) (agentload_generator_cpu_ratio{matchers(AGENTLOAD)})",
                    "{{instance}}",
                )
            ],
            unit="short",
        ),
        Panel(
            "Generator lag (p99)",
            shows="How late steps and arrivals started against plan, and how late the event "
            "loop ran timers.",
            bad="above ~100 ms: the generator, not the target, is the bottleneck.",
            check="Generator CPU; add processes or lower the load per process.",
            queries=[
                Query(
                    quantile(0.99, "agentload_generator_schedule_lag_seconds"), "schedule lag p99"
                ),
                Query(
                    quantile(0.99, "agentload_generator_event_loop_lag_seconds"),
                    "event-loop lag p99",
                ),
            ],
            unit="s",
        ),
        *FLEET_PANELS,
    ],
)

LATENCY = Dashboard(
    uid="agentload-latency",
    title="agentload / Latency",
    description="Client-side latency percentiles from histograms, merged across processes.",
    target_filter=True,
    panels=[
        Panel(
            "Time to first token",
            shows="Request sent to the first token of any kind, a reasoning model's thinking "
            "included.",
            bad="p99 rising with a flat p50: queueing at the server; all percentiles rising: "
            "prefill got slower (longer contexts, lost prefix cache).",
            check="the Server dashboard's waiting requests for queueing, the cache-hit ratio "
            "per step kind (Agent state) for the cache.",
            queries=_percentiles("agentload_ttft_seconds"),
            unit="s",
        ),
        TTFAT_PANEL,
        Panel(
            "Inter-token latency",
            shows="Gaps between token events while streaming.",
            bad="rising: the decode batch is larger, or requests are preempted.",
            check="the Server dashboard's running requests and preemptions.",
            queries=_percentiles("agentload_itl_seconds"),
            unit="s",
        ),
        Panel(
            "End-to-end request time",
            shows="Request sent to last byte, successful requests.",
            bad="a growing gap to TTFT: decoding got slower or replies got longer.",
            check="Inter-token latency; if it is flat, the replies' length (completion "
            "tokens per request on the Overview).",
            queries=_percentiles("agentload_request_duration_seconds"),
            unit="s",
        ),
        Panel(
            "TTFT p95 by agent",
            shows="Which archetype waits longest for a first token.",
            bad="long-context agents (coding) high while others are fine: prefill cost or a "
            "lost prefix cache for long histories.",
            check="the cache-hit ratio per step kind (Agent state) and the server's "
            "prefix-cache hit ratio.",
            queries=[Query(quantile(0.95, "agentload_ttft_seconds", "agent"), "{{agent}}")],
            unit="s",
        ),
        Panel(
            "TTFT p95 by step kind",
            shows="TTFT of each step kind: turn, tool_result, subagent, compaction, resume...",
            bad="tool_result high: resent history is not found in the prefix cache; resume "
            "high: server-held state was evicted and the history is being recomputed.",
            check="the prefix-cache panels of Agent state and Server; for resume, "
            "'Server-state losses and fallbacks'.",
            queries=[Query(quantile(0.95, "agentload_ttft_seconds", "step_kind"), "{{step_kind}}")],
            unit="s",
        ),
        Panel(
            "ITL p99 by agent",
            shows="Streaming smoothness per archetype.",
            bad="one archetype worse than the others: its replies run in larger or longer batches.",
            check="the server's inter-token latency on the Server dashboard.",
            queries=[Query(quantile(0.99, "agentload_itl_seconds", "agent"), "{{agent}}")],
            unit="s",
        ),
        Panel(
            "ITL p99 by step kind",
            shows="Streaming smoothness of each step kind: turn, tool_result, subagent, "
            "compaction, resume...",
            bad="compaction or tool_result worse than turn: decoding over a long history "
            "costs more per token; every kind rising together: the decode batch grew.",
            check="Context size per step (Agent state) for the first, the Server dashboard's "
            "running requests and preemptions for the second.",
            queries=[Query(quantile(0.99, "agentload_itl_seconds", "step_kind"), "{{step_kind}}")],
            unit="s",
        ),
        Panel(
            "End-to-end p95 by agent",
            shows="Request time per archetype, sent to last byte; archetypes with long "
            "replies take longer by nature.",
            bad="one archetype rising while the others hold: its prefills or its replies "
            "grew; all rising: the server slowed down.",
            check="TTFT p95 by agent and ITL p99 by agent: the one that rose with it is the "
            "phase (prefill or decode) that slowed.",
            queries=[
                Query(quantile(0.95, "agentload_request_duration_seconds", "agent"), "{{agent}}")
            ],
            unit="s",
        ),
        Panel(
            "End-to-end p95 by step kind",
            shows="Request time per step kind; compaction steps are long by nature.",
            bad="the other kinds rising: the server slowed down.",
            check="the Server dashboard's queue time and end-to-end, then its running "
            "requests and KV usage.",
            queries=[
                Query(
                    quantile(0.95, "agentload_request_duration_seconds", "step_kind"),
                    "{{step_kind}}",
                )
            ],
            unit="s",
        ),
        Panel(
            "Session duration (completed)",
            shows="Whole sessions, tool waits and think time included (scaled by time_scale).",
            bad="rising while request latency is flat: more steps or retries per session.",
            check="Steps per session and Recoveries by kind on the Agent state dashboard.",
            queries=_percentiles("agentload_session_duration_seconds", 'outcome="completed"'),
            unit="s",
        ),
        Panel(
            "Session duration p95 by agent (completed)",
            shows="Whole sessions of each archetype, tool waits and think time included "
            "(scaled by time_scale).",
            bad="one archetype rising while its request times hold: its sessions take more "
            "steps (retries, recoveries, failed tools) or wait longer on tools.",
            check="End-to-end p95 by agent, Tool latency p95 by tool beside it, then Steps "
            "per session and Recoveries by kind on the Agent state dashboard.",
            queries=[
                Query(
                    quantile(
                        0.95, "agentload_session_duration_seconds", "agent", 'outcome="completed"'
                    ),
                    "{{agent}}",
                )
            ],
            unit="s",
        ),
        Panel(
            "Tool latency p95 by tool",
            shows="Simulated tool time, as the profile models it (after time_scale); it sets "
            "how long KV state must survive between steps.",
            bad="long tool waits with falling cache hits: the server evicts idle sessions.",
            check="the cache-hit ratio of tool_result steps (Agent state) and the server's "
            "KV-cache usage.",
            queries=[Query(quantile(0.95, "agentload_tool_latency_seconds", "tool"), "{{tool}}")],
            unit="s",
        ),
        Panel(
            "Client vs server TTFT (p95)",
            shows="The client's TTFT against the server's own.",
            bad="a widening gap is time outside the engine: network, gateway or router "
            "queueing, TLS, or a saturated generator.",
            check="the generator's health on the Overview, then the gateway's or router's "
            "own latency.",
            queries=[
                Query(quantile(0.95, "agentload_ttft_seconds"), "client p95"),
                Query(server_quantile(0.95, SERVER_TTFT), "server p95"),
            ],
            unit="s",
        ),
    ],
)

AGENT_STATE = Dashboard(
    uid="agentload-agent-state",
    title="agentload / Agent state health",
    description="Where agents' long-lived state breaks: failures, recoveries, caching, context.",
    panels=[
        Panel(
            "State failures by kind",
            shows="Every failure detected, usable replies included (cache_miss, "
            "context_truncated).",
            bad="context_truncated: the server silently dropped context; cache_miss: KV "
            "evicted or session affinity lost; context_overflow: history outgrew the window.",
            check="the router's session header for cache_miss, the server's truncation "
            "settings for context_truncated, compaction (Context size per step) for "
            "context_overflow.",
            queries=[Query(total("agentload_state_failures_total", "kind"), "{{kind}}")],
            stacked=True,
        ),
        Panel(
            "Recoveries by kind",
            shows="Failures absorbed by the profile's reactions (retry, fallback, compact).",
            bad="fewer recoveries than failures of a kind: those failures end sessions as "
            "failed; many recoveries: the target is flaky even where sessions succeed.",
            check="State failures by kind side by side, then the profile's `reactions` "
            "(attempts, backoff) for the kinds left unrecovered.",
            queries=[Query(total("agentload_recoveries_total", "kind"), "{{kind}}")],
            stacked=True,
        ),
        Panel(
            "Prefix-cache hit ratio per step kind",
            shows="Server-reported cached prompt tokens / prompt tokens, per step kind.",
            bad="tool_result and turn steps resend a known prefix and should hit >80%; a "
            "drop means eviction under memory pressure or lost session affinity.",
            check="the server's KV-cache usage and prefix-cache hit ratio (Server "
            "dashboard), then the router's session affinity.",
            queries=[
                Query(
                    f"{total('agentload_cached_tokens_total', 'step_kind')} / "
                    f"{total('agentload_prompt_tokens_total', 'step_kind')}",
                    "{{step_kind}}",
                )
            ],
            unit="percentunit",
        ),
        Panel(
            "Context size per step",
            shows="The context agents send per step.",
            bad="growing without bound: compaction is off or not triggered; p99 near the "
            "model's window: expect context_overflow.",
            check="Compactions per minute and the profile's context_budget_tokens and compact_at.",
            queries=[
                Query(quantile(q, "agentload_context_tokens"), f"p{int(q * 100)}")
                for q in (0.5, 0.9, 0.99)
            ],
        ),
        Panel(
            "Context size distribution",
            shows="Steps per context-size bucket over time: a band creeping upwards is "
            "history growth, a sudden drop is compaction.",
            bad="a band that stays in the top buckets: sessions run at the edge of their window.",
            check="Compactions per minute, and context_overflow in State failures by kind.",
            queries=[Query(f"sum by (le) ({rate('agentload_context_tokens_bucket')})", "{{le}}")],
            kind="heatmap",
        ),
        Panel(
            "Compactions per minute",
            shows="Summarisation steps, by agent.",
            bad="frequent compactions: the context budget is small for the workload, and "
            "every compaction costs a long prefill.",
            check="the compaction line of TTFT p95 by step kind (Latency) and the profile's "
            "context_budget_tokens.",
            queries=[
                Query(
                    total("agentload_requests_total", "agent", 'step_kind="compaction"', " * 60"),
                    "{{agent}}",
                )
            ],
        ),
        Panel(
            "Server-state losses and fallbacks",
            shows="previous_response_id chains the server no longer knows (lost), and "
            "sessions that fell back to resending their history.",
            bad="any loss: the Responses store is per replica, bounded, or was restarted.",
            check="session affinity to replicas, and the store's capacity and TTL.",
            queries=[
                Query(
                    total("agentload_state_failures_total", extra='kind="server_state_lost"'),
                    "lost",
                ),
                Query(
                    total("agentload_recoveries_total", extra='kind="server_state_lost"'),
                    "fell back",
                ),
            ],
        ),
        Panel(
            "Steps per session",
            shows="LLM requests per completed session (sub-agents included).",
            bad="rising while the profile is unchanged: retries and recoveries add steps.",
            check="Recoveries by kind, and 'Errors by kind' on the Overview.",
            queries=[
                Query(
                    quantile(q, "agentload_session_steps", extra='outcome="completed"'),
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.9)
            ],
        ),
        Panel(
            "Tool calls by tool and outcome",
            shows="Simulated tool calls; errors are the tools' modelled failure rate, aborted the "
            "calls cut off when their session was stopped (the run's end, a rebalance).",
            bad="errors above the rate the profile models: each one tends to cost the agent "
            "another step.",
            check="Steps per session, and malformed_tool_call in State failures by kind "
            "(model-driven tool calls).",
            queries=[
                Query(total("agentload_tool_calls_total", "tool, outcome"), "{{tool}} {{outcome}}")
            ],
            stacked=True,
        ),
    ],
)
