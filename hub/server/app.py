"""The hub as a library: create it in-process, publish and subscribe from Python, serve it.

::

    async with Hub(Settings(port=8765)) as hub:
        subscription = await hub.subscribe("chat.*")
        await hub.publish("chat.room1", {"text": "hi"})
        message = await subscription.get()        # {"op": "msg", "topic": "chat.room1", ...}
        server = await hub.serve()                 # WebSocket clients on 127.0.0.1:8765

``hub-server`` (:mod:`hub.server.cli`) is this, run from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from hub.broker.memory import MemoryBackend
from hub.broker.presence import MemoryPresence, Presence
from hub.broker.redis import RedisBackend
from hub.broker.redis_presence import RedisPresence
from hub.broker.router import BackendFactory, Router
from hub.broker.topics import validate_pattern, validate_topic
from hub.exceptions import InsufficientState, NegotiationError, Unauthorized
from hub.protocol.asyncio import WebSocketServer, WebSocketServerProtocol, serve
from hub.protocol.http11 import Headers, header_tokens
from hub.server.auth import EVERYONE, Identity, token_of
from hub.server.limits import Counts, KeyedRate
from hub.server.session import RATE_LIMITED, Session
from hub.server.settings import Settings
from hub.wire.codecs import CODECS, Codec

__all__ = ["Hub", "LocalSubscription"]

logger = logging.getLogger("hub.server")


def backend_factory(settings: Settings) -> BackendFactory:
    """The backend that ``settings.backend`` names: ``memory://`` or a Redis URL."""
    retention = settings.retention()
    if settings.backend == "memory://":
        return functools.partial(MemoryBackend, retention=retention)
    return functools.partial(
        RedisBackend,
        retention=retention,
        epoch_ttl=settings.epoch_ttl,
        url=settings.backend,
        key_prefix=settings.redis_prefix,
        command_timeout=settings.redis_timeout,
        backoff_cap=settings.redis_backoff_cap,
    )


def presence_for(settings: Settings, router: Router) -> Presence:
    """Presence shared like the router's backend: in memory, or through the same Redis."""
    topics, grace = settings.presence_topics, settings.presence_grace
    if isinstance(router.backend, RedisBackend):
        return RedisPresence(
            router.backend, router.deliver_presence, topics, grace, ttl=settings.presence_ttl
        )
    return MemoryPresence(router.deliver_presence, topics, grace)


class _PythonCodec:
    """In-process subscribers get the message dicts themselves, not encoded frames."""

    subprotocol = "python"

    def decode(self, frame: Any) -> Any:
        return frame

    def encode(self, message: Any) -> Any:
        return message

    def prepare(self, message: Any) -> Any:
        return message


class LocalSubscription:
    """An in-process subscription: ``await get()`` or ``async for message in subscription``.

    Its queue is bounded like a client's outbox; past it, messages are dropped and counted in
    ``dropped`` (an in-process reader that falls behind loses messages, never blocks the hub).
    """

    codec: Codec = _PythonCodec()

    def __init__(self, hub: Hub, pattern: str, max_messages: int) -> None:
        self.hub = hub
        self.pattern = pattern
        self.dropped = 0
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(max_messages)
        self._lost: str | None = None  # why the hub lost its place in the pattern's streams

    def __hash__(self) -> int:
        return id(self)

    def push(self, frame: Any) -> None:
        if self._lost is not None:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped += 1

    def lost(self, reason: str) -> None:
        """The router's notice that messages may be missing from here on (see get)."""
        if self._lost is None:
            self._lost = reason
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)  # wakes a waiting get(); a full queue has no waiter

    async def get(self) -> dict[str, Any]:
        """The next message; after the messages received before a gap, InsufficientState:
        close this subscription and subscribe again (PROTOCOL.md, 4010)."""
        if self._lost is not None and self._queue.empty():
            raise InsufficientState(self._lost)
        message = await self._queue.get()
        if message is None:
            assert self._lost is not None
            raise InsufficientState(self._lost)
        return message

    def __aiter__(self) -> LocalSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self.get()

    async def close(self) -> None:
        await self.hub.router.unsubscribe(self.pattern, self)


