"""Writes the Grafana dashboards in grafana/dashboards/ from the panel lists below."""

# Run `python dashboards/build.py` after editing a panel; `--check` (the tests run it) fails
# when a JSON file differs from what this script writes. Every query here is also run
# against a real Prometheus by tests/test_observe_prometheus_live.py.

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"

AGENTLOAD = 'profile=~"$profile"'  # every agentload_* series carries the run's profile
SERVER = 'instance=~"$target"'  # the target's own /metrics, by Prometheus instance
WINDOW = "$__rate_interval"

# Server metric names, current first; dashboards join them with `or`, so a server that
# exposes only some of them (older vLLM, SGLang, llama.cpp) still draws its lines.
RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs", "llamacpp:requests_processing")
WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred")
KV_USAGE = (
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
    "llamacpp:kv_cache_usage_ratio",
)
GENERATION_TOKENS = (
    "vllm:generation_tokens_total",
    "sglang:generation_tokens_total",
    "llamacpp:tokens_predicted_total",
)
PROMPT_TOKENS = (
    "vllm:prompt_tokens_total",
    "sglang:prompt_tokens_total",
    "llamacpp:prompt_tokens_total",
)
SERVER_TTFT = ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds")
SERVER_ITL = (
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",
    "sglang:inter_token_latency_seconds",
    "sglang:time_per_output_token_seconds",
)
SERVER_E2E = ("vllm:e2e_request_latency_seconds", "sglang:e2e_request_latency_seconds")
SERVER_QUEUE = ("vllm:request_queue_time_seconds", "sglang:queue_time_seconds")


def _sel(selector: str, extra: str = "") -> str:
    return "{" + selector + (f", {extra}" if extra else "") + "}"


def rate(metric: str, extra: str = "", selector: str = AGENTLOAD) -> str:
    """rate() of one counter over the panel's window."""
    return f"rate({metric}{_sel(selector, extra)}[{WINDOW}])"


def total(metric: str, by: str = "", extra: str = "", scale: str = "") -> str:
    """The summed rate of an agentload counter, optionally by labels and scaled."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({rate(metric, extra)}){scale}"


def quantile(q: float, metric: str, by: str = "", extra: str = "") -> str:
    """A percentile of an agentload histogram: buckets summed first, so processes merge."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(metric + '_bucket', extra)}))"


def server_quantile(q: float, names: Sequence[str]) -> str:
    """A percentile of a server histogram, over every instance whichever name it exposes."""
    # `or` inside the sum, per series: rate() drops the metric name, so the bucket series of
    # a vLLM and an SGLang instance (different instances) are both kept, while a server
    # exporting an old and a new name (same labels) is counted once. `sum(A) or sum(B)`
    # dropped every SGLang series as soon as one vLLM instance was selected.
    inner = " or ".join(rate(name + "_bucket", selector=SERVER) for name in names)
    return f"histogram_quantile({q}, sum by (le) ({inner}))"


# The builders below aggregate by instance, so `or` between whole aggregates keeps every
# instance of a mixed fleet (their label sets differ) and one series per instance.


def server_gauge(names: Sequence[str], how: str = "sum") -> str:
    """A server gauge per instance, from whichever of `names` the server exposes."""
    return " or ".join(f"{how} by (instance) ({name}{_sel(SERVER)})" for name in names)


def server_rate(names: Sequence[str]) -> str:
    """A server counter's rate per instance, from whichever of `names` it exposes."""
    return " or ".join(f"sum by (instance) ({rate(name, selector=SERVER)})" for name in names)


def _server_rate_of(metric: str) -> str:
    return rate(metric, selector=SERVER)


def _server_hit_ratio() -> str:
    """vLLM's hits / queries (current names, then older), or SGLang's own hit rate."""
    ratios = [
        f"{server_rate((hits,))} / {server_rate((queries,))}"
        for hits, queries in (
            ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
            ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"),
        )
    ]
    return " or ".join([*ratios, f"max by (instance) (sglang:cache_hit_rate{_sel(SERVER)})"])


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
                    f"max by (url, model) (agentload_target_info{_sel(AGENTLOAD)})",
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
                Query(f"sum(agentload_users{_sel(AGENTLOAD)})", "agents"),
                Query(f"sum(agentload_sessions_active{_sel(AGENTLOAD)})", "sessions"),
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
                    f"max by (instance) (agentload_generator_cpu_ratio{_sel(AGENTLOAD)})",
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
            shows="Request sent to first content or tool-call token.",
            bad="p99 rising with a flat p50: queueing at the server; all percentiles rising: "
            "prefill got slower (longer contexts, lost prefix cache).",
            check="the Server dashboard's waiting requests for queueing, the cache-hit ratio "
            "per step kind (Agent state) for the cache.",
            queries=_percentiles("agentload_ttft_seconds"),
            unit="s",
        ),
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
            "Session duration (completed)",
            shows="Whole sessions, tool waits and think time included (scaled by time_scale).",
            bad="rising while request latency is flat: more steps or retries per session.",
            check="Steps per session and Recoveries by kind on the Agent state dashboard.",
            queries=_percentiles("agentload_session_duration_seconds", 'outcome="completed"'),
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
            shows="Simulated tool calls; errors are the tools' modelled failure rate.",
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

