"""A subscriber's bounded outbound queue: the fan-out never waits for a slow client.

The router pushes encoded frames with :meth:`Outbox.push`, which never blocks: it either queues
the frame or, past the bounds (messages and bytes), marks the outbox overflowed and returns
False, and the session then closes its connection with 4008 (PROTOCOL.md, close codes). A
single writer drains the queue to the connection at the connection's own pace.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sized

__all__ = ["Outbox"]

#: Anything with a length: str and bytes frames, or messages prepared once for many.
Frame = Sized


class Outbox:
    """At most ``max_messages`` frames and ``max_bytes`` bytes wait to be written."""

    def __init__(self, *, max_messages: int = 1000, max_bytes: int = 8 * 2**20) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflowed = False
        self._frames: collections.deque[Frame] = collections.deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        #: True while the writer waits with nothing queued: everything pushed has been written.
        #: A plain attribute, not a property: the fan-out reads it once per delivery.
        self.idle = True
        self._drained = asyncio.Event()
        self._drained.set()

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def size(self) -> int:
        """Bytes (characters for text frames) waiting to be written."""
        return self._size

    def push(self, frame: Frame) -> bool:
        """Queue a frame; False (and nothing queued) if that would exceed a bound."""
        if self._closed or self.overflowed:
            return False
        if len(self._frames) >= self.max_messages or self._size + len(frame) > self.max_bytes:
            self.overflowed = True
            self._wake()
            return False
        self._frames.append(frame)
        self._size += len(frame)
        if self.idle:
            self.idle = False
            self._drained.clear()
        self._wake()
        return True

    async def get_batch(self) -> list[Frame]:
        """Wait for frames and take all that are queued; [] once the outbox is closed."""
        while not self._frames:
            self.idle = True
            self._drained.set()
            if self._closed or self.overflowed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frames = list(self._frames)
        self._frames.clear()
        self._size = 0
        return frames

    async def drained(self) -> None:
        """Wait until the writer has taken and written everything pushed so far."""
        await self._drained.wait()

    def close(self) -> None:
        """Stop accepting frames and release the writer once the queue is drained."""
        self._closed = True
        self._wake()

    def discard(self) -> None:
        """Drop what is queued: the connection is gone and nothing will write it any more.
        Closes the outbox and releases whoever waits in :meth:`drained`."""
        self.close()
        self._frames.clear()
        self._size = 0
        self.idle = True
        self._drained.set()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
