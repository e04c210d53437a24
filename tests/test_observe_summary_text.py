"""format_summary: the short terminal rendering of summary.json."""

from __future__ import annotations

import random
import socket
from typing import Any

from aiohttp import web

from loadgen.observe import RunStats, SessionOutcome, SessionRecord, StepRecord, format_summary
from loadgen.observe.target_metrics import TargetMetricsSampler

SCRAPE_INTERVAL_S = 2.0


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


def test_format_summary_warns_when_a_record_file_stopped_early() -> None:
    incomplete = "steps.jsonl: [Errno 28] No space left on device after 1234 records"
    text = format_summary({**_summary(), "results_incomplete": incomplete})
    assert (
        "WARNING: results incomplete: steps.jsonl: [Errno 28] No space left on device after "
        "1234 records; the figures above count every request, the record files stop early"
    ) in " ".join(text.split())


def test_format_summary_of_a_run_that_wrote_every_record_says_nothing_of_it() -> None:
    assert "incomplete" not in format_summary(_summary())


def test_format_summary_warns_when_the_generator_was_saturated() -> None:
    generator = {"saturated": True, "reasons": ["CPU at 97% of one core (saturated at 90%)"]}
    text = format_summary(_summary(generator))
    assert "WARNING" in text
    assert "CPU at 97%" in text


def test_format_summary_does_not_warn_for_a_healthy_generator() -> None:
    assert "WARNING" not in format_summary(_summary())


# -- the target's metrics (--scrape-target-metrics) ------------------------------------------


def vllm_exposition(
    kv: float,
    waiting: int = 0,
    preemptions: int = 0,
    hits: int = 0,
    queries: int = 0,
    generated: int = 0,
) -> str:
    """A vLLM /metrics page with these figures (prompt tokens: ten per generated token)."""
    return "".join(
        f'vllm:{name}{{model_name="m"}} {value}\n'
        for name, value in (
            ("num_requests_running", 4),
            ("num_requests_waiting", waiting),
            ("kv_cache_usage_perc", kv),
            ("num_preemptions_total", preemptions),
            ("prefix_cache_hits_total", hits),
            ("prefix_cache_queries_total", queries),
            ("prompt_tokens_total", 10 * generated),
            ("generation_tokens_total", generated),
        )
    )


# Free KV → full (2 s) → preempting (4 s) → a queue in two scrapes in a row (6 s).
SATURATING = (
    vllm_exposition(0.40),
    vllm_exposition(0.97, hits=400, queries=1000, generated=100),
    vllm_exposition(0.99, waiting=3, preemptions=2, hits=900, queries=2000, generated=250),
    vllm_exposition(0.99, waiting=4, preemptions=5, hits=1500, queries=3000, generated=400),
)


async def sampled_server_report(*expositions: str) -> dict[str, Any]:
    """summary.json's "server" from a real sampler that scraped these pages over HTTP, in turn."""
    served = 0

    async def metrics(request: web.Request) -> web.Response:
        nonlocal served
        page = expositions[min(served, len(expositions) - 1)]
        served += 1
        return web.Response(text=page)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    # A clock that moves 2 s per scrape answered: the onsets are exact, whatever the machine.
    sampler = TargetMetricsSampler(
        url, interval_s=3600, clock=lambda: SCRAPE_INTERVAL_S * max(served - 1, 0)
    )
    try:
        async with sampler:  # the first page is the baseline, the last is scraped again at exit
            for _ in expositions[1:]:
                await sampler.sample()
    finally:
        await runner.cleanup()
    return sampler.report()