class Hub:
    """A hub node: the router, its backend, and the sessions of its WebSocket clients."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.node_id = self.settings.node_id or secrets.token_hex(6)
        self.router = Router(backend_factory(self.settings))
        self.router.hold_limit = self.settings.outbox_messages
        self.presence = presence_for(self.settings, self.router)
        self.authenticator = self.settings.authenticator()
        settings = self.settings
        self._handshakes = KeyedRate(settings.handshake_rate, settings.handshake_burst)
        self._users = Counts(settings.max_connections_per_user)
        self.denied = 0  # requests answered forbidden, for metrics
        self.sessions: set[Session] = set()
        self.server: WebSocketServer | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.router.start()
        await self.presence.start()

    async def close(self) -> None:
        """Stop accepting, let queued messages flush (up to ``drain_timeout``), close every
        connection with 1001, then stop the backend."""
        if self.server is not None:
            if self.server.server is not None:
                self.server.server.close()  # stop accepting; connections stay open to drain
            if self.sessions:
                drained = [session.outbox.drained() for session in self.sessions]
                try:
                    async with asyncio.timeout(self.settings.drain_timeout):
                        await asyncio.gather(*drained)
                except TimeoutError:
                    logger.warning(
                        "shutdown: queues not drained after %s s", self.settings.drain_timeout
                    )
            self.server.close()
            try:
                async with asyncio.timeout(self.settings.drain_timeout + 10):
                    await self.server.wait_closed()
            except TimeoutError:
                logger.warning("shutdown: some connections did not close in time")
        await self.presence.close()  # after the sessions, whose leaves it writes
        await self.router.close()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- in-process API ---------------------------------------------------------------------------

    async def publish(self, topic: str, data: Any) -> tuple[str, int]:
        """Publish without a network hop; return the publication's (epoch, offset)."""
        publication = await self.router.publish(validate_topic(topic), data)
        return publication.epoch, publication.offset

    async def subscribe(
        self, pattern: str, *, max_messages: int = 1000, join_leave: bool = False
    ) -> LocalSubscription:
        """Subscribe in-process; with ``join_leave`` the presence events of the topics it
        matches arrive too (``{"op": "join", ...}``, docs/protocol.md)."""
        subscription = LocalSubscription(self, validate_pattern(pattern), max_messages)
        await self.router.subscribe(subscription.pattern, subscription)
        if join_leave:
            self.router.watch(subscription.pattern, subscription)
        return subscription

    def health(self) -> dict[str, Any]:
        """``/healthz``'s body; ``status`` is "ok" only while the backend is up (else 503)."""
        backend = self.router.backend
        return {
            "status": "ok" if backend.healthy else "unavailable",
            "node": self.node_id,
            "backend": self.settings.backend.split("://")[0],
            "backend_state": backend.state,
            "connections": len(self.sessions),
        }

    # --- network ----------------------------------------------------------------------------------

    async def serve(
        self, host: str | None = None, port: int | None = None, **options: Any
    ) -> WebSocketServer:
        """Serve WebSocket clients (and ``GET /healthz``) on ``host:port`` from this event loop."""
        settings = self.settings
        host = settings.host if host is None else host
        if settings.auth == "off" and not _loopback(host):
            logger.warning(
                "auth is off and %s is reachable from the network: anyone can subscribe and"
                " publish to anything (set --auth required and --auth-keys)",
                host,
            )
        # Browsers send an Origin; other clients (the SDK, servers) send none and pass.
        origins = None if settings.allowed_origins is None else [*settings.allowed_origins, None]
        self.server = await serve(
            self._handler,
            host,
            settings.port if port is None else port,
            origins=origins,
            create_protocol=functools.partial(_HubConnection, hub=self),
            subprotocols=list(CODECS),
            select_subprotocol=_select_subprotocol,
            max_size=settings.max_message_size,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            **options,
        )
        return self.server

    async def _handler(self, websocket: WebSocketServerProtocol) -> None:
        if len(self.sessions) >= self.settings.max_connections:
            await websocket.close(1013, "too many connections")
            return
        assert isinstance(websocket, _HubConnection)  # serve() makes them
        identity = websocket.identity  # verified in the handshake (_process_request)
        if identity.expires is not None and identity.expires <= time.time():
            await websocket.close(Session.UNAUTHORIZED, "the token has expired")
            return
        user = identity.user
        if user is not None and not self._users.acquire(user):
            # Checked in the handshake already (429); this is the race between two of them.
            await websocket.close(RATE_LIMITED, "too many connections for this user")
            return
        session = Session(self, websocket, identity)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            if user is not None:
                self._users.release(user)

    def _process_request(
        self, path: str, headers: Headers, connection: _HubConnection | None = None
    ) -> tuple[int, Headers, bytes] | None:
        """Answer plain HTTP (health, 404, 426) or refuse a handshake (401, 429); None lets
        the WebSocket handshake go on, with the identity the token proved on ``connection``."""
        address = None if connection is None else connection.host
        route = path.split("?")[0]
        if route == "/healthz":
            health = self.health()
            status = 200 if health["status"] == "ok" else 503
            return (
                status,
                Headers([("Content-Type", "application/json")]),
                json.dumps(health).encode(),
            )
        if "upgrade" not in header_tokens(headers, "Connection"):
            if route == "/":
                text = b"426 Upgrade Required: this is a hub WebSocket endpoint\n"
                return (
                    426,
                    Headers([("Upgrade", "websocket"), ("Content-Type", "text/plain")]),
                    text,
                )
            return 404, Headers([("Content-Type", "text/plain")]), b"404 Not Found\n"
        if address is not None and not self._handshakes.allow(address, time.monotonic()):
            logger.info("refused a handshake from %s: too many", address)
            return _too_many("too many connection attempts from your address")
        if self.authenticator.mode != "off":
            try:
                identity = self.authenticator.authenticate(token_of(path, headers))
            except Unauthorized as exc:
                logger.info("refused a handshake: %s", exc)
                return (
                    401,
                    Headers([("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")]),
                    f"401 Unauthorized: {exc}\n".encode(),
                )
            limit = self.settings.max_connections_per_user
            if identity.user is not None and self._users.count(identity.user) >= limit:
                return _too_many(f"at most {limit} connections per user")
            if connection is not None:
                connection.identity = identity
        return None


class _HubConnection(WebSocketServerProtocol):
    """The hub's server connection: its handshake checks need the peer's address, and leave
    the identity that the token proved for the session (so the token is verified once)."""

    identity: Identity = EVERYONE

    def __init__(self, *args: Any, hub: Hub, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hub = hub

    @property
    def host(self) -> str | None:
        address = self.remote_address
        return address[0] if isinstance(address, tuple) else None

    def process_request(self, path: str, request_headers: Headers) -> Any:
        return self.hub._process_request(path, request_headers, self)


def _too_many(reason: str) -> tuple[int, Headers, bytes]:
    headers = Headers([("Retry-After", "1"), ("Content-Type", "text/plain")])
    return 429, headers, f"429 Too Many Requests: {reason}\n".encode()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _select_subprotocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """PROTOCOL.md: none offered -> JSON (no subprotocol header); only unknown ones -> 400."""
    if not offered:
        return None
    for subprotocol in offered:
        if subprotocol in supported:
            return subprotocol
    raise NegotiationError(
        f"none of the offered subprotocols {list(offered)} is supported; "
        f"use one of {list(supported)}"
    )
