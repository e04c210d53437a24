"""The built-in archetypes, with defaults from public traces of real agent traffic.

Each default names its source. The sources (figures collected in
shared/reference/agentic-workloads.md, and the pages named below):

- TraceLab: UW SyFI's public pool of real Claude Code and Codex sessions, 4,265 sessions
  and 357,161 LLM calls (tracelab.cs.washington.edu, github.com/uw-syfi/TraceLab). Its
  session_internal_counts table: requests per session avg 9.2, P50 1, P90 18, P99 137;
  LLM calls per request ≈ user-initiated (1) + tool-initiated steps (avg 7.8, P50 1,
  P90 20, P99 86); tool-initiated steps per session avg 73.6, P50 15, P90 135; tool calls
  per step avg 1.2, P90 2, P99 4. Per call: cached prefix median 119K, newly appended input
  median 875 (append_by_prefix: P50 700-950 and average 1.4-2.8K once the prefix passes
  32K), output median 214, mean ~523. Tool latency P50 0.3 s, P90 13.6 s, P99 3.6 min, 4%
  of calls over a minute. Human think time P50 1.4 min, P90 20.6 min. Compaction in 4.5%
  (Claude) to 18.4% (Codex) of sessions.
- cc-traces (SemiAnalysis Claude Code traces): first request 16-84K tokens, of which the
  system prompt is 0.5-7.5K and the tool definitions 0.9-17.3K; ~4.3 sub-agents per trace,
  ~25 requests each.
- Codex CLI (codex-rs): auto_compact_token_limit at 90% of the window; a compacted history
  keeps the newest user messages up to COMPACT_USER_MESSAGE_MAX_TOKENS = 20,000.
- Claude Code (its compaction as documented from the npm bundle): restores the 5 most
  recently read files at up to 5K tokens each after summarising (POST_COMPACT_*).

What a 200K budget cannot reproduce: TraceLab's 119K median prefix comes from windows larger
than 200K too (a quarter of its Claude calls have prefixes over 256K, on 1M-token windows;
Codex runs 272K); the coding archetype, compacting at 90% of 200K, steps at a ~95K median
(tests/test_agents_calibration.py measures it).
"""

from __future__ import annotations

from typing import Any, Literal

from loadgen.agents.agent import Agent
from loadgen.agents.distributions import Distribution
from loadgen.agents.params import AgentParams, ToolParams

__all__ = [
    "AssistantAgent",
    "Coding128kAgent",
    "CodingAgent",
    "RagAgent",
    "ResearchAgent",
    "SupportAgent",
]


def _d(value: Any) -> Distribution:
    return Distribution.model_validate(value)


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_STR = {"type": "string"}


