"""Faster than real time: a plan's runs against a simulator whose clock runs K times faster.

The simulator's `speedup` makes every modelled duration last 1/K of itself (docs/twin.md,
"Faster than real time"). The runs against it are ordinary `agentload` commands measuring
wall time, so what they are told in time is divided by K on the way in (the profile's tool,
think and idle times, stage lengths and back-offs, SLO thresholds, warm-up, windows and run
lengths; open-loop rates and trace speedups multiplied), and what they measure is brought
back to modelled time on the way out (latencies and durations times K, rates divided by K).

What does not scale is the machine's own time per request and per token, in the client and
in the simulator: in modelled time it grows K-fold. It stays small beside SLOs of seconds
while the simulator keeps its pace, which its /metrics say (`engine_clock`); a run where the
engine fell behind is reported as such, never silently.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import yaml
from prometheus_client.parser import text_string_to_metric_families

from loadgen.ceiling.measure import GeneratorLimits, Windows
from loadgen.errors import AgentloadError, UsageError
from loadgen.gates.gates import format_value, parse_gate
from loadgen.gates.metrics import Unit
from loadgen.profile.loader import LoadedProfile, load_profile, portable_mapping

__all__ = [
    "LOST_SHARE_LIMIT",
    "MAX_SPEEDUP",
    "RATE_METRICS",
    "EngineClock",
    "TimeWarp",
    "engine_clock",
    "pace_check",
    "pace_lines",
]

# Gate metrics measured per unit of time: a threshold on them scales the other way.
RATE_METRICS = frozenset(
    {"requests_per_s", "output_tokens_per_s", "answer_tokens_per_s", "sessions_per_min"}
)
MAX_SPEEDUP = 1000.0  # the simulator's own bound (SimConfig.speedup)
# The share of its busy time an engine may fall behind its modelled pace before a run at this
# speedup is reported as not kept up: past it, latencies carry the machine's slowness.
LOST_SHARE_LIMIT = 0.02

# A time as loadgen's texts write it: "2.445 s", "412 ms", a window "0.0-60.0s"; and a rate:
# "436 tokens/s" (the search's goodput reason), "8.0 sessions/min".
_TIME = re.compile(
    r"(?<![\w.])(?P<a>\d+(?:\.\d+)?)(?:-(?P<b>\d+(?:\.\d+)?))?\s?(?P<unit>ms|s)(?![\w])"
)
_RATE = re.compile(
    r"(?<![\w.])(?P<n>\d+(?:\.\d+)?)(?P<per> \w+/(?:s|min))(?![\w])"
    r"(?: from (?P<was>\d+(?:\.\d+)?)(?![\w.]))?"  # "436 tokens/s from 806": both rates
)


# `agentload ceiling`'s flags that take a length of time.
_CEILING_DURATIONS = (
    "--warmup", "--window", "--max-window", "--max-duration", "--generator-max-schedule-lag",
)  # fmt: skip


@dataclass(frozen=True)
class EngineClock:
    """The simulator's engines, summed: wall seconds busy at the modelled pace, and lost."""

    busy_s: float
    lost_s: float

    @property
    def lost_share(self) -> float:
        """lost / busy: how much slower than modelled the engines ran while busy."""
        return self.lost_s / self.busy_s if self.busy_s > 0 else 0.0

    def since(self, before: EngineClock) -> EngineClock:
        """What happened between `before` and this reading."""
        return EngineClock(self.busy_s - before.busy_s, self.lost_s - before.lost_s)


def pace_check(
    lost_shares: Iterable[float | None], saturated_at: Sequence[int | str] = ()
) -> dict[str, Any]:
    """Whether every run at a speedup kept its modelled pace (its engines lost at most
    LOST_SHARE_LIMIT of their busy time) and its load generator its own (`saturated_at`
    names the runs where it saturated: a plan's fleet sizes, a study's arms)."""
    worst = max((share for share in lost_shares if share is not None), default=0.0)
    return {
        "lost_share_max": worst,
        "limit": LOST_SHARE_LIMIT,
        "generator_saturated_at": list(saturated_at),
        "kept_up": worst <= LOST_SHARE_LIMIT and not saturated_at,
    }


