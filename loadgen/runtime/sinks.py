"""Where records go as they happen: statistics, result files, and later metrics and Locust."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from loadgen.observe.records import SessionRecord, StepRecord

__all__ = ["FanOut", "MemorySink", "RecordSink"]


class RecordSink(Protocol):
    """Receives every record the runtime produces; must not block the event loop."""

    def session_started(self, agent: str) -> None:
        """A session began."""

    def step(self, record: StepRecord) -> None:
        """A step ended (successfully or not)."""

    def session(self, record: SessionRecord) -> None:
        """A session ended."""

    def recovery(self, kind: str, agent: str) -> None:
        """A failure of `kind` was absorbed by the profile's reaction."""

    def tool_call(self, agent: str, tool: str, outcome: str, latency_s: float | None) -> None:
        """A simulated tool call ended: a ToolOutcome; no latency when it was aborted."""


class FanOut:
    """Sends each record to several sinks, in order."""

    def __init__(self, sinks: Sequence[RecordSink]) -> None:
        self.sinks = list(sinks)

    def session_started(self, agent: str) -> None:
        """A session began."""
        for sink in self.sinks:
            sink.session_started(agent)

    def step(self, record: StepRecord) -> None:
        """A step ended."""
        for sink in self.sinks:
            sink.step(record)

    def session(self, record: SessionRecord) -> None:
        """A session ended."""
        for sink in self.sinks:
            sink.session(record)

    def recovery(self, kind: str, agent: str) -> None:
        """A failure was absorbed."""
        for sink in self.sinks:
            sink.recovery(kind, agent)

    def tool_call(self, agent: str, tool: str, outcome: str, latency_s: float | None) -> None:
        """A simulated tool call ended."""
        for sink in self.sinks:
            sink.tool_call(agent, tool, outcome, latency_s)


class MemorySink:
    """Keeps every step and session record in lists (for tests and embedding)."""

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self.sessions: list[SessionRecord] = []

    def session_started(self, agent: str) -> None:
        """Nothing to keep until the session ends."""

    def step(self, record: StepRecord) -> None:
        """Keep the step."""
        self.steps.append(record)

    def session(self, record: SessionRecord) -> None:
        """Keep the session."""
        self.sessions.append(record)

    def recovery(self, kind: str, agent: str) -> None:
        """Recoveries are in the session records."""

    def tool_call(self, agent: str, tool: str, outcome: str, latency_s: float | None) -> None:
        """Tool calls are in the step records."""
