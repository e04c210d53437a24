"""One load level: settle during a warm-up, then measure rolling windows until steady."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

from loadgen.ceiling.driver import LevelDriver
from loadgen.ceiling.figures import level_figures, slice_figures
from loadgen.ceiling.search import LevelResult
from loadgen.ceiling.steadiness import (
    DRIFT_TOLERANCE,
    SESSION_COVER,
    Drift,
    Slice,
    drift,
    extension_reasons,
    merge_slices,
    window_span,
)
from loadgen.gates.gates import Gate, GateResult, evaluate_gates
from loadgen.observe import GeneratorHealth, LatencyHistogram
from loadgen.observe.generator_limits import MIN_LATE_SAMPLES, GeneratorLimits, lag_tail
from loadgen.observe.target_metrics import TargetMetricsSampler

__all__ = [
    "ERROR_STORM_RATE",
    "MIN_LATE_SAMPLES",
    "GeneratorLimits",
    "LevelRunner",
    "Windows",
    "lag_tail",
]

# Past half the requests failing, the target is refusing load; more levels only hammer it.
ERROR_STORM_RATE = 0.5
# An error storm ends a level early once this many requests show it, not on a handful.
_STORM_MIN_REQUESTS = 10


@dataclass(frozen=True)
class Windows:
    """How long each level settles and is measured, and how often the target is scraped.

    The steady window is measured in `slices` equal slices; it may be extended one slice at a
    time up to `max_window_s` (default: twice `window_s`) by the rolling-window rule of
    `loadgen.ceiling.steadiness`.
    """

    warmup_s: float = 30.0
    window_s: float = 60.0
    metrics_url: str | None = None
    scrape_interval_s: float = 2.0
    slices: int = 4
    max_window_s: float | None = None
    drift_tolerance: float = DRIFT_TOLERANCE
    session_cover: float = SESSION_COVER

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.warmup_s < 0:
            raise ValueError("window_s must be > 0 and warmup_s >= 0")
        if self.slices < 2:
            raise ValueError("slices must be at least 2: steadiness compares two halves")
        if self.max_window_s is not None and self.max_window_s < self.window_s:
            raise ValueError("max_window_s must be at least window_s")

    @property
    def slice_s(self) -> float:
        """The length of one slice."""
        return self.window_s / self.slices

    @property
    def longest_s(self) -> float:
        """The longest a level's measured period may run, extensions included."""
        return self.max_window_s if self.max_window_s is not None else 2 * self.window_s


@dataclass
class _Assessment:
    """The rolling window as it stands after the latest slice."""

    span: int  # how many of the latest slices form the window
    window: Slice
    summary: dict[str, Any]
    results: list[GateResult]
    trend: Drift
    typical_session_s: float | None
    reasons: dict[str, str]  # why one more slice could change the verdict, by kind

    @property
    def held(self) -> bool:
        return all(r.passed for r in self.results)


