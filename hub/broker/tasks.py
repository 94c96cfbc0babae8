"""Stopping a background task for good, even when a cancellation gets lost on the way.

Python 3.11's ``asyncio.timeout`` turns a cancellation that was requested before the block
was entered, and that meets the block's own expiry, into a ``TimeoutError`` (fixed in 3.12), and
redis-py reads under such timeouts: a task that catches ``TimeoutError`` (a reader that pings
on a silent connection, a writer that wakes up on a deadline) then goes on as if nothing had
been asked. :func:`stop` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["stop"]

#: How long to wait for a cancelled task before cancelling it again (seconds).
RETRY = 0.1


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended; its exception, if any, is the caller's to
    have logged (a done callback). A cancellation of the caller still propagates."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RETRY)
    if not task.cancelled():
        task.exception()  # retrieved: asyncio does not report it again at collection
