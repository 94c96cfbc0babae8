"""hub.broker: topics, subscriptions and the fan-out of publications (no network code here)."""

from __future__ import annotations

from hub.broker.backend import Backend, OnPublication, Publication
from hub.broker.memory import MemoryBackend
from hub.broker.registry import Registry
from hub.broker.topics import is_pattern, matches, validate_pattern, validate_topic

__all__ = [
    "Backend",
    "MemoryBackend",
    "OnPublication",
    "Publication",
    "Registry",
    "is_pattern",
    "matches",
    "validate_pattern",
    "validate_topic",
]