class CodingParams(AgentParams):
    """Claude Code / Codex style: long growing context, many tool calls, compaction."""

    # Kept from AgentParams, as TraceLab has them: parallel_tools (tool calls per step mean
    # 1.2, P90 2, P99 4), think_time_s (P50 1.4 min, P90 20.6 min), tool_error_rate.
    # cc-traces: system prompt 0.5-7.5K + tool definitions 0.9-17.3K. Sent as one shared
    # prefix (the tool definitions ride in it when tools are scripted, as they are by
    # default), so the target's prefix cache sees what a fleet of real agents sends.
    system_prompt_tokens: int = 16000
    # The first request's memory files (CLAUDE.md, AGENTS.md), git status, attachments or a
    # resumed conversation: a first request of 16-84K, median ~31K (cc-traces: 16-84K;
    # TraceLab's calls without a cached prefix append a median 78K (Claude), 21-26K (Codex)).
    session_context_tokens: Distribution = _d(
        {"lognormal": {"median": 15000, "p90": 60000}, "high": 68000}
    )
    # TraceLab requests per session: P50 1, P90 18, P99 137, avg 9.2.
    turns: Distribution = _d({"lognormal": {"median": 1, "p90": 16}, "low": 1, "high": 500})
    # TraceLab LLM calls per request (1 + tool-initiated steps): P50 2, P90 21, avg 8.8;
    # P99 87, hence the clamp.
    steps_per_turn: Distribution = _d(
        {"lognormal": {"median": 2, "p90": 18}, "low": 1, "high": 100}
    )
    # A session's first request is its task (TraceLab: tool-initiated steps per session
    # P50 15 while requests per session P50 1); with the above, LLM calls per session come
    # to P50 ~18, P90 ~170, P99 ~1,100, mean ~82 (TraceLab: ~16, ~150, ~1,240, 82.5).
    first_turn_steps: Distribution | None = _d(
        {"lognormal": {"median": 8, "p90": 50}, "low": 1, "high": 400}
    )
    # TraceLab output per call: median 214, mean ~523 (the clamp holds the mean near 440).
    output_tokens: Distribution = _d(
        {"lognormal": {"median": 214, "p90": 1000}, "low": 1, "high": 4096}
    )
    # With the tools' own sizes below and the output, ~750 appended per step at the median
    # and ~1.3K on average: TraceLab's append is P50 700-950, average 1.4-2.8K.
    tool_result_tokens: Distribution = _d(
        {"lognormal": {"median": 450, "p90": 2300}, "high": 32000}
    )
    # A 200K window (Claude Code's default), compacted at 90% of it (Codex's
    # auto_compact_token_limit; Claude Code: ~83% to 95% over its versions); what stays
    # after the summary: the newest tool results and requests, up to 30K tokens (Claude
    # Code restores its 5 newest files at <= 5K each within a 50K post-compaction budget;
    # Codex keeps <= 20K of user messages). A session compacts once it has sent ~100 calls:
    # ~15% of sessions (TraceLab: 4.5% Claude, 18.4% Codex).
    context_budget_tokens: int = 200_000
    compact_at: float = 0.9
    compact_to_tokens: int = 4000
    compact_keep_tokens: int = 30_000
    # Tools are picked by weight. TraceLab gives tool latency over all calls (P50 0.3 s,
    # P90 13.6 s, P99 216 s, 4% over 60 s), not per tool: the weights and latencies are
    # fitted to give that mix (P50 0.31 s, P90 13.7 s, P99 214 s, 3.6% over 60 s), with
    # shell commands (builds, tests) as the slow tail. None waits longer than
    # tool_latency_s's cap (600 s), which every tool's own latency inherits.
    tools: list[ToolParams] = [
        ToolParams(
            name="read_file",
            parameters=_schema({"path": _STR}, ["path"]),
            weight=0.35,
            latency_s=_d({"lognormal": {"median": 0.1, "p90": 0.6}}),
        ),
        ToolParams(
            name="search",
            parameters=_schema({"query": _STR, "path": _STR}, ["query"]),
            weight=0.2,
            latency_s=_d({"lognormal": {"median": 0.4, "p90": 2}}),
        ),
        ToolParams(
            name="edit_file",
            parameters=_schema({"path": _STR, "old": _STR, "new": _STR}, ["path", "old", "new"]),
            weight=0.2,
            latency_s=_d({"lognormal": {"median": 0.2, "p90": 1}}),
            result_tokens=_d(80),
        ),
        ToolParams(
            name="run_shell",
            parameters=_schema(
                {"command": _STR, "timeout_s": {"type": "integer", "minimum": 1, "maximum": 600}},
                ["command"],
            ),
            weight=0.25,
            latency_s=_d({"lognormal": {"median": 8.5, "p90": 90}}),
            error_rate=0.1,
        ),
    ]


class CodingAgent(Agent):
    """A coding agent: many steps per request, growing context, compaction near the budget."""

    kind = "coding"
    Params = CodingParams


class Coding128kParams(CodingParams):
    """The coding agent on a 128K window (Llama 3.x, GPT-4o and most served open models):
    the same traffic, compacted at 90% of 131,072 tokens, so more often."""

    context_budget_tokens: int = 131_072


class Coding128kAgent(CodingAgent):
    """A coding agent whose model has a 128K window."""

    kind = "coding-128k"
    Params = Coding128kParams


