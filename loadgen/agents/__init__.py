"""Agent archetypes: the long-lived state each synthetic agent keeps and its step policy."""

from loadgen.agents.agent import Agent, StepPlan, ToolInvocation, stable_seed
from loadgen.agents.archetypes import (
    AssistantAgent,
    Coding128kAgent,
    CodingAgent,
    RagAgent,
    ResearchAgent,
    SupportAgent,
)
from loadgen.agents.conversation import Conversation
from loadgen.agents.distributions import (
    Distribution,
    choice,
    constant,
    lognormal,
    parse_seconds,
    uniform,
)
from loadgen.agents.params import AgentParams, ToolParams
from loadgen.agents.registry import BUILTIN_AGENTS, resolve_agent

__all__ = [
    "BUILTIN_AGENTS",
    "Agent",
    "AgentParams",
    "AssistantAgent",
    "Coding128kAgent",
    "CodingAgent",
    "Conversation",
    "Distribution",
    "RagAgent",
    "ResearchAgent",
    "StepPlan",
    "SupportAgent",
    "ToolInvocation",
    "ToolParams",
    "choice",
    "constant",
    "lognormal",
    "parse_seconds",
    "resolve_agent",
    "stable_seed",
    "uniform",
]
