"""The `agentload` command: subcommand dispatch and exit codes (wiring only)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from loadgen import __version__
from loadgen.cli import (
    calibrate_command,
    ceiling_command,
    compare_command,
    plan_command,
    record_command,
    replay_command,
    report_command,
    route_study_command,
    run_command,
    sim_command,
)
from loadgen.cli.arguments import CommandParser
from loadgen.errors import AgentloadError

__all__ = ["main"]

_EPILOG = """\
examples:
  agentload run                          the quickstart swarm against the built-in simulator
  agentload run coding-agent --target http://localhost:8000/v1 --agents 100
  agentload profiles                     the built-in workload profiles
  agentload replay trace.jsonl           replay a trace of real agent traffic
  agentload sim                          serve the built-in GPU simulator on :8000
  agentload sim --preset fast --port 0   a quick simulator on a free port
  agentload sim --help                   every simulator flag
  agentload calibrate --target URL       fit the simulator to a server: twin.yaml
  agentload sim --config twin.yaml       serve the twin
  agentload plan coding-agent --twin twin.yaml --slo 'ttft_p95 < 2s' --agents 200
                                         replicas and cost for 200 agents on the twin
  agentload report results/DIR           write results/DIR/report.html
  agentload compare baseline/ results/   exit 1 when results/ regressed against baseline/

exit codes: 0 passed, 1 a gate failed, 2 usage or profile error,
            3 target unreachable or run aborted before measuring
"""


def build_parser() -> CommandParser:
    """The top-level parser with every subcommand registered."""
    parser = CommandParser(
        prog="agentload",
        description="Load tester for agentic LLM traffic against OpenAI-compatible endpoints.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"agentload {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    run_command.register(commands)
    replay_command.register(commands)
    route_study_command.register(commands)
    sim_command.register(commands)
    compare_command.register(commands)
    report_command.register(commands)
    ceiling_command.register(commands)
    record_command.register(commands)
    calibrate_command.register(commands)
    plan_command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code: int = args.handler(args)
    except AgentloadError as exc:
        sys.stderr.write(f"agentload {args.command}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code
