"""The Fleet dashboard: a fleet's replicas side by side, from their own metrics and agentload's."""

# Run `python dashboards/build.py` after editing a panel. tests/test_dashboards_fleet_live.py
# runs every query here against a real Prometheus scraping a simulated fleet under load, and
# tests/test_dashboards_fleet.py the per-replica grouping on vLLM's, SGLang's and llama.cpp's
# label shapes (promql.replica_keyed says how a replica is told apart).

from __future__ import annotations

from grafana_model import Dashboard, Panel, Query
from promql import (
    GENERATION_TOKENS,
    KV_USAGE,
    RUNNING,
    WAITING,
    quantile,
    replica_gauge,
    replica_hit_ratio,
    replica_rate,
    sim_fleet,
    total,
)

# A fleet's replicas as agentload saw them (several --target, or a response header naming
# the replica): empty for a single target that names none. The Overview shows them too.
FLEET_PANELS = [
    Panel(
        "Requests per second by replica",
        shows="LLM requests each replica of the fleet served (or was sent), ok and failed "
        "together.",
        bad="one replica well above the others: the balancing (or the router) piles load on "
        "it; one at zero: it was left out or is down.",
        check="'Replica imbalance' for how far, 'TTFT p95 by replica' for what it costs.",
        queries=[Query(total("agentload_replica_requests_total", "replica"), "{{replica}}")],
        unit="reqps",
        stacked=True,
    ),
    Panel(
        "Replica imbalance (busiest / mean)",
        shows="The busiest replica's request rate over the mean replica's: 1 is even.",
        bad="well above 1 (1.5: the busiest serves half again its share): session "
        "affinity concentrates long sessions, or a router prefers one replica.",
        check="'Requests per second by replica' for which one; under session-sticky "
        "balancing, a few long sessions can outweigh many short ones.",
        queries=[
            Query(
                f"max({total('agentload_replica_requests_total', 'replica')}) / "
                f"avg({total('agentload_replica_requests_total', 'replica')})",
                "busiest / mean",
            )
        ],
    ),
    Panel(
        "TTFT p95 by replica",
        shows="Time to first token on each replica.",
        bad="one replica slower than the others: it is overloaded, slower hardware, or "
        "re-prefilling histories it has not cached.",
        check="'Prefix-cache hit ratio by replica' and that replica's own Server dashboard.",
        queries=[Query(quantile(0.95, "agentload_replica_ttft_seconds", "replica"), "{{replica}}")],
        unit="s",
    ),
    Panel(
        "Prefix-cache hit ratio by replica",
        shows="Cached prompt tokens over prompt tokens, as each replica reported them.",
        bad="low on every replica while sessions resend long histories: each session's "
        "steps land on replicas that never saw its prefix (round robin).",
        check="balance by session (--balance session) or an affinity router, and compare.",
        queries=[
            Query(
                f"{total('agentload_replica_cached_tokens_total', 'replica')} / "
                f"{total('agentload_replica_prompt_tokens_total', 'replica')}",
                "{{replica}}",
            )
        ],
        unit="percentunit",
    ),
    Panel(
        "State failures by replica",
        shows="Failures found in steps (server_state_lost, cache_miss, errors...) per replica.",
        bad="server_state_lost on a fleet: a session's chained request reached a replica "
        "without its stored response; failures on one replica only: that replica is sick.",
        check="the summary's by_replica, and session affinity for lost state.",
        queries=[
            Query(
                total("agentload_replica_state_failures_total", "replica, kind"),
                "{{replica}} {{kind}}",
            )
        ],
        unit="reqps",
        stacked=True,
    ),
]

_GENERATION = replica_rate(GENERATION_TOKENS)

