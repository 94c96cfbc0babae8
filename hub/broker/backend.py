"""The backend interface: where publications get their offsets and how they reach every node.

A backend knows topics, patterns and bytes, never clients. The router (one per node) subscribes
the backend to a pattern when the first local client subscribes to it and unsubscribes when the
last one leaves; the backend then calls the router back, once per publication, for every
publication on a topic that matches at least one subscribed pattern, in offset order per topic.

When a backend learns that it may have lost publications (its connection to a shared store
dropped, a stream's epoch changed under it), it calls ``on_gap`` with the subscribed patterns
that matched the affected topics, so that the router can close their subscribers with 4010
(insufficient state) instead of letting them miss messages silently.

**History.** A backend keeps the last publications of each topic, as its
:class:`~hub.broker.retention.Retention` says (from the server's settings), and an index of
topics with the time of their last publication, so that a pattern's recovery can find topics
it never saw.
:meth:`Backend.history` reads both the topic's position and its retained publications in one
atomic step; :mod:`hub.broker.recovery` decides from them what a client can recover.

Implementations: :mod:`hub.broker.memory` (one process) and :mod:`hub.broker.redis` (many nodes
sharing one Redis).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hub.broker.retention import NO_HISTORY, Retention
from hub.exceptions import RequestError

__all__ = ["Backend", "History", "OnGap", "OnPublication", "Publication"]


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication on a concrete topic.

    ``offset`` is its position in the topic's stream (1, 2, 3, ...); ``epoch`` names the stream
    and changes whenever the stream loses its history, so that an offset is only comparable
    with offsets of the same epoch. ``payload`` is opaque to the backend. ``time`` is when the
    backend accepted it, in milliseconds since the Unix epoch, on the backend's clock (the
    clock of :meth:`Backend.time` and of the topic index).
    """

    topic: str
    payload: bytes
    offset: int
    epoch: str
    time: int = 0


@dataclass(frozen=True, slots=True)
class History:
    """A topic's position and part of its history, read at one instant.

    ``epoch`` and ``offset`` are the topic's position (offset 0: nothing published in this
    epoch). ``publications`` are the retained ones that the read asked for, oldest first.
    ``oldest`` is the offset of the oldest publication retained at all (``offset + 1`` when
    none is), so that a caller can tell whether the history covers a gap.
    """

    epoch: str
    offset: int
    publications: list[Publication]
    oldest: int


#: The router's callback; it must not block (it runs on the backend's delivery path).
OnPublication = Callable[[Publication], None]

#: Called with the subscribed patterns whose subscribers may have missed publications; it must
#: not block either.
OnGap = Callable[[Sequence[str]], None]


def _ignore_gap(patterns: Sequence[str]) -> None:
    """The default ``on_gap``: a backend that cannot lose publications never calls it."""


class Backend(abc.ABC):
    """Start it, subscribe patterns, publish; close it when the node stops.

    ``on_publication`` receives every publication on a subscribed topic exactly once per node,
    per topic in offset order, however many subscribed patterns match it. ``on_gap`` is told
    when that promise was broken for some patterns (see the module docstring).
    """

    def __init__(
        self,
        on_publication: OnPublication,
        *,
        on_gap: OnGap | None = None,
        retention: Retention = NO_HISTORY,
    ) -> None:
        self.on_publication = on_publication
        self.on_gap: OnGap = _ignore_gap if on_gap is None else on_gap
        self.retention = retention

    @property
    @abc.abstractmethod
    def state(self) -> str:
        """``"starting"`` (not started yet), ``"up"``, ``"down"`` (its store is unreachable:
        publish and position fail with Unavailable) or ``"closed"``."""

    @property
    def healthy(self) -> bool:
        """Whether the backend is up (for health checks and metrics)."""
        return self.state == "up"

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect or allocate what the backend needs; publish and subscribe work afterwards."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release resources; idempotent."""

    @abc.abstractmethod
    async def subscribe(self, pattern: str) -> None:
        """Start delivering publications on topics that ``pattern`` (validated) matches."""

    @abc.abstractmethod
    async def unsubscribe(self, pattern: str) -> None:
        """Stop delivering for ``pattern``; a no-op if it was not subscribed."""

    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes) -> Publication:
        """Assign the topic's next offset, deliver, and return the publication."""

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]]
    ) -> list[Publication | RequestError]:
        """Publish each ``(topic, payload)`` in order; per item, its publication or the
        RequestError that refused it. A backend that can send them all in one round trip
        overrides this one-by-one default."""
        results: list[Publication | RequestError] = []
        for topic, payload in items:
            try:
                results.append(await self.publish(topic, payload))
            except RequestError as exc:
                results.append(exc)
        return results

    @abc.abstractmethod
    async def position(self, topic: str) -> tuple[str, int]:
        """The topic's epoch and last offset (0 when nothing was published yet)."""

    @abc.abstractmethod
    async def history(
        self, topic: str, *, after: int = 0, limit: int, newest_first: bool = False
    ) -> History:
        """The topic's position and its retained publications with an offset above ``after``
        (in this epoch): the ``limit`` oldest of them, or with ``newest_first`` the ``limit``
        newest (still returned oldest first). Publications older than the topic's ttl are
        never returned, nor counted in ``oldest``."""

    def delivered(self, topic: str) -> tuple[str, int] | None:
        """The position up to which ``on_publication`` has received the topic (or never will
        receive it), for a backend whose deliveries can lag behind what :meth:`position` and
        :meth:`history` read; None for one that delivers inside ``publish``."""
        return None

    @abc.abstractmethod
    async def topics_since(self, time: int) -> list[str]:
        """Every topic published on at or after ``time`` (ms, the backend's clock), as far as
        the index reaches back (the longest ttl of the retention policy)."""

    @abc.abstractmethod
    async def time(self) -> int:
        """The backend's clock, in milliseconds since the Unix epoch."""
