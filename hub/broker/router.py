"""The router: local subscriptions on one node, the backend, and the fan-out between them.

- ``subscribe``/``unsubscribe`` keep the :class:`Registry` of local subscribers and subscribe
  the backend on a pattern's first local subscriber and unsubscribe it on the last, under a
  per-pattern lock, rolling the registry back if the backend fails.
- ``publish`` hands the payload to the backend, which assigns the offset.
- Every publication the backend delivers is fanned out by :meth:`Router.deliver`: the payload
  is decoded once, each matching pattern's ``msg`` is encoded once per codec in use, and the
  same encoded frame is pushed to every subscriber's outbox. Nothing in the fan-out awaits.
- A subscription that is being recovered is *held* (:meth:`Router.hold`): its live
  publications wait in a list while the replay goes out, and :meth:`Router.release` then
  pushes those the replay did not cover, without yielding in between.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from hub.broker.backend import Backend, Publication
from hub.broker.presence import Member, PresenceEvent
from hub.broker.registry import Registry
from hub.exceptions import BadRequest, RequestError
from hub.wire.codecs import JSON, Codec

__all__ = ["Router", "Subscriber"]

logger = logging.getLogger("hub.broker")


class Subscriber(Hashable, Protocol):
    """What the router needs of a session: its codec, a non-blocking push, and a way to tell it
    that its subscription can no longer be served without a gap."""

    codec: Codec

    def push(self, frame: Any) -> None: ...

    def lost(self, reason: str) -> None:
        """Publications may be missing after what was pushed so far (a backend outage): end
        the subscription (a session closes with 4010) so that the client recovers."""


#: How the router makes its backend: ``factory(on_publication, on_gap=...)``.
BackendFactory = Callable[..., Backend]


def encode_payload(data: Any) -> bytes:
    """The backend's bytes for a publication's data: msgpack, or JSON for what msgpack cannot
    hold (integers beyond 64 bits). The first byte says which; BadRequest if neither can."""
    try:
        packed: bytes = msgpack.packb(data, use_bin_type=True)
        return b"M" + packed
    except (OverflowError, TypeError, ValueError):
        pass
    try:
        return b"J" + JSON.encode(data).encode()
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"data cannot be encoded: {exc}") from None


def decode_payload(payload: bytes) -> Any:
    if payload[:1] == b"J":
        return JSON.decode(payload[1:].decode())
    return msgpack.unpackb(payload[1:], raw=False, strict_map_key=False)


class Router:
    """One per node. Create it with a backend factory, then ``await start()``."""

    def __init__(self, backend_factory: BackendFactory) -> None:
        self.backend = backend_factory(self.deliver, on_gap=self.lost)
        self.registry: Registry[Subscriber] = Registry()
        #: The subscriptions that asked for presence events (a subset of the registry's).
        self.watchers: Registry[Subscriber] = Registry()
        # A lock lives while a coroutine holds or awaits it, so idle patterns cost nothing.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.delivered = 0  # frames pushed to subscribers, for metrics
        #: Subscriptions joining the live stream (see hold and release).
        self._joining: dict[tuple[str, Subscriber], _Joining] = {}
        self.hold_limit = 10_000  # publications held per subscription before it is lost

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()

    async def subscribe(self, pattern: str, subscriber: Subscriber) -> None:
        """Add a local subscription; the first one of a pattern subscribes the backend."""
        async with self._lock(pattern):
            if not self.registry.add(pattern, subscriber):
                return
            try:
                await self.backend.subscribe(pattern)
            except BaseException:
                self.registry.remove(pattern, subscriber)
                raise

    async def unsubscribe(self, pattern: str, subscriber: Subscriber) -> None:
        """Remove a local subscription; the last one of a pattern unsubscribes the backend."""
        self.unhold(pattern, subscriber)
        self.unwatch(pattern, subscriber)
        async with self._lock(pattern):
            if self.registry.remove(pattern, subscriber):
                await self.backend.unsubscribe(pattern)

    async def publish(self, topic: str, data: Any) -> Publication:
        """Publish ``data`` (any JSON or msgpack value); BadRequest if it cannot be stored."""
        return await self.backend.publish(topic, encode_payload(data))

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]]
    ) -> list[Publication | RequestError]:
        """Publish ``(topic, payload)`` pairs, payloads made by :func:`encode_payload`, in order
        and in one round trip where the backend can; per item, its publication or its error."""
        return await self.backend.publish_many(items)

    def hold(self, pattern: str, subscriber: Subscriber) -> None:
        """Keep the subscription's live publications aside from now on (call it before
        :meth:`subscribe`), until :meth:`release`."""
        self._joining[pattern, subscriber] = _Joining()

    def release(
        self, pattern: str, subscriber: Subscriber, seen: dict[str, tuple[str, int]]
    ) -> None:
        """Deliver live again from ``seen``: the subscriber has each topic up to its
        ``(epoch, offset)`` (from a replay or a position). Held publications above it are
        pushed now. Where the backend has not yet delivered up to it (Redis's reader may lag
        behind the position it was told), publications at or below it are skipped as they
        arrive. A gap after it means the backend lost publications: the subscriber is told
        (:meth:`Subscriber.lost`)."""
        key = (pattern, subscriber)
        joining = self._joining.get(key)
        if joining is None:
            return
        held, joining.held = joining.held or [], None
        joining.floors = dict(seen)
        for publication in held:
            if self._admit(key, joining, publication):
                subscriber.push(self.frame(publication, pattern, subscriber.codec))
            elif self._joining.get(key) is not joining:
                return  # a gap: the subscriber was told, and gets nothing after it
        for topic, (epoch, offset) in list(joining.floors.items()):
            delivered = self.backend.delivered(topic)
            if delivered is None or (delivered[0] == epoch and delivered[1] >= offset):
                del joining.floors[topic]  # nothing at or below it can arrive any more
        if not joining.floors:
            del self._joining[key]

    def unhold(self, pattern: str, subscriber: Subscriber) -> None:
        """Forget a hold or the floors of a subscription (it failed or is gone)."""
        self._joining.pop((pattern, subscriber), None)

    def frame(self, publication: Publication, pattern: str, codec: Codec) -> Any:
        """One subscriber's ``msg`` frame of a publication (for replays and held ones)."""
        return _prepare(codec, _message(publication, pattern, decode_payload(publication.payload)))

    def deliver(self, publication: Publication) -> None:
        """Fan a publication out to every local subscriber (the backend's callback)."""
        data: Any = None
        decoded = False
        joining = self._joining
        for pattern, subscribers in self.registry.match(publication.topic):
            if not decoded:
                data = decode_payload(publication.payload)
                decoded = True
            message = _message(publication, pattern, data)
            frames: dict[Codec, Any] = {}  # one prepared message per codec, shared by everyone
            for subscriber in subscribers:
                if joining and self._skips(pattern, subscriber, publication):
                    continue
                frame = frames.get(subscriber.codec)
                if frame is None:
                    frame = frames[subscriber.codec] = _prepare(subscriber.codec, message)
                subscriber.push(frame)
            self.delivered += len(subscribers)

    def watch(self, pattern: str, subscriber: Subscriber) -> None:
        """Send the subscription the presence events of the topics its pattern matches, from
        now on until it unsubscribes."""
        self.watchers.add(pattern, subscriber)

    def unwatch(self, pattern: str, subscriber: Subscriber) -> None:
        """No more presence events for the subscription (its unsubscribe does it too)."""
        self.watchers.remove(pattern, subscriber)

    def deliver_presence(self, event: PresenceEvent) -> None:
        """Send a presence event to the local subscriptions that asked for them (the
        presence's callback): ``join`` or ``leave`` with the topic and the member's fields.
        It costs nothing per subscriber that did not ask."""
        head: dict[str, Any] = {"op": event.kind, "topic": event.topic}
        if event.replaces is not None:
            head["replaces"] = event.replaces
        for pattern, subscribers in self.watchers.match(event.topic):
            frames: dict[Codec, Any] = {}
            for subscriber in subscribers:
                codec = subscriber.codec
                frame = frames.get(codec)
                if frame is None:
                    fields = member_fields(event.member, codec)
                    frame = frames[codec] = codec.prepare({**head, **fields, "sub": pattern})
                subscriber.push(frame)

    def _skips(self, pattern: str, subscriber: Subscriber, publication: Publication) -> bool:
        """Whether a joining subscription does not get ``publication`` live (held or below
        its floor); False for every other subscription."""
        key = (pattern, subscriber)
        joining = self._joining.get(key)
        if joining is None:
            return False
        if joining.held is not None:
            if len(joining.held) < self.hold_limit:
                joining.held.append(publication)
            else:
                subscriber.lost("insufficient state: too many publications during its recovery")
            return True
        admitted = self._admit(key, joining, publication)
        if admitted and not joining.floors:
            self._joining.pop(key, None)
        return not admitted

    def _admit(
        self, key: tuple[str, Subscriber], joining: _Joining, publication: Publication
    ) -> bool:
        """Whether a publication passes the subscription's floors; a gap ends the subscription."""
        floor = joining.floors.get(publication.topic)
        if floor is None:
            return True
        epoch, offset = floor
        if publication.epoch == epoch:
            if publication.offset <= offset:
                return False  # the replay or the position covered it already
            if publication.offset == offset + 1:
                del joining.floors[publication.topic]
                return True
        self._joining.pop(key, None)
        key[1].lost(f"insufficient state: a gap in {publication.topic} after offset {offset}")
        return False

    def lost(self, patterns: Sequence[str]) -> None:
        """The backend's notice that these patterns' subscribers may have missed publications."""
        for pattern in patterns:
            subscribers = self.registry.subscribers(pattern)
            if subscribers:
                logger.warning(
                    "lost the position of %s (backend outage): ending %d subscriptions with 4010",
                    pattern,
                    len(subscribers),
                )
            for subscriber in subscribers:
                subscriber.lost(f"insufficient state: publications on {pattern} may be missing")

    def _lock(self, pattern: str) -> asyncio.Lock:
        lock = self._locks.get(pattern)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[pattern] = lock
        return lock


