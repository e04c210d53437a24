"""Stopping a background task (a sampler, a probe, an engine loop) without losing a cancel."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended.

    The task's own CancelledError is expected and swallowed; the caller's is not: when the
    caller is itself being cancelled while it waits, that cancellation propagates (a plain
    `suppress(CancelledError)` around the await would eat it and leave the caller running).
    """
    if task is None:
        return
    current = asyncio.current_task()
    # A caller may already be cancelled (cleaning up in a finally): only a cancellation
    # that arrives while it waits here is its own to propagate.
    before = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > before:
            raise
