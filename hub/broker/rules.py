"""Per-topic settings given as patterns: the value of the first rule whose pattern matches.

The server's settings name topics by pattern (``history_rules``, ``presence_topics``); the
broker asks for a topic's value on every publish or subscription. Answers are cached per topic,
so a lookup is one dict get; topics come from the network, so the cache starts over beyond
:attr:`TopicRules.CACHE` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from hub.broker.topics import matches

__all__ = ["TopicRules"]

T = TypeVar("T")


class TopicRules(Generic[T]):
    """``rules(topic)``: the value of the first ``(pattern, value)`` rule that matches the
    topic, else ``default``."""

    #: Cached answers beyond this many topics are dropped.
    CACHE = 100_000

    def __init__(self, default: T, rules: Sequence[tuple[str, T]] = ()) -> None:
        self.default = default
        self.rules = list(rules)
        self._cache: dict[str, T] = {}

    def __call__(self, topic: str) -> T:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        value = next((v for pattern, v in self.rules if matches(pattern, topic)), self.default)
        if len(self._cache) >= self.CACHE:
            self._cache.clear()
        self._cache[topic] = value
        return value
