"""What a client may subscribe to and publish to, as granted by its token (issue 8).

A grant is a topic pattern (:mod:`hub.broker.topics`): ``*`` stands for exactly one token and a
last ``>`` for one or more. A request is allowed when some grant *covers* it, that is when every
concrete topic the request can reach is also matched by the grant. Checking only that the grant
matches the request's text would be wrong both ways: ``chat.*`` "matches" the string ``chat.>``
token for token, yet ``chat.>`` reaches ``chat.a.b``, which ``chat.*`` does not grant.

Theory of operation, token by token from the left (grant ``g``, request ``r``):

- ``g`` is ``>``: it covers the rest of ``r`` if at least one token remains, whatever they are
  (``*`` and ``>`` included), since ``>`` matches any one-or-more tail.
- ``r`` is ``>`` (and ``g`` is not): not covered. ``r``'s ``>`` reaches tails of every length,
  while ``g`` without a ``>`` at this position or earlier has a fixed number of tokens left, or
  needs more than one token here (``*.>``).
- ``g`` is ``*``: covers a concrete token or ``*``.
- ``g`` is concrete: covers only the same concrete token (a ``*`` in ``r`` reaches other tokens).
- Without a ``>`` in ``g``, both must have the same number of tokens.

This module is pure (no I/O, no asyncio): the session asks it and answers ``forbidden`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub.broker.topics import SINGLE, TAIL, validate_pattern
from hub.exceptions import InvalidTopic

__all__ = ["Permissions", "covers"]

# The claims of a connection token that carry the grants; other claims are not ours to read.
_CLAIMS = ("subscribe", "publish")


def covers(grant: str, requested: str) -> bool:
    """Whether the valid pattern ``grant`` matches every topic that the valid pattern
    ``requested`` matches (a concrete topic is a pattern too).

    True: the request stays inside the grant and the caller may serve it. False: some topic the
    request could reach is outside this grant; the caller tries the client's other grants.
    """
    grant_tokens = grant.split(".")
    requested_tokens = requested.split(".")
    for index, token in enumerate(grant_tokens):
        if token == TAIL:
            # ">" is one or more tokens of anything, so any non-empty rest is inside it.
            return len(requested_tokens) > index
        if index >= len(requested_tokens):
            # The grant needs more tokens than the request has: the request's topics are shorter.
            return False
        wanted = requested_tokens[index]
        if wanted == TAIL:
            # A request ">" reaches tails of every length; only a grant ">" (above) holds them.
            return False
        if token == SINGLE:
            # "*" holds one token, and a concrete token or a "*" is exactly one token.
            continue
        if token != wanted:
            # A concrete grant token holds only itself: not another name, and not a "*", which
            # reaches names other than this one.
            return False
    return len(requested_tokens) == len(grant_tokens)


def _grants(patterns: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Return ``patterns`` if it is a tuple of valid patterns; raise ValueError otherwise."""
    if not isinstance(patterns, tuple):
        raise ValueError(f"{what} must be a tuple of patterns, not {type(patterns).__name__}")
    for index, pattern in enumerate(patterns):
        try:
            validate_pattern(pattern)
        except InvalidTopic as exc:
            # ValueError, not InvalidTopic: a bad grant is the token issuer's fault (or the
            # configuration's), not a request to answer with invalid_topic.
            raise ValueError(f"{what}[{index}]: {exc}") from None
    return patterns


@dataclass(frozen=True)
class Permissions:
    """The patterns a client may subscribe to and publish to; each a tuple of valid patterns.

    Built once per connection (from the token's claims, or the configured default for anonymous
    clients) and asked on every ``sub``, ``pub``, ``history`` and ``presence``. An empty tuple
    grants nothing.
    """

    subscribe: tuple[str, ...]
    publish: tuple[str, ...]

    def __post_init__(self) -> None:
        # Checked here so that no Permissions, however built, holds a grant that covers() would
        # misread (a list would also make the frozen dataclass unhashable).
        _grants(self.subscribe, "subscribe")
        _grants(self.publish, "publish")

    @classmethod
    def all(cls) -> Permissions:
        """Everything: the permissions of every client when auth is off."""
        return cls(subscribe=(TAIL,), publish=(TAIL,))

    @classmethod
    def none(cls) -> Permissions:
        """Nothing: a client that may connect but neither subscribe nor publish."""
        return cls(subscribe=(), publish=())

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], default: Permissions) -> Permissions:
        """The permissions that a verified token's ``claims`` grant.

        The claims ``subscribe`` and ``publish`` are lists of patterns; a missing one falls back to
        ``default``'s grants (an empty list grants nothing). Raise ValueError, naming the claim,
        when one is not a list of strings or holds an invalid pattern: the caller refuses the
        token as it would a badly signed one (4001, or 401 in the handshake).
        """
        granted: dict[str, tuple[str, ...]] = {}
        for claim in _CLAIMS:
            if claim not in claims:
                granted[claim] = getattr(default, claim)
                continue
            value = claims[claim]
            # A lone string is iterable too, and would quietly grant each of its characters.
            if not isinstance(value, list | tuple):
                raise ValueError(
                    f"claim {claim!r} must be a list of patterns, not {type(value).__name__}"
                )
            for index, pattern in enumerate(value):
                if not isinstance(pattern, str):
                    raise ValueError(
                        f"claim {claim!r}[{index}] must be a pattern string, "
                        f"not {type(pattern).__name__}"
                    )
            granted[claim] = _grants(tuple(value), f"claim {claim!r}")
        return cls(subscribe=granted["subscribe"], publish=granted["publish"])

    def may_subscribe(self, pattern: str) -> bool:
        """Whether a ``sub`` of the valid ``pattern`` stays inside a subscribe grant.

        False: the caller answers ``forbidden``, counts the denial and subscribes nothing; it
        must not narrow the request to the part that is granted.
        """
        return any(covers(grant, pattern) for grant in self.subscribe)

    def may_publish(self, topic: str) -> bool:
        """Whether a ``pub`` to the valid concrete ``topic`` is inside a publish grant.

        False: the caller answers ``forbidden``, counts the denial and publishes nothing.
        """
        return any(covers(grant, topic) for grant in self.publish)

    def may_read(self, topic: str) -> bool:
        """Whether ``history`` or ``presence`` of the valid concrete ``topic`` is allowed.

        Both reveal what a subscriber of the topic would see, so they follow the subscribe
        grants. False: the caller answers ``forbidden`` and counts the denial.
        """
        return self.may_subscribe(topic)
