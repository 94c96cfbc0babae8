"""Helpers for the tests of the client SDK (hub_client).

- :class:`FakeHub`: a WebSocket server built on :func:`hub.protocol.serve` that plays the hub as
  a test tells it to (garbage frames, silence, close codes); it counts the connections it accepts
  and records every request it receives. :meth:`FakeConnection.serve` answers requests like a
  minimal hub (offsets per topic, ``msg`` frames for its own concrete subscriptions).
- :class:`States`: an ``on_state`` callback that records every state and lets a test wait for one.
- :func:`kill` and :func:`restart`: SIGKILL a ``hub-server`` and start another on the same port.
- :func:`payload`: data that each codec must carry exactly.

Every wait is bounded by :data:`WAIT`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import hub_client
from hub.protocol import ConnectionClosed, WebSocketServer, WebSocketServerProtocol, serve
from hub.wire.codecs import Codec, select_codec
from hub_client import Backoff, Client, ConnectionState
from tests.server.conftest import HubProcess, StartHub

__all__ = [
    "FAST",
    "WAIT",
    "FakeConnection",
    "FakeHub",
    "Handler",
    "States",
    "bounded",
    "close_client",
    "connect",
    "kill",
    "payload",
    "poll_until",
    "restart",
]

#: Upper bound for any one thing a test waits for.
WAIT = 5.0

#: Reconnect at once in tests (a 4029 waits up to ten times longer: 0.5 s).
FAST = Backoff(base=0.01, cap=0.05)

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], within: float = WAIT) -> T:
    """``await`` with a bound."""
    async with asyncio.timeout(within):
        return await awaitable


async def poll_until(predicate: Callable[[], bool], within: float = WAIT) -> None:
    """Until ``predicate()`` holds, checked every 10 ms: only for what the SDK offers no event
    for (how many messages a subscription has buffered)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - no event to wait for; polled with a bound
            await asyncio.sleep(0.01)


async def close_client(client: Client, within: float = WAIT) -> bool:
    """Close a client without trusting close() to honour cancellation; True if it returned."""
    task = asyncio.ensure_future(client.close())
    done, _ = await asyncio.wait({task}, timeout=within)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=1)
        return False
    task.result()
    return True


def payload(codec: str, n: int) -> object:
    """The data of publication ``n``: values that the codec must carry exactly."""
    if codec == "json":
        return {"n": n, "text": f"é{n}", "list": [n, None, True, 1.5]}
    return {"n": n, "bin": bytes([n % 256]) * 3, "big": 2**40 + n, "list": [n, None, False]}


# --- hub-server processes -------------------------------------------------------------------------


async def kill(process: HubProcess) -> None:
    """SIGKILL: the hub vanishes without closing anything (the kernel resets its sockets)."""
    process.signal(signal.SIGKILL)
    await asyncio.to_thread(process.wait, WAIT)


async def restart(start_hub: StartHub, port: int, *flags: str) -> HubProcess:
    """A new ``hub-server`` on ``port`` (the last ``--port`` of the command line wins)."""
    process = await start_hub(*flags, "--port", str(port))
    assert process.port == port, f"the new hub listens on {process.port}, not {port}"
    return process


# --- connection states ----------------------------------------------------------------------------


class States:
    """An ``on_state`` callback: every state in order, and a bounded wait for one."""

    def __init__(self) -> None:
        self.seen: list[ConnectionState] = []
        self._changed = asyncio.Event()

    def __call__(self, state: ConnectionState) -> None:
        self.seen.append(state)
        self._changed.set()

    async def wait_for(self, state: ConnectionState, count: int = 1, within: float = WAIT) -> None:
        """Until ``state`` was seen ``count`` times in all."""
        async with asyncio.timeout(within):
            while self.seen.count(state) < count:
                self._changed.clear()
                await self._changed.wait()


# --- a fake hub -----------------------------------------------------------------------------------

EPOCH = "fake-epoch"


