"""The console entry point: decides, before anything else is imported, whether gevent patches.

`agentload run` drives Locust, and Locust needs gevent's monkey patching applied before the
standard library's networking modules are imported anywhere; other commands (and the
engine when used as a library) never patch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

_PATCHING_COMMANDS = frozenset({"run"})


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Patch for Locust if the command needs it, then run the command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if _command(args) in _PATCHING_COMMANDS:
        from gevent import monkey

        monkey.patch_all()
    from loadgen.cli.main import main as cli_main

    return cli_main(args)
