"""Topic names and subscription patterns, as the wire contract defines them (PROTOCOL.md, Topics).

- A topic is 1 to 255 characters: tokens separated by ``.``, each token one or more of
  ``[A-Za-z0-9_:@-]``. ``pub``, ``history`` and ``presence`` take topics.
- A pattern is a topic in which a whole token may be ``*`` (exactly one token) and the last token
  may be ``>`` (one or more tokens). ``sub`` and ``unsub`` take patterns.

Validation raises :class:`~hub.exceptions.InvalidTopic`, whose message says what is wrong; the
hub answers it with the ``invalid_topic`` error code.
"""

from __future__ import annotations

import re

from hub.exceptions import InvalidTopic

__all__ = [
    "MAX_TOPIC_LENGTH",
    "is_pattern",
    "matches",
    "validate_pattern",
    "validate_topic",
]

MAX_TOPIC_LENGTH = 255
SINGLE = "*"
TAIL = ">"
_TOKEN = re.compile(r"[A-Za-z0-9_:@-]+")


def _check_length(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidTopic(f"{what} must be a string, not {type(text).__name__}")
    if not 1 <= len(text) <= MAX_TOPIC_LENGTH:
        raise InvalidTopic(f"{what} must be 1 to {MAX_TOPIC_LENGTH} characters, not {len(text)}")
    return text


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid concrete topic; raise InvalidTopic otherwise."""
    text = _check_length(topic, "topic")
    for token in text.split("."):
        if not _TOKEN.fullmatch(token):
            if token in (SINGLE, TAIL):
                raise InvalidTopic(f"{text!r}: wildcards are only allowed in subscriptions")
            raise InvalidTopic(f"{text!r}: invalid token {token!r} (allowed: A-Z a-z 0-9 _ : @ -)")
    return text


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid subscription pattern; raise InvalidTopic otherwise."""
    text = _check_length(pattern, "pattern")
    tokens = text.split(".")
    for index, token in enumerate(tokens):
        if token == SINGLE:
            continue
        if token == TAIL:
            if index != len(tokens) - 1:
                raise InvalidTopic(f"{text!r}: '>' may only be the last token")
            continue
        if not _TOKEN.fullmatch(token):
            raise InvalidTopic(f"{text!r}: invalid token {token!r} (allowed: A-Z a-z 0-9 _ : @ -)")
    return text


def is_pattern(text: str) -> bool:
    """Whether a valid pattern has a wildcard token (otherwise it names one concrete topic)."""
    return any(token in (SINGLE, TAIL) for token in text.split("."))


def matches(pattern: str, topic: str) -> bool:
    """Whether the valid ``pattern`` matches the valid concrete ``topic`` (a reference matcher;
    the router uses :class:`hub.broker.registry.Registry`, which does not scan patterns)."""
    pattern_tokens = pattern.split(".")
    topic_tokens = topic.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == TAIL:
            return len(topic_tokens) > index
        if index >= len(topic_tokens):
            return False
        if token != SINGLE and token != topic_tokens[index]:
            return False
    return len(topic_tokens) == len(pattern_tokens)
