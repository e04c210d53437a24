"""A trace made ready to replay: cut to N sessions, idle stretches capped, time sped up; and
the prefix-cache hits its hash ids imply."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math

from loadgen.traces.model import Trace, TraceRequest, TraceSession

__all__ = ["implied_cached_tokens", "replay_timeline", "retimed"]


def replay_timeline(
    trace: Trace,
    *,
    speedup: float = 1.0,
    cap_idle_s: float | None = None,
    sessions: int | None = None,
) -> Trace:
    """`trace` as replay schedules it: its first `sessions` sessions, every stretch of the
    timeline with no request longer than `cap_idle_s` shortened to it (recorded gaps too),
    then every time divided by `speedup`. Recorded gaps are not sped up: `time_scale` is
    what scales think and tool time, as in a profile."""
    if not speedup > 0 or math.isinf(speedup):
        raise ValueError(f"speedup must be a positive finite number, not {speedup!r}")
    cut = trace.first(sessions) if sessions is not None else trace
    shift = _idle_compression(cut, cap_idle_s)

    def moved(request: TraceRequest) -> TraceRequest:
        gap = request.gap_s
        if gap is not None and cap_idle_s is not None:
            gap = min(gap, cap_idle_s)
        return dataclasses.replace(request, at_s=shift(request.at_s) / speedup, gap_s=gap)

    def session(s: TraceSession) -> TraceSession:
        return TraceSession(
            s.id,
            [moved(r) for r in s.requests],
            [(after, session(sub)) for after, sub in s.subagents],
            s.hash_namespace,
        )

    return Trace([session(s) for s in cut.sessions], cut.block_size, cut.hash_scope, cut.source)


def _idle_compression(trace: Trace, cap_s: float | None) -> _Shift:
    if cap_s is None:
        return _Shift([], [])
    times = sorted({r.at_s for r in trace.requests()})
    starts: list[float] = []  # where each shortened stretch ends, in the trace's time
    removed: list[float] = []  # seconds removed up to and including that stretch
    total = 0.0
    for before, after in itertools.pairwise(times):
        if after - before > cap_s:
            total += after - before - cap_s
            starts.append(after)
            removed.append(total)
    return _Shift(starts, removed)


@dataclasses.dataclass(frozen=True)
class _Shift:
    starts: list[float]
    removed: list[float]

    def __call__(self, at_s: float) -> float:
        i = bisect.bisect_right(self.starts, at_s)
        return at_s - (self.removed[i - 1] if i else 0.0)


def implied_cached_tokens(trace: Trace) -> tuple[int, int]:
    """(cached, input) tokens over the whole trace if the cache were infinite.

    Requests are taken in time order; a request's leading blocks whose ids were all seen
    before (in its hash namespace, for local scope) are cached, as a prefix cache serves
    only an unbroken prefix. A request never reuses more than its input less one token.
    """
    seen: set[tuple[str, int]] = set()
    cached = total = 0
    ordered: list[tuple[float, str, TraceRequest]] = []

    def collect(session: TraceSession) -> None:
        namespace = session.hash_namespace if trace.hash_scope == "local" else ""
        ordered.extend((r.at_s, namespace, r) for r in session.requests)
        for _after, sub in session.subagents:
            collect(sub)

    for s in trace.sessions:
        collect(s)
    ordered.sort(key=lambda item: item[0])
    for _at, namespace, request in ordered:
        total += request.input_tokens
        hits = 0
        for h in request.hash_ids:
            if (namespace, h) not in seen:
                break
            hits += 1
        cached += min(hits * trace.block_size, max(0, request.input_tokens - 1))
        seen.update((namespace, h) for h in request.hash_ids)
    return cached, total


def retimed(trace: Trace, factor: float) -> Trace:
    """`trace` `factor` times as fast: every request's time divided by it (gaps kept)."""
    return replay_timeline(trace, speedup=factor)
