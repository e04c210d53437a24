"""The search's verdict: ceiling, knee, what broke first past it, as ceiling.json and a table."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from loadgen.ceiling.search import LevelResult

__all__ = ["CEILING_SCHEMA", "KNEE_ELASTICITY", "ceiling_document", "format_ceiling", "knee"]

CEILING_SCHEMA = "agentload.ceiling/1"
# Below this, doubling the load buys less than a quarter more throughput: past the knee.
KNEE_ELASTICITY = 0.25
# Past the knee, no level may beat its throughput by more than this share.
KNEE_HEADROOM = 0.1


def knee(levels: Sequence[LevelResult]) -> float | None:
    """The last load before the marginal throughput gain per added load falls below the bar,
    for good: a load past which throughput still grew well beyond it is no knee."""
    ordered = sorted(levels, key=lambda lv: lv.load)
    for low, high in itertools.pairwise(ordered):
        t0, t1 = low.figures["output_tokens_per_s"], high.figures["output_tokens_per_s"]
        if t0 <= 0:
            continue
        # Elasticity: relative throughput gain over relative load gain (1 = linear scaling).
        if (t1 - t0) / t0 < KNEE_ELASTICITY * (high.load - low.load) / low.load:
            beyond = max(lv.figures["output_tokens_per_s"] for lv in ordered if lv.load > low.load)
            # One flat pair (noise, a slow level) followed by growth is not where it stops.
            if beyond <= t0 * (1 + KNEE_HEADROOM):
                return low.load
    return None


def _first_rise(base: LevelResult | None, level: LevelResult) -> str | None:
    """The failure kind whose share of requests grew most from `base` to `level`."""

    def share(lv: LevelResult | None, kind: str) -> float:
        if lv is None or not lv.figures.get("requests"):
            return 0.0
        return float(lv.figures["state_failures"].get(kind, 0)) / float(lv.figures["requests"])

    kinds = level.figures["state_failures"]
    rises = {k: share(level, k) - share(base, k) for k in kinds}
    rises = {k: r for k, r in rises.items() if r > 0}
    return max(rises, key=lambda k: rises[k]) if rises else None


def _failed_first(levels: Sequence[LevelResult], ceiling: LevelResult | None) -> dict[str, Any]:
    above = sorted(
        (lv for lv in levels if not lv.passed and (ceiling is None or lv.load > ceiling.load)),
        key=lambda lv: lv.load,
    )
    if not above:
        return {}
    first = above[0]
    resource = next(
        (lv.figures["server"].get("saturated_first") for lv in above
         if lv.figures.get("server") and lv.figures["server"].get("saturated_first")),
        None,
    )  # fmt: skip
    kind = next((k for lv in above if (k := _first_rise(ceiling, lv)) is not None), None)
    return {"load": first.load, "slo": first.broken, "state_failure": kind,
            "server_resource": resource}  # fmt: skip


def ceiling_document(
    levels: Sequence[LevelResult], load_unit: str, stopped_by: str, **facts: Any
) -> dict[str, Any]:
    """ceiling.json: every level in the order measured, the ceiling, knee and first failure."""
    held = [lv for lv in levels if lv.passed and lv.stop is None]
    failed_loads = [lv.load for lv in levels if not lv.passed or lv.stop is not None]
    # The ceiling is the highest load that held with nothing lower having failed: a level
    # that passed above a failure is noise, not capacity.
    limit = min(failed_loads, default=float("inf"))
    best = max((lv for lv in held if lv.load < limit), key=lambda lv: lv.load, default=None)
    failed = _failed_first(levels, best)
    reason = "; ".join(failed.get("slo") or []) or stopped_by
    mark: dict[str, Any] | None = None
    if best is not None:
        mark = {
            "load": best.load,
            "output_tokens_per_s": best.figures["output_tokens_per_s"],
            "answer_tokens_per_s": best.figures.get("answer_tokens_per_s"),
            "sessions_per_min": best.figures["sessions_per_min"],
            "goodput_tokens_per_s": best.figures["goodput_tokens_per_s"],
            "cache_hit_ratio": best.figures.get("cache_hit_ratio"),
            "reason": f"beyond it: {reason}" if failed else reason,
        }
    return {
        "schema": CEILING_SCHEMA,
        "load_unit": load_unit,
        **facts,
        "stopped_by": stopped_by,
        "ceiling": mark,
        "knee": knee(levels),
        "failed_first": failed or None,
        "levels": [
            {**lv.figures, "passed": lv.passed, "broken": lv.broken, "stop": lv.stop}
            for lv in levels
        ],
    }


def _num(value: Any, scale: float = 1.0, spec: str = ".0f") -> str:
    return "-" if value is None else format(value * scale, spec)


def _reasoned(doc: dict[str, Any]) -> bool:
    """True when some level's output held reasoning: answer tokens/s fell short of output's."""
    return any(
        lv.get("answer_tokens_per_s") is not None
        and lv["answer_tokens_per_s"] < lv["output_tokens_per_s"] - 0.5
        for lv in doc["levels"]
    )


def format_ceiling(doc: dict[str, Any]) -> str:
    """The levels as a table, then the verdict in a few lines."""
    # Reasoning models: answer tokens/s and time to first answer token beside the rest.
    reasoned = _reasoned(doc)
    head = (
        f"{doc['load_unit']:>12} {'out tok/s':>10} "
        + (f"{'ans tok/s':>10} " if reasoned else "")
        + f"{'sess/min':>9} {'ttft p95':>9} "
        + (f"{'ttfat p95':>10} " if reasoned else "")
        + f"{'itl p99':>8} {'e2e p95':>8} {'success':>8} {'goodput':>8} {'errors':>7} "
        f"{'window':>8} verdict"
    )
    rows = [head]
    for lv in sorted(doc["levels"], key=lambda lv: lv["load"]):
        verdict = "held" if lv["passed"] else "BROKE: " + "; ".join(lv["broken"])
        # A trailing + marks a window the rolling-window rule extended.
        window = (
            _num(lv.get("window_s"), spec=".3g") + "s" + ("+" if lv.get("extended_for") else " ")
        )
        answer = f"{_num(lv.get('answer_tokens_per_s')):>10} " if reasoned else ""
        ttfat = f"{_num(lv.get('ttfat_p95_s'), 1000):>8}ms " if reasoned else ""
        rows.append(
            f"{lv['load']:>12g} {_num(lv['output_tokens_per_s']):>10} {answer}"
            f"{_num(lv['sessions_per_min'], spec='.1f'):>9} "
            f"{_num(lv['ttft_p95_s'], 1000):>7}ms {ttfat}{_num(lv['itl_p99_s'], 1000):>6}ms "
            f"{_num(lv['e2e_p95_s'], 1000):>6}ms {_num(lv['session_success_rate'], 100):>7}% "
            f"{_num(lv['goodput'], 100):>7}% {_num(lv['error_rate'], 100, '.1f'):>6}% "
            f"{window:>8} {verdict}"
        )
    mark, unit = doc["ceiling"], doc["load_unit"]
    if mark is None:
        rows.append("ceiling: none found (no level held every SLO)")
    elif doc["failed_first"] is None:
        # Nothing broke above it: the search ran out of loads or time, not of capacity.
        rows.append(
            f"ceiling: not reached: no SLO broke up to {mark['load']:g} {unit} "
            f"({mark['output_tokens_per_s']:.0f} output tokens/s, "
            f"{mark['sessions_per_min']:.1f} sessions/min)"
        )
    else:
        answer = mark.get("answer_tokens_per_s")
        of_which = f" ({answer:.0f} answer)" if reasoned and answer is not None else ""
        rows.append(
            f"ceiling: {mark['load']:g} {unit}, {mark['output_tokens_per_s']:.0f} output "
            f"tokens/s{of_which}, {mark['sessions_per_min']:.1f} sessions/min"
        )
    if doc["knee"] is not None:
        rows.append(f"knee: {doc['knee']:g} {unit} (throughput stops growing with load)")
    if (failed := doc["failed_first"]) is not None:
        rows.append(f"failed first at {failed['load']:g} {unit}: " + "; ".join(failed["slo"]))
        if failed["state_failure"]:
            rows.append(f"  first state failure to rise: {failed['state_failure']}")
        if failed["server_resource"]:
            rows.append(f"  server resource saturated first: {failed['server_resource']}")
    rows.append(f"stopped by: {doc['stopped_by']}")
    return "\n".join(rows)