SERVER_DASHBOARD = Dashboard(
    uid="agentload-server",
    title="agentload / Server",
    description="The target's own metrics (vLLM, SGLang, llama.cpp; old and new names).",
    target_filter=True,
    panels=[
        Panel(
            "Running and waiting requests",
            shows="Requests in the batch and in the queue, per instance.",
            bad="waiting above zero for long: the batch is full (max_num_seqs) or the KV "
            "cache is, and TTFT grows with the queue.",
            check="KV-cache usage: near 100%, memory is the limit; otherwise raise "
            "max_num_seqs or add replicas.",
            queries=[
                Query(server_gauge(RUNNING), "running {{instance}}"),
                Query(server_gauge(WAITING), "waiting {{instance}}"),
            ],
        ),
        Panel(
            "KV-cache usage",
            shows="Fraction of the KV cache in use (SGLang: of its token pool), per instance.",
            bad="near 100%: new requests wait and running ones get preempted.",
            check="Preemptions; then reduce concurrency or context, or add memory or replicas.",
            queries=[Query(server_gauge(KV_USAGE, "max"), "{{instance}}")],
            unit="percentunit",
        ),
        Panel(
            "Preemptions",
            shows="vLLM's preemptions per second (requests evicted and recomputed), or "
            "SGLang's retracted requests per logging interval; llama.cpp has no such metric.",
            bad="any sustained rate: the KV cache is exhausted, and latency spikes follow.",
            check="KV-cache usage and Server inter-token latency; lower concurrency or "
            "context length.",
            queries=[
                Query(
                    server_rate(("vllm:num_preemptions_total",))
                    + " or sum by (instance) "
                    + f"(avg_over_time(sglang:num_retracted_reqs{_sel(SERVER)}[{WINDOW}]))",
                    "{{instance}}",
                )
            ],
        ),
        Panel(
            "Prefix-cache hit ratio (server)",
            shows="Hits / queries of the server's prefix cache (SGLang: its cache_hit_rate; "
            "llama.cpp has no such metric).",
            bad="falling under load: the cache evicts the agents' prefixes.",
            check="the client-side ratio per step kind on the Agent state dashboard, and "
            "KV-cache usage.",
            queries=[Query(_server_hit_ratio(), "{{instance}}")],
            unit="percentunit",
        ),
        Panel(
            "Server TTFT",
            shows="Time to first token inside the engine (queue + prefill); llama.cpp has no "
            "such histogram.",
            bad="rising with waiting requests: admission is the bottleneck; rising alone: "
            "prefill got slower.",
            check="the client's TTFT on the Latency dashboard, to split engine from network "
            "time, then Server queue time.",
            queries=[
                Query(server_quantile(q, SERVER_TTFT), f"p{int(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ],
            unit="s",
        ),
        Panel(
            "Server inter-token latency",
            shows="Decode step time as the engine sees it.",
            bad="rising with running requests: the batch is compute- or bandwidth-bound.",
            check="Running and waiting requests and Preemptions; a smaller max_num_seqs "
            "trades throughput for ITL.",
            queries=[
                Query(server_quantile(q, SERVER_ITL), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)
            ],
            unit="s",
        ),
        Panel(
            "Server queue time and end-to-end (p95)",
            shows="Time requests wait before their first schedule, and their whole time in "
            "the engine.",
            bad="queue time rising: admission is the bottleneck (batch or KV cache full).",
            check="Running and waiting requests and KV-cache usage, to tell which.",
            queries=[
                Query(server_quantile(0.95, SERVER_QUEUE), "queue p95"),
                Query(server_quantile(0.95, SERVER_E2E), "e2e p95"),
            ],
            unit="s",
        ),
        Panel(
            "Server token throughput",
            shows="Prompt (prefill) and generation tokens per second, per instance.",
            bad="generation flat while running requests rise: the decode ceiling.",
            check="Server inter-token latency and the Ceiling dashboard's knee; replicas "
            "raise the ceiling, a larger batch does not.",
            queries=[
                Query(server_rate(PROMPT_TOKENS), "prompt {{instance}}"),
                Query(server_rate(GENERATION_TOKENS), "generation {{instance}}"),
            ],
        ),
        Panel(
            "Finished requests by reason (vLLM)",
            shows="Why requests ended (vLLM only).",
            bad="abort: clients disconnected or the server gave up; length: replies clamped "
            "by max_tokens or the context window.",
            check="for abort, client timeouts and stream_truncated in 'Errors by kind'; for "
            "length, abnormal_finish in State failures by kind and the server's max_model_len.",
            queries=[
                Query(
                    f"sum by (finished_reason) ({_server_rate_of('vllm:request_success_total')})",
                    "{{finished_reason}}",
                )
            ],
            unit="reqps",
            stacked=True,
        ),
    ],
)

_THROUGHPUT = total("agentload_completion_tokens_total")
_CONCURRENCY = f"sum(agentload_sessions_active{_sel(AGENTLOAD)})"

CEILING = Dashboard(
    uid="agentload-ceiling",
    title="agentload / Ceiling",
    description="Where throughput stops growing during a ramp, and what latency costs.",
    target_filter=True,
    panels=[
        Panel(
            "Throughput vs concurrency",
            shows="Output tokens/s (y) against sessions in progress (x) over the selected "
            "time range; run a ramp stage to draw the whole curve.",
            bad="a knee: past it, more agents only add queueing.",
            check="'What runs out first' below for why, and `agentload ceiling` to measure "
            "the knee under the profile's SLOs.",
            queries=[Query(_CONCURRENCY, "sessions"), Query(_THROUGHPUT, "output tok/s")],
            kind="xychart",
        ),
        Panel(
            "Latency vs throughput",
            shows="TTFT p95 (y) against output tokens/s (x).",
            bad="a vertical wall: the target is at its ceiling, and latency grows without "
            "throughput.",
            check="the concurrency just before the wall (Throughput vs concurrency), and the "
            "SLOs there.",
            queries=[
                Query(_THROUGHPUT, "output tok/s"),
                Query(quantile(0.95, "agentload_ttft_seconds"), "ttft p95"),
            ],
            kind="xychart",
        ),
        Panel(
            "Ramp: concurrency and throughput over time",
            shows="The same two series over time.",
            bad="throughput flattening while concurrency keeps rising: the ceiling was "
            "reached there.",
            check="the Server dashboard at that time: KV-cache usage, waiting requests, "
            "preemptions.",
            queries=[Query(_CONCURRENCY, "sessions"), Query(_THROUGHPUT, "output tok/s")],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "sessions"},
                    "properties": [{"id": "custom.axisPlacement", "value": "right"}],
                }
            ],
        ),
        Panel(
            "Throughput per session",
            shows="Output tokens/s divided by sessions in progress.",
            bad="falling as the ramp rises: each agent gets a smaller share of the target, "
            "and the ceiling is near.",
            check="Latency vs throughput for the TTFT it costs, and 'What runs out first'.",
            queries=[Query(f"{_THROUGHPUT} / {_CONCURRENCY}", "tok/s per session")],
        ),
        Panel(
            "What runs out first: KV cache and queue",
            shows="Server KV-cache usage and waiting requests during the ramp.",
            bad="KV near 100% first: memory is the limit (preemptions follow); a queue first "
            "with KV to spare: the batch size (max_num_seqs) is.",
            check="Preemptions on the Server dashboard; for memory, shorter contexts or more "
            "replicas; for the batch, a larger max_num_seqs.",
            queries=[
                Query(server_gauge(KV_USAGE, "max"), "kv usage {{instance}}"),
                Query(server_gauge(WAITING), "waiting {{instance}}"),
            ],
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": "waiting.*"},
                    "properties": [{"id": "custom.axisPlacement", "value": "right"}],
                }
            ],
        ),
        Panel(
            "Goodput sessions per minute during the ramp",
            shows="Sessions within SLO per minute.",
            bad="it stops growing before raw throughput flattens: the SLOs set a lower, "
            "useful ceiling.",
            check="the Latency percentiles against the profile's SLOs, and the goodput ratio "
            "on the Overview.",
            queries=[
                Query(total("agentload_goodput_sessions_total", scale=" * 60"), "goodput/min")
            ],
        ),
    ],
)

DASHBOARDS = (OVERVIEW, LATENCY, AGENT_STATE, SERVER_DASHBOARD, CEILING)
FILES = {
    "agentload-overview": "overview.json",
    "agentload-latency": "latency.json",
    "agentload-agent-state": "agent-state.json",
    "agentload-server": "server.json",
    "agentload-ceiling": "ceiling.json",
}

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


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of `dashboard` (schema 39: Grafana 10.2 and later)."""
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
        for d in DASHBOARDS
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


def _text(dashboard: Dashboard) -> str:
    return json.dumps(render(dashboard), indent=2, ensure_ascii=False) + "\n"


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
