"""What a Prometheus scrape, and a worker's report to its master, cost the generator's loop.

A single-process run serves /metrics from its own event loop, and a swarm worker builds its
report's metric samples there too, so their cost is time the loop is not starting steps.
Builds a RunMetrics with --agents agent labels x 6 step kinds (TTFT, ITL, e2e and context
histograms, request and token counters) and --tools tools per agent, then, --rounds times,
lets a few series change (one step per agent) and times:

  generate_latest      prometheus_client's full text exposition (what a scrape cost before)
  incremental          IncrementalExposition.render(): only changed series are formatted
  report (tracker)     SampleTracker.changes(): a worker's samples for the master

    python bench/metrics_exposition.py
    python bench/metrics_exposition.py --agents 32 --tools 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from prometheus_client import generate_latest

from loadgen.observe.prometheus.merge import SampleTracker
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.prometheus.text import IncrementalExposition

KINDS = ("turn", "tool_result", "subagent", "subagent_result", "compaction", "resume")


def populated(agents: int, tools: int) -> RunMetrics:
    m = RunMetrics()
    for a in range(agents):
        for kind in KINDS:
            labels = ("bench", f"agent{a}", kind)
            m.ttft.labels(*labels).observe(0.1)
            m.itl.labels(*labels).observe(0.01)
            m.request_duration.labels(*labels).observe(1.0)
            m.context_tokens.labels(*labels).observe(1000)
            m.requests.labels(*labels, "ok").inc()
            m.prompt_tokens.labels(*labels).inc(100)
        for t in range(tools):
            m.tool_calls.labels("bench", f"agent{a}", f"tool{t}", "ok").inc()
            m.tool_latency.labels("bench", f"agent{a}", f"tool{t}").observe(0.1)
    return m


def one_step_per_agent(m: RunMetrics, agents: int) -> None:
    for a in range(agents):
        labels = ("bench", f"agent{a}", "turn")
        m.ttft.labels(*labels).observe(0.2)
        m.itl.labels(*labels).observe(0.02)
        m.requests.labels(*labels, "ok").inc()


def timed(fn: Callable[[], object], m: RunMetrics, agents: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        one_step_per_agent(m, agents)
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--agents", type=int, default=8, help="agent labels (default 8)")
    ap.add_argument("--tools", type=int, default=10, help="tools per agent (default 10)")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds (default 15)")
    args = ap.parse_args()
    m = populated(args.agents, args.tools)
    series = sum(len(f.samples) for f in m.registry.collect())
    exposition = IncrementalExposition(m)
    exposition.render()  # the first render formats everything once
    tracker = SampleTracker(m)
    tracker.changes()
    full = timed(lambda: generate_latest(m.registry), m, args.agents, args.rounds)
    incremental = timed(exposition.render, m, args.agents, args.rounds)
    report = timed(tracker.changes, m, args.agents, args.rounds)
    print(f"{series} samples; {args.agents} agents changing one step each between rounds")
    print(f"generate_latest   {full * 1000:7.1f} ms  (median of {args.rounds})")
    print(f"incremental       {incremental * 1000:7.1f} ms  ({full / incremental:.1f}x less)")
    print(f"report (tracker)  {report * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
