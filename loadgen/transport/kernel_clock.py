"""Kernel receive timestamps (SO_TIMESTAMPNS) moved onto the perf_counter_ns timeline."""

# The kernel stamps every received packet with CLOCK_REALTIME as it enters the network
# stack, however busy this process's event loop is; recvmsg hands back the stamp of the
# last packet whose bytes it returned. Everything else in loadgen measures time with
# perf_counter_ns (CLOCK_MONOTONIC on Linux), so a stamp is shifted by the offset between
# the two clocks. The offset is sampled by reading time_ns() between two perf_counter_ns()
# reads and keeping the tightest of five brackets: its error is half that bracket, well
# under a microsecond. Both clocks run at the same NTP-disciplined rate, so the offset only
# moves when CLOCK_REALTIME is stepped (settimeofday, an NTP step); re-sampling it every
# second bounds the damage of a step to a second of stamps, and clamping each stamp to
# [previous stamp, now] keeps one from running backwards or into the future.

from __future__ import annotations

import platform
import socket
import struct
import sys
from collections.abc import Sequence
from time import perf_counter_ns, time_ns

__all__ = [
    "ANCILLARY_BYTES",
    "enable_receive_timestamps",
    "kernel_timestamps_available",
    "receive_time_ns",
]

# SO_TIMESTAMPNS (the "old" ABI: a native struct timespec) is 35 in Linux's generic socket
# header; Python's socket module does not export it. alpha, parisc and sparc number it
# differently, so those are treated as unsupported rather than guessed at.
_SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", None)
if _SO_TIMESTAMPNS is None and sys.platform == "linux":
    if not platform.machine().startswith(("alpha", "parisc", "sparc")):
        _SO_TIMESTAMPNS = 35

_TIMESPEC = struct.Struct("@ll")  # time_t tv_sec (a long on Linux), long tv_nsec
_TIMESPEC_SIZE = _TIMESPEC.size
_unpack_timespec = _TIMESPEC.unpack_from
_SOL_SOCKET = socket.SOL_SOCKET
# Room for one timestamp control message (CMSG_SPACE is missing where recvmsg is, Windows).
ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
_RESAMPLE_NS = 1_000_000_000
_available: bool | None = None


class _Offset:
    """CLOCK_REALTIME minus perf_counter_ns, re-sampled at most once a second."""

    __slots__ = ("next_sample_ns", "value_ns")

    def __init__(self) -> None:
        self.value_ns = 0
        self.next_sample_ns = 0

    def sample(self, now_ns: int) -> int:
        best_width = -1
        for _ in range(5):
            before = perf_counter_ns()
            real = time_ns()
            after = perf_counter_ns()
            if best_width < 0 or after - before < best_width:
                best_width = after - before
                self.value_ns = real - (before + after) // 2
        self.next_sample_ns = now_ns + _RESAMPLE_NS
        return self.value_ns


_OFFSET = _Offset()


def kernel_timestamps_available() -> bool:
    """True when this platform stamps received TCP bytes for SO_TIMESTAMPNS (probed once)."""
    global _available
    if _available is None:
        _available = False
        if _SO_TIMESTAMPNS is not None:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                    _available = probe.getsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS) == 1
            except OSError:
                pass
    return _available


def enable_receive_timestamps(sock: socket.socket) -> None:
    """Ask the kernel to attach a receive timestamp to every recvmsg on `sock`."""
    if _SO_TIMESTAMPNS is None:
        raise OSError("SO_TIMESTAMPNS is not available on this platform")
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)


def receive_time_ns(ancillary: Sequence[tuple[int, int, bytes]], floor_ns: int) -> int:
    """When the kernel received a read's bytes, in perf_counter_ns, within [floor_ns, now]."""
    # No stamp (a packet that arrived before timestamping was switched on anywhere in the
    # system carries none): the read's own time is the best left. Runs once per read, so
    # it keeps to locals and one struct call.
    now = perf_counter_ns()
    for level, kind, data in ancillary:
        if kind == _SO_TIMESTAMPNS and level == _SOL_SOCKET and len(data) >= _TIMESPEC_SIZE:
            sec, nsec = _unpack_timespec(data)
            offset = _OFFSET.value_ns if now < _OFFSET.next_sample_ns else _OFFSET.sample(now)
            stamp = sec * 1_000_000_000 + nsec - offset
            if sec == 0 or stamp > now:
                return max(now, floor_ns)
            return stamp if stamp > floor_ns else floor_ns
    return max(now, floor_ns)