class FakeConnection:
    """One connection that a :class:`FakeHub` accepted (``number`` counts from 1)."""

    def __init__(self, hub: FakeHub, ws: WebSocketServerProtocol, number: int) -> None:
        self.hub = hub
        self.ws = ws
        self.number = number
        self.codec: Codec = select_codec(ws.subprotocol)
        self.requests: list[dict[str, Any]] = []
        self.subscriptions: set[str] = set()

    @property
    def authorization(self) -> str | None:
        return self.ws.request_headers.get("Authorization")

    async def send(self, message: object) -> None:
        await self.ws.send(self.codec.encode(message))

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def welcome(self) -> None:
        await self.send(
            {"op": "welcome", "client": f"c{self.number}", "node": "fake", "version": 1}
        )

    async def recv(self) -> dict[str, Any]:
        """The next request, decoded and recorded."""
        request = self.codec.decode(await self.ws.recv())
        assert isinstance(request, dict), request
        self.requests.append(request)
        self.hub.requests.append((self.number, request))
        self.hub.notify()
        return request

    async def answer(self, request: dict[str, Any]) -> None:
        """Answer like a minimal hub (one epoch; recovery always succeeds, replaying nothing)."""
        op, id_, topic = request.get("op"), request.get("id"), request.get("topic")
        offsets = self.hub.offsets
        if op == "pub" and isinstance(topic, str):
            offsets[topic] = offsets.get(topic, 0) + 1
            if id_ is not None:
                await self.send({"op": "ok", "id": id_, "offset": offsets[topic], "epoch": EPOCH})
            if topic in self.subscriptions:
                await self.send(
                    {
                        "op": "msg",
                        "topic": topic,
                        "sub": topic,
                        "data": request.get("data"),
                        "offset": offsets[topic],
                        "epoch": EPOCH,
                    }
                )
        elif op == "sub" and isinstance(topic, str):
            self.subscriptions.add(topic)
            recovered = "recover" in request
            if "*" in topic or ">" in topic:
                reply = {"op": "ok", "id": id_, "recovered": recovered, "time": 1}
            else:
                position = {"epoch": EPOCH, "offset": offsets.get(topic, 0)}
                reply = {"op": "ok", "id": id_, "recovered": recovered, **position}
            await self.send(reply)
        elif op == "unsub" and isinstance(topic, str):
            self.subscriptions.discard(topic)
            await self.send({"op": "ok", "id": id_})
        elif op == "history" and isinstance(topic, str):
            position = {"epoch": EPOCH, "offset": offsets.get(topic, 0)}
            await self.send({"op": "ok", "id": id_, "messages": [], **position})
        else:
            await self.send({"op": "error", "id": id_, "code": "unknown_op", "message": "fake"})

    async def serve(self, count: int | None = None) -> None:
        """Answer ``count`` requests (all of them until the connection closes, if None)."""
        try:
            while count is None or count > 0:
                await self.answer(await self.recv())
                if count is not None:
                    count -= 1
        except ConnectionClosed:
            if count is not None:
                raise

    def abort(self) -> None:
        """End the TCP connection without a close frame."""
        assert self.ws.transport is not None
        self.ws.transport.abort()


Handler = Callable[[FakeConnection], Coroutine[Any, Any, None]]


async def minimal(connection: FakeConnection) -> None:
    """The default behaviour: welcome, then answer every request."""
    await connection.welcome()
    await connection.serve()


class FakeHub:
    """``async with FakeHub(handler) as fake:`` a server on 127.0.0.1 whose every connection is
    handed to ``handler``; when the handler returns, the connection is closed with 1000 (so a
    handler that should not end the session awaits ``connection.ws.wait_closed()``)."""

    def __init__(self, handler: Handler = minimal) -> None:
        self.handler = handler
        self.connections: list[FakeConnection] = []
        self.requests: list[tuple[int, dict[str, Any]]] = []
        self.offsets: dict[str, int] = {}
        self.server: WebSocketServer | None = None
        self._changed = asyncio.Event()

    @property
    def accepted(self) -> int:
        return len(self.connections)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    def notify(self) -> None:
        self._changed.set()

    async def start(self) -> FakeHub:
        self.server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=["hub.v1.msgpack", "hub.v1.json"],
            ping_interval=None,
            close_timeout=1,
        )
        return self

    def stop_listening(self) -> None:
        """Refuse new connections; the open ones stay."""
        assert self.server is not None and self.server.server is not None
        self.server.server.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await bounded(self.server.wait_closed())

    async def __aenter__(self) -> FakeHub:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _handle(self, ws: WebSocketServerProtocol) -> None:
        connection = FakeConnection(self, ws, len(self.connections) + 1)
        self.connections.append(connection)
        self.notify()
        await self.handler(connection)

    async def wait_until(self, predicate: Callable[[], bool], within: float = WAIT) -> None:
        """Until ``predicate()`` holds; checked at every connection and every request."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_connections(self, count: int, within: float = WAIT) -> FakeConnection:
        """Until ``count`` connections were accepted; the ``count``-th."""
        await self.wait_until(lambda: self.accepted >= count, within)
        return self.connections[count - 1]


async def connect(url: str, **options: Any) -> Client:
    """hub_client.connect with the tests' defaults (fast backoff, bounded requests)."""
    options.setdefault("backoff", FAST)
    options.setdefault("request_timeout", WAIT)
    return await bounded(hub_client.connect(url, **options))
