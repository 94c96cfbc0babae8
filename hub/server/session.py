"""One client connection: read requests, answer them, write what the router pushes.

Reading and writing are two loops. The reader validates each frame at the edge and answers
errors with the contract's codes, keeping the connection open; after ``bad_frame_limit`` invalid
frames in a row it closes with 1008. The writer drains the session's bounded outbox into the
WebSocket; when the outbox overflows (a slow consumer) the session closes with 4008 and the
router, which only ever pushes, is never held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from hub.broker.backend import Publication
from hub.broker.outbox import Outbox
from hub.broker.presence import Member
from hub.broker.recovery import Plan, plan_pattern, plan_topic
from hub.broker.router import decode_payload, encode_payload, member_fields
from hub.broker.topics import is_pattern
from hub.exceptions import (
    BadRequest,
    ConnectionClosed,
    Forbidden,
    InsufficientState,
    InternalError,
    InvalidTopic,
    NotSubscribed,
    RateLimited,
    RequestError,
    Unauthorized,
    Unavailable,
    UnknownOp,
)
from hub.protocol.asyncio import WebSocketServerProtocol
from hub.protocol.connection import PreparedMessage
from hub.server.auth import EVERYONE, Identity
from hub.server.limits import AbuseCounter, TokenBucket
from hub.server.publisher import Publisher
from hub.wire.codecs import select_codec
from hub.wire.messages import (
    History,
    PatternRecovery,
    Position,
    Presence,
    Pub,
    Refresh,
    Sub,
    Unsub,
    parse_request,
    request_id,
)

if TYPE_CHECKING:
    from hub.server.app import Hub

__all__ = ["Session"]

logger = logging.getLogger("hub.server")

#: Errors that count towards the "keeps sending garbage" limit (PROTOCOL.md: 1008).
GARBAGE = (BadRequest, UnknownOp, InvalidTopic)

SLOW_CONSUMER = 4008
RATE_LIMITED = 4029

#: Refused publishes count towards closing with 4029 for this long (seconds).
STRIKE_WINDOW = 10.0


def _refuse(message: PreparedMessage) -> bool:
    return False


class Session:
    """A connected client; :meth:`run` returns when the connection is closed."""

    #: The close code of an expired token (PROTOCOL.md).
    UNAUTHORIZED = 4001

    def __init__(
        self, hub: Hub, websocket: WebSocketServerProtocol, identity: Identity = EVERYONE
    ) -> None:
        self.hub = hub
        self.websocket = websocket
        self.identity = identity
        self._expiry: asyncio.TimerHandle | None = None
        self._publishes = TokenBucket(hub.settings.publish_rate, hub.settings.publish_burst)
        self._strikes = AbuseCounter(hub.settings.rate_limit_strikes, STRIKE_WINDOW)
        self.id = secrets.token_hex(8)
        self.codec = select_codec(websocket.subprotocol)
        settings = hub.settings
        self.outbox = Outbox(max_messages=settings.outbox_messages, max_bytes=settings.outbox_bytes)
        self.subscriptions: set[str] = set()
        #: Topics this client is present on (hub.broker.presence).
        self.present: set[str] = set()
        self.publisher = Publisher(hub.router, self._answer_publish, settings.max_pending_publishes)
        self._closing: asyncio.Task[None] | None = None
        # Bound once: hot path.
        self._send_prepared_nowait: Callable[[PreparedMessage], bool] = (
            websocket.send_prepared_nowait
        )

    def __hash__(self) -> int:
        return id(self)

    # --- output -----------------------------------------------------------------------------------

    def push(self, frame: str | bytes | PreparedMessage) -> None:
        """Queue a frame (the router's fan-out calls this); never blocks.

        Fast path: with nothing queued ahead of it and a connection that keeps up, a prepared
        message goes straight to the connection's write buffer. Otherwise it waits in the
        outbox, in order, for the writer task.
        """
        if (
            self.outbox.idle
            and frame.__class__ is PreparedMessage
            and self._send_prepared_nowait(frame)
        ):
            return
        if not self.outbox.push(frame) and self.outbox.overflowed:
            self._close_soon(SLOW_CONSUMER, "slow consumer: outbound queue overflowed")

    def lost(self, reason: str) -> None:
        """Router: publications may be missing; 4010 tells the client to reconnect and recover.
        Nothing published after the gap may reach the client before the close."""
        self._send_prepared_nowait = _refuse
        self.outbox.close()
        self._close_soon(InsufficientState.close_code, reason)

    def reply(self, message: dict[str, Any]) -> None:
        self.push(self.codec.encode(message))

    def _close_soon(self, code: int, reason: str) -> None:
        if self._closing is None:
            logger.info("closing session %s with %d: %s", self.id, code, reason)
            self._closing = asyncio.get_running_loop().create_task(
                self.websocket.close(code, reason)
            )

    async def _write(self) -> None:
        websocket = self.websocket
        while batch := await self.outbox.get_batch():
            for frame in batch:
                await websocket.send(cast(str | bytes | PreparedMessage, frame))

    # --- input ------------------------------------------------------------------------------------

    def _expire_at(self, expires: float | None) -> None:
        """Close with 4001 when the token expires, unless a refresh comes first."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if expires is not None:
            delay = max(0.0, expires - time.time())
            self._expiry = asyncio.get_running_loop().call_later(
                delay, self._close_soon, self.UNAUTHORIZED, "the token has expired"
            )

    async def run(self) -> None:
        self._expire_at(self.identity.expires)
        self.reply({"op": "welcome", "client": self.id, "node": self.hub.node_id, "version": 1})
        writer = asyncio.get_running_loop().create_task(self._write())
        try:
            await self._read()
        except ConnectionClosed:
            pass
        finally:
            self._expire_at(None)
            try:
                await self.publisher.drained()  # publishes already read still happen
            finally:
                self.publisher.cancel()
            self.outbox.close()
            for pattern in list(self.subscriptions):
                self._leave(pattern)
                await self.hub.router.unsubscribe(pattern, self)
            self.subscriptions.clear()
            if self._closing is None:
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            # Frames pushed after the writer stopped (a presence event, a publication in
            # flight) will never be written: a shutdown waiting for them must not wait.
            self.outbox.discard()
            if self._closing is not None:
                await self._closing

    async def _read(self) -> None:
        invalid_in_a_row = 0
        limit = self.hub.settings.bad_frame_limit
        async for frame in self.websocket:
            if self._closing is not None:
                return  # the hub is closing this connection (4001, 4008, 4010, 4029): no more
            decoded: object = None
            try:
                decoded = self.codec.decode(frame)
                request = parse_request(decoded)
                invalid_in_a_row = 0
                await self._handle(request)
            except RequestError as exc:
                await self.publisher.drained()  # replies go out in request order
                self._error(exc, request_id(decoded))
                if isinstance(exc, GARBAGE):
                    invalid_in_a_row += 1
                    if invalid_in_a_row >= limit:
                        # Let the error replies already queued go out before the close frame.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1):
                                await self.outbox.drained()
                        await self.websocket.close(1008, "too many invalid requests")
                        return
            except Exception:
                logger.exception("session %s: request failed", self.id)
                self._error(InternalError("internal error"), request_id(decoded))

    def _error(self, error: RequestError, id_: int | None) -> None:
        message: dict[str, Any] = {"op": "error", "code": error.code, "message": str(error)}
        if id_ is not None:
            message["id"] = id_
        self.reply(message)

    def _ok(self, id_: int | None, **fields: Any) -> None:
        # PROTOCOL.md: a request without id gets no ok reply.
        if id_ is not None:
            self.reply({"op": "ok", "id": id_, **fields})

    def _answer_publish(self, id_: int | None, result: Publication | RequestError) -> None:
        if isinstance(result, Publication):
            self._ok(id_, offset=result.offset, epoch=result.epoch)
        else:
            self._error(result, id_)

    def _rate_limit(self) -> None:
        """rate_limited past the connection's publish rate; 4029 when it keeps trying."""
        now = time.monotonic()
        if self._publishes.take(now):
            return
        if self._strikes.record(now):
            self._close_soon(RATE_LIMITED, "rate limited: publishes far over the limit")
        settings = self.hub.settings
        raise RateLimited(
            f"at most {settings.publish_rate:g} publishes per second"
            f" (bursts of {settings.publish_burst})"
        )

    def _check(self, allowed: bool, what: str) -> None:
        if not allowed:
            self.hub.denied += 1
            raise Forbidden(f"not allowed to {what}")

    async def _handle(self, request: Sub | Unsub | Pub | History | Presence | Refresh) -> None:
        permissions = self.identity.permissions
        if isinstance(request, Pub):
            self._check(permissions.may_publish(request.topic), f"publish on {request.topic}")
            self._rate_limit()
            # Not awaited: the publisher answers it, in order, while the next frames are read.
            await self.publisher.put(request.id, request.topic, encode_payload(request.data))
            return
        # Anything else waits until the publishes before it are answered: requests take
        # effect in the order they were sent.
        await self.publisher.drained()
        router = self.hub.router
        if isinstance(request, Sub):
            self._check(permissions.may_subscribe(request.topic), f"subscribe to {request.topic}")
            await self._subscribe(request)
        elif isinstance(request, Unsub):
            if request.topic not in self.subscriptions:
                raise NotSubscribed(f"not subscribed to {request.topic!r}")
            self.subscriptions.discard(request.topic)
            self._leave(request.topic)
            await router.unsubscribe(request.topic, self)
            self._ok(request.id)
        elif isinstance(request, History):
            self._check(permissions.may_read(request.topic), f"read {request.topic}")
            await self._history(request)
        elif isinstance(request, Refresh):
            self._refresh(request)
        else:
            self._check(permissions.may_read(request.topic), f"read {request.topic}")
            await self._presence(request)

    @property
    def member(self) -> Member:
        """This client as presence lists it."""
        return Member(self.id, self.identity.user, self.identity.info)

    def _join(self, topic: str) -> None:
        presence = self.hub.presence
        if presence.enabled(topic):
            self.present.add(topic)
            presence.join(topic, self.member)

    def _leave(self, pattern: str) -> None:
        """Leave ``pattern``'s topic if present on it; the subscription gets no more events
        (not even this leave)."""
        self.hub.router.unwatch(pattern, self)
        if pattern in self.present:
            self.present.discard(pattern)
            self.hub.presence.leave(pattern, self.member)

    async def _presence(self, request: Presence) -> None:
        presence = self.hub.presence
        if not presence.enabled(request.topic):
            raise Unavailable(f"{request.topic} has no presence (see the presence_topics setting)")
        members = await presence.members(request.topic)
        clients = [member_fields(member, self.codec) for member in members]
        self._encoded_ok(request, clients=clients)

    def _encoded_ok(self, request: History | Presence, **fields: Any) -> None:
        """The ok with these fields, or unavailable if the codec cannot hold them (binary
        data for a JSON client, a 70-bit integer for a msgpack one)."""
        if request.id is None:
            return
        try:
            frame = self.codec.encode({"op": "ok", "id": request.id, **fields})
        except (OverflowError, TypeError, ValueError) as exc:
            raise Unavailable(
                f"the {request.op} of {request.topic} cannot be encoded as"
                f" {self.codec.subprotocol}: {exc}"
            ) from None
        self.push(frame)

    def _refresh(self, request: Refresh) -> None:
        """Take a new token: same user, new expiry and permissions (docs/protocol.md)."""
        identity = self.hub.authenticator.authenticate(request.token)  # or Unauthorized
        if identity.user != self.identity.user:
            raise Unauthorized("a refreshed token must be for the same user (sub)")
        # A token may not take back a subscription the connection holds: that would need the
        # hub to end it behind the client's back. Unsubscribe first, then refresh.
        outside = [p for p in self.subscriptions if not identity.permissions.may_subscribe(p)]
        if outside:
            self.hub.denied += 1
            raise Forbidden(f"the new token does not allow the subscription to {outside[0]}")
        self.identity = identity
        self._expire_at(identity.expires)
        self._ok(request.id, expires=identity.expires)

    async def _subscribe(self, request: Sub) -> None:
        """Subscribe, recover what the client missed if it asks, and answer. The ok comes
        first, then the replay, then live messages (docs/protocol.md, "Recovery")."""
        pattern, recover = request.topic, request.recover
        concrete = not is_pattern(pattern)
        if recover is not None and isinstance(recover, Position) != concrete:
            shape = "{epoch, offset}" if concrete else "{since, topics}"
            raise BadRequest(f"recover for {pattern!r} must be {shape}")
        if pattern in self.subscriptions:
            # Already subscribed: nothing to replay (it would repeat what was delivered).
            if request.join_leave:
                self.hub.router.watch(pattern, self)
            backend = self.hub.router.backend
            fields: dict[str, Any] = {"recovered": False}
            if concrete:
                fields["epoch"], fields["offset"] = await backend.position(pattern)
            else:
                fields["time"] = await backend.time()
            self._ok(request.id, **fields)
            return
        limit = self.hub.settings.max_subscriptions
        if len(self.subscriptions) >= limit:
            raise BadRequest(f"at most {limit} subscriptions per connection")
        router = self.hub.router
        router.hold(pattern, self)
        try:
            await router.subscribe(pattern, self)
        except BaseException:
            router.unhold(pattern, self)
            raise
        self.subscriptions.add(pattern)
        try:
            plan = await self._plan(pattern, recover)
        except BaseException:  # unavailable: the new subscription is undone, not kept
            router.unhold(pattern, self)
            self.subscriptions.discard(pattern)
            await router.unsubscribe(pattern, self)
            raise
        fields = {"recovered": plan.recovered}
        if recover is not None:
            # The msgs of this subscription that follow the ok are the replay, then live ones:
            # the client knows when the replay is complete (it then moves its since).
            fields["replayed"] = len(plan.replay)
        if concrete:
            self._ok(request.id, epoch=plan.epoch, offset=plan.offset, **fields)
        else:
            self._ok(request.id, time=plan.time, **fields)
        # Presence events come after the ok.
        if request.join_leave:
            router.watch(pattern, self)
        if concrete:
            self._join(pattern)
        try:
            outbox = self.outbox
            for publication in plan.replay:
                # A replay goes at the client's pace, never piling up in the outbox (4008):
                # each frame waits until the outbox is empty, and so mostly takes push's fast
                # path straight into the connection's write buffer.
                if not outbox.idle:
                    await outbox.drained()
                self.push(router.frame(publication, pattern, self.codec))
        finally:
            router.release(pattern, self, plan.seen)

    async def _plan(self, pattern: str, recover: Position | PatternRecovery | None) -> Plan:
        backend, limit = self.hub.router.backend, self.hub.settings.recovery_limit
        if isinstance(recover, PatternRecovery):
            positions = {t: (p.epoch, p.offset) for t, p in recover.topics.items()}
            return await plan_pattern(backend, pattern, recover.since, positions, limit)
        if is_pattern(pattern):
            return await plan_pattern(backend, pattern, None, {}, limit)
        if recover is None:
            return await plan_topic(backend, pattern, None, 0, limit)
        return await plan_topic(backend, pattern, recover.epoch, recover.offset, limit)

    async def _history(self, request: History) -> None:
        """Answer with the topic's position and its retained publications (oldest first, or
        newest first with ``reverse``); ``since`` of another epoch counts from the start."""
        most = self.hub.settings.recovery_limit
        limit = min(request.limit or most, most)
        backend, topic, reverse = self.hub.router.backend, request.topic, request.reverse
        since = request.since
        after = since.offset if since is not None else 0
        history = await backend.history(topic, after=after, limit=limit, newest_first=reverse)
        if since is not None and since.epoch != history.epoch and after:
            # Offsets of another epoch mean nothing here: as without since.
            history = await backend.history(topic, limit=limit, newest_first=reverse)
        publications = history.publications[::-1] if request.reverse else history.publications
        messages = [
            {"offset": p.offset, "data": decode_payload(p.payload), "time": p.time}
            for p in publications
        ]
        self._encoded_ok(request, epoch=history.epoch, offset=history.offset, messages=messages)
