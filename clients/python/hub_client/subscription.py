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
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.exceptions import NotRecovered, SubscriptionNotice, Undeliverable, UsageError

if TYPE_CHECKING:
    from hub_client.client import Client

__all__ = ["Callback", "Message", "Subscription"]


@dataclass(frozen=True, slots=True)
class Message:
    """One publication: ``data`` as published, on ``topic``, at ``offset`` of ``epoch``;
    ``sub`` is the pattern that matched."""

    topic: str
    data: Any
    offset: int
    epoch: str
    sub: str


#: A callback for messages: a plain function or a coroutine function.
Callback = Callable[[Message], Awaitable[None] | None]

_END = object()  # the subscription ended: iteration stops


class Subscription:
    """Made by :meth:`Client.subscribe`; see the module docstring."""

    def __init__(self, client: Client, pattern: str, max_messages: int) -> None:
        self.client = client
        self.pattern = pattern
        self.max_messages = max_messages
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

    def end(self) -> None:
        if self.active:
            self.active = False
            self._put(_END)

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
            try:
                result = callback(message)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.client.logger.exception("subscription %s: the callback failed", self.pattern)

    async def unsubscribe(self) -> None:
        """End the subscription (the iterator stops after the messages already buffered)."""
        await self.client.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.active:
            await self.unsubscribe()
        if self._callback_task is not None:
            self._callback_task.cancel()
