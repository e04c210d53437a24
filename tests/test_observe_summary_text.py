"""format_summary: the short terminal rendering of summary.json."""

from __future__ import annotations

import random
from typing import Any

from loadgen.observe import RunStats, SessionOutcome, SessionRecord, StepRecord, format_summary


def _summary(generator: dict[str, Any] | None = None) -> dict[str, Any]:
    stats = RunStats()
    rng = random.Random(1)
    for s in range(10):
        stats.session_started("coder")
        stats.add_step(
            StepRecord(
                f"s{s}",
                "coder",
                0,
                "turn",
                "chat",
                0.0,
                e2e_s=rng.uniform(1, 3),
                ttft_s=rng.uniform(0.05, 0.3),
                itl_s=[rng.uniform(0.01, 0.03) for _ in range(20)],
                completion_tokens=120,
            )
        )
        stats.add_session(SessionRecord(f"s{s}", "coder", 0.0, 3.0, 1, SessionOutcome.COMPLETED))
    stats.add_step(
        StepRecord(
            "x", "coder", 1, "turn", "chat", 0.0, e2e_s=1.0, ok=False, failures=["cache_miss"]
        )
    )
    return stats.summary(
        target={"url": "http://gpu-1:8000/v1", "model": "llama-8b"},
        profile="coding-mix",
        duration_s=60.0,
        generator=generator or {"saturated": False, "reasons": []},
    )


def test_format_summary_fits_in_about_a_dozen_lines() -> None:
    assert len(format_summary(_summary()).splitlines()) <= 13


def test_format_summary_shows_the_headline_figures() -> None:
    text = format_summary(_summary())
    for expected in (
        "coding-mix",
        "http://gpu-1:8000/v1 (llama-8b)",
        "60.0 s",
        "10 completed",
        "10 ok, 1 failed",
        "20.0 output tok/s",
        "10.0 sessions/min",
        "TTFT",
        "p99",
        "ITL",
    ):
        assert expected in text


def test_format_summary_lists_only_non_zero_failure_kinds() -> None:
    text = format_summary(_summary())
    assert "cache_miss 1" in text
    assert "timeout" not in text


def test_format_summary_warns_when_the_generator_was_saturated() -> None:
    generator = {"saturated": True, "reasons": ["CPU at 97% of one core (saturated at 90%)"]}
    text = format_summary(_summary(generator))
    assert "WARNING" in text
    assert "CPU at 97%" in text


def test_format_summary_does_not_warn_for_a_healthy_generator() -> None:
    assert "WARNING" not in format_summary(_summary())
