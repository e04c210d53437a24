"""ceiling.json: the load levels a ceiling search tried, read and drawn by the report.

Minimal shape (extra fields are ignored)::

    {"load_unit": "agents",                       # optional, default "load"
     "levels": [{"load": 8, "output_tokens_per_s": 1500.0,
                 "ttft_p95_s": 0.03, "e2e_p95_s": 0.4, "error_rate": 0.0}, ...],
     "ceiling": {"load": 64, "reason": "TTFT p95 above the SLO"}}   # optional

`load` and `output_tokens_per_s` are required per level; the latency and error fields are
optional (null or absent when not measured). A reasoning model's levels may add
`answer_tokens_per_s` (output less reasoning) and `ttfat_p95_s` (time to first answer token),
and the mark its `answer_tokens_per_s`: when some level's answer rate falls short of its output
rate, both are drawn and the verdict names the ceiling's answer tokens/s. A level's optional
`slices` list (each with `start_s`, `duration_s`, and optionally `output_tokens_per_s` and
`ttft_p95_s`) is drawn slice by slice. The section also says, when present, the search's
`knee`, `failed_first` (`load`, `slo`, `state_failure`, `server_resource`) and `stopped_by`,
as `agentload ceiling` writes them; docs/ceiling.md describes the whole document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadgen.errors import UsageError
from loadgen.observe.result_files import CEILING_FILE
from loadgen.report.html.charts import BLUE, GREEN, ORANGE, RED, Section, seconds_format
from loadgen.report.html.svg import Axis, Series, line_chart, plain_number

__all__ = [
    "Ceiling",
    "CeilingLevel",
    "CeilingSlice",
    "FailedFirst",
    "ceiling_section",
    "parse_ceiling",
]

_OPTIONAL = (
    "ttft_p95_s",
    "e2e_p95_s",
    "itl_p99_s",
    "error_rate",
    "answer_tokens_per_s",
    "ttfat_p95_s",
)


@dataclass(frozen=True)
class CeilingSlice:
    """One slice of a level's steady period (start_s from the end of the level's warm-up)."""

    start_s: float
    duration_s: float
    output_tokens_per_s: float | None
    ttft_p95_s: float | None


@dataclass(frozen=True)
class CeilingLevel:
    """One load level of the search and what it delivered."""

    load: float
    output_tokens_per_s: float
    extra: dict[str, float]  # whichever of _OPTIONAL's figures exist
    order: int = 0  # when the search measured it (0 first)
    slices: tuple[CeilingSlice, ...] = ()


@dataclass(frozen=True)
class FailedFirst:
    """What failed first past the ceiling: at which load, the SLOs, a state failure, a resource."""

    load: float
    slos: tuple[str, ...]
    state_failure: str | None
    server_resource: str | None


@dataclass(frozen=True)
class Ceiling:
    """The levels in load order, their unit, and the load the search called the ceiling."""

    load_unit: str
    levels: list[CeilingLevel]
    ceiling_load: float | None
    reason: str
    knee: float | None = None
    failed_first: FailedFirst | None = None
    stopped_by: str = ""
    ceiling_answer_tokens_per_s: float | None = None  # the mark's, else its level's

    @property
    def reasoned(self) -> bool:
        """True when some level's output held reasoning: its answer rate fell short."""
        return any(
            lv.extra.get("answer_tokens_per_s", lv.output_tokens_per_s)
            < lv.output_tokens_per_s - 0.5
            for lv in self.levels
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _slices(raw: Any, where: str) -> tuple[CeilingSlice, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise UsageError(f"{where}: expected a list of slices")
    out = []
    for j, piece in enumerate(raw):
        fields = piece if isinstance(piece, Mapping) else {}
        start, duration = _number(fields.get("start_s")), _number(fields.get("duration_s"))
        if start is None or duration is None:
            raise UsageError(f"{where}.{j} needs numeric `start_s` and `duration_s`")
        rate, ttft = _number(fields.get("output_tokens_per_s")), _number(fields.get("ttft_p95_s"))
        out.append(CeilingSlice(start, duration, rate, ttft))
    return tuple(out)


def parse_ceiling(data: Any, source: str = CEILING_FILE) -> Ceiling:
    """Validate a ceiling.json document; a one-line UsageError names the bad field."""
    if not isinstance(data, Mapping) or not isinstance(data.get("levels"), list):
        raise UsageError(f"{source}: expected an object with a `levels` list")
    levels = []
    for i, raw in enumerate(data["levels"]):
        load = _number(raw.get("load")) if isinstance(raw, Mapping) else None
        rate = _number(raw.get("output_tokens_per_s")) if isinstance(raw, Mapping) else None
        if load is None or rate is None:
            raise UsageError(f"{source}: levels.{i} needs numeric `load` and `output_tokens_per_s`")
        assert isinstance(raw, Mapping)
        extra = {k: v for k in _OPTIONAL if (v := _number(raw.get(k))) is not None}
        slices = _slices(raw.get("slices"), f"{source}: levels.{i}.slices")
        levels.append(CeilingLevel(load, rate, extra, order=i, slices=slices))
    mark = data.get("ceiling")
    ceiling_load = _number(mark.get("load")) if isinstance(mark, Mapping) else None
    answer = _number(mark.get("answer_tokens_per_s")) if isinstance(mark, Mapping) else None
    if answer is None:
        at = [lv.extra.get("answer_tokens_per_s") for lv in levels if lv.load == ceiling_load]
        answer = at[0] if at else None
    return Ceiling(
        load_unit=str(data.get("load_unit") or "load"),
        levels=sorted(levels, key=lambda level: level.load),
        ceiling_load=ceiling_load,
        reason=str(mark.get("reason") or "") if isinstance(mark, Mapping) else "",
        knee=_number(data.get("knee")),
        failed_first=_failed_first(data.get("failed_first")),
        stopped_by=str(data.get("stopped_by") or ""),
        ceiling_answer_tokens_per_s=answer,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _failed_first(raw: Any) -> FailedFirst | None:
    # The verdict's details are words for the reader: what is malformed is left unsaid.
    load = _number(raw.get("load")) if isinstance(raw, Mapping) else None
    if load is None:
        return None
    slos = raw.get("slo")
    return FailedFirst(
        load=load,
        slos=tuple(t for t in slos if isinstance(t, str)) if isinstance(slos, list) else (),
        state_failure=_text(raw.get("state_failure")),
        server_resource=_text(raw.get("server_resource")),
    )


def _verdict(ceiling: Ceiling) -> str:
    """The search's verdict in sentences: ceiling, knee, what failed first, what stopped it."""
    unit = ceiling.load_unit
    said = []
    failed = ceiling.failed_first
    if ceiling.ceiling_load is not None and failed is None and ceiling.stopped_by:
        # Nothing broke above it: the search ran out of loads or time, not of capacity.
        said.append(f"Ceiling not reached: no SLO broke up to {ceiling.ceiling_load:g} {unit}.")
    elif ceiling.ceiling_load is not None:
        # The reason repeats what failed first when that is said on its own.
        why = f" ({ceiling.reason})" if ceiling.reason and failed is None else ""
        said.append(f"Ceiling: {ceiling.ceiling_load:g} {unit}{why}.")
    elif ceiling.stopped_by:  # a search's verdict, and no level held
        said.append("Ceiling: none found (no level held every SLO).")
    answer = ceiling.ceiling_answer_tokens_per_s
    if ceiling.ceiling_load is not None and answer is not None and ceiling.reasoned:
        output = [
            lv.output_tokens_per_s for lv in ceiling.levels if lv.load == ceiling.ceiling_load
        ]
        of = f" of {output[0]:,.0f} output tokens/s (the rest reasoning)" if output else ""
        said.append(f"At the ceiling: {answer:,.0f} answer tokens/s{of}.")
    if ceiling.knee is not None:
        said.append(f"Knee: {ceiling.knee:g} {unit} (throughput stops growing with load).")
    if failed is not None:
        parts = [f"Failed first at {failed.load:g} {unit}: " + ("; ".join(failed.slos) or "-")]
        if failed.state_failure:
            parts.append(f"first state failure to rise: {failed.state_failure}")
        if failed.server_resource:
            parts.append(f"server resource saturated first: {failed.server_resource}")
        said.append("; ".join(parts) + ".")
    if ceiling.stopped_by:
        said.append(f"Stopped by: {ceiling.stopped_by}.")
    return " ".join(said)


def _points(ceiling: Ceiling, key: str) -> list[tuple[float, float]]:
    return [(lv.load, lv.extra[key]) for lv in ceiling.levels if key in lv.extra]


def ceiling_section(ceiling: Ceiling) -> Section:
    """Throughput and latency against load, with the ceiling marked when known."""
    unit = ceiling.load_unit
    x = Axis(f"load ({unit})", plain_number, low=0.0)
    tokens = [
        Series(
            "output tokens/s", [(lv.load, lv.output_tokens_per_s) for lv in ceiling.levels], BLUE
        )
    ]
    # A reasoning model's answer rate and time to first answer token, beside their kin.
    reasoned = ceiling.reasoned
    if reasoned and (pts := _points(ceiling, "answer_tokens_per_s")):
        tokens.append(Series("answer tokens/s", pts, GREEN))
    latency = [
        Series(label, pts, color)
        for label, key, color in (
            ("TTFT p95", "ttft_p95_s", ORANGE),
            *((("TTFAT p95", "ttfat_p95_s", BLUE),) if reasoned else ()),
            ("e2e p95", "e2e_p95_s", GREEN),
        )
        if (pts := _points(ceiling, key))
    ]
    note = "Output throughput and latency at each load level of the ceiling search."
    if verdict := _verdict(ceiling):
        note += " " + verdict
    if ceiling.ceiling_load is not None:
        top = max(lv.output_tokens_per_s for lv in ceiling.levels)
        tokens.append(
            Series(
                f"ceiling at {ceiling.ceiling_load:g} {unit}",
                [(ceiling.ceiling_load, 0.0), (ceiling.ceiling_load, top)],
                RED,
                dashed=True,
            )
        )
    charts = [
        line_chart(
            "ceiling-throughput",
            "Throughput vs load",
            tokens,
            x,
            Axis("output tokens/s"),
            markers=True,
        )
    ]
    if latency:
        y = Axis("latency", seconds_format(max(p[1] for s in latency for p in s.points)))
        charts.append(line_chart("ceiling-latency", "Latency vs load", latency, x, y, markers=True))
    slices = _slice_charts(ceiling)
    if slices:
        note += (
            " Below, each level's slices in the order measured, levels end to end (warm-ups"
            " left out): a level still drifting shows as a slope within its own line."
        )
    charts += slices
    return Section("Ceiling search", note, charts)


def _slice_charts(ceiling: Ceiling) -> list[str]:
    """Throughput and TTFT p95 of every slice, a line per level, levels in measured order."""
    tokens: list[Series] = []
    ttft: list[Series] = []
    offset = 0.0
    for level in sorted(ceiling.levels, key=lambda lv: lv.order):
        if not level.slices:
            continue
        name = f"{level.load:g} {ceiling.load_unit}"
        mid = [(offset + p.start_s + p.duration_s / 2, p) for p in level.slices]
        tokens.append(Series(name, [(t, p.output_tokens_per_s) for t, p in mid
                                    if p.output_tokens_per_s is not None]))  # fmt: skip
        ttft.append(Series(name, [(t, p.ttft_p95_s) for t, p in mid if p.ttft_p95_s is not None]))
        offset += max(p.start_s + p.duration_s for p in level.slices)
    x = Axis("seconds measured", plain_number, low=0.0)
    charts = []
    if any(s.points for s in tokens):
        charts.append(line_chart("ceiling-slices-throughput", "Throughput in each slice",
                                 tokens, x, Axis("output tokens/s"), markers=True))  # fmt: skip
    if any(s.points for s in ttft):
        y = Axis("TTFT p95", seconds_format(max(p[1] for s in ttft for p in s.points)))
        charts.append(line_chart("ceiling-slices-ttft", "TTFT p95 in each slice", ttft, x, y,
                                 markers=True))  # fmt: skip
    return charts
