"""The hub client: one WebSocket connection to a hub, kept open across network failures.

Theory of operation
-------------------
One **reader task** reads every frame. A reply (``ok``/``error``) resolves the request that
waits for its ``id``; a ``msg`` goes to the buffer of the subscription named by its ``sub``,
and a presence event (``join``/``leave``) to that subscription's buffer of events if it asked
for them (``join_leave``); anything else (and replies to requests sent with
:meth:`Client.send`, frames for subscriptions the client does not hold) goes to a bounded
queue that :meth:`Client.recv` reads. A subscription is registered before its ``sub`` is sent and
its ``ok`` is applied by the reader itself, before the next frame: the replay that follows a
recovering ``ok`` can never overtake it.

When the connection ends, requests waiting for a reply fail with
:class:`~hub.exceptions.Disconnected`. Unless the close code says that the client is at fault
(:mod:`hub_client.reconnect`), the client reconnects with backoff and subscribes every
subscription again with ``recover`` from its last position; a subscription that the hub could
not recover gets :class:`~hub.exceptions.NotRecovered` in its iterator. Requests made while
disconnected wait for the connection (up to their timeout), or fail at once with
``when_disconnected="fail"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from hub.exceptions import (
    ConnectionClosed,
    Disconnected,
    HubError,
    RequestTimeout,
    UsageError,
    error_for_code,
)
from hub.protocol import WebSocketClientProtocol
from hub.protocol import connect as ws_connect
from hub.wire.codecs import CODECS, Codec
from hub_client.reconnect import Backoff, reconnects
from hub_client.subscription import (
    Callback,
    Message,
    PresenceCallback,
    PresenceEvent,
    PresenceMember,
    Subscription,
)

__all__ = ["Client", "ConnectionState", "HistoryPage", "connect"]

logger = logging.getLogger("hub_client")

#: A token, or a function that returns a fresh one (called at every (re)connection).
TokenSource = str | Callable[[], str | Awaitable[str]] | None

_T = TypeVar("_T")

#: Frames that nobody handled, waiting for recv(); past this many the oldest is dropped.
RAW_QUEUE = 1000

#: The first id of the SDK's own requests (ids go up to 2**53, PROTOCOL.md).
SDK_IDS = 2**52

#: The client accepts messages up to this size by default: a msg is a little larger than the
#: pub that caused it, and a hub accepts pubs up to 1 MiB by default.
MAX_SIZE = 4 * 2**20


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class HistoryPage(BaseModel):
    """A ``history`` reply: the topic's position and the messages, in the order asked."""

    epoch: str
    offset: int
    messages: list[dict[str, Any]]