async def unreachable_server_report() -> dict[str, Any]:
    """summary.json's "server" when nothing answers at the metrics URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with TargetMetricsSampler(f"http://127.0.0.1:{port}/metrics", interval_s=3600) as sampler:
        pass
    return sampler.report()


def _line(text: str, head: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(head)]


async def test_the_server_line_names_what_saturated_first_and_when() -> None:
    summary = {**_summary(), "server": await sampled_server_report(*SATURATING)}

    assert _line(format_summary(summary), "server") == [
        "server          vLLM: KV cache saturated first, 2.0 s into the run "
        "(then preemptions at 4.0 s, queue at 6.0 s)"
    ]


async def test_the_server_figures_are_kv_and_waiting_peaks_preemptions_and_prefix_hits() -> None:
    summary = {**_summary(), "server": await sampled_server_report(*SATURATING)}

    lines = format_summary(summary).splitlines()
    server = next(i for i, line in enumerate(lines) if line.startswith("server"))
    assert lines[server + 1] == " " * 16 + (
        "KV cache peak 99.0%, waiting peak 4, preemptions 5, prefix-cache hits 50.0%"
    )


async def test_a_server_with_room_to_spare_is_said_to_have_saturated_nothing() -> None:
    report = await sampled_server_report(vllm_exposition(0.1, waiting=1), vllm_exposition(0.3))
    summary = {**_summary(), "server": report}

    assert _line(format_summary(summary), "server") == [
        "server          vLLM: nothing saturated (no full KV cache, no preemptions, no lasting "
        "queue)"
    ]


async def test_unreachable_target_metrics_are_one_line_with_the_last_error() -> None:
    report = await unreachable_server_report()
    text = format_summary({**_summary(), "server": report})

    (line,) = _line(text, "server")
    assert line.startswith(f"server          metrics unavailable from {report['metrics_url']} ")
    assert f"(2 failed scrapes, last: {report['last_error']})" in line
    assert "KV cache peak" not in text


async def test_metrics_without_any_server_engine_names_are_reported_unavailable() -> None:
    report = await sampled_server_report("process_cpu_seconds_total 1.5\n")
    text = format_summary({**_summary(), "server": report})

    assert _line(text, "server") == [
        f"server          metrics unavailable: no vLLM, SGLang or llama.cpp figures at "
        f"{report['metrics_url']}"
    ]


def test_a_run_without_target_metrics_or_workers_prints_neither_line() -> None:
    text = format_summary(_summary())

    assert _line(text, "server") == []
    assert _line(text, "workers") == []


# -- a swarm's workers (summary.json "workers", written by the master) ----------------------


def _workers(
    expected: int, reported: list[str], left: list[str], lost: list[str]
) -> dict[str, Any]:
    return {"expected": expected, "reported": reported, "left": left, "lost": lost}


def test_a_swarm_says_how_many_of_its_workers_reported() -> None:
    summary = {**_summary(), "workers": _workers(2, ["worker-0", "worker-1"], [], [])}
    text = format_summary(summary)

    assert _line(text, "workers") == ["workers         2 of 2 reported"]
    assert "WARNING" not in text


def test_workers_that_joined_the_running_swarm_are_counted_as_joined() -> None:
    # The master waited for one worker; two more joined mid-run (compose --scale worker=3).
    workers = _workers(1, ["worker-0", "worker-1", "worker-2"], [], [])
    text = format_summary({**_summary(), "workers": workers})

    assert _line(text, "workers") == [
        "workers         3 reported (1 awaited at the start, 2 joined)"
    ]
    assert "WARNING" not in text


def test_a_lost_worker_is_named_in_a_warning() -> None:
    workers = _workers(2, ["worker-0", "worker-1"], [], ["worker-1"])
    text = format_summary({**_summary(), "workers": workers})

    assert _line(text, "workers") == ["workers         2 of 2 reported, LOST: worker-1"]
    warning = text[text.index("WARNING: ") :]
    assert " ".join(warning.split()) == (
        "WARNING: worker-1 was lost mid-run (killed, crashed or cut off): what it measured "
        "after its last report is missing from every figure above."
    )


def test_a_worker_that_never_reported_is_warned_about() -> None:
    workers = _workers(3, ["worker-0", "worker-1"], [], [])
    text = format_summary({**_summary(), "workers": workers})

    assert _line(text, "workers") == ["workers         2 of 3 reported"]
    assert "WARNING: 1 of 3 expected workers never reported" in " ".join(text.split())


def test_a_worker_lost_before_its_first_report_is_warned_about_once() -> None:
    # The master lists it as lost but not as reported: its whole share is missing, and it is
    # not counted a second time among the workers that never reported.
    workers = _workers(2, ["worker-0"], [], ["worker-1"])
    text = " ".join(format_summary({**_summary(), "workers": workers}).split())

    assert "WARNING: worker-1 was lost before its first report: its whole share is missing" in text
    assert "never reported" not in text


def test_a_worker_whose_final_report_never_came_is_warned_about() -> None:
    workers = {
        **_workers(2, ["worker-0", "worker-1"], [], []),
        "final_report_missing": ["worker-0"],
    }
    text = " ".join(format_summary({**_summary(), "workers": workers}).split())

    assert (
        "WARNING: worker-0 sent no final report: what it measured after its previous report is "
        "missing from every figure above."
    ) in text


def test_a_worker_stopped_on_purpose_is_listed_without_a_warning() -> None:
    workers = _workers(2, ["worker-0", "worker-1"], ["worker-1"], [])
    text = format_summary({**_summary(), "workers": workers})

    assert _line(text, "workers") == [
        "workers         2 of 2 reported, stopped on purpose (whole share in): worker-1"
    ]
    assert "WARNING" not in text
