"""asyncio glue shared by both sides: recv/send/ping/close over the sans-I/O :class:`Connection`.

This is an ``asyncio.Protocol`` rather than a pair of streams: bytes go from ``data_received``
straight into the parser and frames go straight to ``transport.write``, with no intermediate
stream buffers or reader task. Flow control uses asyncio's own signals:

- incoming: at most ``max_queue`` messages wait for ``recv()``; beyond that the transport stops
  reading, so TCP pushes back on the peer;
- outgoing: ``write_limit`` is the transport's high-water mark; ``send()`` waits while it is
  exceeded (``pause_writing``/``resume_writing``).

Every wait that depends on the peer is bounded: ``close_timeout`` bounds the closing handshake
(the transport is aborted after it) and ``ping_timeout`` bounds how long a keepalive ping waits.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, ClassVar, cast

from hub.exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK
from hub.protocol.connection import (
    OPEN,
    SERVER,
    Connection,
    Message,
    Pong,
    PreparedMessage,
    Side,
    State,
    protocol_logger,
)
from hub.protocol.http11 import Headers

__all__ = ["Data", "LoggerLike", "WebSocketCommonProtocol"]

Data = str | bytes
LoggerLike = logging.Logger | logging.LoggerAdapter[logging.Logger]


class _TurnWriter:
    """Writes, at the end of an event-loop turn, what each connection coalesced during it.

    One per event loop and one callback per turn for all connections: a fan-out that queues a
    frame for 1,000 connections schedules one callback, not 1,000.
    """

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TurnWriter]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _TurnWriter:
        writer = cls._by_loop.get(loop)
        if writer is None:
            writer = cls._by_loop[loop] = cls(loop)
        return writer

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: list[WebSocketCommonProtocol] = []

    def add(self, protocol: WebSocketCommonProtocol) -> None:
        """Call ``protocol._write_pending()`` at the end of this turn (once per registration)."""
        if not self._waiting:
            self.loop.call_soon(self._write_all)
        self._waiting.append(protocol)

    def _write_all(self) -> None:
        waiting, self._waiting = self._waiting, []
        for protocol in waiting:
            try:
                protocol._write_pending()
            except Exception:  # one broken transport must not keep the others' bytes back
                protocol.logger.exception("writing to the transport failed")


class WebSocketCommonProtocol(asyncio.Protocol):
    """An open WebSocket connection, as handlers (server) and ``connect()`` (client) see it.

    Read with :meth:`recv` or ``async for message in websocket``; write with :meth:`send`; end with
    :meth:`close`. Every method raises :class:`~hub.exceptions.ConnectionClosed` once the
    connection is closed.
    """

    side: Side = SERVER

    def __init__(
        self,
        *,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float = 10,
        max_size: int | None = 2**20,
        max_queue: int = 32,
        write_limit: int = 2**16,
        logger: LoggerLike | None = None,
    ) -> None:
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self.max_queue = max_queue
        self.write_limit = write_limit
        self.logger: LoggerLike = logger or protocol_logger

        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        #: The sans-I/O connection; None until the opening handshake completes.
        self.core: Connection | None = None
        #: Request target and headers of the handshake (both sides), response headers, subprotocol.
        self.path: str = "/"
        self.request_headers = Headers()
        self.response_headers = Headers()
        self.subprotocol: str | None = None
        #: Round-trip time of the last ping that got its pong, in seconds.
        self.latency: float = 0.0

        self._messages: collections.deque[Data] = collections.deque()
        self._recv_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._pending_writes: list[bytes] = []
        self._turn_writer = _TurnWriter.of(self.loop)
        self._pending_size = 0
        self._write_scheduled = False
        self._fragmented_send: asyncio.Future[None] | None = None
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._ping_deadline: asyncio.TimerHandle | None = None
        self._close_deadline: asyncio.TimerHandle | None = None
        self._lost = self.loop.create_future()
        self._lost_exception: BaseException | None = None

    # --- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        if self.core is None:
            return State.CLOSED if self._lost.done() else State.CONNECTING
        return self.core.state

    @property
    def open(self) -> bool:
        """True while messages can be sent: the handshake is done and no close frame was sent."""
        return self.core is not None and self.core.state is OPEN and not self._lost.done()

    @property
    def closed(self) -> bool:
        """True once the TCP connection is closed."""
        return self._lost.done()

    @property
    def close_code(self) -> int | None:
        """The peer's close code once closed (1006 if no close frame arrived), else None."""
        if not self._lost.done():
            return None
        rcvd = self.core.close_rcvd if self.core is not None else None
        return 1006 if rcvd is None else rcvd.code

    @property
    def close_reason(self) -> str | None:
        if not self._lost.done():
            return None
        rcvd = self.core.close_rcvd if self.core is not None else None
        return "" if rcvd is None else rcvd.reason

    @property
    def remote_address(self) -> Any:
        return None if self.transport is None else self.transport.get_extra_info("peername")

    @property
    def local_address(self) -> Any:
        return None if self.transport is None else self.transport.get_extra_info("sockname")

    # --- receiving --------------------------------------------------------------------------------

    async def recv(self) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Raises ConnectionClosedOK after a normal close, ConnectionClosedError otherwise, and
        ConcurrencyError if another task is already waiting in recv().
        """
        if self._recv_waiter is not None:
            raise ConcurrencyError("recv() is already waiting in another task")
        messages = self._messages
        while not messages:
            if self._lost.done():
                raise self._closed_error()
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._recv_waiter = waiter
            try:
                await waiter
            finally:
                self._recv_waiter = None
        message = messages.popleft()
        if self._reading_paused and len(messages) <= self.max_queue // 4:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return message

    async def __aiter__(self) -> AsyncIterator[Data]:
        """Yield messages until the connection closes; a normal close ends the loop quietly."""
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    # --- sending ----------------------------------------------------------------------------------

    async def send(
        self,
        message: Data
        | bytearray
        | memoryview
        | PreparedMessage
        | Iterable[Data]
        | AsyncIterable[Data],
    ) -> None:
        """Send a text (``str``) or binary (bytes-like) message, a :class:`PreparedMessage`
        (serialized once for many connections), or an (async) iterable of fragments of one
        type, sent as one fragmented message (RFC 6455 section 5.4).

        Waits while the outgoing buffer is above ``write_limit``.
        """
        while self._fragmented_send is not None:
            # Section 5.4: fragments of one message must not interleave with another message.
            await asyncio.shield(self._fragmented_send)
        core = await self._open_core()
        if isinstance(message, str):
            core.send_text(message)
        elif isinstance(message, bytes | bytearray | memoryview):
            core.send_binary(message)
        elif isinstance(message, PreparedMessage):
            core.send_prepared(message)
        elif isinstance(message, Mapping):
            raise TypeError("send() takes str or bytes, not a mapping; encode it first")
        elif isinstance(message, AsyncIterable):
            await self._send_fragments(core, aiter(message))
            return
        elif isinstance(message, Iterable):
            await self._send_fragments(core, _as_async_iterator(message))
            return
        else:
            raise TypeError(f"send() takes str, bytes or an iterable of them, not {type(message)}")
        self._flush()
        if self._writing_paused:
            await self._drain()

    def send_prepared_nowait(self, message: PreparedMessage) -> bool:
        """Queue a prepared message without waiting, if the connection can take it now.

        False (and nothing sent) while the outgoing buffer is above ``write_limit``, a
        fragmented message is being sent, or the connection is not open: the caller queues the
        message and sends it later with :meth:`send`. This is the fan-out's fast path:
        no task switch and no future per delivery.
        """
        core = self.core
        if (
            core is None
            or core.state is not OPEN
            or self._writing_paused
            or self._fragmented_send is not None
            or self._lost.done()
        ):
            return False
        # The core has nothing queued (every call into it is followed by _flush), so this frame
        # may join the pending writes directly: one list append per delivery, and the write
        # waits for the end of the loop turn, whatever else this turn queues for the peer.
        frame = core.prepared_frame(message)
        self._pending_writes.append(frame)
        self._pending_size += len(frame)
        # Unlike _flush, the first frame waits for the end of the turn too, and only the
        # pending bytes count against write_limit: a subscriber that lags (a transport buffer
        # not empty) keeps one write per turn instead of one per frame, and this method stops
        # taking frames once the transport pauses writing. (Counting the transport's buffer
        # here cost 1 KiB fan-out 3.4 -> 5.3-6.2 us of CPU per delivery, benchmarks/fanout.py.)
        if not self._write_scheduled:
            self._write_scheduled = True
            self._turn_writer.add(self)
        elif self._pending_size >= self.write_limit:
            self._write_now()  # let the transport's flow control see it now
        return True

    async def _send_fragments(self, core: Connection, fragments: AsyncIterator[Data]) -> None:
        try:
            previous = await anext(fragments)
        except StopAsyncIteration:
            return
        kind = type(previous)
        if kind not in (str, bytes):
            raise TypeError("fragments must be str or bytes")
        self._fragmented_send = self.loop.create_future()
        first = True  # True until the first fragment is on its way
        try:
            async for fragment in fragments:
                if type(fragment) is not kind:
                    raise TypeError("all fragments of a message must have the same type")
                self._send_fragment(core, previous, first=first, fin=False)
                first = False
                previous = fragment
                if self._writing_paused:
                    await self._drain()
                if core.state is not OPEN:
                    raise self._closed_error()
            self._send_fragment(core, previous, first=first, fin=True)
        except BaseException:
            # A half-sent message cannot be completed or withdrawn: fail the connection.
            if not first and core.state is OPEN:
                core.fail(1011, "error while sending a fragmented message")
                self._flush()
            raise
        finally:
            self._fragmented_send.set_result(None)
            self._fragmented_send = None
        if self._writing_paused:
            await self._drain()

    def _send_fragment(self, core: Connection, data: Data, *, first: bool, fin: bool) -> None:
        payload = data.encode() if isinstance(data, str) else data
        if not first:
            core.send_continuation(payload, fin=fin)
        elif isinstance(data, str):
            core.send_text(data, fin=fin)
        else:
            core.send_binary(payload, fin=fin)
        self._flush()

    async def ping(self, data: Data | None = None) -> asyncio.Future[float]:
        """Send a ping; return a future that resolves, with the round-trip time, on its pong.

        ``data`` defaults to 4 random bytes. Pings with the same pending payload are refused.
        """
        core = await self._open_core()
        if data is None:
            payload = os.urandom(4)
            while payload in self._pings:
                payload = os.urandom(4)
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
            if payload in self._pings:
                raise ConcurrencyError("a ping with the same data is already waiting for its pong")
        core.send_ping(payload)
        waiter: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (waiter, self.loop.time())
        self._flush()
        return waiter

    async def pong(self, data: Data = b"") -> None:
        """Send an unsolicited pong (RFC 6455 section 5.5.3: a one-way heartbeat)."""
        core = await self._open_core()
        core.send_pong(data.encode() if isinstance(data, str) else bytes(data))
        self._flush()

    # --- closing ----------------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Run the closing handshake (RFC 6455 section 7) and wait until TCP is closed.

        Returns within ``close_timeout`` (plus scheduling) whatever the peer does; a no-op on a
        connection that is already closing or closed.
        """
        core = self.core
        if core is not None and core.state is OPEN and not self._lost.done():
            core.send_close(code, reason)
            self._flush()
        elif core is None and self.transport is not None:
            self.transport.close()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        await asyncio.shield(self._lost)

    # --- asyncio.Protocol callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self.write_limit)

    def data_received(self, data: bytes) -> None:
        core = self.core
        if core is None:
            self.handshake_data_received(data)
            return
        core.receive_data(data)
        self._process_events()

    def eof_received(self) -> bool | None:
        # Returning False makes asyncio close the transport; connection_lost follows.
        return False

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_drain_waiters()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost_exception = exc
        if self.core is not None:
            self.core.receive_eof()
        for timer in (self._keepalive_timer, self._ping_deadline, self._close_deadline):
            if timer is not None:
                timer.cancel()
        if not self._lost.done():
            self._lost.set_result(None)
        self._wake_recv()
        self._wake_drain_waiters()
        self._abort_pings()
        self.connection_closed()

    # --- hooks for the two sides ------------------------------------------------------------------

    def handshake_data_received(self, data: bytes) -> None:
        """Bytes received before the handshake completed; each side parses its HTTP message."""
        raise NotImplementedError

    def connection_closed(self) -> None:
        """Called once the TCP connection is closed; the server side unregisters itself here."""

    def connection_opened(self, core: Connection, early_data: bytes) -> None:
        """Switch to WebSocket framing once the handshake succeeded; feed bytes already read."""
        self.core = core
        if early_data:
            core.receive_data(early_data)
            self._process_events()
        self._schedule_keepalive()

    # --- internals --------------------------------------------------------------------------------

    async def _open_core(self) -> Connection:
        """The core if messages can be sent now; otherwise wait for the close and raise."""
        core = self.core
        if core is None:
            raise ConcurrencyError("the opening handshake has not completed")
        if core.state is not OPEN or self._lost.done():
            await self.wait_closed()
            raise self._closed_error()
        return core

    def _process_events(self) -> None:
        core = self.core
        assert core is not None
        queued = False
        messages = self._messages
        for event in core.events_received():
            if type(event) is Message:
                if len(messages) >= self.max_queue and core.close_rcvd_then_sent is False:
                    continue  # we closed first and nobody reads: see _closing_started
                messages.append(event.data)
                queued = True
            elif type(event) is Pong:
                self._pong_received(event.data)
        if queued:
            self._wake_recv()
            if len(messages) >= self.max_queue and not self._reading_paused and core.state is OPEN:
                self._reading_paused = True
                assert self.transport is not None
                self.transport.pause_reading()
        self._flush()

    def _flush(self) -> None:
        """Queue what the core produced for writing; ``b""`` means close TCP (server first).

        The first frame of an event-loop turn is written at once, so that the peer can start on
        it; the frames that follow in the same turn are coalesced into one ``transport.write`` at
        the end of the turn: a burst of sends costs two syscalls instead of one each. The queue is
        written early when it reaches ``write_limit``, so a sender that never yields still meets
        flow control.
        """
        core = self.core
        assert core is not None
        for data in core.data_to_send():
            if data:
                self._pending_writes.append(data)
                self._pending_size += len(data)
            else:
                self._write_now()
                assert self.transport is not None
                self.transport.close()
        if self._pending_writes:
            assert self.transport is not None
            if not self._write_scheduled:
                self._write_now()
                self._write_scheduled = True
                self._turn_writer.add(self)
            elif self._pending_size + self.transport.get_write_buffer_size() >= self.write_limit:
                self._write_now()  # over the limit: let the transport pause us now
        if core.state is not OPEN and self._close_deadline is None and not self._lost.done():
            self._closing_started()

    def _closing_started(self) -> None:
        """Bound the closing handshake by close_timeout, and read until the peer's close frame.

        Reading may be paused because the application stopped calling recv(); the peer's close
        frame (section 7.1.3) must still get through, so reading resumes. If we sent the
        first close frame, data messages beyond max_queue are dropped from then on
        (_process_events) to keep memory bounded. If the peer did, its messages before its
        close frame all stay: that read is the last, so they are bounded by it.
        """
        self._close_deadline = self.loop.call_later(self.close_timeout, self._close_timed_out)
        if self._reading_paused:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def _write_pending(self) -> None:
        """End of a loop turn: write what was coalesced; the next frame opens a new turn."""
        self._write_scheduled = False
        self._write_now()

    def _write_now(self) -> None:
        pending = self._pending_writes
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    def _close_timed_out(self) -> None:
        self.logger.info("closing handshake timed out after %s s; aborting", self.close_timeout)
        if self.transport is not None:
            self.transport.abort()

    def _closed_error(self) -> ConnectionClosed:
        core = self.core
        if core is None:
            error = ConnectionClosed.for_frames(None, None)
        else:
            error = ConnectionClosed.for_frames(
                core.close_rcvd, core.close_sent, core.close_rcvd_then_sent
            )
        error.__cause__ = (core.failure if core is not None else None) or self._lost_exception
        return error

    def _wake_recv(self) -> None:
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drain(self) -> None:
        while self._writing_paused and not self._lost.done():
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _pong_received(self, data: bytes) -> None:
        if data not in self._pings:
            return  # An unsolicited pong (section 5.5.3): nothing to resolve.
        now = self.loop.time()
        # A pong answers its ping and every earlier one (section 5.5.3: only the latest ping
        # needs an answer), so resolve pings in the order they were sent up to this one.
        while self._pings:
            payload, (waiter, sent_at) = next(iter(self._pings.items()))
            del self._pings[payload]
            if not waiter.done():
                waiter.set_result(now - sent_at)
            if payload == data:
                self.latency = now - sent_at
                break

    def _abort_pings(self) -> None:
        error = self._closed_error()
        for waiter, _ in self._pings.values():
            if not waiter.done():
                waiter.set_exception(error)
                # Mark it retrieved: nobody is obliged to await a ping's future.
                waiter.exception()
        self._pings.clear()

    # --- keepalive (timers, not a task per connection: idle connections stay small) --------------

    def _schedule_keepalive(self) -> None:
        if self.ping_interval is not None and not self._lost.done():
            self._keepalive_timer = self.loop.call_later(self.ping_interval, self._keepalive_ping)

    def _keepalive_ping(self) -> None:
        core = self.core
        if core is None or core.state is not OPEN or self._lost.done():
            return
        payload = os.urandom(4)
        waiter: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (waiter, self.loop.time())
        core.send_ping(payload)
        self._flush()
        if self.ping_timeout is not None:
            self._ping_deadline = self.loop.call_later(self.ping_timeout, self._keepalive_timed_out)
        waiter.add_done_callback(self._keepalive_pong)

    def _keepalive_pong(self, waiter: asyncio.Future[float]) -> None:
        if self._ping_deadline is not None:
            self._ping_deadline.cancel()
            self._ping_deadline = None
        if not waiter.cancelled() and waiter.exception() is None:
            self._schedule_keepalive()

    def _keepalive_timed_out(self) -> None:
        core = self.core
        if core is None or core.state is not OPEN:
            return
        self.logger.info(
            "no pong within ping_timeout (%s s); failing the connection", self.ping_timeout
        )
        core.fail(1011, "keepalive ping timeout")
        self._flush()


async def _as_async_iterator(items: Iterable[Data]) -> AsyncIterator[Data]:
    for item in items:
        yield item
