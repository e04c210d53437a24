"""`agentload plan --what-if`: the plan made again with one thing varied, and the change.

A what-if is KIND=VALUE. Four kinds, each varying one thing of the baseline:

- `context_budget=TOKENS`: every agent's context budget (`context_budget_tokens`: it compacts
  at `compact_at` of it);
- `reasoning_effort=LEVEL`: every agent entry's `reasoning_effort` (a thinking budget goes with
  `none`, which asks for no thinking);
- `output_scale=X`: every agent's reply length (`output_tokens`, the profile's or the
  archetype's distribution) multiplied by X;
- `router=NAME`: the fleet's router in the verification runs.

A profile variant is written as a YAML copy into the variant's folder and planned like the
baseline (search, size, verify). A router variant sizes from the baseline's one-replica
ceiling, since one replica has no router: only its verification runs are new.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from loadgen.agents.distributions import Distribution
from loadgen.agents.reasoning import EFFORTS
from loadgen.errors import UsageError
from loadgen.orchestration.plan import CEILING_DIR, PlanSettings, run_plan, write_plan
from loadgen.profile.loader import (
    LoadedProfile,
    ProfileError,
    portable_mapping,
    profile_from_mapping,
)
from loadgen.sim.config import ROUTERS

__all__ = [
    "WHAT_IF_KINDS",
    "Variant",
    "WhatIf",
    "change_from",
    "comparison_row",
    "format_what_if",
    "parse_what_if",
    "profile_variant",
    "run_what_ifs",
    "scale_distribution",
    "variants_of",
]

WHAT_IF_KINDS = ("context_budget", "reasoning_effort", "output_scale", "router")
_FORM = "KIND=VALUE[,VALUE...] with KIND one of " + ", ".join(WHAT_IF_KINDS)
_MIN_BUDGET = 512  # AgentParams.context_budget_tokens' floor
_REUSED = "the baseline's: one replica has no router"


@dataclass(frozen=True)
class WhatIf:
    """One variant: a kind and the value given for it."""

    kind: str
    value: str

    @property
    def name(self) -> str:
        """As written on the command line, e.g. output_scale=2."""
        return f"{self.kind}={self.value}"

    @property
    def folder(self) -> str:
        """Its results folder's name inside the plan's."""
        return "what-if-" + re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.kind}-{self.value}")


@dataclass(frozen=True)
class Variant:
    """A what-if made concrete: the profile's varied mapping, or None (a router variant)."""

    what_if: WhatIf
    profile: dict[str, Any] | None


def _check_budget(value: str) -> None:
    if not value.isdigit() or int(value) < _MIN_BUDGET:
        raise ValueError(f"a context budget is a whole number of tokens >= {_MIN_BUDGET}, "
                         "e.g. context_budget=32768")  # fmt: skip


def _check_effort(value: str) -> None:
    if value not in EFFORTS:
        raise ValueError(f"a reasoning effort is one of {', '.join(EFFORTS)}")


def _check_scale(value: str) -> None:
    try:
        scale = float(value)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError("an output scale is a number above 0, e.g. output_scale=2")


def _check_router(value: str) -> None:
    if value not in ROUTERS:
        raise ValueError(f"a router is one of {', '.join(ROUTERS)}")


_CHECKS: dict[str, Callable[[str], None]] = {
    "context_budget": _check_budget,
    "reasoning_effort": _check_effort,
    "output_scale": _check_scale,
    "router": _check_router,
}


def parse_what_if(specs: Sequence[str]) -> list[WhatIf]:
    """Each `--what-if KIND=VALUE[,VALUE...]` as one WhatIf per value, in order, once each;
    UsageError (one line naming --what-if and the fix) for anything else."""
    found: list[WhatIf] = []
    for spec in specs:
        kind, sep, values = (part.strip() for part in spec.partition("="))
        if not sep or not values:
            raise UsageError(f"--what-if {spec!r}: give {_FORM}")
        if kind not in _CHECKS:
            raise UsageError(f"--what-if {spec!r}: unknown kind {kind!r}; use {_FORM}")
        for value in (v.strip() for v in values.split(",")):
            try:
                _CHECKS[kind](value)
            except ValueError as exc:
                raise UsageError(f"--what-if {kind}={value}: {exc}") from exc
            if WhatIf(kind, value) not in found:
                found.append(WhatIf(kind, value))
    return found