@dataclass
class _Joining:
    """A subscription joining the live stream: first its publications are ``held``; after
    the release, those at or below a topic's floor ``(epoch, offset)`` are skipped until one
    above it arrives."""

    held: list[Publication] | None = field(default_factory=list)
    floors: dict[str, tuple[str, int]] = field(default_factory=dict)


def _message(publication: Publication, pattern: str, data: Any) -> dict[str, Any]:
    return {
        "op": "msg",
        "topic": publication.topic,
        "sub": pattern,
        "data": data,
        "offset": publication.offset,
        "epoch": publication.epoch,
    }


def _prepare(codec: Codec, message: dict[str, Any]) -> Any:
    """The msg for this codec or, when its encoding cannot hold the data (binary data for a
    JSON client, a 70-bit integer for a msgpack one), an error that says so: the subscriber
    learns which offset it cannot receive instead of meeting a silent gap."""
    try:
        return codec.prepare(message)
    except (OverflowError, TypeError, ValueError) as exc:
        return codec.prepare(
            {
                "op": "error",
                "code": "unavailable",
                "message": f"publication {message['offset']} on {message['topic']} (epoch "
                f"{message['epoch']}) cannot be encoded as {codec.subprotocol}: {exc}",
                # Which subscription's publication it is, so that a client can tell.
                **{key: message[key] for key in ("topic", "sub", "offset", "epoch")},
            }
        )


def member_fields(member: Member, codec: Codec) -> dict[str, Any]:
    """A present client's fields for this codec (in a presence event or list): an ``info`` it
    cannot hold (a 70-bit integer for msgpack) is left out rather than losing the rest."""
    fields = member.fields()
    if member.info is not None:
        try:
            codec.encode(member.info)
        except (OverflowError, TypeError, ValueError):
            del fields["info"]
    return fields
