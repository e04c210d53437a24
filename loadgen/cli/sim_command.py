"""`agentload sim`: serve the built-in OpenAI-compatible GPU simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loadgen.cli.arguments import parse_duration, parse_port, parse_rate
from loadgen.errors import ConfigError, UsageError
from loadgen.event_loop import run_main
from loadgen.sim import PRESETS, SimConfig, sim_server
from loadgen.sim.config import (
    METRICS_DIALECTS,
    REASONING_EFFORTS,
    REASONING_FIELDS,
    ROUTERS,
    sim_config_from_file,
)
from loadgen.sim.server import tune_collector

__all__ = ["config_from_args", "register"]

_EXAMPLES = """\
examples:
  agentload sim                                  Llama-3.1-8B on one H100, port 8000
  agentload sim --preset llama-70b-4xh100        Llama-3.1-70B, tensor-parallel over 4 H100s
  agentload sim --decode-step-ms 20 --max-num-seqs 64
                                                 analytical mode: ceiling 3200 output tokens/s
  agentload sim --config twin.yaml               a twin from `agentload calibrate` (docs/twin.md)
  agentload sim --config twin.yaml --replicas 4  ... as a fleet of 4 replicas
  agentload sim --num-kv-blocks 512 --max-model-len 8192
                                                 a small KV cache: preemptions and evictions
  agentload sim --fault-stream-cut 0.05 --fault-http-5xx 0.01
                                                 inject faults (counted on /metrics)
  agentload sim --metrics-dialect sglang         /metrics under SGLang's names
  agentload sim --reasoning-effort-default medium --reasoning-tokens medium=800 \
      --reasoning-field reasoning               a reasoning model: it thinks ~800 tokens first
  agentload sim --replicas 4 --router session    a fleet of 4 engines behind a router
  agentload sim --replicas 4 --router prefix-load --shared-store --fault-replica-crash 0.01
                                                 ... one store for all; replicas crash
  agentload sim --replicas 32 --processes 4 --router prefix-load
                                                 a fleet larger than one core streams

presets: {presets}
metrics dialects: {dialects}
routers: {routers}
endpoints: /v1/chat/completions /v1/completions /v1/responses /v1/models /health /metrics
  /admin/replicas (GET), /admin/replicas/ID/remove and /restore (POST; loopback clients)