def pace_lines(
    clock: Mapping[str, Any], speedup: float, server: str, command: str, run_unit: str = ""
) -> list[str]:
    """The `clock:` lines under what `command` (plan, study) printed of a `server` (the twin,
    the fleet) run at `speedup`: its pace, and what to do when it was not kept. `run_unit`
    follows the names of the runs whose generator saturated (" replica(s)" after sizes)."""
    behind = clock["lost_share_max"] > clock["limit"]
    pace = "FELL BEHIND its modelled pace" if behind else "kept its pace"
    lines = [
        f"clock: the {server} ran {speedup:g}x faster than real time and {pace} (lost "
        f"{clock['lost_share_max']:.1%} of its busy time at worst, limit {clock['limit']:.0%}); "
        "figures are in modelled time"
    ]
    if clock.get("generator_saturated_at"):
        at = ", ".join(str(r) for r in clock["generator_saturated_at"])
        lines.append(f"clock: the load generator saturated in the run of {at}{run_unit}")
    if not clock["kept_up"]:
        lines.append(f"clock: latencies carry this machine's slowness, not the {server}'s: "
                     f"{command} again with a lower --speedup")  # fmt: skip
    return lines


def engine_clock(base_url: str, timeout_s: float = 10.0) -> EngineClock:
    """Read agentload_sim_engine_clock_seconds from a simulator's (or fleet's) /metrics (at
    the root of the address `base_url` names: its /v1 base URL will do)."""
    try:
        with urllib.request.urlopen(urljoin(base_url, "/metrics"), timeout=timeout_s) as reply:
            text = reply.read().decode()
    except OSError as exc:
        raise AgentloadError(f"reading the simulator's /metrics at {base_url}: {exc}") from exc
    busy = lost = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "agentload_sim_engine_clock_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("kind") == "busy":
                busy += sample.value
            elif sample.labels.get("kind") == "lost":
                lost += sample.value
    return EngineClock(busy, lost)


