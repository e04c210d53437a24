"""The console entry point: decides, before anything else is imported, whether gevent patches.

`agentload run` and `replay` (and `agentload ceiling` over a swarm) drive Locust, and Locust needs
gevent's monkey patching applied before the standard library's networking modules are
imported anywhere; other commands (and the engine when used as a library) never patch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

_PATCHING_COMMANDS = frozenset({"run", "replay"})


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _swarm_ceiling(argv: Sequence[str]) -> bool:
    """`agentload ceiling` as a Locust master (--master, --processes above 1, or -1)."""
    if _command(argv) != "ceiling":
        return False
    for i, arg in enumerate(argv):
        if arg == "--master":
            return True
        value = arg.partition("=")[2] if arg.startswith("--processes=") else None
        if arg == "--processes" and i + 1 < len(argv):
            value = argv[i + 1]
        if value == "-1":  # one worker per CPU core
            return (os.cpu_count() or 1) > 1
        if value is not None and value.isdigit() and int(value) > 1:
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Patch for Locust if the command needs it, then run the command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if _command(args) in _PATCHING_COMMANDS or _swarm_ceiling(args):
        from gevent import monkey

        monkey.patch_all()
    from loadgen.cli.main import main as cli_main

    return cli_main(args)
