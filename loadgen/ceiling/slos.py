"""SLOs as gates over one level's window, and the sink that measures it slice by slice."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from loadgen.ceiling.steadiness import Slice
from loadgen.errors import UsageError
from loadgen.gates.gates import Gate, parse_gates
from loadgen.observe import LatencyHistogram, RunStats
from loadgen.observe.goodput import GoodputRule
from loadgen.observe.records import SessionOutcome, SessionRecord, StepRecord

__all__ = ["WindowSink", "build_slos", "goodput_caps"]

# A profile's `slos:` mapping holds bounds; as gates, latencies are upper bounds and the
# session success rate a lower bound.
_SUCCESS = "session_success"


def _profile_slo(key: str, value: float) -> str:
    if key == _SUCCESS:
        return f"session_success_rate >= {value}"
    return f"{key} < {value}s"


def build_slos(cli: Sequence[str], slos: Mapping[str, float], gates: Iterable[str]) -> list[Gate]:
    """--slo expressions, the profile's `slos` and its `gates`, parsed and judged once each."""
    texts = [*cli, *(_profile_slo(k, v) for k, v in slos.items()), *gates]
    parsed = parse_gates(texts)  # a bad expression is a UsageError naming it
    if not parsed:
        raise UsageError(
            "a ceiling search needs at least one SLO: pass --slo, e.g. --slo 'ttft_p95 < 2s', "
            "or give the profile `slos:`"
        )
    seen: set[tuple[str, str, float]] = set()
    out = []
    for gate in parsed:
        key = (gate.metric, gate.op, gate.threshold)
        if key not in seen:
            seen.add(key)
            out.append(gate)
    return out


def goodput_caps(gates: Sequence[Gate], slos: Mapping[str, float]) -> dict[str, float]:
    """The per-session goodput bounds: the profile's `slos` plus every upper latency SLO."""
    caps = dict(slos)
    for gate in gates:
        family = gate.metric.split("_", 1)[0]
        if family in ("ttft", "ttfat", "e2e", "session", "itl") and gate.op in ("<", "<="):
            caps[gate.metric] = max(caps.get(gate.metric, 0.0), gate.threshold)
    return caps


class WindowSink:
    """Counts records into the slice being measured; knows the level's session lengths.

    `begin()` starts a level (warm-up included), `open_slice()`/`close_slice()` bracket one
    measured slice. Records outside a slice (warm-up, between levels) are not counted.
    Sessions that began before the level count as throughput but are judged by no SLO.
    """

    def __init__(self, rule: GoodputRule) -> None:
        self.rule = rule
        self.stats: RunStats | None = None
        self.begun: RunStats | None = None  # the sessions of `stats` begun at this level
        self.since_unix = 0.0
        self.level_sessions = LatencyHistogram()
        self._judged = 0
        self._goodput = 0
        self._judged_tokens = 0
        self._goodput_tokens = 0
        # Steps are judged whenever they happen: a session that began before the slice still
        # needs every one of its steps judged when it ends inside the slice.
        self._steps_met: dict[str, bool] = {}
        # Each running session's reasoning tokens so far: goodput counts answer tokens.
        self._reasoning: dict[str, int] = {}

    def begin(self, since_unix: float) -> None:
        """A level starts: goodput judges sessions begun at `since_unix` or later."""
        self.since_unix = since_unix
        self.level_sessions = LatencyHistogram()
        self.stats = self.begun = None

    def open_slice(self) -> None:
        """Start counting a new slice."""
        self.stats, self.begun = RunStats(), RunStats()
        self._judged = self._goodput = self._judged_tokens = self._goodput_tokens = 0

    def close_slice(self, start_s: float, duration_s: float) -> Slice:
        """Stop counting; the slice's records and goodput sessions."""
        stats, begun, self.stats, self.begun = self.stats, self.begun, None, None
        return Slice(
            stats=stats if stats is not None else RunStats(),
            duration_s=duration_s,
            start_s=start_s,
            judged_sessions=self._judged,
            goodput_sessions=self._goodput,
            judged_tokens=self._judged_tokens,
            goodput_tokens=self._goodput_tokens,
            begun=begun if begun is not None else RunStats(),
        )

    def typical_session_s(self) -> float | None:
        """The median length of the sessions completed since the level began; None if none."""
        return self.level_sessions.percentile(50)

    def session_started(self, agent: str) -> None:
        """A session began."""
        if self.stats is not None:
            self.stats.session_started(agent)

    def step(self, record: StepRecord) -> None:
        """A step ended."""
        met = self._steps_met.get(record.session_id, True) and self.rule.step_met(record)
        self._steps_met[record.session_id] = met
        if record.reasoning_tokens:
            sid = record.session_id
            self._reasoning[sid] = self._reasoning.get(sid, 0) + record.reasoning_tokens
        if self.stats is not None:
            self.stats.add_step(record)

    def session(self, record: SessionRecord) -> None:
        """A session ended: count it, and as goodput when it met every SLO."""
        met = self._steps_met.pop(record.session_id, True)
        answer_tokens = max(0, record.completion_tokens - self._reasoning.pop(record.session_id, 0))
        if record.outcome == SessionOutcome.COMPLETED:
            # Warm-up included: a window is sized from sessions seen since the level began.
            self.level_sessions.record(record.duration_s)
        if self.stats is None or self.begun is None:
            return
        self.stats.add_session(record)
        # A session begun at an earlier level carries that level's latencies (its queue, its
        # retries) into this window: it counts as throughput here, but no SLO judges it.
        if record.started_unix < self.since_unix:
            return
        self.begun.add_session(record)
        if record.outcome == SessionOutcome.ABORTED:
            return
        self._judged += 1
        self._judged_tokens += answer_tokens
        if self.rule.session_met(record, met):
            self._goodput += 1
            self._goodput_tokens += answer_tokens

    def recovery(self, kind: str, agent: str) -> None:
        """A failure was absorbed."""
        if self.stats is not None:
            self.stats.recovery(kind, agent)

    def tool_call(self, agent: str, tool: str, outcome: str, latency_s: float | None) -> None:
        """Tool calls are counted from step records."""