class LevelRunner:
    """Runs levels through one driver (this process, or a swarm); `measure(load)` is one."""

    def __init__(
        self,
        driver: LevelDriver,
        slos: list[Gate],
        windows: Windows,
        limits: GeneratorLimits | None = None,
    ) -> None:
        self.driver = driver
        self.slos = slos
        self.windows = windows
        self.limits = limits or GeneratorLimits()
        self.closed = driver.closed

    async def measure(self, load: float, time_left_s: float = math.inf) -> LevelResult:
        """Run `load` for a warm-up, then slices until the rolling window can be judged.

        `time_left_s` (what the search's duration cap leaves) bounds the extensions.
        """
        w = self.windows
        # Wall clock, as sessions record their start.
        await self.driver.start_level(load, time.time(), w.warmup_s + w.longest_s + 60)
        await asyncio.sleep(w.warmup_s)
        limit = min(w.longest_s, time_left_s - w.warmup_s)
        budget = max(w.slices, math.floor(limit / w.slice_s + 1e-9))
        lag = LatencyHistogram()
        health = self.driver.health(lag)
        sampler = None
        if w.metrics_url is not None:
            sampler = TargetMetricsSampler(
                w.metrics_url,
                session=self.driver.target_session,
                interval_s=w.scrape_interval_s,
                socket_factory=self.driver.socket_factory,
            )
        slices: list[Slice] = []
        extended_for: dict[str, str] = {}  # the first reason of each kind
        t0 = time.perf_counter()
        async with health, sampler if sampler is not None else contextlib.nullcontext():
            while True:
                await self.driver.open_slice()
                start = time.perf_counter() - t0
                # Each slice keeps its measured length: a late wake-up lengthens that slice
                # (rates stay exact) instead of shortening the next one.
                await asyncio.sleep(w.slice_s)
                end = time.perf_counter() - t0
                slices.append(await self.driver.close_slice(start, end - start))
                if _storming(slices):
                    break
                if len(slices) < w.slices:
                    continue
                state = self._assess(slices)
                if not state.reasons or len(slices) >= budget:
                    break
                extended_for = {**state.reasons, **extended_for}
        for piece in slices:
            lag.merge(piece.stats.schedule_lag_s)
        generator = health.report()
        # This process's probe keeps its loop-lag samples; a swarm's reports no loop lag.
        loop_lag = health.loop_lag if isinstance(health, GeneratorHealth) else None
        reasons = self.limits.reasons(generator, loop_lag=loop_lag, schedule_lag=lag)
        generator.update(saturated=bool(reasons), reasons=reasons)
        server = sampler.report() if sampler is not None else None
        final = self._assess(slices, generator)
        return self._judge(load, slices, final, extended_for, budget, generator, server)

    async def stop(self) -> None:
        """Retire every agent and stop every arrival."""
        await self.driver.stop()

    def _summary(self, piece: Slice, generator: dict[str, Any] | None = None) -> dict[str, Any]:
        summary = piece.stats.summary(
            target=self.driver.target_label(),
            profile=self.driver.profile_name,
            duration_s=piece.duration_s,
            generator=generator or {},
        )
        judged = piece.judged_sessions
        ratio = piece.goodput_sessions / judged if judged else None
        tokens = piece.judged_tokens
        summary["goodput"] = {
            "ratio": ratio,
            "sessions": piece.goodput_sessions,
            # Weighted by what each judged session generated: long sessions, the likeliest
            # to miss a session SLO, weigh as much as the tokens they cost the server.
            "token_ratio": piece.goodput_tokens / tokens if tokens else None,
        }
        # Session SLOs (session_p90, session_success_rate) judge the sessions begun at this
        # level, as goodput does; sessions/min still counts every session that ended.
        summary["sessions"] = {**summary["sessions"], **piece.begun.sessions.to_dict(),
                               "started": summary["sessions"]["started"]}  # fmt: skip
        summary["latency"]["session_s"] = piece.begun.session_s.quantiles_dict()
        return summary

    def _assess(self, slices: list[Slice], generator: dict[str, Any] | None = None) -> _Assessment:
        """Synchronous on purpose: no record can slip in between two slices."""
        w = self.windows
        typical = self.driver.typical_session_s()
        span = window_span(len(slices), w.slices, w.slice_s, typical, w.session_cover)
        recent = slices[-span:]
        window = merge_slices(recent)
        summary = self._summary(window, generator)
        results = evaluate_gates(summary, self.slos)
        trend = drift(recent, w.drift_tolerance)
        reasons = extension_reasons(
            held=all(r.passed for r in results),
            unmeasured=[r.gate.text for r in results if r.value is None],
            trend=trend,
            window_s=window.duration_s,
            typical_session_s=typical,
            session_cover=w.session_cover,
        )
        return _Assessment(span, window, summary, results, trend, typical, reasons)

    def _judge(
        self,
        load: float,
        slices: list[Slice],
        state: _Assessment,
        extended_for: dict[str, str],
        budget: int,
        generator: dict[str, Any],
        server: dict[str, Any] | None,
    ) -> LevelResult:
        first = len(slices) - state.span  # index of the window's first slice
        per_slice: list[dict[str, Any]] = []
        broke_in: dict[str, list[int]] = {}
        for i, piece in enumerate(slices):
            summary = self._summary(piece)
            # A slice without samples for a metric is no evidence either way.
            broken = [r.gate.text for r in evaluate_gates(summary, self.slos)
                      if not r.passed and r.value is not None]  # fmt: skip
            for text in broken:
                broke_in.setdefault(text, []).append(i + 1)
            per_slice.append(slice_figures(i + 1, piece, summary, broken, i >= first))
        end = state.window.start_s + state.window.duration_s
        where = f"window: slices {first + 1}-{len(slices)}, {state.window.start_s:.1f}-{end:.1f}s"
        broken = []
        for r in state.results:
            if r.passed:
                continue
            alone = [n for n in broke_in.get(r.gate.text, []) if n > first]
            if r.value is None:
                detail = _no_samples(r.gate.metric, sum(p.duration_s for p in slices))
            elif len(alone) == state.span:
                detail = "broke in every slice"
            elif alone:
                detail = f"broke alone in slice {', '.join(map(str, alone))}"
            else:
                detail = "in no slice alone"
            broken.append(f"{r.reason} ({where}; {detail})")
        if state.held and state.trend.latency_rising:
            # Only reachable at the bound: a held level with rising latency is extended.
            broken.append(
                f"not steady: e2e p50 still rising ({state.trend.e2e_p50:+.0%} across the "
                f"window) after extending to {len(slices) * self.windows.slice_s:.3g}s"
            )
        figures = level_figures(load, state.summary, state.window, generator, server)
        figures.update(
            measured_s=sum(p.duration_s for p in slices),
            slice_s=self.windows.slice_s,
            extended_by_s=max(0, len(slices) - self.windows.slices) * self.windows.slice_s,
            extended_for=list(extended_for.values()),
            at_bound=len(slices) >= budget and bool(state.reasons),
            typical_session_s=state.typical_session_s,
            sessions_covered=(
                state.window.duration_s / state.typical_session_s
                if state.typical_session_s
                else None
            ),
            drift=state.trend.to_dict(),
            slices=per_slice,
        )
        level = LevelResult(load=load, figures=figures, passed=not broken, broken=broken)
        error_rate = figures["error_rate"]
        if error_rate is not None and error_rate > ERROR_STORM_RATE:
            level.stop = f"error storm: {error_rate:.0%} of requests failed at load {load:g}"
        elif generator.get("saturated"):
            reasons = "; ".join(generator.get("reasons") or [])
            level.stop = f"load generator saturated at load {load:g} ({reasons})"
        return level


# Session SLOs and goodput judge the sessions begun at the level: a session longer than the
# level's warm-up and measured time never ends inside its window, however loads compare.
_SESSION_JUDGED = ("session_", "goodput_")


def _no_samples(metric: str, measured_s: float) -> str:
    """Why an SLO had nothing to judge, and what gives it something."""
    if metric.startswith(_SESSION_JUDGED):
        return (
            f"no session begun at this level ended in its {measured_s:.3g}s measured: sessions "
            "this long need a longer --warmup and --max-window"
        )
    return f"no request ended in its {measured_s:.3g}s measured"


def _storming(slices: list[Slice]) -> bool:
    total = sum(p.stats.requests_total for p in slices)
    failed = sum(p.stats.requests_failed for p in slices)
    return total >= _STORM_MIN_REQUESTS and failed / total > ERROR_STORM_RATE
