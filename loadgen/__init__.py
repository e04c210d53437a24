"""agentload: a load tester for agentic LLM traffic (import package `loadgen`)."""

from loadgen.errors import AgentloadError, ConfigError, TargetUnreachableError, UsageError

__version__ = "0.1.0"

__all__ = ["AgentloadError", "ConfigError", "TargetUnreachableError", "UsageError", "__version__"]
