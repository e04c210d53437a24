"""The concurrency sweep: c streams of forced length at once, c = 1, 2, 4, ... until the
running batch stops growing with c (the batch limit) or the cap."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loadgen.protocol import Reply, send
from loadgen.sim.config import step_ms_at
from loadgen.transport import Transport
from loadgen.twin.fit import Estimate, LineFit, fit_line, relative_spread
from loadgen.twin.probe_requests import CalibrationRefused, fresh_prompt, probe_body

__all__ = [
    "DecodeFit",
    "Level",
    "LevelRun",
    "decode_sweep",
    "fit_decode",
    "peak_decoding",
    "steady_itl",
]

# Each stream's prompt: short, so that its prefill is one small step and KV never binds.
_PROMPT_TOKENS = 32


@dataclass(frozen=True, slots=True)
class LevelRun:
    """One run of a level: its ITL (steady_itl, else the median gap), its streams' TTFT
    median and running peak."""

    itl_s: float
    ttft_median_s: float
    peak_decoding: int
    short_replies: int  # streams that ended before their forced length
    duration_s: float


@dataclass(frozen=True, slots=True)
class Level:
    """Every run at one concurrency."""

    concurrency: int
    runs: tuple[LevelRun, ...]

    @property
    def itl_s(self) -> float:
        """The median of the runs' ITLs."""
        return statistics.median(r.itl_s for r in self.runs)

    @property
    def ttft_s(self) -> float:
        """The median of the runs' TTFT medians."""
        return statistics.median(r.ttft_median_s for r in self.runs)

    @property
    def peak(self) -> int:
        """The most streams seen decoding at once, over the runs."""
        return max(r.peak_decoding for r in self.runs)

    @property
    def saturated(self) -> bool:
        """Some streams waited for others to finish: fewer ran at once than were sent."""
        return self.peak < self.concurrency

    @property
    def spread(self) -> float:
        """How far the runs' ITLs disagree: (max - min) / median."""
        return relative_spread([r.itl_s for r in self.runs])


def peak_decoding(replies: Sequence[Reply]) -> int:
    """The most streams between their first and last token at one moment."""
    events = []
    for reply in replies:
        if reply.token_times_ns:
            events += [(reply.token_times_ns[0], 1), (reply.token_times_ns[-1], -1)]
    running = peak = 0
    # At one instant an end is counted before a start: a slot freed, then taken.
    for _t, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak


def steady_itl(replies: Sequence[Reply]) -> float | None:
    """The mean gap between tokens while the first wave of streams all decode together.

    The first wave is the streams whose first token came before any stream ended; the window
    runs from its last first token to its first last token, so the batch in it is the wave
    and no admission (a prefill step) falls inside. A mean over that window, not a median:
    a server's timer granularity makes single gaps a millisecond long or short, and only
    their mean keeps its timeline. None when the window holds fewer than 4 gaps a stream.
    """
    times = [r.token_times_ns for r in replies if len(r.token_times_ns) > 1]
    if not times:
        return None
    first_end = min(t[-1] for t in times)
    wave = [t for t in times if t[0] < first_end]
    start, end = max(t[0] for t in wave), min(t[-1] for t in wave)
    span = count = 0
    for t in wave:
        inside = [x for x in t if start <= x <= end]
        if len(inside) < 5:
            return None
        span += inside[-1] - inside[0]
        count += len(inside) - 1
    return span / count / 1e9


async def _run_level(
    transport: Transport, model: str, concurrency: int, output_tokens: int
) -> LevelRun:
    bodies = [
        probe_body(model, fresh_prompt(_PROMPT_TOKENS), output_tokens, force=True)
        for _ in range(concurrency)
    ]
    loop = asyncio.get_running_loop()
    start = loop.time()
    replies = await asyncio.gather(*(send(transport, "chat", body) for body in bodies))
    duration = loop.time() - start
    failed = [r for r in replies if not r.ok or r.ttft_s is None]
    if failed:
        raise CalibrationRefused(
            f"the target failed {len(failed)} of {concurrency} streams at concurrency "
            f"{concurrency} ({failed[0].error or 'no token streamed'}); every probe must be "
            "answered"
        )
    gaps = [gap for reply in replies for gap in reply.itl_s()]
    if not gaps:
        raise CalibrationRefused("the decode probe's streams carried one token each: no ITL")
    itl = steady_itl(replies)
    short = sum(
        1
        for r in replies
        if (r.usage.completion_tokens if r.usage else len(r.token_times_ns)) < output_tokens
    )
    return LevelRun(
        itl_s=statistics.median(gaps) if itl is None else itl,
        ttft_median_s=statistics.median(r.ttft_s or 0.0 for r in replies),
        peak_decoding=peak_decoding(replies),
        short_replies=short,
        duration_s=duration,
    )