def scale_distribution(dist: Distribution, factor: float) -> dict[str, Any]:
    """`dist` with every value multiplied by `factor`, as a profile writes it."""
    shape: dict[str, Any]
    if dist.constant is not None:
        shape = {"constant": dist.constant * factor}
    elif dist.lognormal is not None:
        shape = {"lognormal": {k: v if k == "sigma" else v * factor
                               for k, v in dist.lognormal.items()}}  # fmt: skip
    elif dist.uniform is not None:
        shape = {"uniform": [dist.uniform[0] * factor, dist.uniform[1] * factor]}
    else:
        assert dist.choice is not None
        shape = {"choice": {v * factor: w for v, w in dist.choice.items()}}
    if dist.low:
        shape["low"] = dist.low * factor
    if math.isfinite(dist.high):
        shape["high"] = dist.high * factor
    return shape


def _vary(data: dict[str, Any], loaded: LoadedProfile, what_if: WhatIf) -> None:
    for entry, cls in zip(data.get("agents", []), loaded.agent_classes, strict=True):
        params = entry["params"]
        if what_if.kind == "context_budget":
            params["context_budget_tokens"] = int(what_if.value)
        elif what_if.kind == "reasoning_effort":
            entry["reasoning_effort"] = what_if.value
            params.pop("reasoning_effort", None)  # the entry's is carried into params
            if what_if.value == "none":  # a budget for no thinking is an error in a profile
                entry.pop("thinking_budget", None)
                params.pop("thinking_budget", None)
        elif what_if.kind == "output_scale":
            replies = cls.Params.model_validate(params).output_tokens
            params["output_tokens"] = scale_distribution(replies, float(what_if.value))


def profile_variant(loaded: LoadedProfile, what_if: WhatIf) -> dict[str, Any]:
    """The profile's mapping with the one thing `what_if` varies, validated as a profile;
    UsageError naming --what-if when the variant is no valid profile."""
    if what_if.kind == "router":
        raise ValueError("a router variant keeps the profile")
    data = portable_mapping(loaded)
    _vary(data, loaded, what_if)
    try:
        profile_from_mapping(data, f"--what-if {what_if.name}", loaded.base_dir)
    except ProfileError as exc:
        raise UsageError(f"{exc}; choose another value or fix the profile") from exc
    return data


def variants_of(loaded: LoadedProfile, what_ifs: Sequence[WhatIf]) -> list[Variant]:
    """Each what-if made concrete and checked, before anything runs."""
    return [
        Variant(w, None if w.kind == "router" else profile_variant(loaded, w)) for w in what_ifs
    ]


def _plan_variant(settings: PlanSettings, variant: Variant) -> dict[str, Any]:
    what_if = variant.what_if
    out = settings.out_dir / what_if.folder
    if settings.progress is not None:
        print(f"agentload plan: what-if {what_if.name}: planning again ({out})",
              file=settings.progress, flush=True)  # fmt: skip
    if variant.profile is None:  # the router: size from the baseline's one-replica ceiling
        ceiling = json.loads((settings.out_dir / CEILING_DIR / "ceiling.json").read_text())
        return run_plan(dataclasses.replace(settings, router=what_if.value, out_dir=out), ceiling)
    out.mkdir(parents=True, exist_ok=True)
    name = str(variant.profile.get("name") or "profile")
    path = out / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.yaml"
    path.write_text(yaml.safe_dump(variant.profile, sort_keys=False), encoding="utf-8")
    return run_plan(dataclasses.replace(settings, profile=str(path), out_dir=out))


