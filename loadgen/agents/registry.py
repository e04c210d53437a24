"""Agent kinds by name: the built-in archetypes, or a class in a user's Python file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from loadgen.agents.agent import Agent
from loadgen.agents.archetypes import (
    AssistantAgent,
    Coding128kAgent,
    CodingAgent,
    RagAgent,
    ResearchAgent,
    SupportAgent,
)
from loadgen.errors import ConfigError

__all__ = ["BUILTIN_AGENTS", "resolve_agent"]

BUILTIN_AGENTS: dict[str, type[Agent]] = {
    cls.kind: cls
    for cls in (
        CodingAgent,
        Coding128kAgent,
        ResearchAgent,
        SupportAgent,
        RagAgent,
        AssistantAgent,
    )
}


def resolve_agent(kind: str, base_dir: Path) -> type[Agent]:
    """The class for `kind`: a built-in name, or "path/to/file.py:ClassName" (relative paths
    are taken from `base_dir`, the profile's folder)."""
    if kind in BUILTIN_AGENTS:
        return BUILTIN_AGENTS[kind]
    if ":" not in kind:
        raise ConfigError(
            f"unknown agent kind {kind!r}: use one of {', '.join(BUILTIN_AGENTS)} "
            "or 'path/to/file.py:ClassName'"
        )
    file_part, _, class_name = kind.rpartition(":")
    path = Path(file_part)
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"agent file {path} not found (kind {kind!r}); fix the path")
    module_name = f"agentload_user_agent_{abs(hash(str(path.resolve())))}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load agent file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(f"agent file {path} failed to import: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ConfigError(
            f"{path} has no Agent subclass named {class_name!r}; "
            "define `class MyAgent(loadgen.agents.Agent)`"
        )
    return cls
