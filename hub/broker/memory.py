"""The in-memory backend: one process, offsets in a dict, delivery by a direct call.

Its epoch is random per backend instance: a restarted process starts every stream again at
offset 1, and the new epoch tells clients that what they remember no longer applies.
"""

from __future__ import annotations

import secrets

from hub.broker.backend import Backend, OnGap, OnPublication, Publication
from hub.broker.registry import Registry
from hub.exceptions import UsageError

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Publications are delivered synchronously, inside ``publish``, so order is publish order."""

    def __init__(self, on_publication: OnPublication, *, on_gap: OnGap | None = None) -> None:
        super().__init__(on_publication, on_gap=on_gap)
        self.epoch = secrets.token_hex(8)
        self._offsets: dict[str, int] = {}
        self._patterns: Registry[None] = Registry()
        self._state = "starting"

    @property
    def state(self) -> str:
        """``"up"`` once started (it never goes down: it never calls ``on_gap`` either)."""
        return self._state

    async def start(self) -> None:
        self._state = "up"

    async def close(self) -> None:
        self._state = "closed"

    async def subscribe(self, pattern: str) -> None:
        self._patterns.add(pattern, None)

    async def unsubscribe(self, pattern: str) -> None:
        self._patterns.remove(pattern, None)

    async def position(self, topic: str) -> tuple[str, int]:
        return self.epoch, self._offsets.get(topic, 0)

    async def publish(self, topic: str, payload: bytes) -> Publication:
        if self._state != "up":
            raise UsageError("the memory backend is not started (or already closed)")
        offset = self._offsets.get(topic, 0) + 1
        self._offsets[topic] = offset
        publication = Publication(topic, payload, offset, self.epoch)
        # Once per publication however many patterns match: the router fans out locally.
        if next(self._patterns.match(topic), None) is not None:
            self.on_publication(publication)
        return publication
