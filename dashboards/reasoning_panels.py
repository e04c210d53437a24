"""Reasoning models' panels: the wait for the first answer token, and answer vs reasoning tokens.

The metrics are issue 16's: agentload_ttfat_seconds (a histogram with agentload_ttft_seconds'
labels and buckets: request sent to the first content or tool-call token; reasoning deltas do
not count) and agentload_reasoning_tokens_total (a counter with
agentload_completion_tokens_total's labels; reasoning tokens are part of completion tokens).
"""

# A run whose model reports no reasoning counts none: its answer is all its output, its
# reasoning share 0, and TTFAT equals TTFT. Where the reasoning counter has no series at all
# (an agentload from before it), the token panels draw nothing: a subtraction or a division
# with an empty side is empty, never an error. Run `python dashboards/build.py` after
# editing a panel.

from __future__ import annotations

from grafana_model import Panel, Query
from promql import quantile, total

_COMPLETION = "agentload_completion_tokens_total"
_REASONING = "agentload_reasoning_tokens_total"

TTFAT_PANEL = Panel(
    "Time to first answer token (TTFAT)",
    shows="Request sent to the first content or tool-call token, after whatever the model "
    "reasoned first: what an agent waits for before it can act. Without reasoning it is TTFT.",
    bad="well above TTFT: the model reasons at length before answering, each reasoning "
    "token decoded at the inter-token latency; rising while TTFT holds: reasoning grew, not "
    "the queue.",
    check="'Answer vs reasoning tokens/s' and 'Reasoning share' on the Overview, then the "
    "profile's reasoning_effort and thinking_budget.",
    queries=[
        Query(quantile(q, "agentload_ttfat_seconds"), f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)
    ],
    unit="s",
)

REASONING_TOKEN_PANELS = [
    Panel(
        "Answer vs reasoning tokens/s",
        shows="Completion tokens per second split into the answer (content and tool calls) and "
        "the reasoning before it; stacked, they are the output tokens per second (all answer "
        "when the model reports no reasoning).",
        bad="reasoning well above the answer: the target spends its decode time thinking, "
        "and agents wait for it; reasoning rising while answers hold: the effort grew.",
        check="'Reasoning share' for the fraction per agent, TTFAT on the Latency dashboard "
        "for the wait it adds, and the profile's reasoning_effort and thinking_budget.",
        queries=[
            Query(f"{total(_COMPLETION)} - {total(_REASONING)}", "answer"),
            Query(total(_REASONING), "reasoning"),
        ],
        stacked=True,
    ),
    Panel(
        "Reasoning share",
        shows="Reasoning tokens over completion tokens, for all agents and per archetype "
        "(reasoning_effort is set per agent); 0 when the model reports no reasoning.",
        bad="near 1 for an archetype: it hits max_tokens or its thinking budget while "
        "still reasoning, and its requests end with no answer (finish reason length).",
        check="abnormal_finish in State failures by kind (Agent state), and that agent's "
        "max_tokens against its thinking_budget.",
        queries=[
            Query(f"{total(_REASONING)} / {total(_COMPLETION)}", "all"),
            Query(f"{total(_REASONING, 'agent')} / {total(_COMPLETION, 'agent')}", "{{agent}}"),
        ],
        unit="percentunit",
    ),
]