"""

# flag -> SimConfig field, for flags that override a preset's value
_ENGINE_FLAGS = {
    "served_model_name": "served_model_name",
    "seed": "seed",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "max_model_len": "max_model_len",
    "block_size": "block_size",
    "num_kv_blocks": "num_kv_blocks",
    "output_tokens_median": "output_tokens_median",
    "tool_call_probability": "tool_call_probability",
    "responses_store_capacity": "responses_store_capacity",
    "responses_store_ttl": "responses_store_ttl_s",
    "max_body_bytes": "max_body_bytes",
    "metrics_dialect": "metrics_dialect",
    "replicas": "replicas",
    "processes": "processes",
    "router": "router",
    "prefix_load_weight": "prefix_load_weight",
    "speedup": "speedup",
}
# flag -> field of SimConfig.reasoning
_REASONING_FLAGS = {
    "reasoning_effort_default": "default_effort",
    "reasoning_field": "field",
    "reasoning_spread": "spread",
    "reasoning_tokens": "tokens",
}
_FAULT_FLAGS = {
    "fault_http_5xx": "http_5xx",
    "fault_rate_limit": "rate_limit",
    "fault_stream_cut": "stream_cut",
    "fault_malformed_tool_args": "malformed_tool_args",
    "fault_latency_spike": "latency_spike",
    "latency_spike": "latency_spike_ms",
    "fault_store_evict": "store_evict",
    "fault_replica_crash": "replica_crash",
    "replica_restore": "replica_restore_s",
}


def register(commands: Any) -> None:
    """Add the `sim` subcommand."""
    p = commands.add_parser(
        "sim",
        help="serve the built-in OpenAI-compatible GPU simulator",
        description="Serve an OpenAI-compatible endpoint that behaves like a GPU serving "
        "engine (continuous batching, paged KV cache with prefix caching, preemption).",
        epilog=_EXAMPLES.format(
            presets=", ".join(PRESETS),
            dialects=", ".join(METRICS_DIALECTS),
            routers=", ".join(ROUTERS),
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=parse_port, default=8000, help="port (default 8000; 0 picks one)")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        metavar="NAME",
        help="model/hardware preset (default llama-8b-h100; with --config, the file's)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="simulator settings from a YAML file (a twin written by `agentload calibrate`): "
        "its preset as the base, its keys over it, these flags over both",
    )
    p.add_argument("--seed", type=int, help="seed for every random choice (default 0)")
    p.add_argument("--served-model-name", metavar="NAME", help="model id (default agentload-sim)")
    p.add_argument(
        "--speedup",
        type=float,
        metavar="K",
        help="run the modelled clock K times faster than real time: every modelled duration "
        "lasts 1/K (clients measure wall time; /metrics' agentload_sim_engine_clock_seconds "
        "says whether this machine kept up; default 1, docs/twin.md)",
    )
    engine = p.add_argument_group("engine")
    engine.add_argument("--max-num-seqs", type=int, metavar="N", help="running batch size")
    engine.add_argument(
        "--max-num-batched-tokens",
        type=int,
        metavar="N",
        help="token budget per step, shared by prefill chunks and decodes",
    )
    engine.add_argument("--max-model-len", type=int, metavar="N", help="context window")
    engine.add_argument("--block-size", type=int, metavar="N", help="KV block size in tokens")
    engine.add_argument("--num-kv-blocks", type=int, metavar="N", help="KV cache capacity")
    engine.add_argument(
        "--output-tokens-median", type=int, metavar="N", help="median natural reply length"
    )
    engine.add_argument(
        "--tool-call-probability",
        type=parse_rate,
        metavar="P",
        help="chance of a tool call when tools are offered (tool_choice auto)",
    )
    analytical = p.add_argument_group(
        "analytical mode", "exact, computable step times (throughput ceiling = N / step)"
    )
    analytical.add_argument(
        "--decode-step-ms",
        type=float,
        metavar="MS",
        help="fixed cost of every engine step; turns analytical mode on",
    )
    analytical.add_argument(
        "--decode-step-per-seq-ms",
        type=float,
        metavar="MS",
        help="added to a step per sequence it decodes (default 0: a constant step)",
    )
    analytical.add_argument(
        "--prefill-tokens-per-s",
        type=float,
        metavar="R",
        help="prefill speed in analytical mode (default 1e6)",
    )
    analytical.add_argument(
        "--request-overhead-ms",
        type=float,
        metavar="MS",
        help="each request's time before the engine admits it: HTTP, tokenizing, "
        "scheduling (default 0); adds to TTFT, not to ITL, and blocks no other request",
    )
    store = p.add_argument_group("responses store")
    store.add_argument(
        "--responses-store-capacity",
        type=int,
        metavar="N",
        help="stored responses kept (default 10000)",
    )
    store.add_argument(
        "--responses-store-ttl",
        type=parse_duration,
        metavar="DURATION",
        help="how long a stored response lives (default 1h)",
    )
    p.add_argument(
        "--metrics-dialect",
        choices=METRICS_DIALECTS,
        metavar="SERVER",
        help="whose metric names /metrics uses: vllm (default), vllm-v0 (vLLM's older "
        "names), sglang or llamacpp",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        metavar="N",
        help="request body limit; larger bodies get 413 (default 64 MiB)",
    )
    _fleet_arguments(p)
    _reasoning_arguments(p)
    faults = p.add_argument_group("fault injection", "each a rate in [0,1]")
    faults.add_argument("--fault-http-5xx", type=parse_rate, metavar="P", help="HTTP 500")
    faults.add_argument("--fault-rate-limit", type=parse_rate, metavar="P", help="HTTP 429")
    faults.add_argument(
        "--fault-stream-cut",
        type=parse_rate,
        metavar="P",
        help="drop a stream before its finish_reason and [DONE]",
    )
    faults.add_argument(
        "--fault-malformed-tool-args",
        type=parse_rate,
        metavar="P",
        help="tool-call arguments that are not valid JSON",
    )
    faults.add_argument(
        "--fault-latency-spike", type=parse_rate, metavar="P", help="stall before the first token"
    )
    faults.add_argument(
        "--latency-spike",
        type=parse_duration,
        metavar="DURATION",
        help="length of a latency spike (default 2s)",
    )
    faults.add_argument(
        "--fault-store-evict",
        type=parse_rate,
        metavar="P",
        help="evict a stored response just before it is continued",
    )
    faults.add_argument(
        "--fault-replica-crash",
        type=parse_rate,
        metavar="P",
        help="fleet: each second, each live replica crashes with chance P, losing its "
        "requests, KV cache and store (mean time between its crashes 1/P s)",
    )
    faults.add_argument(
        "--replica-restore",
        type=parse_duration,
        metavar="DURATION",
        help="a crashed replica comes back, empty, after DURATION (default 30s; 0: only "
        "through POST /admin/replicas/ID/restore)",
    )
    p.set_defaults(handler=run)


def _fleet_arguments(p: argparse.ArgumentParser) -> None:
    fleet = p.add_argument_group(
        "fleet", "several engine replicas behind one router (docs/fleets.md)"
    )
    fleet.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="engine replicas, each with its own batch, KV cache and Responses store "
        "(default 1: a single server)",
    )
    fleet.add_argument(
        "--processes",
        type=int,
        metavar="P",
        help="spread the replicas over P processes behind one router in this one, for "
        "fleets past what one core streams (~55k tokens/s; default 1)",
    )
    fleet.add_argument(
        "--router",
        choices=ROUTERS,
        metavar="POLICY",
        help="how each request picks a replica: " + ", ".join(ROUTERS) + " (default round-robin)",
    )
    fleet.add_argument(
        "--shared-store",
        action="store_true",
        default=None,
        help="one Responses store for every replica, as with an external state store",
    )
    fleet.add_argument(
        "--prefix-load-weight",
        type=float,
        metavar="W",
        help="prefix-load router: score = cached prefix fraction - W x load fraction "
        "(requests in flight / max-num-seqs; default 1.0)",
    )
    fleet.add_argument(
        "--admin-remote",
        action="store_true",
        default=None,
        help="answer /admin/* from any address (default: loopback clients only)",
    )


def _reasoning_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "reasoning", "thinking before the answer, per reasoning effort (docs/reasoning.md)"
    )
    group.add_argument(
        "--reasoning-effort-default",
        choices=REASONING_EFFORTS,
        metavar="EFFORT",
        help="effort of a request that names none: "
        + ", ".join(REASONING_EFFORTS)
        + " (default: the preset's; none, no reasoning unless a request asks, but for "
        "gpt-oss-120b-2xh100)",
    )
    group.add_argument(
        "--reasoning-tokens",
        type=_parse_reasoning_tokens,
        metavar="EFFORT=N,...",
        help="mean reasoning tokens per effort, e.g. low=256,high=4096 (defaults: minimal=32, "
        "low=256, medium=1024, high=4096)",
    )
    group.add_argument(
        "--reasoning-spread",
        type=float,
        metavar="SIGMA",
        help="lognormal sigma of reasoning lengths (default: the preset's; 0, exactly the "
        "mean, but for gpt-oss-120b-2xh100)",
    )
    group.add_argument(
        "--reasoning-field",
        choices=REASONING_FIELDS,
        metavar="FIELD",
        help="chat field of reasoning text: reasoning_content (default; vLLM < 0.10, SGLang, "
        "llama.cpp), reasoning (newer vLLM) or both",
    )


def _parse_reasoning_tokens(text: str) -> dict[str, int]:
    """{"low": 256, "high": 4096} from "low=256,high=4096"."""
    out: dict[str, int] = {}
    for part in text.split(","):
        effort, _eq, count = part.strip().partition("=")
        if effort not in REASONING_EFFORTS[1:] or not count.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"invalid reasoning tokens {part.strip()!r}: use EFFORT=N with EFFORT one of "
                + ", ".join(REASONING_EFFORTS[1:])
            )
        out[effort] = int(count)
    return out


_ANALYTICAL_FLAGS = (
    "decode_step_ms",
    "decode_step_per_seq_ms",
    "prefill_tokens_per_s",
    "request_overhead_ms",
)


def _base(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags apply to: the --config file's, else the preset's."""
    if args.config is not None:
        return sim_config_from_file(args.config, preset=args.preset).model_dump()
    return PRESETS[args.preset or "llama-8b-h100"].model_dump()


