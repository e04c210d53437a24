"""The built-in archetypes, with defaults from public traces of real agent traffic.

Figures behind the defaults (see ../shared/reference/agentic-workloads.md): coding agents
make ~8.8 LLM calls per user request (P90 20-30), append ~900 tokens per step (heavy
tail), answer 200-500 tokens, call 1-2 tools in parallel with tool latency median 0.3 s,
P90 14 s, and people think for a median 1.4 minutes between requests; context grows to
80-180K tokens and is then compacted.
"""

from __future__ import annotations

from typing import Any, Literal

from loadgen.agents.agent import Agent
from loadgen.agents.distributions import Distribution
from loadgen.agents.params import AgentParams, ToolParams

__all__ = [
    "AssistantAgent",
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

    system_prompt_tokens: int = 8000
    turns: Distribution = _d({"choice": {2: 0.3, 3: 0.3, 4: 0.25, 6: 0.15}})
    steps_per_turn: Distribution = _d({"lognormal": {"median": 6, "p90": 25}, "low": 1, "high": 80})
    output_tokens: Distribution = _d(
        {"lognormal": {"median": 214, "p90": 1000}, "low": 1, "high": 4096}
    )
    tools: list[ToolParams] = [
        ToolParams(
            name="read_file",
            parameters=_schema({"path": _STR}, ["path"]),
            latency_s=_d({"lognormal": {"median": 0.05, "p90": 0.3}}),
        ),
        ToolParams(
            name="edit_file",
            parameters=_schema({"path": _STR, "old": _STR, "new": _STR}, ["path", "old", "new"]),
            latency_s=_d({"lognormal": {"median": 0.1, "p90": 0.5}}),
            result_tokens=_d(80),
        ),
        ToolParams(
            name="run_shell",
            parameters=_schema(
                {"command": _STR, "timeout_s": {"type": "integer", "minimum": 1, "maximum": 600}},
                ["command"],
            ),
            latency_s=_d({"lognormal": {"median": 2, "p90": 60}}),
            error_rate=0.1,
        ),
        ToolParams(
            name="search",
            parameters=_schema({"query": _STR, "path": _STR}, ["query"]),
            latency_s=_d({"lognormal": {"median": 0.3, "p90": 2}}),
        ),
    ]


class CodingAgent(Agent):
    """A coding agent: many steps per request, growing context, compaction near the budget."""

    kind = "coding"
    Params = CodingParams


class ResearchParams(AgentParams):
    """Fan-out of parallel sub-agents and tools, joined before the next step."""

    system_prompt_tokens: int = 3000
    turns: Distribution = _d({"choice": {1: 0.6, 2: 0.4}})
    steps_per_turn: Distribution = _d({"lognormal": {"median": 5, "p90": 12}, "low": 2, "high": 40})
    subagent_probability: float = 0.3
    tools: list[ToolParams] = [
        ToolParams(
            name="web_search",
            parameters=_schema({"query": _STR}, ["query"]),
            latency_s=_d({"lognormal": {"median": 1.0, "p90": 4}}),
            result_tokens=_d({"lognormal": {"median": 1500, "p90": 4000}}),
        ),
        ToolParams(
            name="fetch_page",
            parameters=_schema({"url": {"type": "string", "format": "uri"}}, ["url"]),
            latency_s=_d({"lognormal": {"median": 0.8, "p90": 5}}),
            error_rate=0.08,
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