# The replicas' own metrics, one line per replica (promql.replica_keyed), then the simulated
# fleet's router and replica families (agentload_sim_*: a real router has its own).
_SERVER_PANELS = [
    Panel(
        "Running requests per replica",
        shows="Requests in each replica's running batch, from its own metrics (vLLM, SGLang, "
        "llama.cpp).",
        bad="one replica's batch full while others have room: the router sends it more than "
        "its share; every batch full: the fleet is at its ceiling.",
        check="'Waiting requests per replica' for the queue this builds, and 'Load relative "
        "to the mean replica'.",
        queries=[Query(replica_gauge(RUNNING), "{{replica}}")],
        stacked=True,
    ),
    Panel(
        "Waiting requests per replica",
        shows="Requests queued on each replica for a batch slot or KV blocks.",
        bad="a queue on one replica while another has none: affinity (session or prefix) "
        "holds sessions on a busy replica; queues everywhere: the fleet is short of capacity.",
        check="'KV-cache usage per replica' for which resource is short, and 'Router "
        "decisions by reason' for how the router trades affinity against load.",
        queries=[Query(replica_gauge(WAITING), "{{replica}}")],
    ),
    Panel(
        "KV-cache usage per replica",
        shows="Fraction of each replica's KV cache in use (SGLang: of its token pool).",
        bad="near 100% on a replica: it preempts and evicts the prefixes its sessions will "
        "resend; near 100% on all under round robin: every replica caches every session.",
        check="'Prefix-cache hit ratio per replica (server)'; an affinity router keeps each "
        "replica's share of the sessions, round robin all of them.",
        queries=[Query(replica_gauge(KV_USAGE, "max"), "{{replica}}")],
        unit="percentunit",
    ),
    Panel(
        "Prefix-cache hit ratio per replica (server)",
        shows="Hits / queries of each replica's prefix cache (SGLang: its cache_hit_rate; "
        "llama.cpp has no such metric).",
        bad="low on every replica while agents resend long histories: sessions' steps land "
        "where their prefix is not cached (round robin, or a router that lost affinity).",
        check="'Prefix-cache hit ratio by replica' (agentload's view) and 'Affinity breaks "
        "by replica'; then a session or prefix-aware router.",
        queries=[Query(replica_hit_ratio(), "{{replica}}")],
        unit="percentunit",
    ),
    Panel(
        "Generation tokens per second per replica",
        shows="Tokens each replica generated per second: the work it does.",
        bad="a replica flat while the others climb: it gets few requests, or it is stuck or "
        "out of service.",
        check="'Load relative to the mean replica' for the spread, and 'Replicas in service "
        "and removals' for one taken out.",
        queries=[Query(_GENERATION, "{{replica}}")],
        stacked=True,
    ),
    Panel(
        "Load relative to the mean replica",
        shows="Each replica's generation tokens/s over the mean replica's, from the servers' "
        "metrics: 1 is its even share.",
        bad="one replica well above 1 (1.5: half again its share): the router piles load on "
        "it; one near 0: it is left out.",
        check="'Replica imbalance (busiest / mean)' for the requests agentload sent, and the "
        "router's policy (a few long sessions outweigh many short ones under affinity).",
        queries=[Query(f"({_GENERATION}) / scalar(avg({_GENERATION}))", "{{replica}}")],
    ),
    Panel(
        "Router decisions by reason (simulated fleet)",
        shows="Requests the simulated fleet's router placed per second, by why it chose the "
        "replica (docs/fleets.md lists the reasons of each router).",
        bad="token-lost: sessions moved off a removed replica; load (prefix-load): requests "
        "sent away from their cached prefix; no-prefix or no-session: nothing to keep "
        "affinity with.",
        check="'Affinity breaks by replica' for what the moves cost, and 'Replicas in "
        "service and removals' for the replica that went away.",
        queries=[Query(sim_fleet("agentload_sim_router_decisions_total", "reason"), "{{reason}}")],
        unit="reqps",
        stacked=True,
    ),
    Panel(
        "Requests in flight per replica (router)",
        shows="Requests the simulated fleet's router has sent to each replica and not yet "
        "had answered: what its least-loaded and prefix-load routers weigh.",
        bad="one replica holding most of them: affinity outweighs load there; all rising: "
        "the fleet is short of capacity.",
        check="'Running requests per replica' and 'Waiting requests per replica' for how "
        "each replica holds them.",
        queries=[
            Query(
                sim_fleet("agentload_sim_router_in_flight", "replica", how="value"),
                "{{replica}}",
            )
        ],
        stacked=True,
    ),
    Panel(
        "Affinity breaks by replica",
        shows="Steps that lost what their replica should have held, per replica: agentload's "
        "cache_miss and server_state_lost, and the simulated fleet's own count of "
        "previous_response_id lookups it could not find.",
        bad="server_state_lost: a chained request reached a replica without its stored "
        "response; cache_miss: a resent history was not cached there; on one replica after "
        "a removal: its sessions moved.",
        check="'Router decisions by reason', then session affinity (--router session, "
        "--balance session) or a shared store; the two lost-state lines should agree.",
        queries=[
            Query(
                total(
                    "agentload_replica_state_failures_total",
                    "replica, kind",
                    'kind=~"cache_miss|server_state_lost"',
                ),
                "{{replica}} {{kind}} (agentload)",
            ),
            Query(
                sim_fleet("agentload_sim_response_lookups_total", "replica", 'result="not_found"'),
                "{{replica}} not found (server)",
            ),
        ],
        unit="reqps",
    ),
    Panel(
        "Replicas in service and removals",
        shows="The simulated fleet's replicas in service (1 each), and since it started, each "
        "replica's removals (admin or crash) and the requests they failed; a real fleet's "
        "targets are on Prometheus's Status > Targets page.",
        bad="a replica at 0: taken out; a step in its removals: it went away, failing what "
        "ran there (503s or cut streams) and losing its cache and stored responses.",
        check="'Affinity breaks by replica' for its sessions' lost state, and 'State "
        "failures by replica' for what agentload counted.",
        queries=[
            Query(
                sim_fleet("agentload_sim_replica_up", "replica", how="value"),
                "{{replica}} in service",
            ),
            Query(
                # Every replica's series starts at 0: only those that went away are drawn.
                sim_fleet("agentload_sim_replica_removals_total", "replica, cause", how="value")
                + " > 0",
                "{{replica}} removed ({{cause}})",
            ),
            Query(
                sim_fleet("agentload_sim_replica_lost_requests_total", "replica", how="value"),
                "{{replica}} requests lost",
            ),
        ],
    ),
]

FLEET = Dashboard(
    uid="agentload-fleet",
    title="agentload / Fleet",
    description="A fleet's replicas side by side: load, queue, KV use, cache hits, "
    "imbalance and broken affinity, from the replicas' own metrics (a simulated fleet's "
    "replica label, vLLM's engine label, or one target per replica) and agentload's.",
    target_filter=True,
    panels=[*_SERVER_PANELS, *FLEET_PANELS],
)
