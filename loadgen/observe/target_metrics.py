"""The target's own /metrics sampled during a run: what the server used up, and what first."""

# vLLM (current and older names), SGLang and llama.cpp are read; docs/observability.md lists
# the names and how each figure is computed.

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from loadgen.background import cancel_and_wait
from loadgen.observe.server_replicas import ServerReplicas, prefix_cache_hit_ratio, replica_label

__all__ = [
    "KV_CACHE_BINDING",
    "KV_CACHE_SATURATED",
    "SATURATION_ORDER",
    "ServerSample",
    "SocketFactory",
    "TargetMetricsSampler",
    "parse_by_replica",
    "parse_server_metrics",
    "server_report",
]

# aiohttp's socket_factory hook (3.12+), for loops that need native sockets under gevent.
SocketFactory = Callable[[tuple[Any, ...]], socket.socket]

# KV-cache usage (0..1) at or above which the cache counts as full: vLLM preempts and
# SGLang retracts requests once no block is free.
KV_CACHE_SATURATED = 0.95
# A queue that persists while usage is at least this high waits for blocks, not batch slots:
# the scheduler admits a request only when all its blocks fit, so with few large requests a
# cache that stops admitting can read well under KV_CACHE_SATURATED.
KV_CACHE_BINDING = 0.8
# A waiting queue counts as saturated once it is non-empty in this many samples in a row:
# a single non-empty sample is an arrival between two scheduler steps, not a full batch.
QUEUE_SAMPLES = 2
# When two resources saturate in the same sample, the earlier one here is named: a full
# KV cache causes preemptions, and both make requests wait.
SATURATION_ORDER = ("kv_cache", "preemptions", "queue")

# Each figure from the first of these sample names the server exposes (current name first).
_GAUGES: dict[str, tuple[str, ...]] = {
    "running": (
        "vllm:num_requests_running",
        "sglang:num_running_reqs",
        "llamacpp:requests_processing",
    ),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred"),
    "kv_cache_usage": (
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "sglang:token_usage",
        "llamacpp:kv_cache_usage_ratio",
    ),
    "prefix_cache_hit_rate": ("vllm:gpu_prefix_cache_hit_rate", "sglang:cache_hit_rate"),
    # SGLang's retractions are a gauge reset after each publish: a sum of samples is a floor.
    "retractions": ("sglang:num_retracted_reqs",),
}
_COUNTERS: dict[str, tuple[str, ...]] = {
    "preemptions": ("vllm:num_preemptions_total",),
    "prefix_cache_queries": (
        "vllm:prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries_total",
    ),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "prompt_tokens": (
        "vllm:prompt_tokens_total",
        "sglang:prompt_tokens_total",
        "llamacpp:prompt_tokens_total",
    ),
    "generation_tokens": (
        "vllm:generation_tokens_total",
        "sglang:generation_tokens_total",
        "llamacpp:tokens_predicted_total",
    ),
    "cached_tokens": ("sglang:cached_tokens_total",),
    # Per replica only (server_replicas.py): every finish reason, else the e2e histogram.
    "requests_finished": (
        "vllm:request_success_total",
        "sglang:num_requests_total",
        "vllm:e2e_request_latency_seconds_count",
        "sglang:e2e_request_latency_seconds_count",
    ),
}
# Fractions and rates are the worst replica's; counts and queues add up over label sets.
_MAX_OVER_LABELS = {"kv_cache_usage", "prefix_cache_hit_rate"}
_WANTED = frozenset(name for names in (*_GAUGES.values(), *_COUNTERS.values()) for name in names)


def _sample_name(line: str) -> str:
    end = len(line)
    for stop in ("{", " "):
        at = line.find(stop)
        if 0 <= at < end:
            end = at
    return line[:end]


def _wanted_samples(text: str) -> list[Sample]:
    # Only the wanted lines are parsed: a vLLM exposition is mostly histogram buckets.
    wanted = "\n".join(line for line in text.splitlines() if line and _sample_name(line) in _WANTED)
    return [s for family in text_string_to_metric_families(wanted + "\n") for s in family.samples]


