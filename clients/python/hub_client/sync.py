"""A synchronous facade of the hub client, for scripts and threaded code.

::

    from hub_client.sync import connect

    with connect("ws://127.0.0.1:8765") as client:
        with client.subscribe("chat.room1") as subscription:
            client.publish("chat.room1", {"text": "hi"})
            for message in subscription:
                print(message.topic, message.data)
                break

Each :class:`SyncClient` runs an asynchronous :class:`~hub_client.client.Client` on an event
loop of its own, in a daemon thread that :meth:`SyncClient.close` stops. Every method blocks
the calling thread until the loop has done the work, and raises what the asynchronous method
raises, with its type (``RequestError`` subclasses with their ``code``, ``RequestTimeout``,
``Disconnected``, ``NotRecovered``, ...). Any number of threads may share one client.

Code that runs *on* the client's loop thread (the ``on_state`` callback) must not call the
blocking methods: they would wait for the very thread that runs them, so they raise
:class:`~hub.exceptions.UsageError` instead (except :meth:`SyncClient.close`, which then only
starts the closing). Message and presence callbacks given to :meth:`SyncClient.subscribe` run
in worker threads, one message (one event) after the other, and may call the client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

from hub.exceptions import Disconnected, UsageError
from hub_client.client import Client, ConnectionState, HistoryPage
from hub_client.client import connect as async_connect
from hub_client.subscription import Message, PresenceEvent, PresenceMember, Subscription

__all__ = ["SyncClient", "SyncSubscription", "connect"]

T = TypeVar("T")

#: A message callback of the synchronous facade: a plain function, run in a worker thread.
SyncCallback = Callable[[Message], object]

#: A presence callback of the synchronous facade: a plain function, run in a worker thread.
SyncPresenceCallback = Callable[[PresenceEvent], object]

_END = object()  # what a get() task returns when the subscription has ended


def connect(url: str, **options: Any) -> SyncClient:
    """Connect to the hub at ``url`` and return a :class:`SyncClient` (close it, or use it
    with ``with``). ``options`` are those of :class:`~hub_client.client.Client`; errors of the
    first connection (``OSError``, ``HandshakeError``, ...) propagate."""
    return SyncClient(url, **options)


class SyncClient:
    """A :class:`~hub_client.client.Client` driven from synchronous code; see the module
    docstring. Made by :func:`connect`."""

    def __init__(self, url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=_run_loop, args=(self._loop,), name=f"hub-client {url}", daemon=True
        )
        self._close_lock = threading.Lock()
        self._closed = False
        self._stopped = threading.Event()
        #: Runs the message callbacks of subscriptions, off the loop thread.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="hub-client-callback"
        )
        self._thread.start()
        try:
            self._client: Client = self._call(_open(url, options))
        except BaseException:
            self._stop()
            raise

    # --- running coroutines on the loop thread ----------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop thread and return its result (or raise its error)."""
        if threading.get_ident() == self._thread.ident:
            coroutine.close()
            raise UsageError(
                "the blocking methods of SyncClient cannot run on its own event loop thread "
                "(in an on_state callback, for instance)"
            )
        if self._closed or self._loop.is_closed():
            coroutine.close()
            raise Disconnected("the client is closed")
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop closed since the check
            coroutine.close()
            raise Disconnected("the client is closed") from None
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # The loop thread cancelled it: the client was closed while it waited.
            raise Disconnected("the client was closed") from None
        except BaseException:
            future.cancel()  # KeyboardInterrupt or the like: stop the work on the loop
            raise

    # --- connection ---------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The asynchronous client (use it only on :attr:`loop`)."""
        return self._client

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop that runs the client, in its own thread."""
        return self._loop

    @property
    def state(self) -> ConnectionState:
        """The connection's state: CONNECTED, RECONNECTING, or CLOSED."""
        return self._client.state

    @property
    def url(self) -> str:
        return self._client.url

    @property
    def welcome(self) -> dict[str, Any]:
        """The hub's ``welcome`` frame of the current (or last) connection."""
        return dict(self._client.welcome)

    @property
    def close_code(self) -> int | None:
        """The close code of the last connection that ended (None while none has)."""
        return self._client.close_code

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def states(self) -> Iterator[ConnectionState]:
        """Every change of :attr:`state` from the call on, until the client is closed
        (blocking iteration; stop early with ``break``)."""
        changes: queue.SimpleQueue[ConnectionState | None] = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for state in self._client.states():
                    changes.put(state)
            finally:  # the end, or cancelled: the iterator was dropped or the loop ended
                changes.put(None)

        async def start() -> asyncio.Task[None]:
            task = asyncio.get_running_loop().create_task(pump())
            await asyncio.sleep(0)  # the task registers for the changes before we return
            return task

        # Registered now, not at the first next(): no change after this call is missed.
        return self._states(changes, self._call(start()))

    def _states(
        self, changes: queue.SimpleQueue[ConnectionState | None], task: asyncio.Task[None]
    ) -> Iterator[ConnectionState]:
        try:
            while (state := changes.get()) is not None:
                yield state
        finally:
            if not task.done():
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to stop
                    self._loop.call_soon_threadsafe(task.cancel)

    def close(self) -> None:
        """Close the connection for good and stop the loop thread; subscriptions' iterators
        end. Safe from any thread and more than once; blocking calls of other threads fail
        with Disconnected. On the loop thread itself, it only starts the closing."""
        with self._close_lock:
            first = not self._closed
            self._closed = True
        on_loop = threading.get_ident() == self._thread.ident
        if not first:
            if not on_loop:
                self._stopped.wait()
            return
        if on_loop:
            self._loop.create_task(self._close_then_stop())
            return
        closing = self._client.close()
        try:
            try:
                future = asyncio.run_coroutine_threadsafe(closing, self._loop)
            except RuntimeError:  # the loop is gone already
                closing.close()
            else:
                with contextlib.suppress(Exception):
                    future.result()
        finally:  # even on KeyboardInterrupt: the thread stops, other close() calls return
            self._stop()

    async def _close_then_stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.close()
        self._loop.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    def _stop(self) -> None:
        """Stop the loop and wait for its thread (which cancels what is left and closes it)."""
        self._closed = True
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.get_ident() != self._thread.ident:
            self._thread.join()
        # Callbacks may be running this very close(): do not wait for them.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the raw layer ------------------------------------------------------------------------

    def send(self, message: dict[str, Any] | BaseModel) -> None:
        """Send one wire-protocol request as it is (a dict, or a model of hub.wire.messages)."""
        self._call(self._client.send(message))

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next frame the client did not handle itself; TimeoutError after ``timeout``
        seconds (None: wait for ever)."""
        return self._call(_within(self._client.recv(), timeout))

    def request(self, op: str, *, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send a request and return its ``ok`` (see :meth:`Client.request`)."""
        return self._call(self._client.request(op, timeout=timeout, **fields))

    # --- publish, history, presence -----------------------------------------------------------

    def publish(
        self, topic: str, data: Any, *, wait: bool = True, timeout: float | None = None
    ) -> int | None:
        """Publish and return the publication's offset (None with ``wait=False``)."""
        return self._call(self._client.publish(topic, data, wait=wait, timeout=timeout))

    def history(
        self,
        topic: str,
        *,
        since: tuple[str, int] | None = None,
        limit: int | None = None,
        reverse: bool = False,
        timeout: float | None = None,
    ) -> HistoryPage:
        """The topic's retained publications (after ``since`` = (epoch, offset) if given)."""
        return self._call(
            self._client.history(topic, since=since, limit=limit, reverse=reverse, timeout=timeout)
        )

    def refresh(self, token: str | None = None, *, timeout: float | None = None) -> Any:
        """A new token for the connection; returns its expiry (see Client.refresh)."""
        return self._call(self._client.refresh(token, timeout=timeout))

    def presence(self, topic: str, *, timeout: float | None = None) -> list[PresenceMember]:
        """The clients present on ``topic`` (see :meth:`Client.presence`: ask again after a
        reconnect, events are not replayed)."""
        return self._call(self._client.presence(topic, timeout=timeout))

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        callback: SyncCallback | None = None,
        max_messages: int | None = None,
        timeout: float | None = None,
        join_leave: bool = False,
        on_presence: SyncPresenceCallback | None = None,
    ) -> SyncSubscription:
        """Subscribe to ``pattern``; iterate the result, or give ``callback``: it is called
        with every message, one after the other, in a worker thread (its errors are logged).
        With ``join_leave=True`` the subscription also gets presence events
        (:meth:`SyncSubscription.presence_events`), or ``on_presence`` gets them, in a worker
        thread like ``callback``."""
        if on_presence is not None and not join_leave:
            raise UsageError("on_presence needs join_leave=True")
        subscription = self._call(
            _subscribe(
                self._client,
                pattern,
                None if callback is None else self._in_worker(callback),
                max_messages,
                timeout,
                join_leave,
                None if on_presence is None else self._in_worker(on_presence),
            )
        )
        return SyncSubscription(self, subscription)

    def _in_worker(
        self, callback: Callable[[T], object]
    ) -> Callable[[T], Coroutine[Any, Any, None]]:
        async def call(item: T) -> None:
            await asyncio.get_running_loop().run_in_executor(self._executor, callback, item)

        return call