async def decode_sweep(
    transport: Transport,
    model: str,
    *,
    output_tokens: int,
    max_concurrency: int,
    repeats: int,
    time_left: Callable[[], float],
) -> tuple[list[Level], str | None]:
    """The levels measured, and why the sweep stopped short of finding the batch limit (None
    when it found it)."""
    levels: list[Level] = []
    concurrency = 1
    while concurrency <= max_concurrency:
        if levels:
            # A doubled level takes up to twice as long (two waves once past the limit).
            needed = 2 * sum(r.duration_s for r in levels[-1].runs)
            if time_left() < needed:
                return levels, f"--max-duration left too little time for concurrency {concurrency}"
        runs = [
            await _run_level(transport, model, concurrency, output_tokens) for _ in range(repeats)
        ]
        level = Level(concurrency, tuple(runs))
        levels.append(level)
        if level.saturated:
            return levels, None
        concurrency *= 2
    return levels, f"the running batch still grew at --max-concurrency {max_concurrency}"


@dataclass(frozen=True, slots=True)
class DecodeFit:
    """step = base + per_seq x running batch (the line), through the measured points below
    the batch limit (the twin's step); flat above the limit."""

    line: LineFit
    base_ms: Estimate
    per_seq_ms: Estimate
    batch_limit: Estimate
    limit_found: bool
    # Each level's median ITL below the limit: the twin steps through these, the line past.
    points_ms: dict[int, float] = field(default_factory=dict)

    @property
    def step_ms(self) -> float:
        """The twin's decode_step_ms: the intercept (a step that only prefills), kept above 0
        as the simulator requires."""
        return max(self.base_ms.value, 0.01)

    def predict_itl_s(self, concurrency: int) -> float:
        """The twin's ITL of `concurrency` streams decoding together."""
        batch = min(concurrency, int(self.batch_limit.value))
        step = step_ms_at(batch, self.base_ms.value, self.per_seq_ms.value, self.points_ms)
        return step / 1000.0


def fit_decode(levels: Sequence[Level], stopped: str | None) -> DecodeFit:
    """Fit the step over the levels below the batch limit; the limit from the first level
    whose streams did not all run at once."""
    below = [level for level in levels if not level.saturated]
    xs = [float(level.concurrency) for level in below for _ in level.runs]
    ys = [run.itl_s * 1000.0 for level in below for run in level.runs]
    try:
        line = fit_line(xs, ys)
    except ValueError as exc:
        raise CalibrationRefused(
            f"cannot fit the decode step: {len(below)} level(s) below the batch limit ({exc})"
        ) from exc
    how = (
        f"least squares of ITL (mean token gap while all streams decode) against "
        "concurrency over levels "
        f"{', '.join(str(level.concurrency) for level in below)} (each {len(below[0].runs)} "
        "runs of streams with forced lengths, all sent at once)"
    )
    base = Estimate(line.intercept, line.intercept_se, "intercept of " + how)
    per_seq = Estimate(max(0.0, line.slope), line.slope_se, "slope of " + how)
    saturated = next((level for level in levels if level.saturated), None)
    if saturated is not None:
        limit = Estimate(
            float(saturated.peak),
            None,
            f"the most streams decoding at once when {saturated.concurrency} were sent "
            f"(ITL {saturated.itl_s * 1000:.1f} ms, flat; TTFT median "
            f"{saturated.ttft_s * 1000:.0f} ms, queueing)",
        )
    else:
        top = levels[-1].concurrency
        limit = Estimate(float(top), None, f"a lower bound: {stopped or 'not reached'}")
    points = {level.concurrency: level.itl_s * 1000.0 for level in below}
    return DecodeFit(line, base, per_seq, limit, saturated is not None, points)
