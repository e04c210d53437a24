"""A capacity plan on a twin: one replica's ceiling, the replicas N agents need, and a check.

The method (docs/twin.md, "agentload plan"), kept simple on purpose:

1. search the ceiling of ONE replica of the twin (`agentload ceiling`, the profile's agents at
   the SLOs) against a simulated fleet of 1;
2. replicas needed R = ceil(N / per-replica ceiling): it assumes the router spreads agents
   evenly over the replicas, and that a replica behind a router holds what it held alone;
3. verify: run the fleet of R replicas under the chosen router at N agents (`agentload run`,
   the ceiling's SLOs as gates) for a bounded time, and R - 1 replicas the same way: the SLOs
   should hold at R and break at R - 1. Both are reported, whatever they show.

Every run is an ordinary `agentload` command in its own process against a fleet served from
this process (the route study's machinery), so what the plan reports is what users measure.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from loadgen.errors import AgentloadError
from loadgen.observe.generator_health import generator_saturated
from loadgen.orchestration.route_study import serving
from loadgen.orchestration.time_warp import (
    EngineClock,
    TimeWarp,
    engine_clock,
    pace_check,
    pace_lines,
)
from loadgen.sim.config import SimConfig

__all__ = [
    "CEILING_DIR",
    "DEFAULT_ROUTER",
    "PLAN_FILE",
    "PLAN_SCHEMA",
    "PlanSettings",
    "costs",
    "format_plan",
    "pace_at_speedup",
    "replicas_needed",
    "run_plan",
    "verified_fleet",
    "write_plan",
]

PLAN_SCHEMA = "agentload.plan/1"
PLAN_FILE = "plan.json"
CEILING_DIR = "ceiling-1-replica"  # the one-replica search's results, inside the plan's folder
# The sizing assumes the router spreads agents evenly; least-loaded (fewest requests in
# flight) is the router that does so whatever the sessions' ids hash to. Affinity routers
# (session, prefix-load) keep caches warm at the price of balance: name them to check a plan
# under them (docs/twin.md).
DEFAULT_ROUTER = "least-loaded"

ASSUMPTIONS = [
    "one replica's ceiling is searched alone: it caches every prefix it has seen, as a "
    "replica behind a perfect affinity router would",
    "replicas needed = ceil(agents / per-replica ceiling): the router spreads agents evenly; "
    "imbalance and lost affinity are not modelled beyond what the verification runs show",
    "the twin's engine model (docs/twin.md, 'How far to trust it'): request overhead, "
    "context-dependent step times and whatever calibration did not measure are not in it",
]


@dataclass(frozen=True)
class PlanSettings:
    """What to plan for and how each step is bounded."""

    profile: str
    twin: SimConfig
    agents: int
    out_dir: Path
    router: str = DEFAULT_ROUTER
    ceiling_flags: tuple[str, ...] = ()  # passed to `agentload ceiling` (SLOs, windows, cap)
    verify_duration: float = 120.0  # each verification run's length, seconds
    seed: int = 0
    gpu_hour_cost: float | None = None
    gpus_per_replica: int = 1
    # When the sized fleet breaks (imbalance, lost affinity), fleets this many replicas
    # larger are run in turn until one holds; 0 only reports the break.
    extra_replicas: int = 2
    progress: TextIO | None = sys.stderr
    # The twin's clock runs this many times faster than real time; every time above (and in
    # the profile and the SLOs) is modelled time, converted for the runs (time_warp.py).
    speedup: float = 1.0

    @property
    def warp(self) -> TimeWarp:
        """Modelled time against wall time in this plan's runs."""
        return TimeWarp(self.speedup)


def replicas_needed(agents: int, per_replica: float) -> int:
    """ceil(agents / per-replica ceiling), at least 1."""
    if per_replica <= 0:
        raise ValueError("a per-replica ceiling is above 0")
    return max(1, math.ceil(agents / per_replica - 1e-9))


def costs(
    gpu_hour_cost: float | None,
    gpus_per_replica: int,
    replicas: int,
    output_tokens_per_s: float | None,
    sessions_per_min: float | None,
) -> dict[str, float | None]:
    """The fleet's cost per hour, per million output tokens and per successful session."""
    if gpu_hour_cost is None:
        return {"fleet_per_hour": None, "per_million_output_tokens": None, "per_session": None}
    per_hour = gpu_hour_cost * gpus_per_replica * replicas
    tokens_per_hour = (output_tokens_per_s or 0.0) * 3600.0
    sessions_per_hour = (sessions_per_min or 0.0) * 60.0
    return {
        "fleet_per_hour": per_hour,
        "per_million_output_tokens": per_hour / tokens_per_hour * 1e6 if tokens_per_hour else None,
        "per_session": per_hour / sessions_per_hour if sessions_per_hour else None,
    }