class SyncSubscription:
    """A subscription of a :class:`SyncClient`: ``for message in subscription:`` blocks for
    each message and ends when the subscription ends (unsubscribed, or the client closed).
    Like the asynchronous iterator, it raises :class:`~hub.exceptions.NotRecovered` once after
    a gap the hub could not replay; iterate again to go on with live messages. With
    ``join_leave=True``, :meth:`presence_events` yields its presence events the same way."""

    def __init__(self, client: SyncClient, subscription: Subscription) -> None:
        self._client = client
        self._subscription = subscription
        self._messages = _Taker(client, lambda: _next(subscription), "message")
        self._events = _Taker(client, lambda: _next_event(subscription), "presence event")

    @property
    def subscription(self) -> Subscription:
        """The asynchronous subscription (use it only on the client's loop)."""
        return self._subscription

    @property
    def pattern(self) -> str:
        return self._subscription.pattern

    @property
    def active(self) -> bool:
        """False once unsubscribed or closed (buffered messages can still be taken)."""
        return self._subscription.active

    @property
    def join_leave(self) -> bool:
        """Whether the subscription gets presence events."""
        return self._subscription.join_leave

    @property
    def dropped_presence(self) -> int:
        """Presence events dropped because ``max_messages`` of them were waiting unread."""
        return self._subscription.dropped_presence

    def pending(self) -> int:
        """Messages buffered and not taken yet."""
        return self._client._call(_pending(self._subscription))

    def get(self, timeout: float | None = None) -> Message:
        """The next message, waiting up to ``timeout`` seconds (None: for ever). Raises
        TimeoutError when none came in time, NotRecovered once after a gap that could not be
        replayed, and StopIteration once the subscription has ended."""
        item = self._messages.take("SyncSubscription.get()", timeout)
        assert isinstance(item, Message)
        return item

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        return self.get()

    def presence_event(self, timeout: float | None = None) -> PresenceEvent:
        """The next presence event (``join_leave=True`` only), waiting up to ``timeout``
        seconds (None: for ever). Raises TimeoutError when none came in time (one that comes
        later is not lost), and StopIteration once the subscription has ended."""
        self._subscription._need_join_leave()
        item = self._events.take("SyncSubscription.presence_event()", timeout)
        assert isinstance(item, PresenceEvent)
        return item

    def presence_events(self) -> Iterator[PresenceEvent]:
        """``for event in subscription.presence_events():`` every presence event, until the
        subscription ends (``join_leave=True`` only)."""
        self._subscription._need_join_leave()
        return self._presence_events()

    def _presence_events(self) -> Iterator[PresenceEvent]:
        while True:
            try:
                event = self.presence_event()
            except StopIteration:
                return
            yield event

    def pending_presence(self) -> int:
        """Presence events buffered and not taken yet."""
        return self._client._call(_pending_presence(self._subscription))

    def unsubscribe(self) -> None:
        """End the subscription: iteration stops after the messages already buffered."""
        if self._client.closed:
            return
        self._client._call(self._subscription.unsubscribe())

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._subscription.active:
            self.unsubscribe()