def _figures(samples: Iterable[Sample]) -> dict[str, float]:
    found: dict[str, list[float]] = {}
    for sample in samples:
        found.setdefault(sample.name, []).append(float(sample.value))
    out: dict[str, float] = {}
    for figure, names in (*_GAUGES.items(), *_COUNTERS.items()):
        name = next((n for n in names if n in found), None)
        if name is not None:
            values = found[name]
            out[figure] = max(values) if figure in _MAX_OVER_LABELS else sum(values)
    return out


def parse_server_metrics(text: str) -> dict[str, float]:
    """The figures a server exposition holds ({"running": 3.0, "preemptions": 12.0, ...})."""
    return _figures(_wanted_samples(text))


def parse_by_replica(
    text: str, key: Callable[[str], str] = str
) -> tuple[dict[str, float], str | None, dict[str, dict[str, float]]]:
    """The whole server's figures, the label naming replicas (None: no sample carries one),
    and the figures of each replica under `key(name)` (several names under one key add up,
    as label sets do)."""
    samples = _wanted_samples(text)
    label = replica_label(s.labels for s in samples)
    groups: dict[str, list[Sample]] = {}
    if label is not None:
        named = [s for s in samples if label in s.labels]
        keys = {name: key(name) for name in sorted({s.labels[label] for s in named})}
        for sample in named:
            groups.setdefault(keys[sample.labels[label]], []).append(sample)
    return _figures(samples), label, {name: _figures(group) for name, group in groups.items()}


def _engine(text: str) -> str | None:
    for engine in ("vllm", "sglang", "llamacpp"):
        if f"\n{engine}:" in text or text.startswith(f"{engine}:"):
            return engine
    return None


@dataclass(frozen=True, slots=True)
class ServerSample:
    """The figures of one scrape, `t_s` seconds after sampling started."""

    t_s: float
    values: Mapping[str, float]


def _increase(samples: Iterable[ServerSample], figure: str) -> float | None:
    """A counter's increase across samples; a drop is a server restart, counted from zero."""
    total, last = 0.0, None
    for sample in samples:
        value = sample.values.get(figure)
        if value is None:
            continue
        if last is not None:
            total += value - last if value >= last else value
        last = value
    return None if last is None else total


def _peak(samples: Iterable[ServerSample], figure: str) -> float | None:
    values = [s.values[figure] for s in samples if figure in s.values]
    return max(values) if values else None


def _hit_ratio(samples: list[ServerSample]) -> float | None:
    rates = [
        s.values["prefix_cache_hit_rate"] for s in samples if "prefix_cache_hit_rate" in s.values
    ]
    mean_rate = sum(rates) / len(rates) if rates else None
    return prefix_cache_hit_ratio(lambda figure: _increase(samples, figure), mean_rate)


def _onsets(samples: list[ServerSample]) -> dict[str, float | None]:
    """When each resource first ran out, in seconds from the first sample."""
    onset: dict[str, float | None] = dict.fromkeys(SATURATION_ORDER)
    queued_in_a_row = kv_bound_in_a_row = 0
    first = samples[0].values if samples else {}
    retracted = 0.0
    for sample in samples:
        v = sample.values
        if onset["kv_cache"] is None and v.get("kv_cache_usage", 0.0) >= KV_CACHE_SATURATED:
            onset["kv_cache"] = sample.t_s
        retracted += v.get("retractions", 0.0)
        preempted = v.get("preemptions", 0.0) > first.get("preemptions", 0.0) or retracted > 0
        if onset["preemptions"] is None and preempted:
            onset["preemptions"] = sample.t_s
        queued = v.get("waiting", 0.0) > 0
        queued_in_a_row = queued_in_a_row + 1 if queued else 0
        kv_bound = queued and v.get("kv_cache_usage", 0.0) >= KV_CACHE_BINDING
        kv_bound_in_a_row = kv_bound_in_a_row + 1 if kv_bound else 0
        if onset["kv_cache"] is None and kv_bound_in_a_row >= QUEUE_SAMPLES:
            onset["kv_cache"] = sample.t_s
        if onset["queue"] is None and queued_in_a_row >= QUEUE_SAMPLES:
            onset["queue"] = sample.t_s
    return onset


