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