class _Taker:
    """Takes the items of one of a subscription's buffers from any thread, one at a time.

    ``take`` runs a coroutine on the client's loop that returns the next item (or _END). When
    the caller stops waiting (a timeout, an interrupt), the coroutine goes on, and the next
    call takes its result: no item is lost."""

    def __init__(
        self, client: SyncClient, next_item: Callable[[], Coroutine[Any, Any, object]], what: str
    ) -> None:
        self._client = client
        self._next_item = next_item
        self._what = what
        self._lock = threading.Lock()
        #: A take that is still running on the loop (after a timeout or an interrupt).
        self._waiting: concurrent.futures.Future[object] | None = None

    def take(self, method: str, timeout: float | None) -> object:
        """The next item; StopIteration at the end, TimeoutError after ``timeout``."""
        loop = self._client.loop
        if threading.get_ident() == self._client._thread.ident:
            raise UsageError(f"{method} cannot run on the client's loop thread")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"no {self._what} within {timeout:g} s")
        try:
            if self._waiting is None:
                if loop.is_closed():
                    raise StopIteration
                next_item = self._next_item()
                try:
                    self._waiting = asyncio.run_coroutine_threadsafe(next_item, loop)
                except RuntimeError:  # the loop closed meanwhile
                    next_item.close()
                    raise StopIteration from None
            waiting = self._waiting
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = waiting.result(remaining)
            except concurrent.futures.CancelledError:  # the client's loop ended
                self._waiting = None
                raise StopIteration from None
            except BaseException as exc:
                if waiting.done():
                    self._waiting = None  # NotRecovered, or another error of the get itself
                    raise
                # Nothing in time, or an interrupt: the get goes on, and the next call takes
                # its result, so that nothing is lost.
                if isinstance(exc, TimeoutError):
                    raise TimeoutError(f"no {self._what} within {timeout:g} s") from None
                raise
            self._waiting = None
        finally:
            self._lock.release()
        if item is _END:
            raise StopIteration
        return item