def _say(settings: PlanSettings, text: str) -> None:
    if settings.progress is not None:
        print(f"agentload plan: {text}", file=settings.progress, flush=True)


def _agentload(args: Sequence[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", *args], capture_output=True, text=True, check=False
    )
    if result.returncode not in (0, 1):  # 1: a gate failed, or no ceiling: still measured
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise AgentloadError(f"`agentload {args[0]}` exited {result.returncode}: {last}")


def _clocked(url: str, settings: PlanSettings) -> EngineClock | None:
    return engine_clock(url) if settings.warp.active else None


def _engine_clock(before: EngineClock | None, url: str) -> dict[str, float] | None:
    if before is None:
        return None
    spent = engine_clock(url).since(before)
    return {"busy_s": spent.busy_s, "lost_s": spent.lost_s, "lost_share": spent.lost_share}


def _search(settings: PlanSettings, profile: str) -> dict[str, Any]:
    out = settings.out_dir / CEILING_DIR
    _say(settings, "searching the ceiling of one replica of the twin")
    twin = settings.twin.model_copy(update={"replicas": 1, "speedup": settings.speedup})
    with serving(twin) as url:
        before = _clocked(url, settings)
        _agentload(["ceiling", profile, "--target", url, "--quiet", "--out", str(out),
                    "--scrape-target-metrics", "--seed", str(settings.seed),
                    *settings.warp.ceiling_flags(settings.ceiling_flags)])  # fmt: skip
        clock = _engine_clock(before, url)
    doc: dict[str, Any] = json.loads((out / "ceiling.json").read_text())
    if clock is not None:  # this file's times are the wall clock's: say so beside them
        doc["speedup"] = settings.speedup
        doc["engine_clock"] = clock
        (out / "ceiling.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc


def _verify(
    settings: PlanSettings, profile: str, replicas: int, slos: Sequence[str]
) -> dict[str, Any]:
    out = settings.out_dir / f"verify-{replicas}-replicas"
    _say(settings, f"verifying: {settings.agents} agents on {replicas} replica(s), "
                   f"router {settings.router}")  # fmt: skip
    warp = settings.warp
    fleet = settings.twin.model_copy(
        update={"replicas": replicas, "router": settings.router, "speedup": settings.speedup}
    )
    gates = [flag for slo in slos for flag in ("--gate", slo)]
    duration = warp.wall(settings.verify_duration)
    with serving(fleet) as url:
        before = _clocked(url, settings)
        _agentload(["run", profile, "--target", url, "--quiet", "--out", str(out),
                    "--agents", str(settings.agents), "--duration", repr(duration),
                    "--seed", str(settings.seed), *gates])  # fmt: skip
        clock = _engine_clock(before, url)
    summary = json.loads((out / "summary.json").read_text())
    verdicts = summary.get("gates") or []
    sessions = summary.get("sessions") or {}
    ended = (sessions.get("completed") or 0) + (sessions.get("failed") or 0)
    duration_s = summary.get("duration_s")
    check = {
        "replicas": replicas,
        "agents": settings.agents,
        "router": settings.router,
        "duration_s": None if duration_s is None else warp.modelled(duration_s),
        "held": bool(verdicts) and all(g.get("verdict") == "pass" for g in verdicts),
        "gates": [
            warp.modelled_gate_result({k: g.get(k) for k in ("gate", "value", "verdict", "reason")})
            for g in verdicts
        ],
        "output_tokens_per_s": warp.modelled_rate(summary["throughput"]["output_tokens_per_s"]),
        "sessions_per_min": warp.modelled_rate(summary["throughput"]["sessions_per_min"]),
        "session_success_rate": (sessions.get("completed") or 0) / ended if ended else None,
        "results": str(out),
    }
    if clock is not None:
        check["engine_clock"] = clock
        check["generator_saturated"] = generator_saturated(summary)
    return check


def _per_replica(ceiling: dict[str, Any], warp: TimeWarp) -> dict[str, Any]:
    mark = ceiling.get("ceiling")
    failed = ceiling.get("failed_first") or {}
    level: dict[str, Any] = next(
        (lv for lv in ceiling["levels"] if mark and lv["load"] == mark["load"]), {}
    )
    slo = failed.get("slo")
    mark = mark or {}
    return {
        "agents": mark.get("load"),
        "output_tokens_per_s": warp.modelled_rate(mark.get("output_tokens_per_s")),
        "sessions_per_min": warp.modelled_rate(mark.get("sessions_per_min")),
        "goodput": level.get("goodput"),
        "goodput_tokens_per_s": warp.modelled_rate(mark.get("goodput_tokens_per_s")),
        # Nothing broke above it: the search ran out of levels or time, the ceiling is a floor.
        "reached": bool(mark) and bool(failed),
        "first_to_run_out": {
            "server_resource": failed.get("server_resource"),
            "slo": None if slo is None else [warp.modelled_text(text) for text in slo],
            "load": failed.get("load"),
        },
        "stopped_by": ceiling.get("stopped_by"),
    }


def verified_fleet(
    sized: int, extra: int, verify: Callable[[int], dict[str, Any]]
) -> tuple[int, list[dict[str, Any]]]:
    """The replicas to answer with and the verification runs behind it: the sized fleet and
    one replica fewer when it holds; else sized + 1, sized + 2, ... (at most `extra` more)
    until one holds, the answer being the first that did (the sized fleet if none did)."""
    checks = [verify(sized)]
    if checks[0]["held"]:
        if sized > 1:
            checks.append(verify(sized - 1))
        return sized, checks
    for replicas in range(sized + 1, sized + extra + 1):
        checks.append(verify(replicas))
        if checks[-1]["held"]:
            return replicas, checks
    return sized, checks


def write_plan(settings: PlanSettings, doc: dict[str, Any]) -> None:
    """plan.json in the plan's folder."""
    (settings.out_dir / PLAN_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def run_plan(settings: PlanSettings, ceiling: dict[str, Any] | None = None) -> dict[str, Any]:
    """Search, size and verify; plan.json's document (also written to the out folder).

    `ceiling`: a one-replica search already made (its ceiling.json) to size from instead of
    searching again, e.g. when only the fleet's router changes."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    warp = settings.warp
    profile = warp.run_profile(settings.profile, settings.out_dir)  # wall time at a speedup
    if ceiling is None:
        ceiling = _search(settings, profile)
    per = _per_replica(ceiling, warp)
    slos = list(ceiling.get("slos") or [])  # as the search judged them: wall time at a speedup
    doc: dict[str, Any] = {
        "schema": PLAN_SCHEMA,
        "profile": ceiling.get("profile"),
        "agents": settings.agents,
        "slos": [warp.modelled_gate(text) for text in slos],
        "speedup": settings.speedup,
        "router": settings.router,
        "gpu_hour_cost": settings.gpu_hour_cost,
        "gpus_per_replica": settings.gpus_per_replica,
        "method": "replicas = ceil(agents / one replica's ceiling), then verified at R and R-1; "
        "a fleet of R that breaks is grown a replica at a time until one holds",
        "assumptions": ASSUMPTIONS,
        "per_replica": per,
        "replicas": None,
        "verification": [],
        "answer": None,
    }
    if per["agents"]:
        sized = replicas_needed(settings.agents, per["agents"])
        replicas, checks = verified_fleet(
            sized, settings.extra_replicas, lambda n: _verify(settings, profile, n, slos)
        )
        doc["sized_replicas"] = sized
        doc["replicas"] = replicas
        doc["verification"] = checks
        at = next(c for c in checks if c["replicas"] == replicas)
        below = next((c for c in checks if c["replicas"] == replicas - 1), None)
        doc["answer"] = {
            "replicas": replicas,
            "gpus": replicas * settings.gpus_per_replica,
            "confirmed": at["held"] and (below is None or not below["held"]),
            "holds": at["held"],
            "output_tokens_per_s": at["output_tokens_per_s"],
            "sessions_per_min": at["sessions_per_min"],
            "goodput": per["goodput"],
            "cost": costs(
                settings.gpu_hour_cost,
                settings.gpus_per_replica,
                replicas,
                at["output_tokens_per_s"],
                at["sessions_per_min"],
            ),
            "first_to_run_out": per["first_to_run_out"],
        }
    if warp.active:
        doc["engine_clock"] = pace_at_speedup(ceiling, doc["verification"])
    write_plan(settings, doc)
    return doc


def pace_at_speedup(ceiling: dict[str, Any], checks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether the twin kept its modelled pace, and the client its own, in every run at the
    speedup (the search stops by itself where its generator saturates)."""
    shares = [
        run["engine_clock"]["lost_share"]
        for run in (ceiling, *checks)
        if run.get("engine_clock") is not None
    ]
    return pace_check(shares, [c["replicas"] for c in checks if c.get("generator_saturated")])


def _money(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else "$" + format(value, spec)


def _verdict(check: dict[str, Any]) -> str:
    if check["held"]:
        return "SLOs held"
    broken = [g["reason"] for g in check["gates"] if g["verdict"] != "pass"]
    return "BROKE: " + ("; ".join(broken) or "no gate was judged")


def format_plan(doc: dict[str, Any]) -> str:
    """The plan as a few lines and a table of the verification runs."""
    per = doc["per_replica"]
    lines = []
    if per["agents"] is None:
        lines.append(f"one replica holds no load at these SLOs ({per['stopped_by']})")
        return "\n".join(lines)
    goodput = "-" if per["goodput"] is None else f"{per['goodput']:.0%}"
    floor = "" if per["reached"] else " (not reached: a floor, the plan an upper bound)"
    lines.append(
        f"per replica: {per['agents']:g} agents{floor}, {per['output_tokens_per_s']:.0f} output "
        f"tokens/s, {per['sessions_per_min']:.1f} sessions/min, goodput {goodput}"
    )
    first = per["first_to_run_out"]
    if first["slo"]:
        resource = first["server_resource"] or "not named by the server's metrics"
        lines.append(f"first to run out: {resource}; at {first['load']:g} agents "
                     + "; ".join(first["slo"]))  # fmt: skip
    sized = doc.get("sized_replicas", doc["replicas"])
    lines.append(
        f"replicas needed: {sized} = ceil({doc['agents']} agents / "
        f"{per['agents']:g} per replica), router {doc['router']}"
    )
    if doc["replicas"] != sized:
        lines.append(f"  {sized} broke in the fleet run: {doc['replicas']} is the fewest that held")
    lines.append(f"{'replicas':>8} {'agents':>7} {'out tok/s':>10} {'sess/min':>9} "
                 f"{'success':>8}  verdict")  # fmt: skip
    for check in doc["verification"]:
        success = check["session_success_rate"]
        lines.append(
            f"{check['replicas']:>8} {check['agents']:>7} {check['output_tokens_per_s']:>10.0f} "
            f"{check['sessions_per_min']:>9.1f} "
            f"{'-' if success is None else format(success, '.0%'):>8}  {_verdict(check)}"
        )
    answer = doc["answer"]
    cost = answer["cost"]
    if cost["fleet_per_hour"] is None:
        lines.append("cost: give --gpu-hour-cost for cost per million tokens and per session")
    else:
        lines.append(
            f"cost: {_money(doc['gpu_hour_cost'])}/GPU-hour x {doc['gpus_per_replica']} GPU(s) "
            f"x {answer['replicas']} replicas = {_money(cost['fleet_per_hour'])}/h: "
            f"{_money(cost['per_million_output_tokens'])} per million output tokens, "
            f"{_money(cost['per_session'], '.3g')} per successful session"
        )
    clock = doc.get("engine_clock")
    if clock is not None:
        lines += pace_lines(clock, doc["speedup"], "twin", "plan", " replica(s)")
    lines.append(_conclusion(doc))
    return "\n".join(lines)


def _conclusion(doc: dict[str, Any]) -> str:
    answer, checks = doc["answer"], doc["verification"]
    replicas = answer["replicas"]
    sized = doc.get("sized_replicas", replicas)
    if not answer["holds"]:
        tried = max(c["replicas"] for c in checks)
        upto = f" (nor up to {tried})" if tried > sized else ""
        return (f"plan: NOT confirmed: {sized} replicas broke the SLOs in the fleet run{upto} "
                "(imbalance or lost affinity the sizing does not model; try another --router "
                "or --max-extra-replicas)")  # fmt: skip
    if replicas > sized:
        return (f"plan: {replicas} replicas hold the SLOs, {replicas - 1} do not; the sizing "
                f"named {sized}: the router's imbalance or lost affinity costs "
                f"{replicas - sized} more")  # fmt: skip
    below = next((c for c in checks if c["replicas"] == replicas - 1), None)
    if below is not None and below["held"]:
        return (f"plan: {replicas} replicas hold; {replicas - 1} held too: the plan is "
                "conservative (the fleet does better than one replica alone)")  # fmt: skip
    return f"plan: {replicas} replicas hold the SLOs" + (
        f", {replicas - 1} do not" if below is not None else ""
    )
