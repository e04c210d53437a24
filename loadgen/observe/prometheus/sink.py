"""The RecordSink that turns the runtime's records into agentload_* metrics as they happen."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

from loadgen.observe.goodput import GoodputRule
from loadgen.observe.prometheus.families import MetricFamilies
from loadgen.observe.prometheus.histogram import HistogramChild
from loadgen.observe.records import SessionOutcome, SessionRecord, StepRecord
from loadgen.protocol.failures import FailureKind

__all__ = ["MAX_LABEL_VALUES", "OTHER_LABEL", "MetricsSink"]

# Distinct values one label may take per sink; past that, new values read as OTHER_LABEL.
# Agent, tool and step-kind names come from profiles and replies, so a runaway profile or
# a model inventing tool names must not be able to grow the series count without bound.
MAX_LABEL_VALUES = 64
OTHER_LABEL = "other"

_KINDS = tuple(kind.value for kind in FailureKind)
# The step kinds the built-in agents and the runtime use. Their request counters start at
# zero with the agent, so even the first compaction of a run shows in rate().
_STEP_KINDS = ("turn", "tool_result", "subagent", "subagent_result", "compaction", "resume")
_OUTCOMES = (SessionOutcome.COMPLETED, SessionOutcome.FAILED, SessionOutcome.ABORTED)
# Kinds that leave the reply usable: never the reason a request failed.
_USABLE = frozenset({FailureKind.CACHE_MISS.value, FailureKind.CONTEXT_TRUNCATED.value})


class _BoundedValues:
    """Passes the first `cap` distinct values of a label through; later ones become OTHER."""

    def __init__(self, cap: int) -> None:
        self._seen: set[str] = set()
        self._cap = cap

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._cap:
            return OTHER_LABEL
        self._seen.add(value)
        return value


@dataclass(slots=True)
class _ReplicaSeries:
    """The children one replica writes to, looked up once."""

    ok: Counter
    failed: Counter
    prompt: Counter
    completion: Counter
    cached: Counter
    ttft: HistogramChild
    e2e: HistogramChild


@dataclass(slots=True)
class _StepSeries:
    """The children one (agent, step kind) pair writes to, looked up once."""

    ok: Counter
    failed: Counter
    prompt: Counter
    completion: Counter
    cached: Counter
    reasoning: Counter
    ttft: HistogramChild
    ttfat: HistogramChild
    itl: HistogramChild
    e2e: HistogramChild
    context: HistogramChild


class MetricsSink:
    """Counts every record of a run of `profile` into its metric families; see RunMetrics.sink()."""

    def __init__(self, metrics: MetricFamilies, profile: str, goodput: GoodputRule) -> None:
        self.metrics = metrics
        self.profile = profile
        self.goodput = goodput
        self._agent = _BoundedValues(MAX_LABEL_VALUES)
        self._tool = _BoundedValues(MAX_LABEL_VALUES)
        self._step_kind = _BoundedValues(MAX_LABEL_VALUES)
        self._agents: set[str] = set()
        self._steps: dict[tuple[str, str], _StepSeries] = {}
        self._replica = _BoundedValues(MAX_LABEL_VALUES)
        self._replicas: dict[str, _ReplicaSeries] = {}
        self._schedule_lag = metrics.schedule_lag.labels(profile)
        # Sessions (and their sub-agents, "<session>.<i>") with a step outside the SLO caps.
        self._missed: set[str] = set()

    def _agent_label(self, agent: str) -> str:
        label = self._agent(agent)
        if label not in self._agents:
            # Zeros from the start, so rate() and increase() see each first event.
            self._agents.add(label)
            m, p = self.metrics, self.profile
            m.sessions_active.labels(p, label)
            m.goodput_sessions.labels(p, label)
            for outcome in _OUTCOMES:
                m.sessions.labels(p, label, outcome)
            for kind in _KINDS:
                m.state_failures.labels(p, label, kind)
                m.recoveries.labels(p, label, kind)
                m.request_errors.labels(p, label, kind)
            for step_kind in _STEP_KINDS:
                for outcome in ("ok", "failed"):
                    m.requests.labels(p, label, self._step_kind(step_kind), outcome)
        return label

    def _series(self, agent: str, step_kind: str) -> _StepSeries:
        series = self._steps.get((agent, step_kind))
        if series is None:
            m, labels = self.metrics, (self.profile, agent, step_kind)
            series = self._steps[(agent, step_kind)] = _StepSeries(
                ok=m.requests.labels(*labels, "ok"),
                failed=m.requests.labels(*labels, "failed"),
                prompt=m.prompt_tokens.labels(*labels),
                completion=m.completion_tokens.labels(*labels),
                cached=m.cached_tokens.labels(*labels),
                reasoning=m.reasoning_tokens.labels(*labels),
                ttft=m.ttft.labels(*labels),
                ttfat=m.ttfat.labels(*labels),
                itl=m.itl.labels(*labels),
                e2e=m.request_duration.labels(*labels),
                context=m.context_tokens.labels(*labels),
            )
        return series

    def _replica_series(self, replica: str) -> _ReplicaSeries:
        label = self._replica(replica)
        series = self._replicas.get(label)
        if series is None:
            m, p = self.metrics, self.profile
            for kind in _KINDS:  # zeros from the start, as the agents' counters
                m.replica_state_failures.labels(p, label, kind)
            series = self._replicas[label] = _ReplicaSeries(
                ok=m.replica_requests.labels(p, label, "ok"),
                failed=m.replica_requests.labels(p, label, "failed"),
                prompt=m.replica_prompt_tokens.labels(p, label),
                completion=m.replica_completion_tokens.labels(p, label),
                cached=m.replica_cached_tokens.labels(p, label),
                ttft=m.replica_ttft.labels(p, label),
                e2e=m.replica_request_duration.labels(p, label),
            )
        return series

    def _count_replica(self, record: StepRecord, replica: str) -> None:
        """The replica's share of one step, by the same rules as step()."""
        series = self._replica_series(replica)
        if record.ok:
            series.ok.inc()
            if record.ttft_s is not None:
                series.ttft.observe(record.ttft_s)
            series.e2e.observe(record.e2e_s)
        else:
            series.failed.inc()
        for kind in record.failures:
            self.metrics.replica_state_failures.labels(
                self.profile, self._replica(replica), kind
            ).inc()
        if record.prompt_tokens:
            series.prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            series.completion.inc(record.completion_tokens)
        if record.cached_tokens:
            series.cached.inc(record.cached_tokens)

    def session_started(self, agent: str) -> None:
        """A session began."""
        self.metrics.sessions_active.labels(self.profile, self._agent_label(agent)).inc()

    def step(self, record: StepRecord) -> None:
        """Count one request; the same rules as RunStats, so the two always agree."""
        agent = self._agent_label(record.agent)
        series = self._series(agent, self._step_kind(record.kind))
        if record.ok:
            series.ok.inc()
            if record.ttft_s is not None:
                series.ttft.observe(record.ttft_s)
            if record.ttfat_s is not None:
                series.ttfat.observe(record.ttfat_s)
            series.itl.observe_many(record.itl_s)
            series.e2e.observe(record.e2e_s)
        else:
            series.failed.inc()
            reason = next((k for k in record.failures if k not in _USABLE), None)
            reason = reason or (record.failures[0] if record.failures else OTHER_LABEL)
            self.metrics.request_errors.labels(self.profile, agent, reason).inc()
        for kind in record.failures:
            self.metrics.state_failures.labels(self.profile, agent, kind).inc()
        if record.prompt_tokens:
            series.prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            series.completion.inc(record.completion_tokens)
        if record.cached_tokens:
            series.cached.inc(record.cached_tokens)
        if record.reasoning_tokens:
            series.reasoning.inc(record.reasoning_tokens)
        if record.context_tokens > 0:  # 0 means the agent made no estimate
            series.context.observe(record.context_tokens)
        self._schedule_lag.observe(max(record.schedule_lag_s, 0.0))
        if record.replica is not None:
            self._count_replica(record, record.replica)
        if not self.goodput.step_met(record):
            self._missed.add(record.session_id)

    def session(self, record: SessionRecord) -> None:
        """Count one ended session, and whether it was goodput."""
        m, p = self.metrics, self.profile
        agent = self._agent_label(record.agent)
        m.sessions_active.labels(p, agent).dec()
        m.sessions.labels(p, agent, record.outcome).inc()
        m.session_duration.labels(p, agent, record.outcome).observe(record.duration_s)
        m.session_steps.labels(p, agent, record.outcome).observe(record.steps)
        if self.goodput.session_met(record, every_step_met=not self._forget(record.session_id)):
            m.goodput_sessions.labels(p, agent).inc()

    def _forget(self, session_id: str) -> bool:
        """Drop the session and its sub-agents from the missed set; True if any was there."""
        if not self._missed:
            return False
        prefix = session_id + "."
        gone = {s for s in self._missed if s == session_id or s.startswith(prefix)}
        self._missed -= gone
        return bool(gone)

    def recovery(self, kind: str, agent: str) -> None:
        """A failure was absorbed by a reaction."""
        self.metrics.recoveries.labels(self.profile, self._agent_label(agent), kind).inc()

    def tool_call(self, agent: str, tool: str, outcome: str, latency_s: float | None) -> None:
        """A simulated tool call ended; an aborted one has no latency to observe."""
        label, name = self._agent_label(agent), self._tool(tool)
        self.metrics.tool_calls.labels(self.profile, label, name, outcome).inc()
        if latency_s is not None:
            self.metrics.tool_latency.labels(self.profile, label, name).observe(latency_s)
