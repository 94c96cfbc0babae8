"""A subscription: a bounded buffer of messages, the positions to recover from, iteration.

The client's reader puts each ``msg`` into its subscription's buffer. The application takes
them with ``async for message in subscription`` (or ``await subscription.get()``, or a
callback). The subscription remembers, per concrete topic, the last ``(epoch, offset)`` it
received, and for a wildcard pattern the hub time of its last ``ok``: after a reconnect the
client subscribes again with ``recover`` from there, so that the iterator goes on with no gap
and no duplicate, or raises :class:`~hub.exceptions.NotRecovered` once when the hub could not
replay what was missed (iterate again to go on with live messages).

**When the application does not read.** The buffer holds ``max_messages``; when it is full the
client stops reading the connection until the application catches up. Nothing is dropped: the
hub queues for the client meanwhile and, past its own limit, closes the connection as a slow
consumer (4008); the client then reconnects and recovers from the last message it buffered.
Replies to other requests wait behind the full buffer too, so read what you subscribe to.

**Presence events.** A subscription made with ``join_leave=True`` also gets the ``join`` and
``leave`` events of the topics it covers that have presence, as :class:`PresenceEvent` objects
in a second buffer of their own: ``await subscription.presence_event()``, ``async for event in
subscription.presence_events()``, or a callback (:meth:`Subscription.on_presence`). They never
appear among the messages, and their order relative to the messages is not kept. Events are
informational and never stop the reader: when ``max_messages`` of them wait unread, the oldest
is dropped and :attr:`Subscription.dropped_presence` counts it (the list of members built from
the events is then wrong: ask :meth:`Client.presence` again). Events are not replayed after a
reconnect either: see :meth:`Client.presence`.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hub.exceptions import NotRecovered, SubscriptionNotice, Undeliverable, UsageError

if TYPE_CHECKING:
    from hub_client.client import Client

__all__ = [
    "Callback",
    "Message",
    "PresenceCallback",
    "PresenceEvent",
    "PresenceMember",
    "Subscription",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One publication: ``data`` as published, on ``topic``, at ``offset`` of ``epoch``;
    ``sub`` is the pattern that matched."""

    topic: str
    data: Any
    offset: int
    epoch: str
    sub: str


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """A client present on a topic: its id (the ``client`` of its ``welcome``), its user (the
    token's ``sub``; None: anonymous) and the ``info`` claim of its token (None: none)."""

    client: str
    user: str | None = None
    info: Any = None


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A client joined (``kind == "join"``) or left ``topic``; ``sub`` is the pattern of the
    subscription that got the event. A join may name in ``replaces`` a client of the same user
    whose leave was pending (a reload, a reconnect): that client is gone, with no leave event.
    Applied to a :meth:`Client.presence` list (join adds, ``replaces`` and leave remove), the
    events keep the list up to date."""

    kind: Literal["join", "leave"]
    topic: str
    sub: str
    client: str
    user: str | None = None
    info: Any = None
    replaces: str | None = None

    @property
    def member(self) -> PresenceMember:
        """The client that joined or left, as :meth:`Client.presence` lists it."""
        return PresenceMember(self.client, self.user, self.info)


#: A callback for messages: a plain function or a coroutine function.
Callback = Callable[[Message], Awaitable[None] | None]

#: A callback for presence events: a plain function or a coroutine function.
PresenceCallback = Callable[[PresenceEvent], Awaitable[None] | None]

_END = object()  # the subscription ended: iteration stops


class Subscription:
    """Made by :meth:`Client.subscribe`; see the module docstring."""

    def __init__(
        self, client: Client, pattern: str, max_messages: int, join_leave: bool = False
    ) -> None:
        self.client = client
        self.pattern = pattern
        self.max_messages = max_messages
        #: Whether the hub sends this subscription presence events (asked again on resubscribe).
        self.join_leave = join_leave
        #: Presence events dropped because ``max_messages`` of them were waiting unread.
        self.dropped_presence = 0
        #: Per concrete topic, the last (epoch, offset) received.
        self.positions: dict[str, tuple[str, int]] = {}
        #: For a wildcard pattern: the hub time of the last ok (the next recovery's ``since``).
        self.time: int | None = None
        self.active = True
        #: The connection (its number) on which the hub last confirmed this subscription.
        self.confirmed_on = 0
        #: The time to take as ``time`` once this many more msgs (a replay) have arrived.
        self._time_after: tuple[int | None, int] = (None, 0)
        self._buffer: collections.deque[Message | SubscriptionNotice | object] = collections.deque()
        self._changed = asyncio.Event()  # something was put or taken
        self._callback_task: asyncio.Task[None] | None = None
        self._events: collections.deque[PresenceEvent] = collections.deque()
        self._events_changed = asyncio.Event()  # an event was put, or the subscription ended
        self._presence_task: asyncio.Task[None] | None = None

    # --- the client's side --------------------------------------------------------------------

    def accept(self, message: Message) -> bool:
        """Buffer a message unless it repeats one already received; False if it did."""
        if not self.active:
            return False
        known = self.positions.get(message.topic)
        if known is not None and known[0] == message.epoch and message.offset <= known[1]:
            return False
        self.positions[message.topic] = (message.epoch, message.offset)
        self._put(message)
        return True

    def advance_time(self, time: int | None, replayed: int) -> None:
        """A wildcard ok's ``time`` becomes the next ``since`` after its ``replayed`` msgs."""
        if replayed:
            self._time_after = (time, replayed)
        else:
            self.time, self._time_after = time, (None, 0)

    def arrived(self) -> None:
        """Count a msg of this subscription towards the replay in progress, if any."""
        time, left = self._time_after
        if left:
            self._time_after = (time, left - 1)
            if left == 1:
                self.time = time

    def full(self) -> bool:
        return len(self._buffer) >= self.max_messages

    async def room(self) -> None:
        """Wait until the buffer has room (the reader pauses here)."""
        while self.full() and self.active:
            self._changed.clear()
            await self._changed.wait()

    def not_recovered(self, topic: str) -> None:
        self._put(
            NotRecovered(f"publications on {topic} were missed and cannot be replayed", topic)
        )

    def undeliverable(self, error: dict[str, Any]) -> None:
        """A publication the connection's codec cannot carry: the iterator raises
        Undeliverable for it, and the position moves past it."""
        topic, offset, epoch = error.get("topic"), error.get("offset"), error.get("epoch")
        if isinstance(topic, str) and isinstance(epoch, str) and type(offset) is int:
            self.positions[topic] = (epoch, offset)
        self._put(Undeliverable(str(error.get("message", "")), str(topic)))

    def add_presence(self, event: PresenceEvent) -> None:
        """Buffer a presence event; when the buffer is full, the oldest one is dropped."""
        if not self.active:
            return
        if len(self._events) >= self.max_messages:
            self._events.popleft()
            self.dropped_presence += 1
            if self.dropped_presence == 1:
                self.client.logger.warning(
                    "subscription %s: presence events are dropped, %d wait unread",
                    self.pattern,
                    len(self._events),
                )
        self._events.append(event)
        self._events_changed.set()

    def end(self) -> None:
        if self.active:
            self.active = False
            self._put(_END)
            self._events_changed.set()

    def _put(self, item: Message | SubscriptionNotice | object) -> None:
        self._buffer.append(item)
        self._changed.set()

    # --- the application's side ---------------------------------------------------------------

    async def get(self) -> Message:
        """The next message. Raises NotRecovered once after a gap that could not be replayed,
        and StopAsyncIteration once the subscription has ended (unsubscribed or closed)."""
        while not self._buffer:
            self._changed.clear()
            await self._changed.wait()
        item = self._buffer[0]
        if item is _END:
            raise StopAsyncIteration
        self._buffer.popleft()
        self._changed.set()
        if isinstance(item, SubscriptionNotice):
            raise item
        assert isinstance(item, Message)
        return item

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        return await self.get()

    def pending(self) -> int:
        """Messages buffered and not taken yet."""
        return sum(isinstance(item, Message) for item in self._buffer)

    def on_message(self, callback: Callback) -> None:
        """Deliver every message to ``callback`` (awaited if it is a coroutine function), in a
        task of its own, instead of iterating; NotRecovered is logged and skipped."""
        if self._callback_task is not None:
            raise UsageError("this subscription already has a callback")
        self._callback_task = asyncio.get_running_loop().create_task(self._call(callback))

    async def _call(self, callback: Callback) -> None:
        while True:
            try:
                message = await self.get()
            except StopAsyncIteration:
                return
            except SubscriptionNotice as exc:  # NotRecovered, Undeliverable
                self.client.logger.warning("subscription %s: %s", self.pattern, exc)
                continue
            await self._invoke(callback, message, "callback")

    async def _invoke(self, callback: Callable[[Any], Any], item: object, what: str) -> None:
        """Call a callback of the application with ``item``, awaiting what it returns if that
        is awaitable; its exception is logged, and the next item comes."""
        try:
            result = callback(item)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.client.logger.exception("subscription %s: the %s failed", self.pattern, what)

    # --- presence events --------------------------------------------------------------------

    def _need_join_leave(self) -> None:
        if not self.join_leave:
            raise UsageError(
                f"the subscription to {self.pattern} gets no presence events:"
                " subscribe with join_leave=True"
            )

    async def presence_event(self) -> PresenceEvent:
        """The next presence event (``join_leave=True`` subscriptions only). Raises
        StopAsyncIteration once the subscription has ended and no event is left."""
        self._need_join_leave()
        while not self._events:
            if not self.active:
                raise StopAsyncIteration
            self._events_changed.clear()
            await self._events_changed.wait()
        return self._events.popleft()

    def presence_events(self) -> AsyncIterator[PresenceEvent]:
        """``async for event in subscription.presence_events()``: every presence event, until
        the subscription ends (``join_leave=True`` subscriptions only)."""
        self._need_join_leave()
        return self._presence_events()

    async def _presence_events(self) -> AsyncIterator[PresenceEvent]:
        while True:
            try:
                event = await self.presence_event()
            except StopAsyncIteration:
                return
            yield event

    def pending_presence(self) -> int:
        """Presence events buffered and not taken yet."""
        return len(self._events)

    def on_presence(self, callback: PresenceCallback) -> None:
        """Deliver every presence event to ``callback`` (awaited if it is a coroutine
        function), in a task of its own, instead of :meth:`presence_events`; its exceptions are
        logged. ``join_leave=True`` subscriptions only."""
        self._need_join_leave()
        if self._presence_task is not None:
            raise UsageError("this subscription already has a presence callback")
        self._presence_task = asyncio.get_running_loop().create_task(self._call_presence(callback))

    async def _call_presence(self, callback: PresenceCallback) -> None:
        async for event in self._presence_events():
            await self._invoke(callback, event, "presence callback")

    # --- ending -------------------------------------------------------------------------------

    async def unsubscribe(self) -> None:
        """End the subscription (the iterators stop after the messages and events already
        buffered)."""
        await self.client.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.active:
            await self.unsubscribe()
        for task in (self._callback_task, self._presence_task):
            if task is not None:
                task.cancel()
