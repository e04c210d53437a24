"""Stopping a background task never swallows the caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from loadgen.background import cancel_and_wait


async def test_the_task_is_cancelled_and_awaited() -> None:
    task = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_task_that_already_ended_and_none_are_fine() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)
    await cancel_and_wait(None)


async def test_the_callers_own_cancellation_propagates() -> None:
    stopping = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            stopping.set()
            await asyncio.sleep(0.2)  # cleanup that takes a moment

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)

    async def caller() -> str:
        await cancel_and_wait(task)
        return "carried on"  # must not happen: the caller itself was cancelled

    outer = asyncio.create_task(caller())
    await stopping.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_cleanup_in_a_cancelled_caller_still_stops_every_task() -> None:
    # A caller already being cancelled runs its finally: each task it stops there must be
    # stopped, not the first one only (that cut the rest of Engine.stop short).
    first = asyncio.create_task(asyncio.sleep(3600))
    second = asyncio.create_task(asyncio.sleep(3600))
    stopped: list[bool] = []

    async def caller() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await cancel_and_wait(first)
            await cancel_and_wait(second)
            stopped.append(True)

    outer = asyncio.create_task(caller())
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert stopped == [True]
    assert first.cancelled()
    assert second.cancelled()
