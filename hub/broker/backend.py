"""The backend interface: where publications get their offsets and how they reach every node.

A backend knows topics, patterns and bytes, never clients. The router (one per node) subscribes
the backend to a pattern when the first local client subscribes to it and unsubscribes when the
last one leaves; the backend then calls the router back, once per publication, for every
publication on a topic that matches at least one subscribed pattern, in offset order per topic.

Implementations: :mod:`hub.broker.memory` (one process). Redis comes with its own module.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backend", "OnPublication", "Publication"]


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication on a concrete topic.

    ``offset`` is its position in the topic's stream (1, 2, 3, ...); ``epoch`` names the stream
    and changes whenever the stream loses its history, so that an offset is only comparable
    with offsets of the same epoch. ``payload`` is opaque to the backend.
    """

    topic: str
    payload: bytes
    offset: int
    epoch: str


#: The router's callback; it must not block (it runs on the backend's delivery path).
OnPublication = Callable[[Publication], None]


class Backend(abc.ABC):
    """Start it, subscribe patterns, publish; close it when the node stops.

    ``on_publication`` receives every publication on a subscribed topic exactly once per node,
    per topic in offset order, however many subscribed patterns match it.
    """

    def __init__(self, on_publication: OnPublication) -> None:
        self.on_publication = on_publication

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

    @abc.abstractmethod
    async def position(self, topic: str) -> tuple[str, int]:
        """The topic's epoch and last offset (0 when nothing was published yet)."""
