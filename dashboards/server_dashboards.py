"""The dashboards of the server under test: its own metrics, and where its throughput stops."""

# Run `python dashboards/build.py` after editing a panel. Every query here is also run
# against a real Prometheus by tests/test_observe_prometheus_live.py.

from __future__ import annotations

from grafana_model import Dashboard, Panel, Query
from promql import (
    AGENTLOAD,
    GENERATION_TOKENS,
    KV_USAGE,
    PROMPT_TOKENS,
    RUNNING,
    SERVER,
    SERVER_E2E,
    SERVER_ITL,
    SERVER_QUEUE,
    SERVER_TTFT,
    WAITING,
    WINDOW,
    matchers,
    quantile,
    server_gauge,
    server_hit_ratio,
    server_quantile,
    server_rate,
    server_rate_of,
    total,
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
                    + f"(avg_over_time(sglang:num_retracted_reqs{matchers(SERVER)}[{WINDOW}]))",
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
            queries=[Query(server_hit_ratio(), "{{instance}}")],
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
                    f"sum by (finished_reason) ({server_rate_of('vllm:request_success_total')})",
                    "{{finished_reason}}",
                )
            ],
            unit="reqps",
            stacked=True,
        ),
    ],
)

_THROUGHPUT = total("agentload_completion_tokens_total")
_CONCURRENCY = f"sum(agentload_sessions_active{matchers(AGENTLOAD)})"

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
