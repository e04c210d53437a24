"""Connecting races a target's addresses, on the kernel-stamped path as on aiohttp's."""

from __future__ import annotations

import asyncio
import socket
import time

from loadgen.transport.kernel_pool import ConnectionPool


def _info(address: tuple[str, int]) -> tuple[object, ...]:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)


async def test_an_unanswering_first_address_costs_a_moment_not_the_connect_timeout(
    unanswering_address: tuple[str, int],
) -> None:
    good = socket.socket()
    good.bind(("127.0.0.1", 0))
    good.listen(8)
    pool = ConnectionPool()
    try:
        t0 = time.monotonic()
        async with asyncio.timeout(8):  # the old one-after-another connect hung here
            sock = await pool._connect(
                asyncio.get_running_loop(),
                [_info(unanswering_address), _info(good.getsockname())],
            )
        elapsed = time.monotonic() - t0
        assert sock.getpeername() == good.getsockname()
        sock.close()
    finally:
        pool.close()
        good.close()
    assert elapsed < 2.0  # about the 0.25 s happy-eyeballs delay; 8x margin for a busy machine