class ResearchParams(AgentParams):
    """Fan-out of parallel sub-agents and tools, joined before the next step."""

    system_prompt_tokens: int = 3000
    turns: Distribution = _d({"choice": {1: 0.6, 2: 0.4}})
    steps_per_turn: Distribution = _d({"lognormal": {"median": 5, "p90": 12}, "low": 2, "high": 40})
    # cc-traces: ~4.3 sub-agents per trace. A session makes ~8 calls, each followed by a
    # fan-out of 3-5 with this chance: ~4.4 sub-agents per session.
    subagent_probability: float = 0.15
    # cc-traces: ~25 requests per sub-agent (here mean ~24). Clamped so that a sub-agent's
    # own history (which it never compacts) stays within a 128K window: peak p99 ~94K.
    subagent_steps: Distribution = _d(
        {"lognormal": {"median": 20, "p90": 40}, "low": 2, "high": 45}
    )
    # Result sizes as agents' web tools return them: ~10 search results with snippets, a
    # page's extracted text (Claude Code's WebFetch returns a model's digest of the page).
    tools: list[ToolParams] = [
        ToolParams(
            name="web_search",
            parameters=_schema({"query": _STR}, ["query"]),
            latency_s=_d({"lognormal": {"median": 1.0, "p90": 4}}),
            result_tokens=_d({"lognormal": {"median": 1000, "p90": 2500}, "high": 6000}),
        ),
        ToolParams(
            name="fetch_page",
            parameters=_schema({"url": {"type": "string", "format": "uri"}}, ["url"]),
            latency_s=_d({"lognormal": {"median": 0.8, "p90": 5}}),
            error_rate=0.08,
            result_tokens=_d({"lognormal": {"median": 700, "p90": 2000}, "high": 6000}),
        ),
    ]


class ResearchAgent(Agent):
    """A research agent: forks 3-5 sub-agents at some steps and waits for all of them."""

    kind = "research"
    Params = ResearchParams


class SupportParams(AgentParams):
    """Short turns with a human on the other side."""

    system_prompt_tokens: int = 1500
    turns: Distribution = _d({"uniform": [3, 8]})
    steps_per_turn: Distribution = _d({"choice": {1: 0.7, 2: 0.3}})
    user_tokens: Distribution = _d({"lognormal": {"median": 40, "p90": 120}})
    output_tokens: Distribution = _d({"lognormal": {"median": 150, "p90": 350}, "low": 1})
    think_time_s: Distribution = _d({"lognormal": {"median": 20, "p90": 90}})
    tool_result_tokens: Distribution = _d({"lognormal": {"median": 200, "p90": 600}})
    tools: list[ToolParams] = [
        ToolParams(
            name="lookup_order",
            parameters=_schema({"order_id": _STR}, ["order_id"]),
            latency_s=_d({"lognormal": {"median": 0.2, "p90": 1}}),
        ),
    ]


class SupportAgent(Agent):
    """A support chat: a person types, waits, reads, types again."""

    kind = "support"
    Params = SupportParams


class RagParams(AgentParams):
    """Large retrieved chunks behind one large shared system prompt."""

    system_prompt_tokens: int = 4000
    turns: Distribution = _d({"uniform": [1, 4]})
    steps_per_turn: Distribution = _d(1)
    retrieved_chunks: Distribution = _d({"choice": {4: 0.3, 6: 0.4, 8: 0.3}})
    output_tokens: Distribution = _d({"lognormal": {"median": 300, "p90": 700}, "low": 1})
    think_time_s: Distribution = _d({"lognormal": {"median": 30, "p90": 240}})


class RagAgent(Agent):
    """A RAG agent: each question carries several retrieved documents."""

    kind = "rag"
    Params = RagParams


class AssistantParams(AgentParams):
    """A long-lived assistant: memory across sessions, resumes after idle, server-held state."""

    api: Literal["chat", "responses", "completions"] = "responses"
    state: Literal["client", "server"] = "server"
    memory: bool = True
    system_prompt_tokens: int = 1200
    turns: Distribution = _d({"uniform": [2, 5]})
    steps_per_turn: Distribution = _d({"choice": {1: 0.6, 2: 0.3, 3: 0.1}})
    idle_between_sessions_s: Distribution = _d({"lognormal": {"median": 600, "p90": 3600}})


class AssistantAgent(Agent):
    """A personal assistant that remembers: the Responses chain survives between sessions."""

    kind = "assistant"
    Params = AssistantParams
