"""Presence: which clients are on a topic, and ``join``/``leave`` events when that changes.

A client is *present* on a concrete topic while it holds a subscription to exactly that topic
and the topic matches one of the node's presence patterns (the ``presence_topics`` setting);
wildcard subscriptions make nobody present. The session calls :meth:`Presence.join` after its
``sub`` is answered and :meth:`Presence.leave` when the subscription ends. Neither awaits: a
node's presence is a local table that the implementation shares (at once in memory, through
an ordered writer in Redis), so a subscription never fails because of presence.

**The grace period.** A leave of a client whose user is known is not final at once: the
client stays listed for ``grace`` seconds. If a client of the same user joins the topic within
them (a page reload, a reconnect to another node), the old client is dropped silently and the
new one's ``join`` names it in ``replaces``: observers see no leave and join of the same user.
Otherwise the ``leave`` goes out when the grace period ends. Anonymous clients (no user id)
leave at once. An observer that applies the events to a :meth:`Presence.members` list
(``join`` adds, ``replaces`` and ``leave`` remove) keeps the same list as the hub.

Implementations: :class:`MemoryPresence` (one node) and
:class:`hub.broker.redis_presence.RedisPresence` (every node sharing one Redis).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hub.broker.rules import TopicRules

__all__ = ["Member", "MemoryPresence", "OnPresence", "Presence", "PresenceEvent"]

logger = logging.getLogger("hub.broker.presence")


@dataclass(frozen=True, slots=True)
class Member:
    """A present client: its id (the ``client`` of its welcome), its user id (None:
    anonymous) and the ``info`` claim of its token (any JSON value, or None)."""

    client: str
    user: str | None = None
    info: Any = None

    def fields(self) -> dict[str, Any]:
        """The member as it appears on the wire (``info`` only when there is one)."""
        fields: dict[str, Any] = {"client": self.client, "user": self.user}
        if self.info is not None:
            fields["info"] = self.info
        return fields


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """``member`` joined or left ``topic``; a join may replace a client of the same user
    whose leave was pending (its id is ``replaces``)."""

    kind: Literal["join", "leave"]
    topic: str
    member: Member
    replaces: str | None = None


#: The router's callback for presence events; it must not block.
OnPresence = Callable[[PresenceEvent], None]


class Presence(abc.ABC):
    """Start it after the backend, close it before; ``enabled(topic)`` says which topics
    have presence at all."""

    def __init__(self, on_event: OnPresence, patterns: Sequence[str], grace: float) -> None:
        self.on_event = on_event
        self.grace = grace
        #: Whether a subscription to the concrete topic makes its client present.
        self.enabled = TopicRules(False, [(pattern, True) for pattern in patterns])

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin sharing this node's presence (the backend is started already)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop; what was left or joined before is shared first where the store is up."""

    @abc.abstractmethod
    def join(self, topic: str, member: Member) -> None:
        """``member`` is present on ``topic`` from now on; its ``join`` event follows."""

    @abc.abstractmethod
    def leave(self, topic: str, member: Member) -> None:
        """``member`` left ``topic``: its ``leave`` event follows, after the grace period
        when its user is known."""

    @abc.abstractmethod
    async def members(self, topic: str) -> list[Member]:
        """The clients present on ``topic``, those in their grace period included;
        Unavailable when the store cannot be reached."""

    def _emit(self, event: PresenceEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            logger.exception("presence: delivering a %s on %s failed", event.kind, event.topic)


class MemoryPresence(Presence):
    """One node's presence, in dicts; events are delivered at once, grace ends on a timer."""

    def __init__(self, on_event: OnPresence, patterns: Sequence[str], grace: float) -> None:
        super().__init__(on_event, patterns, grace)
        self._members: dict[str, dict[str, Member]] = {}
        #: Per topic and user, the last client of that user whose leave is pending.
        self._leaving: dict[str, dict[str, Member]] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def join(self, topic: str, member: Member) -> None:
        back = self._timers.pop((topic, member.client), None)
        if back is not None:
            back.cancel()  # the same client back (unsub, then sub): it never left
        replaced = self._pending_leave(topic, member.user)
        if replaced is not None and replaced.client == member.client:
            replaced = None
        elif replaced is not None:
            # Another client of the user is leaving: this one takes its place (as in Redis,
            # even when this one never left).
            self._timers.pop((topic, replaced.client)).cancel()
            self._forget(topic, replaced.client)
        members = self._members.setdefault(topic, {})
        if member.client in members and replaced is None:
            return
        members[member.client] = member
        replaces = replaced.client if replaced is not None else None
        self._emit(PresenceEvent("join", topic, member, replaces))

    def _pending_leave(self, topic: str, user: str | None) -> Member | None:
        leaving = self._leaving.get(topic)
        if user is None or leaving is None:
            return None
        member = leaving.pop(user, None)
        if not leaving:
            del self._leaving[topic]
        return member

    def leave(self, topic: str, member: Member) -> None:
        if (
            member.client not in self._members.get(topic, {})
            or (topic, member.client) in self._timers
        ):
            return  # not present, or leaving already
        if self.grace <= 0 or member.user is None:
            self._gone(topic, member)
            return
        # An earlier client of the same user still in its grace period leaves at its own
        # time; only the latest one can be replaced.
        self._leaving.setdefault(topic, {})[member.user] = member
        loop = asyncio.get_running_loop()
        self._timers[topic, member.client] = loop.call_later(
            self.grace, self._grace_over, topic, member
        )

    def _grace_over(self, topic: str, member: Member) -> None:
        del self._timers[topic, member.client]
        if self._leaving.get(topic, {}).get(member.user or "") == member:
            self._pending_leave(topic, member.user)
        self._gone(topic, member)

    def _gone(self, topic: str, member: Member) -> None:
        if self._forget(topic, member.client):
            self._emit(PresenceEvent("leave", topic, member))

    def _forget(self, topic: str, client: str) -> bool:
        members = self._members.get(topic)
        if members is None or members.pop(client, None) is None:
            return False
        if not members:
            del self._members[topic]
        return True

    async def members(self, topic: str) -> list[Member]:
        return list(self._members.get(topic, {}).values())
