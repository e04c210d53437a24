"""`agentload replay`: play a recorded or published trace against a target, as `run` does."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.cli.arguments import parse_duration
from loadgen.cli.run_command import add_run_options, run_swarm_command
from loadgen.errors import UsageError
from loadgen.traces.formats import FORMATS

if TYPE_CHECKING:
    from loadgen.profile.loader import LoadedProfile

__all__ = ["register", "replay_duration"]


# Beyond the trace's own span a run lasts half as long again plus a minute: the target
# may be slower than the one recorded. One process ends as soon as every session ended.
_SLACK_FACTOR = 1.5
_SLACK_S = 60.0

_EXAMPLES = """\
examples:
  agentload replay trace.jsonl                     against the built-in simulator
  agentload replay mooncake.jsonl --speedup 4 --target http://gpu-box:8000/v1
  agentload replay cc-traces.json --format weka --cap-idle 30s --time-scale 0.1
  agentload replay recorded.jsonl --sessions 50 --processes 2 --gate 'ttft_p95 < 2s'

formats: docs/traces.md. Results as `agentload run`'s, plus summary.json `replay`.
"""


def register(commands: Any) -> None:
    """Add the `replay` subcommand."""
    p = commands.add_parser(
        "replay",
        help="replay a trace of real agent traffic against a target",
        description="Replay a trace (Mooncake, Bailian, Weka/cc-traces, TraceLab, Copilot or "
        "agentload's own) against an OpenAI-compatible endpoint: each session's requests in "
        "order, at the trace's times, with its prompt lengths, output lengths and shared "
        "prefixes.",
        epilog=_EXAMPLES,
    )
    p.add_argument("trace", type=Path, help="the trace file")
    p.add_argument(
        "--format", choices=("auto", *FORMATS), default="auto", help="its format (default auto)"
    )
    p.add_argument(
        "--speedup",
        type=_positive("--speedup"),
        default=1.0,
        metavar="X",
        help="divide the trace's timestamps by X (default 1: as recorded)",
    )
    p.add_argument(
        "--time-scale",
        type=_positive("--time-scale"),
        default=1.0,
        metavar="Y",
        help="multiply the recorded think and tool gaps by Y (default 1)",
    )
    p.add_argument(
        "--cap-idle",
        type=parse_duration,
        metavar="DURATION",
        help="shorten any stretch without requests, and any recorded gap, to DURATION",
    )
    p.add_argument(
        "--sessions", type=int, metavar="N", help="replay only the trace's first N sessions"
    )
    p.add_argument(
        "--profile",
        metavar="PROFILE",
        help="take slos, gates, reactions, checks and sim: from this profile (name or YAML)",
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="results folder (default results/replay-TIMESTAMP)"
    )
    p.add_argument(
        "--duration",
        type=parse_duration,
        metavar="DURATION",
        help="stop after DURATION (default: the replayed span x1.5 + 60s; one process ends "
        "when every session ended)",
    )
    p.add_argument("--seed", type=int, help="seed (the replay itself draws nothing)")
    add_run_options(p)
    p.set_defaults(handler=replay)


def _positive(flag: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a number, e.g. 2") from None
        if not value > 0 or math.isinf(value):
            raise argparse.ArgumentTypeError(f"{flag} must be a positive finite number")
        return value

    return parse


def replay_duration(span_s: float) -> float:
    """How long a replay runs when not told: the lead, the span, slack for a slower target."""
    from loadgen.runtime.replay import LEAD_S

    return LEAD_S + span_s * _SLACK_FACTOR + _SLACK_S


def replay(args: argparse.Namespace) -> int:
    """Replay the trace under Locust; exit codes as `agentload run`'s."""
    if args.sessions is not None and args.sessions < 1:
        raise UsageError("--sessions must be at least 1")
    if not args.trace.is_file():
        raise UsageError(f"{args.trace}: no such trace file; check the path")
    trace_path = args.trace.resolve()
    # Workers replay the same trace the same way (they compute the same default duration).
    args.worker_command = [
        "replay", str(trace_path), "--format", args.format,
        "--speedup", repr(args.speedup), "--time-scale", repr(args.time_scale),
    ]  # fmt: skip
    if args.cap_idle is not None:
        args.worker_command += ["--cap-idle", repr(args.cap_idle)]
    if args.sessions is not None:
        args.worker_command += ["--sessions", str(args.sessions)]
    if args.profile is not None:
        args.worker_command += ["--profile", args.profile]
    return run_swarm_command(args, lambda: replay_profile(args, trace_path))


def replay_profile(args: argparse.Namespace, trace_path: Path) -> LoadedProfile:
    """The profile a replay runs: the trace as its arrival, the rest from --profile."""
    from loadgen.profile.loader import load_profile, profile_from_mapping
    from loadgen.runtime.replay import replay_trace

    base: dict[str, Any] = {"name": f"replay-{trace_path.stem}", "sim": {"preset": "fast"}}
    if args.profile is not None:
        given = load_profile(args.profile).profile
        base = given.model_dump(
            include={
                "slos",
                "gates",
                "reactions",
                "checks",
                "sim",
                "session_header",
                "echo_headers",
                "replica_headers",
                "force_output_length",
            },
            mode="json",
        ) | {"name": f"replay-{trace_path.stem}"}
    arrival = {
        "mode": "trace", "file": str(trace_path), "format": args.format,
        "speedup": args.speedup, "cap_idle": args.cap_idle, "sessions": args.sessions,
    }  # fmt: skip
    data = {**base, "arrival": arrival, "time_scale": args.time_scale}
    if args.seed is not None:
        data["seed"] = args.seed
    loaded = profile_from_mapping(data, f"replay of {trace_path}", Path.cwd())
    if args.duration is None:
        trace = replay_trace(loaded)
        assert trace is not None
        span = max((r.at_s for r in trace.requests()), default=0.0)
        args.duration = replay_duration(span)
    return profile_from_mapping({**data, "duration": args.duration}, loaded.source, Path.cwd())
