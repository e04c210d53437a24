"""Random quantities in profiles: a constant, or a distribution given by numbers people know.

Written in YAML as a number (`5`), a duration string where the field is a time (`300ms`),
or a mapping: `{lognormal: {median: 0.3, p90: 14}}`, `{uniform: [1, 8]}`,
`{choice: {1: 0.8, 2: 0.15, 3: 0.05}}`.
"""

from __future__ import annotations

import math
import random
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "Dist",
    "Distribution",
    "choice",
    "constant",
    "lognormal",
    "parse_seconds",
    "uniform",
]

_Z90 = 1.2815515655446004  # standard normal quantile at 0.90
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_seconds(value: Any) -> Any:
    """ "250ms" / "1.5m" / "2h" → seconds; other values pass through for validation."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 250ms, 2h")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


class Distribution(BaseModel):
    """One random quantity; `sample(rng)` draws from it (clamped to [low, high])."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    constant: float | None = None
    lognormal: dict[str, float] | None = None  # {median, p90} or {median, sigma}
    uniform: tuple[float, float] | None = None
    choice: dict[float, float] | None = None  # value -> weight
    low: float = 0.0
    high: float = math.inf

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        data = parse_seconds(data)
        if isinstance(data, int | float):
            return {"constant": float(data)}
        if isinstance(data, dict) and isinstance(data.get("lognormal"), dict):
            data = {
                **data,
                "lognormal": {k: parse_seconds(v) for k, v in data["lognormal"].items()},
            }
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [
            name
            for name in ("constant", "lognormal", "uniform", "choice")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of constant, lognormal {median, p90}, uniform [a, b], "
                f"choice {{value: weight}} (got {', '.join(given) or 'none'})"
            )
        if self.lognormal is not None:
            median = self.lognormal.get("median")
            if median is None or median <= 0:
                raise ValueError("lognormal needs median > 0 and p90 > median (or sigma)")
            p90 = self.lognormal.get("p90")
            if "sigma" not in self.lognormal and (p90 is None or p90 <= median):
                raise ValueError("lognormal needs p90 > median (or sigma)")
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError("uniform [a, b] needs a <= b")
        if self.choice is not None and (not self.choice or min(self.choice.values()) < 0):
            raise ValueError("choice needs at least one value and non-negative weights")
        return self

    def sample(self, rng: random.Random) -> float:
        """One draw."""
        if self.constant is not None:
            value = self.constant
        elif self.lognormal is not None:
            median = self.lognormal["median"]
            sigma = self.lognormal.get("sigma")
            if sigma is None:
                sigma = math.log(self.lognormal["p90"] / median) / _Z90
            value = rng.lognormvariate(math.log(median), sigma)
        elif self.uniform is not None:
            value = rng.uniform(*self.uniform)
        else:
            assert self.choice is not None
            values = list(self.choice)
            value = rng.choices(values, weights=list(self.choice.values()))[0]
        return min(max(value, self.low), self.high)

    def sample_int(self, rng: random.Random, minimum: int = 0) -> int:
        """One draw rounded to an integer, at least `minimum`."""
        return max(minimum, round(self.sample(rng)))

    def mean_estimate(self) -> float:
        """The distribution's mean (for docs and sanity checks), ignoring clamps."""
        if self.constant is not None:
            return self.constant
        if self.uniform is not None:
            return sum(self.uniform) / 2
        if self.choice is not None:
            total = sum(self.choice.values())
            return sum(v * w for v, w in self.choice.items()) / total
        assert self.lognormal is not None
        median = self.lognormal["median"]
        sigma = self.lognormal.get("sigma") or math.log(self.lognormal["p90"] / median) / _Z90
        return median * math.exp(sigma * sigma / 2)


def _coerce(value: Any) -> Any:
    return value if isinstance(value, Distribution) else Distribution.model_validate(value)


Dist = Annotated[
    Distribution, BeforeValidator(_coerce), Field(description="number or distribution")
]


# Builders for custom agents written in Python, reading like Locust's `between(1, 5)`:
# `uniform(2, 5)` rather than `Distribution.model_validate({"uniform": [2, 5]})`. Each is
# validated exactly as the YAML form is.


def constant(value: float | str) -> Distribution:
    """Always `value` (a number, or a duration such as "300ms")."""
    return Distribution.model_validate(value)


def uniform(low: float, high: float) -> Distribution:
    """Evenly between `low` and `high`."""
    return Distribution.model_validate({"uniform": [low, high]})


def lognormal(
    *,
    median: float | str,
    p90: float | str | None = None,
    sigma: float | None = None,
    low: float = 0.0,
    high: float = math.inf,
) -> Distribution:
    """Long-tailed, given its median and 90th percentile (or sigma); clamped to [low, high]."""
    shape: dict[str, Any] = {"median": median}
    if p90 is not None:
        shape["p90"] = p90
    if sigma is not None:
        shape["sigma"] = sigma
    return Distribution.model_validate({"lognormal": shape, "low": low, "high": high})


def choice(weights: dict[float, float]) -> Distribution:
    """One of the given values, each with its weight: `choice({1: 0.8, 2: 0.2})`."""
    return Distribution.model_validate({"choice": weights})
