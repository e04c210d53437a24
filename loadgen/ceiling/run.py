"""A whole ceiling search: levels as the search asks, the verdict, the result files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from loadgen.ceiling.driver import DriverStopped, LocalDriver
from loadgen.ceiling.measure import GeneratorLimits, LevelRunner, Windows
from loadgen.ceiling.result import ceiling_document
from loadgen.ceiling.search import LevelResult, Search, SearchSettings
from loadgen.ceiling.slos import WindowSink, goodput_caps
from loadgen.gates.gates import Gate
from loadgen.observe.goodput import GoodputRule
from loadgen.observe.prometheus.metrics import RunMetrics
from loadgen.observe.result_files import CEILING_FILE
from loadgen.profile.loader import LoadedProfile
from loadgen.profile.schema import Profile
from loadgen.runtime.engine import Engine
from loadgen.transport import TargetConfig

__all__ = [
    "GOODPUT_DROP",
    "INTERRUPTED",
    "CeilingOptions",
    "Interruption",
    "SearchOutcome",
    "ceiling_writer",
    "run_ceiling",
    "search_levels",
    "search_unit",
    "write_ceiling",
]

# A level whose goodput tokens/s fell below this share of the best lower level's broke
# goodput even when every percentile SLO held: more load, less useful work.
GOODPUT_DROP = 0.8


@dataclass(frozen=True)
class CeilingOptions:
    """How to search (the profile says what load looks like; this, how much to try)."""

    out_dir: Path
    slos: list[Gate]
    search: SearchSettings = field(default_factory=SearchSettings)
    windows: Windows = field(default_factory=Windows)
    max_duration_s: float = 20 * 60.0
    generator: GeneratorLimits = field(default_factory=GeneratorLimits)
    model: str | None = None
    progress: TextIO | None = sys.stderr
    target_label: dict[str, Any] = field(default_factory=dict)
    # Fed by every record of the search, for a live /metrics (one process; a swarm's
    # master serves its workers' merge instead).
    metrics: RunMetrics | None = None


def _goodput_fell(level: LevelResult, levels: list[LevelResult]) -> str | None:
    lower = [lv.figures["goodput_tokens_per_s"] or 0.0 for lv in levels
             if lv.passed and lv.load < level.load]  # fmt: skip
    best = max(lower, default=0.0)
    now = level.figures["goodput_tokens_per_s"]
    if now is not None and best > 0 and now < GOODPUT_DROP * best:
        return f"goodput fell to {now:.0f} tokens/s from {best:.0f} at a lower load"
    return None


@dataclass
class SearchOutcome:
    """Every level measured, why the search stopped, and how long it took."""

    levels: list[LevelResult]
    stopped_by: str
    duration_s: float


# The search's verdict while it goes on: ceiling.json is rewritten after every level, so a
# search that dies keeps what it measured.
IN_PROGRESS = "in progress: the search goes on"
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM): the levels measured before it stand"


class Interruption:
    """Ctrl-C and SIGTERM during a ceiling search: the signals received; the first stops it.

    The signal handlers call it with each signal's number; whoever runs the search says how
    to stop it while it may be stopped (`stopping`), and a signal that came before stops it
    as that begins. Later signals find the search already ending as any stop does.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._stop: Callable[[], object] | None = None

    @property
    def signal(self) -> int | None:
        """The first signal received, or None."""
        return self.received[0] if self.received else None

    def __call__(self, sig: int) -> None:
        self.received.append(sig)
        if len(self.received) == 1 and self._stop is not None:
            self._stop()

    @contextlib.contextmanager
    def stopping(self, stop: Callable[[], object]) -> Iterator[None]:
        """While inside, the first signal calls `stop` (at once if one came already)."""
        self._stop = stop
        try:
            if self.received:
                stop()
            yield
        finally:
            self._stop = None


