"""Custom agents build distributions the way Locust users write `between(1, 5)`."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from loadgen.agents import Distribution, choice, constant, lognormal, uniform


def test_each_builder_equals_its_yaml_form() -> None:
    assert uniform(2, 5) == Distribution.model_validate({"uniform": [2, 5]})
    assert constant("300ms") == Distribution.model_validate(0.3)
    assert lognormal(median=0.5, p90=3) == Distribution.model_validate(
        {"lognormal": {"median": 0.5, "p90": 3}}
    )
    assert choice({1: 0.8, 2: 0.2}) == Distribution.model_validate({"choice": {1: 0.8, 2: 0.2}})


def test_lognormal_clamps_to_its_bounds() -> None:
    rng = random.Random(1)
    dist = lognormal(median=100, p90=1000, low=50, high=200)
    assert all(50 <= dist.sample(rng) <= 200 for _ in range(500))


def test_a_builder_validates_like_the_yaml_form() -> None:
    with pytest.raises(ValidationError, match="uniform"):
        uniform(5, 2)
    with pytest.raises(ValidationError, match="p90 > median"):
        lognormal(median=3, p90=1)
