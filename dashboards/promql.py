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


# -- a fleet's replicas ------------------------------------------------------------------------
# One `replica` label for every way a fleet's engine metrics are told apart. The simulated
# fleet (`agentload sim --replicas N`) labels each replica's samples replica="r0".. (the name
# its response header gives, so agentload_replica_* carry it too) and engine="0"..; vLLM
# labels its data-parallel engines engine="0".. only (a single engine too, so every server of
# a fleet has an engine="0"); a fleet of servers scraped as several targets (SGLang,
# llama.cpp, vLLM without DP) differs by instance alone. The key is the series' own replica
# when it has one, else "<instance> engine <engine>" (the instance kept, as engine numbers
# repeat on every server), else its instance. label_join writes the three into one scratch
# label, "replica;engine;instance", which label_replace's anchored regexes can test: each
# rewrites `replica` only on the series it matches, and the `by (replica)` aggregation that
# follows drops the scratch label. Two simulated fleets selected together share replica
# names (r0 of each counts as one): select one with $target.
_SCRATCH = "fleet_key"


def replica_keyed(vector: str) -> str:
    """`vector` with its `replica` label set to the fleet replica each series belongs to."""
    joined = f'label_join({vector}, "{_SCRATCH}", ";", "replica", "engine", "instance")'
    engine = (
        f'label_replace({joined}, "replica", "${{2}} engine ${{1}}", "{_SCRATCH}", ";([^;]+);(.+)")'
    )
    return f'label_replace({engine}, "replica", "${{1}}", "{_SCRATCH}", ";;(.+)")'


def replica_gauge(names: Sequence[str], how: str = "sum") -> str:
    """A server gauge per replica, from whichever of `names` the servers expose."""
    # `or` per series, inside the aggregation (as in server_quantile): a server exporting an
    # old and a new name (same labels) is counted once, every server of a mixed fleet kept.
    either = " or ".join(name + matchers(SERVER) for name in names)
    return f"{how} by (replica) ({replica_keyed(either)})"


def replica_rate(names: Sequence[str]) -> str:
    """A server counter's rate per replica, from whichever of `names` the servers expose."""
    either = " or ".join(rate(name, selector=SERVER) for name in names)
    return f"sum by (replica) ({replica_keyed(either)})"


def replica_hit_ratio() -> str:
    """Per replica: vLLM's prefix-cache hits / queries (current names or older), or SGLang's
    own hit rate."""
    hits = replica_rate(("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"))
    queries = replica_rate(
        ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
    )
    return f"{hits} / {queries} or {replica_gauge(('sglang:cache_hit_rate',), 'max')}"


def sim_fleet(metric: str, by: str, extra: str = "", how: str = "rate") -> str:
    """One of the simulated fleet's own families (agentload_sim_*) summed by `by`: a counter's
    rate over the panel's window, or (how="value") a gauge or a counter as it stands."""
    # Rare events (a replica's removals) read best as running totals: a step that stays on
    # the panel, where a rate over the window is a blip that scrolls away.
    if how == "value":
        return f"sum by ({by}) ({metric}{matchers(SERVER, extra)})"
    return f"sum by ({by}) ({how}({metric}{matchers(SERVER, extra)}[{WINDOW}]))"
