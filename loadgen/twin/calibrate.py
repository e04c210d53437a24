"""`agentload calibrate`'s run: the probes in order, each judged, then the fits.

Order: the model and a first request (does it answer, are lengths forced), the window, the
metrics (dialect, KV cache), prefix caching and block size, the prefill probe (each fresh
prompt followed by the suffix probe's short turn after it, where the server caches),
the concurrency sweep, and last, where /metrics states no KV capacity, the eviction probe
(kv_probe.py). Every phase that times the target runs under a generator-health probe:
timings taken by a saturated generator are the generator's, and the fit is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.observe.generator_health import GeneratorHealth
from loadgen.observe.generator_limits import GeneratorLimits
from loadgen.runtime.probes import discover_model, first_request, force_length_works
from loadgen.transport import TargetConfig, Transport
from loadgen.twin.decode_sweep import DecodeFit, Level, decode_sweep, fit_decode
from loadgen.twin.kv_probe import KvProbe, probe_kv_capacity
from loadgen.twin.prefill_probe import (
    PrefillFit,
    PrefillPoint,
    fit_prefill,
    prefill_lengths,
    probe_prefill,
)
from loadgen.twin.probe_requests import CalibrationRefused
from loadgen.twin.server_facts import (
    MetricsFacts,
    PrefixFacts,
    context_limit,
    metrics_facts,
    prefix_facts,
    slot_contexts,
)
from loadgen.twin.suffix_probe import SuffixFit, SuffixSample, fit_suffix

__all__ = ["Calibration", "CalibrationSettings", "calibrate", "check_noise"]


@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    """How far the probing run may go."""

    model: str | None = None
    max_duration_s: float = 300.0
    max_concurrency: int = 512
    max_prompt_tokens: int = 8192
    output_tokens: int = 48
    repeats: int = 3
    max_noise: float = 0.25
    # Filler tokens the KV-capacity probe may send where the metrics state no capacity
    # (kv_probe.py); 0 leaves the capacity unmeasured.
    max_kv_probe_tokens: int = 8_000_000


@dataclass(frozen=True, slots=True)
class Calibration:
    """Everything a calibration measured and fitted."""

    target: str
    model: str
    started: float  # unix seconds
    duration_s: float
    forced_lengths: bool
    window: int | None
    window_method: str
    metrics: MetricsFacts
    prefix: PrefixFacts
    prefill_points: list[PrefillPoint]
    prefill: PrefillFit
    levels: list[Level]
    decode: DecodeFit
    generator: dict[str, dict[str, Any]]
    noise: dict[str, float]
    max_noise: float
    # The suffix probe (suffix_probe): a short turn after each prefill prompt, cached.
    suffix_samples: tuple[SuffixSample, ...] = ()
    suffix: SuffixFit | None = None
    # Where /metrics stated no KV capacity: the eviction probe's finding (None: not run).
    kv_probe: KvProbe | None = None
    # llama.cpp's slots (GET /slots): each slot's n_ctx, a KV cache of its own.
    slot_contexts: tuple[int, ...] = ()


def check_noise(what: str, spreads: Sequence[float], limit: float) -> float:
    """The median of `spreads` (one per probe: how far its repeats disagree); CalibrationRefused
    above `limit`: a stray slow request in one probe is tolerated, a noisy target is not."""
    ordered = sorted(spreads)
    spread = ordered[len(ordered) // 2] if ordered else 0.0
    if spread > limit:
        raise CalibrationRefused(
            f"the target is too noisy to fit: repeated {what} differ by {spread:.0%} of their "
            f"median (median over probes; the limit is {limit:.0%}, --max-noise)"
        )
    return spread


def _healthy(health: GeneratorHealth, phase: str) -> dict[str, Any]:
    """The generator's report for a phase; CalibrationRefused when it was saturated.

    Judged as the ceiling search judges a level: a lag on its probe samples, so that one
    stall is not saturation, and a generator using little of its core that still lags (the
    server beside it on the same cores, llama-server's threads) only on a broad tail.
    """
    report = health.report()
    reasons = GeneratorLimits().reasons(report, loop_lag=health.loop_lag)
    report = {**report, "saturated": bool(reasons), "reasons": reasons}
    if reasons:
        raise CalibrationRefused(
            f"agentload's own generator was saturated during the {phase} "
            f"({'; '.join(reasons)}): its timings are not the target's; give it "
            "a machine with spare CPU and run again"
        )
    return report


async def calibrate(
    target: TargetConfig,
    settings: CalibrationSettings,
    say: Callable[[str], None] = lambda _line: None,
) -> Calibration:
    """Probe `target` and fit the simulator's model; CalibrationRefused says why not."""
    started = time.time()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.max_duration_s

    def time_left() -> float:
        return deadline - loop.time()

    async with Transport(target) as transport:
        model = settings.model or await discover_model(transport)
        first = await first_request(transport, model)
        forced = force_length_works(first, "auto")
        window, window_method = await context_limit(transport, model)
        say(f"model {model}; window {window or 'not measured'} ({window_method})")
        metrics = await metrics_facts(transport)
        say(f"metrics: {metrics.dialect or 'none recognised'} at {metrics.url}")
        prefix = await prefix_facts(transport, model)
        say(
            f"prefix caching: {prefix.caching}, block size {prefix.block_size}; "
            f"{prefix.tokens_per_word:.3g} server tokens per word sent"
        )
        lengths = prefill_lengths(settings.max_prompt_tokens, window)
        if len(lengths) < 3:
            raise CalibrationRefused(
                f"the prefill probe needs 3 prompt lengths of 256 tokens or more; the window "
                f"({window}) and --max-prompt-tokens ({settings.max_prompt_tokens}) leave "
                f"{len(lengths)}"
            )
        say(f"prefill: {len(lengths)} lengths {lengths[0]}..{lengths[-1]} x {settings.repeats}")
        async with GeneratorHealth() as health:
            points, samples = await probe_prefill(
                transport,
                model,
                lengths,
                settings.repeats,
                time_left,
                prefix.tokens_per_word,
                suffixes=prefix.caching is True,
            )
        generator = {"prefill": _healthy(health, "prefill probe")}
        limit = settings.max_noise
        noise = {"prefill_spread": check_noise("prefill probes", [p.spread for p in points], limit)}
        say(f"decode sweep: c = 1, 2, 4, ... up to {settings.max_concurrency}")
        async with GeneratorHealth() as health:
            levels, stopped = await decode_sweep(
                transport,
                model,
                output_tokens=settings.output_tokens,
                max_concurrency=settings.max_concurrency,
                repeats=settings.repeats,
                time_left=time_left,
            )
        generator["decode"] = _healthy(health, "decode sweep")
        kv = None
        slots = await slot_contexts(transport) if metrics.cache is None else None
        if (
            slots is None
            and metrics.cache is None
            and prefix.caching
            and (settings.max_kv_probe_tokens > 0)
        ):
            # Last: it spends what time is left, never the fits' own.
            say("KV capacity: the prefix cache's eviction onset (no metric states it)")
            kv = await probe_kv_capacity(
                transport,
                model,
                window=window,
                tokens_per_word=prefix.tokens_per_word,
                time_left=time_left,
                max_tokens=settings.max_kv_probe_tokens,
            )
    spreads = [level.spread for level in levels if len(level.runs) > 1]
    noise["decode_spread"] = check_noise("decode sweep runs", spreads, limit)
    prefill = fit_prefill(points, prefix.tokens_per_word)
    decode = fit_decode(levels, stopped)
    suffix = fit_suffix(
        samples,
        step_ms=decode.step_ms,
        prefill_tokens_per_s=prefill.rate.value,
        pair_ns=prefill.attention_ns_per_pair().value,
        tokens_per_word=prefix.tokens_per_word,
    )
    return Calibration(
        target=target.base_url,
        model=model,
        started=started,
        duration_s=time.time() - started,
        forced_lengths=forced,
        window=window,
        window_method=window_method,
        metrics=metrics,
        prefix=prefix,
        prefill_points=points,
        prefill=prefill,
        levels=levels,
        decode=decode,
        generator=generator,
        noise=noise,
        max_noise=settings.max_noise,
        suffix_samples=tuple(samples),
        suffix=suffix,
        kv_probe=kv,
        slot_contexts=tuple(slots or ()),
    )