@dataclass(frozen=True)
class TimeWarp:
    """Modelled time is `speedup` times wall time; converts what runs are told and measure."""

    speedup: float = 1.0

    @classmethod
    def from_flags(
        cls, speedup: float, slos: Sequence[str], profile_gates: Sequence[str]
    ) -> TimeWarp:
        """The warp a command's --speedup asks for, checked against the simulator's bound and
        against the --slo and profile gates the runs will judge (UsageError otherwise)."""
        if not 1.0 <= speedup <= MAX_SPEEDUP:
            raise UsageError(
                f"--speedup {speedup:g}: give 1 (real time) to {MAX_SPEEDUP:g} times faster"
            )
        warp = cls(speedup)
        warp.check_gates(slos)
        warp.check_gates(profile_gates, flag="the profile's gate")
        return warp

    @property
    def active(self) -> bool:
        """Whether time is warped at all."""
        return self.speedup != 1.0

    def wall(self, modelled_s: float) -> float:
        """Wall seconds of `modelled_s` modelled ones."""
        return modelled_s / self.speedup

    def modelled(self, wall_s: float) -> float:
        """Modelled seconds of `wall_s` wall ones."""
        return wall_s * self.speedup

    def modelled_rate(self, wall_rate: float | None) -> float | None:
        """A per-time figure measured in wall time, per modelled time."""
        return None if wall_rate is None else wall_rate / self.speedup

    # -- gates ------------------------------------------------------------------------------

    def check_gates(self, texts: Sequence[str], flag: str = "--slo") -> None:
        """Refuse gates on rates under a speedup: their reasons would mix the two clocks."""
        if not self.active:
            return
        for text in texts:
            gate = parse_gate(text)
            if gate.metric in RATE_METRICS:
                raise UsageError(
                    f"{flag} {text!r}: a rate cannot be judged faster than real time; use a "
                    "latency or ratio SLO, or drop --speedup"
                )

    def wall_gate(self, text: str) -> str:
        """A gate on modelled time as the run that measures wall time must judge it."""
        return _rescaled_gate(text, 1.0 / self.speedup) if self.active else text

    def modelled_gate(self, text: str) -> str:
        """A gate a run judged in wall time, as written in modelled time."""
        return _rescaled_gate(text, self.speedup) if self.active else text

    def modelled_text(self, text: str) -> str:
        """A run's text (a gate's reason, a window's span) with its times and rates in
        modelled time."""
        if not self.active:
            return text
        text = _RATE.sub(lambda m: _rescaled_rate(m, self.speedup), text)
        return _TIME.sub(lambda m: _rescaled_time(m, self.speedup), text)

    def modelled_gate_result(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """One entry of summary.json's "gates", in modelled time."""
        out = dict(result)
        if not self.active:
            return out
        gate = parse_gate(str(result["gate"]))
        value = result.get("value")
        if isinstance(value, int | float) and gate.unit is Unit.SECONDS:
            out["value"] = self.modelled(float(value))
        out["gate"] = self.modelled_gate(gate.text)
        if isinstance(result.get("reason"), str):
            out["reason"] = self.modelled_text(result["reason"])
        return out

    # -- what runs are told -------------------------------------------------------------------

    def profile(self, loaded: LoadedProfile) -> dict[str, Any]:
        """The profile's mapping with every time in it in wall time."""
        data = portable_mapping(loaded)
        if not self.active:
            return data
        profile, k = loaded.profile, self.speedup
        data["time_scale"] = profile.time_scale / k
        data["duration"] = profile.duration / k
        open_loop = profile.arrival.mode == "open"
        data["stages"] = [
            {
                **stage.model_dump(mode="json", exclude_none=True),
                "duration": stage.duration / k,
                **({"target": stage.target * k} if open_loop and stage.target is not None else {}),
            }
            for stage in profile.stages
        ]
        arrival = data.setdefault("arrival", {})
        if profile.arrival.rate is not None:
            arrival["rate"] = profile.arrival.rate * k
        if profile.arrival.mode == "trace":
            arrival["speedup"] = profile.arrival.speedup * k
            if profile.arrival.cap_idle is not None:
                arrival["cap_idle"] = profile.arrival.cap_idle / k
        data["reactions"] = {
            str(kind): {
                **reaction.model_dump(mode="json"),
                "backoff": reaction.backoff / k,
                "max_backoff": reaction.max_backoff / k,
            }
            for kind, reaction in profile.reactions.items()
        }
        data["slos"] = {
            key: value if key == "session_success" else value / k
            for key, value in profile.slos.items()
        }
        data["gates"] = [self.wall_gate(text) for text in profile.gates]
        return data

    def run_profile(self, profile: str, out_dir: Path) -> str:
        """The profile runs at this speedup load: `profile` itself at 1x, else its copy in
        wall time, written to OUT_DIR/profile-at-speedup-K.yaml."""
        if not self.active:
            return profile
        path = out_dir / f"profile-at-speedup-{self.speedup:g}.yaml"
        data = self.profile(load_profile(profile))
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return str(path)

    def ceiling_flags(self, flags: Sequence[str]) -> list[str]:
        """`agentload ceiling` arguments given in modelled time, in wall time."""
        out = list(flags)
        if not self.active:
            return out
        # The search's own defaults are wall time: at a speedup they are given, in modelled time.
        given = set(out)
        windows, limits = Windows(), GeneratorLimits()
        for flag, default in (("--warmup", windows.warmup_s), ("--window", windows.window_s)):
            if flag not in given:
                out += [flag, repr(default)]
        if "--generator-max-schedule-lag" not in given:
            # How late agents' steps start is lateness in modelled time too.
            out += ["--generator-max-schedule-lag", repr(limits.schedule_lag_s)]
        return self.wall_flags(out, _CEILING_DURATIONS)

    def wall_flags(self, flags: Sequence[str], durations: Sequence[str]) -> list[str]:
        """A command's arguments with the values of the `durations` flags (seconds) and each
        --slo's threshold in wall time."""
        out = list(flags)
        for i in range(len(out) - 1):
            if out[i] in durations:
                out[i + 1] = repr(self.wall(float(out[i + 1])))
            elif out[i] == "--slo":
                out[i + 1] = self.wall_gate(out[i + 1])
        return out


def _rescaled_gate(text: str, time_factor: float) -> str:
    gate = parse_gate(text)
    threshold = gate.threshold
    if gate.unit is Unit.SECONDS:
        seconds = threshold * time_factor
        written = _plain(seconds * 1000) + "ms" if 0 < seconds < 1 else _plain(seconds) + "s"
    elif gate.metric in RATE_METRICS:
        written = _plain(threshold / time_factor)
    else:  # ratios and counts are the same on either clock
        written = _plain(threshold)
    rescaled = f"{gate.metric} {gate.op} {written}"
    if gate.abort_on_fail:
        rescaled += " abort"
        if gate.delay_s:
            rescaled += f" after {_plain(gate.delay_s * time_factor)}s"
    return rescaled


def _plain(number: float) -> str:
    # Gate syntax takes no exponent in an abort delay: fixed-point, trailing zeros dropped.
    return f"{number:.9f}".rstrip("0").rstrip(".") or "0"


def _rescaled_rate(match: re.Match[str], factor: float) -> str:
    def per_modelled(number: str) -> str:
        return f"{float(number) / factor:.{len(number.partition('.')[2])}f}"

    was = match["was"]
    return (
        per_modelled(match["n"])
        + match["per"]
        + ("" if was is None else f" from {per_modelled(was)}")
    )


def _rescaled_time(match: re.Match[str], factor: float) -> str:
    per = 0.001 if match["unit"] == "ms" else 1.0
    a = float(match["a"]) * per * factor
    if match["b"] is not None:  # a span, as windows are written: "0.0-60.0s"
        return f"{a:.1f}-{float(match['b']) * per * factor:.1f}s"
    return format_value(a, Unit.SECONDS)