async def search_levels(
    runner: LevelRunner,
    options: CeilingOptions,
    unit: str,
    on_level: Callable[[SearchOutcome], object] | None = None,
) -> SearchOutcome:
    """Measure levels as the search asks until it settles or a stop ends it.

    `on_level` sees the outcome so far after every level. Cancelling the search (Ctrl-C)
    ends it like any stop: the levels measured stand, the level cut short does not.
    """
    search = Search(options.search)
    levels: list[LevelResult] = []
    stopped_by = "settled: the ceiling is bracketed to the search's resolution"
    # A level needs its warm-up and first window; extensions only get the time that is left,
    # so --max-duration is a cap on the whole search, not a hint.
    per_level = options.windows.warmup_s + options.windows.window_s
    t0 = time.perf_counter()
    try:
        while (load := search.next_load()) is not None:
            left = options.max_duration_s - (time.perf_counter() - t0)
            if per_level > left:
                stopped_by = f"max duration: another level would pass {options.max_duration_s:g}s"
                break
            try:
                level = await runner.measure(load, left)
            except DriverStopped as exc:
                stopped_by = str(exc)  # the levels measured so far stand
                break
            except asyncio.CancelledError:
                # The search itself was stopped (Ctrl-C, SIGTERM): it ends like any stop, so
                # that what it measured is written; the caller says it was interrupted.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                stopped_by = INTERRUPTED
                break
            if level.passed and (fell := _goodput_fell(level, levels)) is not None:
                level.passed = False
                level.broken.append(fell)
            levels.append(level)
            if on_level is not None:  # before the progress line: a reader may act on it
                on_level(SearchOutcome(list(levels), IN_PROGRESS, time.perf_counter() - t0))
            _progress(options.progress, level, unit)
            if level.stop is not None:
                stopped_by = level.stop
                break
            search.record(load, level.passed)
        else:
            if search.bad is None:
                stopped_by = "max load reached with every SLO held"
            elif search.good is None:
                stopped_by = "no level held every SLO"
    finally:
        try:
            await runner.stop()
        except asyncio.CancelledError:  # interrupted while stopping: the levels stand
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
    return SearchOutcome(levels, stopped_by, time.perf_counter() - t0)


def write_ceiling(
    outcome: SearchOutcome,
    unit: str,
    options: CeilingOptions,
    *,
    profile: str,
    target: dict[str, Any],
) -> dict[str, Any]:
    """ceiling.json's content, written into the options' folder."""
    w = options.windows
    doc = ceiling_document(
        outcome.levels,
        unit,
        outcome.stopped_by,
        profile=profile,
        target=target,
        slos=[gate.text for gate in options.slos],
        duration_s=outcome.duration_s,
        warmup_s=w.warmup_s,
        window_s=w.window_s,
        rolling_window={
            "slices": w.slices,
            "slice_s": w.slice_s,
            "max_window_s": w.longest_s,
            "drift_tolerance": w.drift_tolerance,
            "session_cover": w.session_cover,
        },
    )
    path = options.out_dir / CEILING_FILE
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def ceiling_writer(
    unit: str,
    options: CeilingOptions,
    *,
    profile: str,
    target: Callable[[], dict[str, Any]],
) -> Callable[[SearchOutcome], dict[str, Any]]:
    """Writes ceiling.json for an outcome (the levels so far, as `search_levels`' on_level,
    or the verdict), with the target's label as it stands then."""

    def write(outcome: SearchOutcome) -> dict[str, Any]:
        return write_ceiling(outcome, unit, options, profile=profile, target=target())

    return write


def search_unit(profile: Profile) -> str:
    """What a level's load counts: agents (closed loop), sessions/s (open loop), or how many
    times faster than recorded a trace is replayed."""
    return {"closed": "agents", "open": "sessions/s", "trace": "x trace speed"}[
        profile.arrival.mode
    ]


async def run_ceiling(
    loaded: LoadedProfile, target: TargetConfig, options: CeilingOptions
) -> dict[str, Any]:
    """Search for the highest load within every SLO on this event loop; writes ceiling.json."""
    profile = loaded.profile
    engine = Engine(loaded, target, options.out_dir, model=options.model)
    await engine.start()  # TargetUnreachableError before anything is measured
    sink = WindowSink(GoodputRule(goodput_caps(options.slos, profile.slos)))
    engine.add_sink(sink)
    driver = LocalDriver(engine, sink, start_jitter_s=min(1.0, options.windows.warmup_s / 2))
    runner = LevelRunner(driver, options.slos, options.windows, options.generator)
    live = contextlib.AsyncExitStack()
    if options.metrics is not None:
        options.metrics.set_target(profile.name, target.base_url, engine.model)
        engine.add_sink(options.metrics.sink(profile.name, profile.slos))
        await live.enter_async_context(options.metrics.sampling(profile.name, driver.in_flight))
    t0 = time.perf_counter()
    unit = search_unit(profile)
    write = ceiling_writer(
        unit,
        options,
        profile=profile.name,
        target=lambda: {**engine.target_label(), **options.target_label},
    )
    try:
        async with live:
            outcome = await search_levels(runner, options, unit, write)
    finally:
        summary = engine.summary(time.perf_counter() - t0, **options.target_label)
        engine.write_summary(summary)
        await engine.stop()
    return write(outcome)


def _progress(out: TextIO | None, level: LevelResult, unit: str) -> None:
    if out is None:
        return
    f = level.figures
    verdict = "held" if level.passed else "broke: " + "; ".join(level.broken)
    window = f"{f['window_s']:.3g}s window"
    if f.get("extended_for"):
        window += " (extended: " + "; ".join(f["extended_for"]) + ")"
    out.write(f"level {level.load:g} {unit}: {f['output_tokens_per_s']:.0f} output tok/s, "
              f"{f['sessions_per_min'] or 0:.1f} sessions/min, {window} — {verdict}\n")  # fmt: skip
    out.flush()