def server_report(samples: list[ServerSample]) -> dict[str, Any]:
    """The summary's "server" figures from samples in time order (the first is the baseline)."""
    onset = _onsets(samples)
    seen = [(t, name) for name, t in onset.items() if t is not None]
    first = min(seen, key=lambda item: (item[0], SATURATION_ORDER.index(item[1])), default=None)
    preemptions = _increase(samples, "preemptions")
    retractions = sum(s.values.get("retractions", 0.0) for s in samples)
    if preemptions is None and any("retractions" in s.values for s in samples):
        preemptions = retractions
    return {
        "preemptions": preemptions,
        "prefix_cache_hit_ratio": _hit_ratio(samples),
        "kv_cache_usage_peak": _peak(samples, "kv_cache_usage"),
        "waiting_peak": _peak(samples, "waiting"),
        "running_peak": _peak(samples, "running"),
        "prompt_tokens": _increase(samples, "prompt_tokens"),
        "generation_tokens": _increase(samples, "generation_tokens"),
        "saturated_first": None if first is None else first[1],
        "saturation_onset_s": onset,
    }


# Pass the run's aiohttp session to reuse its connections and headers (only for a URL on the
# target's own origin: it carries the API key); without one, the sampler opens its own (with
# `socket_factory` where the loop needs native sockets). Scrape failures are counted, never
# raised: the run goes on without them.
class TargetMetricsSampler:
    """Scrapes a server's /metrics every `interval_s` on the running loop while inside."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        interval_s: float = 2.0,
        timeout_s: float = 5.0,
        socket_factory: SocketFactory | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.url = url
        self.interval_s = interval_s
        self.samples: list[ServerSample] = []
        self.errors = 0
        self.last_error: str | None = None
        self.engine: str | None = None
        self.replicas = ServerReplicas()  # by the replica (or engine) label, when there is one
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None
        self._socket_factory = socket_factory
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._t0 = clock()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TargetMetricsSampler:
        if self._session is None:
            extra: dict[str, Any] = {}
            if self._socket_factory is not None:
                extra["socket_factory"] = self._socket_factory
            self._own_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(**extra))
        self._t0 = self._clock()
        await self.sample()  # the baseline every delta is taken from
        self._task = asyncio.create_task(self._run(), name="agentload-target-metrics")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        try:
            await cancel_and_wait(task)
            if exc_type is None:
                await self.sample()  # the end values every delta is taken to
        finally:
            if self._own_session is not None:
                await self._own_session.close()
                self._own_session = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.sample()

    async def sample(self) -> None:
        """Scrape once and keep the figures; a failure is counted in `errors`."""
        session = self._session or self._own_session
        if session is None:
            raise RuntimeError("TargetMetricsSampler is not open: use `async with`")
        try:
            async with session.get(self.url, timeout=self._timeout) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
            values, label, by_replica = parse_by_replica(text, self.replicas.key)
        # OSError: resets can escape aiohttp unwrapped; a scrape must never end the run.
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return
        self.engine = self.engine or _engine(text)
        self.samples.append(ServerSample(self._clock() - self._t0, values))
        self.replicas.add(label, by_replica)

    def report(self) -> dict[str, Any]:
        """The summary.json "server" section."""
        head = {
            "metrics_url": self.url,
            "available": any(s.values for s in self.samples),
            "engine": self.engine,
            "samples": len(self.samples),
            "scrape_errors": self.errors,
            "last_error": self.last_error,
        }
        return {**head, **server_report(self.samples), **self.replicas.report()}