class Client:
    """Use :func:`connect` to make one. See the module docstring for how it behaves."""

    def __init__(
        self,
        url: str,
        *,
        codec: str = "msgpack",
        token: TokenSource = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        request_timeout: float = 10.0,
        when_disconnected: str = "wait",
        max_messages: int = 1000,
        on_state: Callable[[ConnectionState], None] | None = None,
        **options: Any,
    ) -> None:
        subprotocol = f"hub.v1.{codec}"
        if subprotocol not in CODECS:
            raise UsageError(f"codec must be 'msgpack' or 'json', not {codec!r}")
        if when_disconnected not in ("wait", "fail"):
            raise UsageError("when_disconnected must be 'wait' or 'fail'")
        self.url = url
        self.codec: Codec = CODECS[subprotocol]
        self.subprotocol = subprotocol
        self.token = token
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.request_timeout = request_timeout
        self.when_disconnected = when_disconnected
        self.max_messages = max_messages
        self.logger = logger
        if "subprotocols" in options:
            raise UsageError("the codec chooses the subprotocol: pass codec=, not subprotocols=")
        options.setdefault("max_size", MAX_SIZE)
        self.extra_headers = list(_header_items(options.pop("extra_headers", None)))
        self.options = options
        self.state = ConnectionState.CONNECTING
        self.welcome: dict[str, Any] = {}
        self.close_code: int | None = None  # of the last connection that ended
        self._on_state = on_state
        self._state_queues: list[asyncio.Queue[ConnectionState]] = []
        self._ws: WebSocketClientProtocol | None = None
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()  # set once the client is closed for good
        # The SDK's own request ids start at 2**52, so that ids chosen by an application for
        # requests it sends with send() (small ones, typically) never collide with them.
        self._ids = itertools.count(SDK_IDS)
        #: Counts connections; a subscription confirmed on an earlier one is resubscribed.
        self._generation = 0
        #: id -> (future of the reply, hook the reader runs on an ok before the next frame)
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], Callable[..., None]]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._raw: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.dropped_raw = 0
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    # --- connection ---------------------------------------------------------------------------

    async def _start(self) -> None:
        """Connect for the first time (errors propagate), then keep the connection."""
        self._ws = await self._open()
        self._set_state(ConnectionState.CONNECTED)
        self._runner = asyncio.get_running_loop().create_task(self._run(self._ws))

    async def _open(self) -> WebSocketClientProtocol:
        headers = list(self.extra_headers)
        token = await self._token()
        if token:
            headers.append(("Authorization", f"Bearer {token}"))
        ws = await ws_connect(
            self.url, subprotocols=[self.subprotocol], extra_headers=headers, **self.options
        )
        try:
            async with asyncio.timeout(self.request_timeout):
                welcome = self.codec.decode(await ws.recv())
            if not isinstance(welcome, dict) or welcome.get("op") != "welcome":
                raise Disconnected(f"the hub's first frame is not a welcome: {welcome!r:.200}")
        except BaseException:
            if ws.transport is not None:
                ws.transport.abort()
            raise
        self.welcome = welcome
        self._generation += 1
        self._connected.set()
        return ws

    async def _run(self, ws: WebSocketClientProtocol) -> None:
        """Read until the connection ends; reconnect while the close code allows it."""
        while True:
            await self._read(ws)
            self._connected.clear()
            self.close_code = ws.close_code
            self._fail_pending(Disconnected(f"the connection closed ({ws.close_code})"))
            if self._closing or not self.reconnect:
                break
            if not reconnects(ws.close_code, has_new_token=callable(self.token)):
                self.logger.warning("connection closed with %s: not reconnecting", ws.close_code)
                break
            self._set_state(ConnectionState.RECONNECTING)
            ws = self._ws = await self._reopen(ws.close_code)
            if self._closing:  # close() came while the welcome was on its way
                await ws.close()
                break
            self._set_state(ConnectionState.CONNECTED)
            resubscribe = [s for s in self._subscriptions.values() if s.confirmed_on]
            asyncio.get_running_loop().create_task(self._resubscribe(resubscribe))
        self._finish()

    def _finish(self) -> None:
        """Closed for good: wake whatever waits for a connection, end the iterators."""
        self._connected.clear()
        self._closed.set()
        self._fail_pending(Disconnected("the client is closed"))
        self._set_state(ConnectionState.CLOSED)
        for subscription in list(self._subscriptions.values()):
            subscription.end()

    async def _token(self) -> str | None:
        token = self.token() if callable(self.token) else self.token
        if inspect.isawaitable(token):
            token = await token
        return token

    async def _reopen(self, close_code: int | None) -> WebSocketClientProtocol:
        """A new connection, after as many attempts as it takes (close() cancels it)."""
        for attempt in itertools.count():
            await asyncio.sleep(self.backoff.delay(attempt, close_code))
            try:
                return await self._open()
            except (OSError, HubError, TimeoutError) as exc:
                self.logger.info("reconnecting to %s failed: %s", self.url, exc)
        raise AssertionError("unreachable")

    async def _resubscribe(self, subscriptions: list[Subscription]) -> None:
        """Subscribe again what was subscribed before the connection was lost, recovering
        from each one's last position (subscriptions made meanwhile subscribe themselves)."""
        results = await asyncio.gather(
            *(self._sub(s, recover=True) for s in subscriptions if s.active),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, Disconnected):
                self.logger.error("resubscribing failed: %s", result)

    async def _read(self, ws: WebSocketClientProtocol) -> None:
        try:
            async for frame in ws:
                try:
                    message = self.codec.decode(frame)
                except HubError as exc:
                    self.logger.error("dropped a frame the hub should not send: %s", exc)
                    continue
                if not isinstance(message, dict):
                    self.logger.error("dropped a frame that is not a map: %.200r", message)
                    continue
                try:
                    await self._dispatch(message)
                except Exception:  # a bug must not kill the reader: log it, read on
                    self.logger.exception("failed to handle a frame: %.200r", message)
        except ConnectionClosed:
            pass

    async def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "msg":
            subscription = self._subscriptions.get(str(message.get("sub")))
            if subscription is not None and subscription.active:
                msg = _message(message)
                if msg is None:
                    self.logger.error("dropped a malformed msg: %.200r", message)
                    return
                await subscription.room()  # the application is behind: stop reading
                subscription.arrived()
                subscription.accept(msg)
                return
        elif op == "error" and "id" not in message and "offset" in message:
            # A publication this connection's codec cannot carry (binary data on JSON, say):
            # the subscription's iterator says so, and goes on after it.
            subscription = self._subscriptions.get(str(message.get("sub")))
            if subscription is not None and subscription.active:
                await subscription.room()
                subscription.arrived()
                subscription.undeliverable(message)
                return
        elif op in ("join", "leave"):
            subscription = self._subscriptions.get(str(message.get("sub")))
            if subscription is not None and subscription.active and subscription.join_leave:
                event = _presence_event(message)
                if event is None:
                    self.logger.error("dropped a malformed presence event: %.200r", message)
                else:
                    subscription.add_presence(event)
                return
        elif op in ("ok", "error"):
            id_ = message.get("id")
            pending = self._pending.pop(id_, None) if type(id_) is int else None
            if pending is not None:
                future, on_ok = pending
                if op == "ok":
                    on_ok(message)
                if not future.done():
                    future.set_result(message)
                return
        self._put_raw(message)

    def _put_raw(self, message: dict[str, Any]) -> None:
        if self._raw.qsize() >= RAW_QUEUE:
            self._raw.get_nowait()
            self.dropped_raw += 1
        self._raw.put_nowait(message)

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(error)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self.state:
            return
        self.state = state
        for queue in self._state_queues:
            queue.put_nowait(state)
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                self.logger.exception("the on_state callback failed")

    def states(self) -> AsyncIterator[ConnectionState]:
        """Every change of :attr:`state` from this call on, until the client is closed."""
        queue: asyncio.Queue[ConnectionState] = asyncio.Queue()
        self._state_queues.append(queue)
        return self._states(queue)

    async def _states(
        self, queue: asyncio.Queue[ConnectionState]
    ) -> AsyncIterator[ConnectionState]:
        try:
            while self.state is not ConnectionState.CLOSED or not queue.empty():
                state = await queue.get()
                yield state
                if state is ConnectionState.CLOSED:
                    return
        finally:
            self._state_queues.remove(queue)

    async def close(self) -> None:
        """Close the connection for good; iterators of subscriptions end after what they
        buffered, and requests waiting for a reply or a connection raise Disconnected."""
        self._closing = True
        for subscription in list(self._subscriptions.values()):
            subscription.end()  # also lets a reader waiting for room go on
        runner = self._runner
        if self.state is ConnectionState.CONNECTED and self._ws is not None:
            await self._ws.close()
        if runner is not None and not runner.done():
            runner.cancel()  # reconnecting: stop now, not after the backoff or the handshake
            await asyncio.wait([runner])
        self._finish()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- the raw layer ------------------------------------------------------------------------

    async def _connection(self, timeout: float) -> WebSocketClientProtocol:
        """The open connection, waiting for it unless ``when_disconnected`` is "fail"."""
        if self.state is ConnectionState.CLOSED or self._closing:
            raise Disconnected("the client is closed")
        if not self._connected.is_set():
            if self.when_disconnected == "fail":
                raise Disconnected(f"not connected to the hub ({self.state.value})")
            await self._unless_closed(self._connected.wait(), timeout)
            if self._closed.is_set():
                raise Disconnected("the client is closed")
            if not self._connected.is_set():
                raise RequestTimeout(f"not connected to the hub within {timeout:g} s")
        assert self._ws is not None
        return self._ws

    async def _unless_closed(
        self, waiting: Awaitable[_T], timeout: float | None = None
    ) -> asyncio.Future[_T]:
        """Wait for ``waiting`` until it is done, the client is closed or ``timeout`` passes;
        return its future, cancelled unless it is done."""
        future = asyncio.ensure_future(waiting)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait([future, closed], timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            closed.cancel()
            if not future.done():
                future.cancel()
        return future

    async def send(self, message: dict[str, Any] | BaseModel) -> None:
        """Send one wire-protocol request as it is (a dict, or a model of hub.wire.messages);
        choose ids below 2**52 (the SDK's own requests use those above)."""
        if isinstance(message, BaseModel):
            message = message.model_dump(exclude_unset=True)
        ws = await self._connection(self.request_timeout)
        try:
            await ws.send(self.codec.encode(message))
        except ConnectionClosed as exc:
            raise Disconnected(f"the connection closed: {exc}") from exc

    async def recv(self) -> dict[str, Any]:
        """The next frame that the client did not handle itself (replies to :meth:`send`);
        Disconnected once the client is closed and none is left."""
        if self._raw.empty() and not self._closed.is_set():
            getting = await self._unless_closed(self._raw.get())
            if getting.done() and not getting.cancelled():
                return getting.result()
        if self._raw.empty():
            raise Disconnected("the client is closed")
        return self._raw.get_nowait()

    async def request(
        self,
        op: str,
        *,
        timeout: float | None = None,
        on_ok: Callable[..., None] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send a request and return its ``ok``; an ``error`` raises the RequestError of its
        code, no reply within ``timeout`` raises RequestTimeout, a lost connection
        Disconnected. ``on_ok`` runs in the reader, before the frames after the reply."""
        timeout = self.request_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ws = await self._connection(timeout)
        id_ = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[id_] = (future, on_ok or _ignore)
        try:
            await ws.send(self.codec.encode({"op": op, "id": id_, **fields}))
            async with asyncio.timeout_at(deadline):
                reply = await future
        except ConnectionClosed as exc:
            raise Disconnected(f"the connection closed: {exc}") from exc
        except TimeoutError:
            raise RequestTimeout(f"no reply to {op} within {timeout:g} s") from None
        finally:
            self._pending.pop(id_, None)
        if reply["op"] == "error":
            raise error_for_code(str(reply.get("code")), str(reply.get("message", "")))
        return reply

    # --- publish, history, presence -----------------------------------------------------------

    async def publish(
        self, topic: str, data: Any, *, wait: bool = True, timeout: float | None = None
    ) -> int | None:
        """Publish and return the publication's offset; with ``wait=False`` send it without
        an id (no reply, nothing returned; errors come back as frames to :meth:`recv`)."""
        if not wait:
            await self.send({"op": "pub", "topic": topic, "data": data})
            return None
        reply = await self.request("pub", timeout=timeout, topic=topic, data=data)
        offset: int = reply["offset"]
        return offset

    async def history(
        self,
        topic: str,
        *,
        since: tuple[str, int] | None = None,
        limit: int | None = None,
        reverse: bool = False,
        timeout: float | None = None,
    ) -> HistoryPage:
        """The topic's retained publications (after ``since`` = (epoch, offset) if given)."""
        fields: dict[str, Any] = {"topic": topic, "reverse": reverse}
        if since is not None:
            fields["since"] = {"epoch": since[0], "offset": since[1]}
        if limit is not None:
            fields["limit"] = limit
        reply = await self.request("history", timeout=timeout, **fields)
        return HistoryPage.model_validate(reply, strict=False)

    async def refresh(self, token: str | None = None, *, timeout: float | None = None) -> Any:
        """Give the connection a new token before its current one expires (the hub closes
        with 4001 at ``exp`` otherwise); without ``token``, one from the ``token`` callable.
        Returns the new expiry (seconds since the Unix epoch); a string ``token`` given here
        is also the one the next reconnect presents."""
        if token is None:
            if not callable(self.token):
                raise UsageError("refresh() needs a token, or connect(token=) a callable")
            token = await self._token()
        elif not callable(self.token):
            self.token = token
        reply = await self.request("refresh", timeout=timeout, token=token)
        return reply.get("expires")

    async def presence(self, topic: str, *, timeout: float | None = None) -> list[PresenceMember]:
        """The clients present on the concrete ``topic`` now (those whose leave is pending in
        the hub's grace period included). Raises Unavailable when the topic has no presence
        (the hub's ``presence_topics``), Forbidden when the token may not read it.

        Presence events are not replayed after a reconnect: a list kept up to date with a
        subscription's events (``join_leave=True``) should be fetched again once the client is
        CONNECTED again (``on_state=`` or :meth:`states`)."""
        reply = await self.request("presence", timeout=timeout, topic=topic)
        clients = reply.get("clients")
        if not isinstance(clients, list):
            self.logger.error("a presence reply without a list of clients: %.200r", reply)
            return []
        members = []
        for entry in clients:
            member = _member(entry)
            if member is None:
                self.logger.error("dropped a malformed member of a presence reply: %.200r", entry)
            else:
                members.append(member)
        return members

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        callback: Callback | None = None,
        max_messages: int | None = None,
        timeout: float | None = None,
        join_leave: bool = False,
        on_presence: PresenceCallback | None = None,
    ) -> _Subscribing:
        """``sub = await client.subscribe("chat.*")`` or ``async with client.subscribe(...) as
        sub:``; with ``callback``, messages go to it instead of the iterator. With
        ``join_leave=True`` the subscription also gets the presence events of its topics
        (:meth:`Subscription.presence_events`), or ``on_presence`` gets them."""
        if on_presence is not None and not join_leave:
            raise UsageError("on_presence needs join_leave=True")
        return _Subscribing(
            self,
            pattern,
            _Options(callback, max_messages or self.max_messages, timeout, join_leave, on_presence),
        )

    async def _subscribe(self, pattern: str, options: _Options) -> Subscription:
        if pattern in self._subscriptions:
            raise UsageError(f"already subscribed to {pattern!r}")
        subscription = Subscription(self, pattern, options.max_messages, options.join_leave)
        self._subscriptions[pattern] = subscription
        try:
            await self._sub(subscription, recover=False, timeout=options.timeout)
        except BaseException:
            if self._subscriptions.get(pattern) is subscription:
                del self._subscriptions[pattern]
            raise
        if options.callback is not None:
            subscription.on_message(options.callback)
        if options.on_presence is not None:
            subscription.on_presence(options.on_presence)
        return subscription

    async def _sub(
        self, subscription: Subscription, *, recover: bool, timeout: float | None = None
    ) -> None:
        fields: dict[str, Any] = {"topic": subscription.pattern}
        if subscription.join_leave:
            fields["join_leave"] = True
        concrete = "*" not in subscription.pattern and ">" not in subscription.pattern
        if recover:
            if concrete and subscription.pattern in subscription.positions:
                epoch, offset = subscription.positions[subscription.pattern]
                fields["recover"] = {"epoch": epoch, "offset": offset}
            elif not concrete and subscription.time is not None:
                topics = {
                    t: {"epoch": e, "offset": o} for t, (e, o) in subscription.positions.items()
                }
                fields["recover"] = {"since": subscription.time, "topics": topics}

        generation = self._generation

        def on_ok(reply: dict[str, Any]) -> None:
            subscription.confirmed_on = generation
            recovering = "recover" in fields
            recovered = recovering and reply.get("recovered") is True
            if recovering and not recovered:
                subscription.not_recovered(subscription.pattern)
            if not concrete:
                # The next since is this ok's time, but only once its replay has arrived: a
                # connection lost before would forget the topics the replay was to bring.
                subscription.advance_time(reply.get("time"), reply.get("replayed") or 0)
            elif not recovered:  # a recovered one advances with the replay that follows
                subscription.positions[subscription.pattern] = (reply["epoch"], reply["offset"])

        await self.request("sub", timeout=timeout, on_ok=on_ok, **fields)

    async def unsubscribe(self, subscription: Subscription) -> None:
        """End a subscription: its iterator stops after what is already buffered."""
        if self._subscriptions.get(subscription.pattern) is not subscription:
            return
        del self._subscriptions[subscription.pattern]
        subscription.end()
        if self._connected.is_set():
            with contextlib.suppress(Disconnected):
                await self.request("unsub", topic=subscription.pattern)


def _ignore(reply: dict[str, Any]) -> None:
    pass


def _message(frame: dict[str, Any]) -> Message | None:
    """A msg frame as a Message, or None if a field is missing or of the wrong type."""
    topic, offset, epoch, sub = (frame.get(k) for k in ("topic", "offset", "epoch", "sub"))
    if not (isinstance(topic, str) and isinstance(epoch, str) and isinstance(sub, str)):
        return None
    if type(offset) is not int or "data" not in frame:
        return None
    return Message(topic, frame["data"], offset, epoch, sub)


def _member(entry: Any) -> PresenceMember | None:
    """A member of a presence reply, or None if it is not ``{client, user, info?}``."""
    if not isinstance(entry, dict):
        return None
    client, user = entry.get("client"), entry.get("user")
    if not isinstance(client, str) or not (user is None or isinstance(user, str)):
        return None
    return PresenceMember(client, user, entry.get("info"))


def _presence_event(frame: dict[str, Any]) -> PresenceEvent | None:
    """A join or leave frame as a PresenceEvent, or None if a field is missing or of the
    wrong type."""
    kind: Literal["join", "leave"] = "join" if frame.get("op") == "join" else "leave"
    topic, sub, replaces = frame.get("topic"), frame.get("sub"), frame.get("replaces")
    member = _member(frame)
    if member is None or not (isinstance(topic, str) and isinstance(sub, str)):
        return None
    if not (replaces is None or isinstance(replaces, str)):
        return None
    return PresenceEvent(kind, topic, sub, member.client, member.user, member.info, replaces)


def _header_items(headers: Any) -> Iterable[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(name), str(value)) for name, value in items]