# --- coroutines run on the loop thread ------------------------------------------------------------


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The body of the loop thread: run until stopped, then clean up and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _open(url: str, options: dict[str, Any]) -> Client:
    return await async_connect(url, **options)


async def _within(awaitable: Coroutine[Any, Any, T], seconds: float | None) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise TimeoutError(f"nothing received within {seconds:g} s") from None


async def _subscribe(
    client: Client,
    pattern: str,
    callback: Callable[[Message], Coroutine[Any, Any, None]] | None,
    max_messages: int | None,
    request_timeout: float | None,
    join_leave: bool,
    on_presence: Callable[[PresenceEvent], Coroutine[Any, Any, None]] | None,
) -> Subscription:
    return await client.subscribe(
        pattern,
        callback=callback,
        max_messages=max_messages,
        timeout=request_timeout,
        join_leave=join_leave,
        on_presence=on_presence,
    )


async def _next(subscription: Subscription) -> Message | object:
    """The next message, or _END (StopAsyncIteration does not cross threads well)."""
    try:
        return await subscription.get()
    except StopAsyncIteration:
        return _END


async def _next_event(subscription: Subscription) -> PresenceEvent | object:
    """The next presence event, or _END."""
    try:
        return await subscription.presence_event()
    except StopAsyncIteration:
        return _END


async def _pending(subscription: Subscription) -> int:
    return subscription.pending()


async def _pending_presence(subscription: Subscription) -> int:
    return subscription.pending_presence()
