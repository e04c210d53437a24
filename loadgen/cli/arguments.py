"""argparse with agentload's conventions: one-line errors, exit code 2, examples in --help."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import NoReturn

__all__ = [
    "CommandParser",
    "parse_count",
    "parse_duration",
    "parse_per_second",
    "parse_port",
    "parse_rate",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the command and the fix."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "1.5m", "250ms" or "2h"."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number with an optional unit, e.g. 30s, 5m, 250ms"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_port(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535; 0 picks one)")
    return port


def parse_rate(text: str) -> float:
    """A probability in [0, 1], for fault flags."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid rate {text!r}: use a number from 0 to 1"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"rate {text} is outside 0..1: use e.g. 0.05 for 5%")
    return value


def parse_count(text: str) -> int:
    """A whole number of at least 1 (agents, workers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid count {text!r}: use a whole number of at least 1"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is below 1: use a whole number of at least 1")
    return value


def parse_per_second(text: str) -> float:
    """A finite rate above 0, per second (--rate)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"invalid rate {text!r}: use a finite number above 0, e.g. 5 or 0.5 per second"
        )
    return value