@dataclass(frozen=True, slots=True)
class _Options:
    """The options of one :meth:`Client.subscribe` call."""

    callback: Callback | None
    max_messages: int
    timeout: float | None
    join_leave: bool
    on_presence: PresenceCallback | None


class _Subscribing:
    """What :meth:`Client.subscribe` returns: await it, or use it with ``async with``."""

    def __init__(self, client: Client, pattern: str, options: _Options) -> None:
        self._call = (client, pattern, options)
        self._subscription: Subscription | None = None

    async def _make(self) -> Subscription:
        client, pattern, options = self._call
        self._subscription = await client._subscribe(pattern, options)
        return self._subscription

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._make().__await__()

    async def __aenter__(self) -> Subscription:
        return await self._make()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._subscription is not None:
            await self._subscription.__aexit__(*exc_info)


class connect:
    """``client = await hub_client.connect(url)`` … ``await client.close()``, or
    ``async with hub_client.connect(url) as client:``. Options: see :class:`Client`; any
    other keyword goes to :func:`hub.protocol.connect` (``ping_interval``, ``open_timeout``,
    ``ssl``, ...)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.client = Client(url, **options)

    async def _connect(self) -> Client:
        await self.client._start()
        return self.client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._connect().__await__()

    async def __aenter__(self) -> Client:
        return await self._connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.close()
