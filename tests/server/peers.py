"""Raw hub peers for the tests of ``hub-server`` processes: frames encoded by hand.

:class:`Peer` is one WebSocket connection (:func:`hub.protocol.connect`) that encodes its
frames itself, with :mod:`json` in text frames on ``hub.v1.json`` and with :mod:`msgpack` in
binary frames on ``hub.v1.msgpack``; no SDK is involved. The fixtures open peers, collect their
frames in the background, and close everything at teardown. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
import pytest

from hub.protocol import ConnectionClosed, WebSocketClientProtocol, connect

if TYPE_CHECKING:  # conftest.py imports this module's fixtures
    from tests.server.conftest import HubProcess

#: Upper bound for one frame to arrive, and for a whole test.
WAIT = 5.0
TEST_BOUND = 20.0

JSON = "hub.v1.json"
MSGPACK = "hub.v1.msgpack"
CODECS = [JSON, MSGPACK]


# --- encoding -------------------------------------------------------------------------------------


def encode(subprotocol: str, message: object) -> str | bytes:
    if subprotocol == JSON:
        return json.dumps(message)
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def decode(subprotocol: str, frame: str | bytes) -> dict[str, Any]:
    """A frame from the hub: the right frame type for the subprotocol, and a map."""
    if subprotocol == JSON:
        assert isinstance(frame, str), f"{JSON} got a binary frame from the hub: {frame!r}"
        message = json.loads(frame)
    else:
        assert isinstance(frame, bytes), f"{MSGPACK} got a text frame from the hub: {frame!r}"
        message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    assert isinstance(message, dict), f"the hub sent a frame that is not a map: {message!r}"
    assert isinstance(message.get("op"), str), f"the hub sent a frame without op: {message!r}"
    return message


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (``True`` is not ``1``, ``b"x"`` not "x")."""
    if isinstance(a, dict) and isinstance(b, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# --- a raw peer -----------------------------------------------------------------------------------


class Peer:
    """One WebSocket connection to the hub, with the frames encoded by hand."""

    def __init__(self, ws: WebSocketClientProtocol) -> None:
        self.ws = ws
        # PROTOCOL.md: a client that offers no subprotocol gets JSON.
        self.subprotocol = ws.subprotocol or JSON
        self.welcome: dict[str, Any] = {}
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    async def send(self, message: object) -> None:
        await self.ws.send(encode(self.subprotocol, message))

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def recv(self, within: float | None = WAIT) -> dict[str, Any]:
        async with asyncio.timeout(within):
            frame = await self.ws.recv()
        return decode(self.subprotocol, frame)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send ``op`` with a fresh id; the next frame must be its reply (ok or error)."""
        id_ = self.next_id()
        await self.send({"op": op, "id": id_, **fields})
        reply = await self.recv()
        assert reply["op"] in ("ok", "error") and reply.get("id") == id_, (
            f"the next frame after {op} with id {id_} is not its reply: {reply}"
        )
        return reply

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(op, **fields)
        assert reply["op"] == "ok", f"{op} {fields} failed: {reply}"
        return reply

    async def error(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(op, **fields)
        assert reply["op"] == "error", f"{op} {fields} should have failed: {reply}"
        assert isinstance(reply.get("message"), str) and reply["message"], reply
        return reply

    async def closed(self, within: float = WAIT) -> tuple[list[dict[str, Any]], ConnectionClosed]:
        """Read until the connection closes; the frames read before, and the close."""
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while True:
                try:
                    frame = await self.ws.recv()
                except ConnectionClosed as exc:
                    return frames, exc
                frames.append(decode(self.subprotocol, frame))


class OpenPeer(Protocol):
    def __call__(
        self, process: HubProcess, subprotocol: str | None = ..., **options: Any
    ) -> Awaitable[Peer]: ...


@pytest.fixture(params=CODECS, ids=["json", "msgpack"])
def codec(request: pytest.FixtureRequest) -> str:
    subprotocol: str = request.param
    return subprotocol


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own, so that offsets on the shared hub start at 1."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def open_peer() -> AsyncIterator[OpenPeer]:
    """``await open_peer(hub, codec)``: a connection that has received its welcome frame.

    ``subprotocol=None`` offers none; ``subprotocols=[...]`` offers exactly those. Every
    connection is closed at teardown.
    """
    sockets: list[WebSocketClientProtocol] = []

    async def open_(process: HubProcess, subprotocol: str | None = JSON, **options: Any) -> Peer:
        options.setdefault("subprotocols", [] if subprotocol is None else [subprotocol])
        options.setdefault("open_timeout", WAIT)
        options.setdefault("ping_interval", None)
        ws = await connect(process.uri, **options)
        sockets.append(ws)
        peer = Peer(ws)
        peer.welcome = await peer.recv()
        return peer

    yield open_
    async with asyncio.timeout(10):
        for ws in sockets:
            ws.close_timeout = min(ws.close_timeout, 1)
            await ws.close()


class Collector:
    """Reads a peer's frames in a task, so that the hub never sees a slow reader."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.frames: list[dict[str, Any]] = []
        self.closed: ConnectionClosed | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                self.frames.append(await self.peer.recv(within=None))
                self._changed.set()
        except ConnectionClosed as exc:
            self.closed = exc
            self._changed.set()

    async def wait_for(self, count: int, within: float = WAIT) -> list[dict[str, Any]]:
        async with asyncio.timeout(within):
            while len(self.frames) < count:
                assert self.closed is None, f"closed after {len(self.frames)} frames: {self.closed}"
                self._changed.clear()
                await self._changed.wait()
        return self.frames[:count]

    async def wait_closed(self, within: float = WAIT) -> ConnectionClosed:
        """Wait until the hub closes the connection; the frames before it stay in ``frames``."""
        async with asyncio.timeout(within):
            while self.closed is None:
                self._changed.clear()
                await self._changed.wait()
        return self.closed

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def collect() -> AsyncIterator[Callable[[Peer], Collector]]:
    collectors: list[Collector] = []

    def start(peer: Peer) -> Collector:
        collector = Collector(peer)
        collectors.append(collector)
        return collector

    yield start
    for collector in collectors:
        await collector.stop()


def assert_msg(
    frame: dict[str, Any], *, topic: str, sub: str, data: object, offset: int, epoch: str
) -> None:
    expected = {
        "op": "msg",
        "topic": topic,
        "sub": sub,
        "data": data,
        "offset": offset,
        "epoch": epoch,
    }
    assert frame.keys() == expected.keys(), f"msg fields: {frame}"
    for key, value in expected.items():
        assert same(frame[key], value), f"msg {key}: {frame[key]!r} != {value!r} in {frame}"


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET without upgrade; status, lower-cased headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.strip("\r\n").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1]), headers, body
