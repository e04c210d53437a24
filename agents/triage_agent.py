"""An example custom agent; a profile references it as `kind: triage_agent.py:TriageAgent`.

A custom agent is a subclass of `loadgen.agents.Agent`. Override `Params` to change the
defaults a profile's `params:` start from, and any step-policy method to change behaviour;
the runtime (clocks, retries, checks, records) stays the same.
"""

from __future__ import annotations

from loadgen.agents import (
    Agent,
    AgentParams,
    Distribution,
    ToolParams,
    constant,
    lognormal,
    uniform,
)


class TriageParams(AgentParams):
    """An on-call triage bot: reads logs and metrics, answers briefly, rarely needs a human."""

    system_prompt_tokens: int = 1500
    turns: Distribution = constant(1)
    steps_per_turn: Distribution = uniform(2, 5)
    output_tokens: Distribution = uniform(60, 200)
    tools: list[ToolParams] = [
        ToolParams(
            name="query_logs",
            parameters={
                "type": "object",
                "properties": {"service": {"type": "string"}, "minutes": {"type": "integer"}},
                "required": ["service"],
            },
            latency_s=lognormal(median=0.5, p90=3),
        ),
        ToolParams(
            name="query_metrics",
            parameters={
                "type": "object",
                "properties": {"promql": {"type": "string"}},
                "required": ["promql"],
            },
            latency_s=lognormal(median=0.2, p90=1),
        ),
    ]


class TriageAgent(Agent):
    """Triage: a short burst of tool calls, then a summary for the on-call engineer."""

    kind = "triage"
    Params = TriageParams