def _number(doc: dict[str, Any], *keys: str) -> float | None:
    value: Any = doc
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def comparison_row(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A plan's figures for the comparison table (and plan.json's what_if list)."""
    first = doc["per_replica"]["first_to_run_out"]
    broke = [str(slo).split(" ")[0] for slo in first.get("slo") or []]
    answer = doc.get("answer") or {}
    return {
        "variant": name,
        "per_replica_agents": _number(doc, "per_replica", "agents"),
        "replicas": doc.get("replicas"),
        "output_tokens_per_s": _number(answer, "output_tokens_per_s"),
        "sessions_per_min": _number(answer, "sessions_per_min"),
        "cost_per_million_output_tokens": _number(answer, "cost", "per_million_output_tokens"),
        "cost_per_session": _number(answer, "cost", "per_session"),
        "first_to_run_out": first.get("server_resource") or (broke[0] if broke else None),
        "holds": answer.get("holds"),
        "confirmed": answer.get("confirmed"),
    }


_CHANGED = (  # (row key, label) of the figures whose change is reported, in percent
    ("per_replica_agents", "ceiling"),
    ("output_tokens_per_s", "out tok/s"),
    ("sessions_per_min", "sess/min"),
    ("cost_per_million_output_tokens", "$/M tok"),
    ("cost_per_session", "$/session"),
)


def change_from(base: dict[str, Any], row: dict[str, Any]) -> str:
    """What changed from the baseline's row: replicas, then each figure's change in percent
    (those under 1% left out)."""
    if row["replicas"] is None:
        return "holds no load" if base["replicas"] is not None else "no plan either way"
    parts = []
    if base["replicas"] is not None:
        more = row["replicas"] - base["replicas"]
        if more:
            parts.append(f"{more:+d} replica{'s' if abs(more) > 1 else ''}")
    for key, label in _CHANGED:
        if base[key] and row[key] is not None:
            share = row[key] / base[key] - 1
            if abs(share) >= 0.01:
                parts.append(f"{label} {share:+.0%}")
    return ", ".join(parts) or "no change"


def run_what_ifs(
    settings: PlanSettings, baseline: dict[str, Any], variants: Sequence[Variant]
) -> list[dict[str, Any]]:
    """Plan each variant in its folder; their rows, each with its change from the baseline,
    also written into the baseline's plan.json as `what_if`."""
    base = comparison_row("baseline", baseline)
    entries = []
    for variant in variants:
        what_if = variant.what_if
        doc = _plan_variant(settings, variant)
        row = comparison_row(what_if.name, doc)
        entries.append({
            "kind": what_if.kind,
            "value": what_if.value,
            **row,
            "change": change_from(base, row),
            "ceiling": _REUSED if variant.profile is None else "searched again",
            "router": doc["router"],
            "results": str(settings.out_dir / what_if.folder),
        })  # fmt: skip
    baseline["what_if"] = entries
    write_plan(settings, baseline)
    return entries


def _cell(value: float | None, spec: str, money: bool = False) -> str:
    if value is None:
        return "-"
    return ("$" if money else "") + format(value, spec)


def _line(row: dict[str, Any], change: str, reused: bool = False) -> str:
    agents = _cell(row["per_replica_agents"], "g") + ("*" if reused else "")
    held = {True: "yes", False: "NO", None: "-"}[row["holds"]]
    return (
        f"{row['variant']:<24} {agents:>8} {_cell(row['replicas'], 'd'):>8} "
        f"{_cell(row['output_tokens_per_s'], '.0f'):>9} {_cell(row['sessions_per_min'], '.1f'):>8} "
        f"{_cell(row['cost_per_million_output_tokens'], '.2f', True):>8} "
        f"{_cell(row['cost_per_session'], '.3g', True):>10} {row['first_to_run_out'] or '-':<10} "
        f"{held:>4}  {change}"
    ).rstrip()


def format_what_if(doc: dict[str, Any]) -> str:
    """The comparison table: the baseline, then each variant and its change."""
    entries = doc.get("what_if") or []
    if not entries:
        return ""
    lines = [
        f"what if ({doc['agents']} agents; figures of the fleet run at the replicas named):",
        f"{'variant':<24} {'ceiling':>8} {'replicas':>8} {'out tok/s':>9} {'sess/min':>8} "
        f"{'$/M tok':>8} {'$/session':>10} {'first out':<10} {'held':>4}  change",
        _line(comparison_row("baseline", doc), ""),
    ]
    lines += [_line(e, e["change"], e["ceiling"] == _REUSED) for e in entries]
    if any(e["ceiling"] == _REUSED for e in entries):
        lines.append(f"* ceiling {_REUSED}; only the verification runs are new")
    return "\n".join(lines)