def _analytical(args: argparse.Namespace, perf: dict[str, Any]) -> dict[str, Any]:
    """The perf model the analytical flags make: the base's analytical one with them applied,
    or a new one (which needs --decode-step-ms)."""
    given = {f: getattr(args, f) for f in _ANALYTICAL_FLAGS if getattr(args, f) is not None}
    if perf.get("kind") == "analytical":
        if {"decode_step_ms", "decode_step_per_seq_ms"} & given.keys():
            # The flags say a straight line: a twin's measured points would override it.
            return {**perf, **given, "decode_step_points_ms": None}
        return {**perf, **given}
    if "decode_step_ms" not in given:
        flag = next(iter(given)).replace("_", "-")
        raise UsageError(f"--{flag} needs --decode-step-ms (analytical mode)")
    return {"kind": "analytical", **given}


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The preset (or --config file) with every given flag applied, validated."""
    data = _base(args)
    for flag, field in _ENGINE_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[field] = value
    for flag, field in _REASONING_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            below = data["reasoning"][field]
            data["reasoning"][field] = {**below, **value} if isinstance(value, dict) else value
    for flag in ("shared_store", "admin_remote"):
        if getattr(args, flag, None):
            data[flag] = True
    for flag, field in _FAULT_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            data["faults"][field] = value * 1000.0 if flag == "latency_spike" else value
    if args.router is not None and (args.replicas or data["replicas"]) < 2:
        raise UsageError("--router routes between replicas: add --replicas N (N >= 2)")
    if any(getattr(args, f) is not None for f in _ANALYTICAL_FLAGS):
        data["perf"] = _analytical(args, data["perf"])
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        raise _flag_error(exc) from exc


def _flag_error(exc: ValidationError) -> ConfigError:
    """The config error naming the flag whose value the validation refused."""
    err = exc.errors()[0]
    message = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:
        return ConfigError(message)
    field = str(err["loc"][-1])
    flags = {**_ENGINE_FLAGS, **_FAULT_FLAGS}
    if err["loc"][0] == "perf":
        flags = {f: f for f in _ANALYTICAL_FLAGS}
    if err["loc"][0] == "reasoning":
        field = str(err["loc"][1])
        flags = _REASONING_FLAGS
    flag = {v: k for k, v in flags.items()}.get(field, field)
    return ConfigError(f"--{flag.replace('_', '-')}: {message}")


def fleet_description(config: SimConfig) -> str:
    """How the startup line names a fleet."""
    text = f"fleet of {config.replicas} replicas behind the {config.router} router"
    if config.router == "prefix-load":
        text += f" at weight {config.prefix_load_weight:g}"
    text += ", one shared Responses store" if config.shared_store else ", a store each"
    faults = config.faults
    if faults.replica_crash > 0:
        text += f", replicas crash at {faults.replica_crash:g}/s"
        if faults.replica_restore_s:
            text += f" and come back after {faults.replica_restore_s:g} s"
    return text


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    config = config_from_args(args)
    run_main(_serve(config, args.host, args.port, args.config))
    return 0


async def _serve(config: SimConfig, host: str, port: int, source: Path | None = None) -> None:
    tune_collector()
    server = sim_server(config, host, port)
    try:
        await server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"--port {port}: address in use; pick another or use --port 0"
            ) from exc
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    ceiling = config.output_tokens_per_s_ceiling()
    mode = f"analytical, ceiling {ceiling:.0f} output tokens/s" if ceiling else config.preset
    if source is not None:
        mode += f", from {source}"
    if config.metrics_dialect != "vllm":
        mode += f", {config.metrics_dialect} metrics"
    if config.reasoning.default_effort != "none":
        mode += f", reasoning at {config.reasoning.default_effort} effort by default"
    if config.replicas > 1:
        mode += f"; {fleet_description(config)}"
    if config.processes > 1:
        mode += f", over {config.processes} processes"
    if config.speedup != 1:
        mode += f"; its clock {config.speedup:g}x faster than real time"
    print(
        f"agentload sim: serving {config.served_model_name!r} ({mode}) on "
        f"{server.base_url}  (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
