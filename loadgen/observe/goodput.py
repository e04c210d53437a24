"""Which sessions count as goodput: completed, and within the profile's SLOs at every step."""

from __future__ import annotations

from collections.abc import Mapping

from loadgen.observe.records import SessionOutcome, SessionRecord, StepRecord

__all__ = ["GoodputRule"]


def _loosest(slos: Mapping[str, float], metric: str) -> float | None:
    bounds = [v for k, v in slos.items() if k.startswith(f"{metric}_") and k != "session_success"]
    return max(bounds) if bounds else None


def _within(value: float | None, cap: float | None) -> bool:
    # A step that streamed no such token (a failure, a non-streamed reply) is judged by e2e.
    return cap is None or value is None or value <= cap


# A profile states percentile SLOs (ttft_p95: 2s); one session has no percentile, so each
# metric's loosest bound is a per-step cap: a step above it is outside the SLO at every
# percentile the profile names. A goodput session completed, every one of its steps
# (sub-agents' and failed attempts included) ended within the e2e cap, streamed its first
# token within the TTFT cap and its first answer token within the TTFAT cap, and the session
# took no longer than the session cap. `itl_*` and `session_success` do not apply to one
# session. No SLOs: every completed session counts.
class GoodputRule:
    """Judges steps and sessions against a profile's `slos` (see docs/observability.md)."""

    def __init__(self, slos: Mapping[str, float]) -> None:
        self.ttft_s = _loosest(slos, "ttft")
        self.ttfat_s = _loosest(slos, "ttfat")
        self.e2e_s = _loosest(slos, "e2e")
        self.session_s = _loosest(slos, "session")

    def step_met(self, record: StepRecord) -> bool:
        """True when this step stayed within the TTFT, TTFAT and end-to-end caps."""
        if self.e2e_s is not None and record.e2e_s > self.e2e_s:
            return False
        return _within(record.ttft_s, self.ttft_s) and _within(record.ttfat_s, self.ttfat_s)

    def session_met(self, record: SessionRecord, every_step_met: bool) -> bool:
        """True for a completed session within the session cap whose steps all met theirs."""
        if record.outcome != SessionOutcome.COMPLETED or not every_step_met:
            return False
        return self.session_s is None or record.duration_s <= self.session_s
