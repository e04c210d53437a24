"""`agentload calibrate`: fit the simulator to a real endpoint and write the twin."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from loadgen.cli.arguments import parse_count, parse_duration
from loadgen.cli.run_command import add_target_arguments
from loadgen.cli.run_setup import target_config
from loadgen.errors import UsageError

__all__ = ["register"]

_EXAMPLES = """\
examples:
  agentload calibrate --target http://gpu-box:8000/v1 --out twin.yaml
  agentload calibrate --target http://127.0.0.1:8080 --model qwen --max-duration 2m \\
      --max-concurrency 8 --out llama-server-twin.yaml
  agentload sim --config twin.yaml               serve the twin (add --replicas N for a fleet)

what it measures, in order: the window (/v1/models max_model_len, else an over-long prompt's
refusal), the metric dialect and KV capacity (/metrics: vLLM's vllm:cache_config_info; where
no metric states it, last, where the prefix cache starts to evict a prompt),
prefix caching and its block size (a prompt sent twice: cached_tokens), prefill (TTFT of
lone fresh prompts at 256..--max-prompt-tokens tokens), the decode step against the running
batch and the batch limit (c = 1, 2, 4, ... streams of forced length at once).
It refuses to fit (exit 1, one line saying why) when a probe fails, agentload's own
generator was saturated, or repeated probes disagree by more than --max-noise.
exit codes: 0 twin written, 1 refused to fit, 2 usage error, 3 target unreachable
"""


def register(commands: Any) -> None:
    """Add the `calibrate` subcommand."""
    p = commands.add_parser(
        "calibrate",
        help="fit the simulator to a real endpoint: write a twin for `agentload sim --config`",
        description="Probe an OpenAI-compatible server for a bounded time and fit the "
        "built-in simulator's engine model to it (docs/twin.md): decode step against batch "
        "size, batch limit, prefill rate, window, KV capacity, prefix caching, metrics.",
        epilog=_EXAMPLES,
    )
    add_target_arguments(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("twin.yaml"),
        metavar="FILE",
        help="where the twin is written (default twin.yaml)",
    )
    p.add_argument(
        "--max-duration",
        type=parse_duration,
        default=300.0,
        metavar="DURATION",
        help="bound on the probing (default 5m); the sweep stops early to keep it",
    )
    p.add_argument(
        "--max-concurrency",
        type=parse_count,
        default=512,
        metavar="N",
        help="the sweep's highest concurrency, above the batch limit expected (default 512)",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=parse_count,
        default=8192,
        metavar="N",
        help="the prefill probe's longest prompt (default 8192; half the window at most)",
    )
    p.add_argument(
        "--output-tokens",
        type=parse_count,
        default=48,
        metavar="N",
        help="tokens each sweep stream is forced to generate (default 48)",
    )
    p.add_argument(
        "--repeats",
        type=parse_count,
        default=3,
        metavar="N",
        help="repeats of each prefill length and sweep level (default 3; at least 2)",
    )
    p.add_argument(
        "--max-noise",
        type=float,
        default=0.25,
        metavar="FRACTION",
        help="refuse to fit when repeats differ by more than this share of their median "
        "(median over probes; default 0.25)",
    )
    p.add_argument(
        "--max-kv-probe-tokens",
        type=int,
        default=8_000_000,
        metavar="N",
        help="where /metrics states no KV capacity: fresh prompt tokens the eviction probe "
        "may send to find it (default 8000000; 0: do not probe)",
    )
    p.set_defaults(handler=run)


def _settings(args: argparse.Namespace) -> Any:
    from loadgen.twin import CalibrationSettings

    if args.repeats < 2:
        raise UsageError("--repeats must be at least 2: noise is told from repeats")
    if args.max_kv_probe_tokens < 0:
        raise UsageError("--max-kv-probe-tokens: give 0 (no probe) or more")
    if not args.max_noise > 0:  # NaN too
        raise UsageError(f"--max-noise {args.max_noise}: use a fraction above 0, e.g. 0.25")
    return CalibrationSettings(
        model=args.model,
        max_duration_s=args.max_duration,
        max_concurrency=args.max_concurrency,
        max_prompt_tokens=args.max_prompt_tokens,
        output_tokens=max(2, args.output_tokens),
        repeats=args.repeats,
        max_noise=args.max_noise,
        max_kv_probe_tokens=args.max_kv_probe_tokens,
    )


def run(args: argparse.Namespace) -> int:
    """Calibrate, print how well the fit reproduces the probes, write the twin."""
    from loadgen.twin import accuracy_rows, accuracy_text, calibrate, write_twin

    targets = args.target or []
    if len(targets) != 1:
        raise UsageError(
            "give one --target URL: calibrate fits one server (to try it, start "
            "`agentload sim --port 0` and point --target at it)"
            if not targets
            else "give one --target URL: calibrate fits one server, not a fleet"
        )
    if args.balance is not None:
        raise UsageError("--balance shares load between targets; calibrate takes one")
    out: Path = args.out
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no folder {out.parent}")
    settings = _settings(args)
    target = target_config(args, targets[0])

    def say(line: str) -> None:
        print(f"agentload calibrate: {line}", file=sys.stderr, flush=True)

    calibration = asyncio.run(calibrate(target, settings, say))
    document = write_twin(calibration, out)
    print(accuracy_text(accuracy_rows(calibration)))
    perf, fitted = document["perf"], document["calibration"]["fitted"]
    limit = fitted["max_num_seqs"]
    print(
        f"twin: decode step {perf['decode_step_ms']} ms + {perf['decode_step_per_seq_ms']} ms "
        f"per sequence, batch limit {document['max_num_seqs']}"
        f"{' (a lower bound)' if limit['lower_bound'] else ''}, prefill "
        f"{perf['prefill_tokens_per_s']:.0f} tokens/s, window {document['max_model_len']}, "
        f"KV {document['num_kv_blocks']} blocks x {document['block_size']}"
        f"{'' if fitted['num_kv_blocks']['value'] else ' (not measured)'}"
    )
    print(f"wrote {out}; serve it with: agentload sim --config {out}")
    return 0
