"""How much history each topic keeps: a default and per-pattern rules, the same on every node.

The server builds one :class:`Retention` policy from its settings (``history_size``,
``history_ttl``, ``history_rules``) and hands it to the backend, which asks it on every publish.
The first rule whose pattern matches a topic wins (:class:`~hub.broker.rules.TopicRules`, which
caches the answers, so a publish pays one dict lookup).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hub.broker.rules import TopicRules

__all__ = ["NO_HISTORY", "Keep", "Retention"]


@dataclass(frozen=True, slots=True)
class Keep:
    """At most ``size`` publications (0: no history), none older than ``ttl`` seconds; a
    topic idle for ``ttl`` loses its history."""

    size: int
    ttl: float


class Retention(TopicRules[Keep]):
    """``retention(topic)`` is what the topic keeps; ``longest_ttl`` is how far back the topic
    index must reach (a pattern's recovery looks there for topics it never saw)."""

    def __init__(self, default: Keep, rules: Sequence[tuple[str, Keep]] = ()) -> None:
        super().__init__(default, rules)
        self.longest_ttl = max([default.ttl, *(keep.ttl for _, keep in self.rules)])


#: No history for any topic: what a backend keeps unless told otherwise.
NO_HISTORY = Retention(Keep(0, 0.0))
