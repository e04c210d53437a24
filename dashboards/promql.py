"""PromQL for the dashboards: label selectors, query builders and server metric names."""

from __future__ import annotations

from collections.abc import Sequence

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


def matchers(selector: str, extra: str = "") -> str:
    """The `{...}` label matchers: `selector`, then `extra` when given."""
    return "{" + selector + (f", {extra}" if extra else "") + "}"


def rate(metric: str, extra: str = "", selector: str = AGENTLOAD) -> str:
    """rate() of one counter over the panel's window."""
    return f"rate({metric}{matchers(selector, extra)}[{WINDOW}])"


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
    return " or ".join(f"{how} by (instance) ({name}{matchers(SERVER)})" for name in names)


def server_rate(names: Sequence[str]) -> str:
    """A server counter's rate per instance, from whichever of `names` it exposes."""
    return " or ".join(f"sum by (instance) ({rate(name, selector=SERVER)})" for name in names)


def server_rate_of(metric: str) -> str:
    """rate() of one server counter, every series kept, for a sum by its own labels."""
    return rate(metric, selector=SERVER)


def server_hit_ratio() -> str:
    """vLLM's hits / queries (current names, then older), or SGLang's own hit rate."""
    ratios = [
        f"{server_rate((hits,))} / {server_rate((queries,))}"
        for hits, queries in (
            ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
            ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"),
        )
    ]
    return " or ".join([*ratios, f"max by (instance) (sglang:cache_hit_rate{matchers(SERVER)})"])
