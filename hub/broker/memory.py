"""The in-memory backend: one process, offsets in a dict, delivery by a direct call.

Its epoch is random per backend instance: a restarted process starts every stream again at
offset 1, and the new epoch tells clients that what they remember no longer applies.

History is a ring (a bounded deque) per topic. A sweep, every :data:`SWEEP_EVERY` publishes,
drops the rings of topics idle for longer than their ttl and the index entries older than the
longest ttl, so that memory follows the active topics, not every topic ever published.
"""

from __future__ import annotations

import collections
import secrets
import time

from hub.broker.backend import Backend, History, OnGap, OnPublication, Publication
from hub.broker.registry import Registry
from hub.broker.retention import NO_HISTORY, Retention
from hub.exceptions import UsageError

__all__ = ["MemoryBackend"]

SWEEP_EVERY = 10_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryBackend(Backend):
    """Publications are delivered synchronously, inside ``publish``, so order is publish order."""

    def __init__(
        self,
        on_publication: OnPublication,
        *,
        on_gap: OnGap | None = None,
        retention: Retention = NO_HISTORY,
    ) -> None:
        super().__init__(on_publication, on_gap=on_gap, retention=retention)
        self.epoch = secrets.token_hex(8)
        self._offsets: dict[str, int] = {}
        self._rings: dict[str, collections.deque[Publication]] = {}
        #: Topic -> time of its last publication (ms), oldest first (a publish moves it last).
        self._index: dict[str, int] = {}
        self._until_sweep = SWEEP_EVERY
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
        now = now_ms()
        publication = Publication(topic, payload, offset, self.epoch, now)
        self._keep(publication)
        # Once per publication however many patterns match: the router fans out locally.
        if next(self._patterns.match(topic), None) is not None:
            self.on_publication(publication)
        return publication

    def _keep(self, publication: Publication) -> None:
        topic = publication.topic
        self._index.pop(topic, None)
        self._index[topic] = publication.time
        size = self.retention(topic).size
        if size:
            ring = self._rings.get(topic)
            if ring is None or ring.maxlen != size:
                ring = self._rings[topic] = collections.deque(ring or (), maxlen=size)
            ring.append(publication)
        else:
            self._rings.pop(topic, None)
        self._until_sweep -= 1
        if not self._until_sweep:
            self._until_sweep = SWEEP_EVERY
            self._sweep(publication.time)

    def _sweep(self, now: int) -> None:
        for topic in [t for t, ring in self._rings.items() if self._expired(t, ring, now)]:
            del self._rings[topic]
        horizon = now - self.retention.longest_ttl * 1000
        for topic, last in list(self._index.items()):
            if last >= horizon:
                break  # the index is in publish order: the rest is newer
            del self._index[topic]

    def _expired(self, topic: str, ring: collections.deque[Publication], now: int) -> bool:
        return not ring or ring[-1].time < now - self.retention(topic).ttl * 1000

    async def history(
        self, topic: str, *, after: int = 0, limit: int, newest_first: bool = False
    ) -> History:
        offset = self._offsets.get(topic, 0)
        ring = self._rings.get(topic, ())
        horizon = now_ms() - self.retention(topic).ttl * 1000
        kept = [p for p in ring if p.time >= horizon]
        oldest = kept[0].offset if kept else offset + 1
        wanted = [p for p in kept if p.offset > after]
        wanted = wanted[-limit:] if newest_first else wanted[:limit]
        return History(self.epoch, offset, wanted, oldest)

    async def topics_since(self, time: int) -> list[str]:
        return [topic for topic, last in self._index.items() if last >= time]

    async def time(self) -> int:
        return now_ms()
