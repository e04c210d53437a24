"""The one exception tree of agentload; library errors are mapped onto it at the edges."""

from __future__ import annotations

__all__ = ["AgentloadError", "ConfigError", "TargetUnreachableError", "UsageError"]


class AgentloadError(Exception):
    """Root of every error agentload raises on purpose."""

    exit_code = 1


class UsageError(AgentloadError):
    """The command line or a profile asks for something invalid; the message says how to fix it."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value (flag, preset, profile field) is out of range or unknown."""


class TargetUnreachableError(AgentloadError):
    """The endpoint under test cannot be reached, so nothing was measured."""

    exit_code = 3
