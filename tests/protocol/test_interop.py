"""Interoperability with independent RFC 6455 implementations, over real sockets.

- our server with the ``websockets`` client and with the ``aiohttp`` client;
- our client with the ``websockets`` server.

Compression is off everywhere: hub does not implement permessage-deflate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import websockets.asyncio.client
import websockets.asyncio.server
import websockets.exceptions

from hub.protocol import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    WebSocketServerProtocol,
)
from tests.protocol.support import WAIT, Connect, StartServer, echo, uri_of

BIG = 16 * 2**20  # 16 MiB
BIG_LIMIT = 2 * BIG  # max_size on both sides for the big-message tests


# --- our server, websockets client ----------------------------------------------------------------


def ws_client(uri: str, **options: Any) -> websockets.asyncio.client.connect:
    options.setdefault("compression", None)
    options.setdefault("ping_interval", None)
    options.setdefault("open_timeout", WAIT)
    options.setdefault("close_timeout", WAIT)
    return websockets.asyncio.client.connect(uri, **options)


class ServerOutcome:
    """How a hub server handler saw its connection end."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[tuple[int | None, str | None]] = (
            asyncio.get_running_loop().create_future()
        )

    async def report(self, ws: WebSocketServerProtocol) -> None:
        await ws.wait_closed()
        self.closed.set_result((ws.close_code, ws.close_reason))

    async def get(self) -> tuple[int | None, str | None]:
        async with asyncio.timeout(WAIT):
            return await self.closed


async def test_websockets_client_text_and_binary(echo_uri: str) -> None:
    async with asyncio.timeout(WAIT), ws_client(echo_uri) as ws:
        await ws.send("héllo ☕")
        assert await ws.recv() == "héllo ☕"
        await ws.send(b"\x00\x01\x02\xff")
        assert await ws.recv() == b"\x00\x01\x02\xff"
        await ws.send("")
        assert await ws.recv() == ""


async def test_websockets_client_sends_fragments(start_server: StartServer) -> None:
    received: list[str | bytes] = []

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        async for message in ws:
            received.append(message)
            await ws.send(message)

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), ws_client(uri_of(server)) as ws:
        await ws.send(["frag", "ment", "ed ☕"])
        assert await ws.recv() == "fragmented ☕"
        await ws.send([b"\x01", b"\x02", b"\x03"])
        assert await ws.recv() == b"\x01\x02\x03"
    assert received == ["fragmented ☕", b"\x01\x02\x03"]


async def test_websockets_client_receives_fragments(start_server: StartServer) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send(["frag", "ment", "ed ☕"])
        await ws.send([b"\x01", b"\x02"])
        await ws.recv()

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), ws_client(uri_of(server)) as ws:
        # recv_streaming yields frame by frame: the fragmentation survived the trip.
        assert [f async for f in ws.recv_streaming()] == ["frag", "ment", "ed ☕"]
        assert [f async for f in ws.recv_streaming()] == [b"\x01", b"\x02"]


async def test_websockets_client_16_mib(start_server: StartServer) -> None:
    server = await start_server(echo, max_size=BIG_LIMIT)
    binary = bytes(range(256)) * (BIG // 256)
    text = "ab☕" * (BIG // 5)
    async with asyncio.timeout(WAIT * 2), ws_client(uri_of(server), max_size=BIG_LIMIT) as ws:
        await ws.send(binary)
        assert await ws.recv() == binary
        await ws.send(text)
        assert await ws.recv() == text


async def test_websockets_client_ping_pong(start_server: StartServer) -> None:
    server_rtt: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        server_rtt.set_result(await (await ws.ping(b"from hub")))
        await echo(ws, path)

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), ws_client(uri_of(server)) as ws:
        # The websockets client answers our ping in its background reader.
        assert isinstance(await server_rtt, float)
        pong_waiter = await ws.ping(b"from websockets")
        latency = await pong_waiter
        assert latency >= 0
        await ws.pong(b"unsolicited")
        await ws.send("still fine")
        assert await ws.recv() == "still fine"


async def test_websockets_client_closes(start_server: StartServer) -> None:
    outcome = ServerOutcome()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        async for _ in ws:
            pass  # ends quietly on the client's normal close
        await outcome.report(ws)

    server = await start_server(handler)
    async with asyncio.timeout(WAIT):
        async with ws_client(uri_of(server)) as ws:
            await ws.send("hi")
        assert await outcome.get() == (1000, "")
    assert ws.close_code == 1000


async def test_websockets_client_closes_with_code_and_reason(start_server: StartServer) -> None:
    outcome = ServerOutcome()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
        await outcome.report(ws)

    server = await start_server(handler)
    async with asyncio.timeout(WAIT):
        ws = await ws_client(uri_of(server))
        await ws.close(4002, "from websockets")
        assert await outcome.get() == (4002, "from websockets")


async def test_hub_server_closes_websockets_client(start_server: StartServer) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send("bye")

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), ws_client(uri_of(server)) as ws:
        assert await ws.recv() == "bye"
        with pytest.raises(websockets.exceptions.ConnectionClosedOK) as exc_info:
            await ws.recv()
    assert exc_info.value.rcvd is not None and exc_info.value.rcvd.code == 1000


async def test_hub_handler_error_is_1011_for_websockets_client(start_server: StartServer) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        raise RuntimeError("handler bug")

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), ws_client(uri_of(server)) as ws:
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as exc_info:
            await ws.recv()
    assert exc_info.value.rcvd is not None and exc_info.value.rcvd.code == 1011


async def test_hub_server_custom_close_for_websockets_client(start_server: StartServer) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.close(4001, "custom ☕")

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), ws_client(uri_of(server)) as ws:
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as exc_info:
            await ws.recv()
    assert exc_info.value.rcvd is not None
    assert (exc_info.value.rcvd.code, exc_info.value.rcvd.reason) == (4001, "custom ☕")
    assert (ws.close_code, ws.close_reason) == (4001, "custom ☕")


async def test_hub_server_max_size_for_websockets_client(start_server: StartServer) -> None:
    server = await start_server(max_size=1024)
    async with asyncio.timeout(WAIT), ws_client(uri_of(server)) as ws:
        await ws.send(b"x" * 1025)
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as exc_info:
            await ws.recv()
    assert exc_info.value.rcvd is not None and exc_info.value.rcvd.code == 1009


async def test_websockets_client_max_size_against_hub_server(start_server: StartServer) -> None:
    outcome = ServerOutcome()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send(b"y" * 2048)
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
        await outcome.report(ws)

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), ws_client(uri_of(server), max_size=1024) as ws:
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as exc_info:
            await ws.recv()
        assert exc_info.value.sent is not None and exc_info.value.sent.code == 1009
        code, _ = await outcome.get()
    assert code == 1009


# --- our server, aiohttp client ----------------------------------------------------------------


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def aiohttp_ws(
    session: aiohttp.ClientSession, uri: str, **options: Any
) -> Any:  # aiohttp's context manager type is private
    options.setdefault("max_msg_size", 2**20)
    return session.ws_connect(uri.replace("ws://", "http://"), **options)


async def test_aiohttp_client_text_and_binary(
    echo_uri: str, http_session: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(WAIT), aiohttp_ws(http_session, echo_uri) as ws:
        await ws.send_str("héllo ☕")
        assert await ws.receive_str() == "héllo ☕"
        await ws.send_bytes(b"\x00\xff")
        assert await ws.receive_bytes() == b"\x00\xff"
        await ws.close()
    assert ws.close_code == 1000


async def test_aiohttp_client_receives_fragments(
    start_server: StartServer, http_session: aiohttp.ClientSession
) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send(["frag", "ment", "ed ☕"])
        await ws.send([b"\x01", b"\x02"])
        await ws.recv()

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), aiohttp_ws(http_session, uri_of(server)) as ws:
        assert await ws.receive_str() == "fragmented ☕"
        assert await ws.receive_bytes() == b"\x01\x02"


async def test_aiohttp_client_16_mib(
    start_server: StartServer, http_session: aiohttp.ClientSession
) -> None:
    server = await start_server(echo, max_size=BIG_LIMIT)
    binary = bytes(range(256)) * (BIG // 256)
    async with (
        asyncio.timeout(WAIT * 2),
        aiohttp_ws(http_session, uri_of(server), max_msg_size=BIG_LIMIT) as ws,
    ):
        await ws.send_bytes(binary)
        assert await ws.receive_bytes() == binary


async def test_aiohttp_client_ping_pong(
    start_server: StartServer, http_session: aiohttp.ClientSession
) -> None:
    server_rtt: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.recv()
        server_rtt.set_result(await (await ws.ping(b"from hub")))
        await ws.send("pinged")
        await ws.recv()

    server = await start_server(handler)
    async with (
        asyncio.timeout(WAIT),
        aiohttp_ws(http_session, uri_of(server), autoping=False) as ws,
    ):
        await ws.ping(b"from aiohttp")
        message = await ws.receive()
        assert (message.type, message.data) == (aiohttp.WSMsgType.PONG, b"from aiohttp")
        await ws.send_str("ping me")
        message = await ws.receive()
        assert (message.type, message.data) == (aiohttp.WSMsgType.PING, b"from hub")
        await ws.pong(message.data)
        assert isinstance(await server_rtt, float)
        assert await ws.receive_str() == "pinged"


async def test_aiohttp_client_closes_with_code_and_reason(
    start_server: StartServer, http_session: aiohttp.ClientSession
) -> None:
    outcome = ServerOutcome()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
        await outcome.report(ws)

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), aiohttp_ws(http_session, uri_of(server)) as ws:
        await ws.close(code=4003, message=b"from aiohttp")
        assert await outcome.get() == (4003, "from aiohttp")


async def test_aiohttp_client_normal_close(
    start_server: StartServer, http_session: aiohttp.ClientSession
) -> None:
    outcome = ServerOutcome()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        async for _ in ws:
            pass
        await outcome.report(ws)

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), aiohttp_ws(http_session, uri_of(server)) as ws:
        await ws.close()
        assert await outcome.get() == (1000, "")


@pytest.mark.parametrize(
    ("behaviour", "code", "reason"),
    [
        ("return", 1000, ""),
        ("raise", 1011, None),
        ("custom", 4001, "custom ☕"),
    ],
)
async def test_hub_server_closes_aiohttp_client(
    start_server: StartServer,
    http_session: aiohttp.ClientSession,
    behaviour: str,
    code: int,
    reason: str | None,
) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        if behaviour == "raise":
            raise RuntimeError("handler bug")
        if behaviour == "custom":
            await ws.close(4001, "custom ☕")

    server = await start_server(handler)
    async with asyncio.timeout(WAIT), aiohttp_ws(http_session, uri_of(server)) as ws:
        message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert message.data == code
    if reason is not None:
        assert message.extra == reason
    assert ws.close_code == code


async def test_hub_server_max_size_for_aiohttp_client(
    start_server: StartServer, http_session: aiohttp.ClientSession
) -> None:
    server = await start_server(max_size=1024)
    async with asyncio.timeout(WAIT), aiohttp_ws(http_session, uri_of(server)) as ws:
        await ws.send_bytes(b"x" * 1025)
        message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert message.data == 1009


# --- our client, websockets server -------------------------------------------------------------


WsHandler = Callable[[websockets.asyncio.server.ServerConnection], Awaitable[None]]


@pytest.fixture
async def websockets_server() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start a ``websockets`` server on a free port; return its ws:// URI."""
    servers: list[websockets.asyncio.server.Server] = []

    async def start(handler: WsHandler, **options: Any) -> str:
        options.setdefault("compression", None)
        options.setdefault("ping_interval", None)
        options.setdefault("close_timeout", WAIT)
        server = await websockets.asyncio.server.serve(handler, "127.0.0.1", 0, **options)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    yield start
    for server in servers:
        server.close()
    async with asyncio.timeout(5):
        for server in servers:
            await server.wait_closed()


async def ws_echo(ws: websockets.asyncio.server.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class PeerOutcome:
    """How a websockets server handler saw its connection end."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[websockets.exceptions.ConnectionClosed | None] = (
            asyncio.get_running_loop().create_future()
        )

    async def report(self, ws: websockets.asyncio.server.ServerConnection) -> None:
        """Read until the hub client closes the connection; record how it ended."""
        try:
            await ws.recv()
        except websockets.exceptions.ConnectionClosed as exc:
            self.closed.set_result(exc)

    async def get(self) -> websockets.exceptions.ConnectionClosed | None:
        async with asyncio.timeout(WAIT):
            return await self.closed


async def test_hub_client_text_and_binary(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    uri = await websockets_server(ws_echo)
    ws = await client(uri)
    async with asyncio.timeout(WAIT):
        await ws.send("héllo ☕")
        assert await ws.recv() == "héllo ☕"
        await ws.send(b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"


async def test_hub_client_sends_fragments(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    fragments: asyncio.Queue[list[str | bytes]] = asyncio.Queue()

    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        while True:
            await fragments.put([f async for f in ws.recv_streaming()])

    uri = await websockets_server(handler)
    ws = await client(uri)

    async def parts() -> AsyncIterator[bytes]:
        yield b"async"
        yield b"gen"

    async with asyncio.timeout(WAIT):
        await ws.send(["frag", "ment", "ed ☕"])
        assert await fragments.get() == ["frag", "ment", "ed ☕"]
        await ws.send(parts())
        assert await fragments.get() == [b"async", b"gen"]


async def test_hub_client_receives_fragments(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.send(["frag", "ment", "ed ☕"])
        await ws.send([b"\x01", b"\x02"])
        await ws.wait_closed()

    uri = await websockets_server(handler)
    ws = await client(uri)
    async with asyncio.timeout(WAIT):
        assert await ws.recv() == "fragmented ☕"
        assert await ws.recv() == b"\x01\x02"


async def test_hub_client_16_mib(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    uri = await websockets_server(ws_echo, max_size=BIG_LIMIT)
    ws = await client(uri, max_size=BIG_LIMIT)
    binary = bytes(range(256)) * (BIG // 256)
    text = "ab☕" * (BIG // 5)
    async with asyncio.timeout(WAIT * 2):
        await ws.send(binary)
        assert await ws.recv() == binary
        await ws.send(text)
        assert await ws.recv() == text


async def test_hub_client_ping_pong(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    peer_rtt: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.recv()
        peer_rtt.set_result(await (await ws.ping(b"from websockets")))
        await ws.send("pinged")
        await ws.wait_closed()

    uri = await websockets_server(handler)
    ws = await client(uri, ping_interval=None)
    async with asyncio.timeout(WAIT):
        rtt = await (await ws.ping(b"from hub"))
        assert isinstance(rtt, float) and rtt > 0
        await ws.pong(b"unsolicited")
        await ws.send("go")
        # Our client answers the server's ping as it reads; recv() returns after it did.
        assert await ws.recv() == "pinged"
        assert isinstance(await peer_rtt, float)


async def test_hub_client_closes(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    outcome = PeerOutcome()
    uri = await websockets_server(outcome.report)
    ws = await client(uri)
    async with asyncio.timeout(WAIT):
        await ws.close()
        closed = await outcome.get()
    assert isinstance(closed, websockets.exceptions.ConnectionClosedOK)
    assert closed.rcvd is not None and closed.rcvd.code == 1000
    assert ws.close_code == 1000


async def test_hub_client_closes_with_code_and_reason(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    outcome = PeerOutcome()
    uri = await websockets_server(outcome.report)
    ws = await client(uri)
    async with asyncio.timeout(WAIT):
        await ws.close(4004, "from hub ☕")
        closed = await outcome.get()
    assert closed is not None and closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4004, "from hub ☕")


async def test_websockets_server_closes_hub_client(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.send("bye")

    uri = await websockets_server(handler)
    ws = await client(uri)
    async with asyncio.timeout(WAIT):
        assert await ws.recv() == "bye"
        with pytest.raises(ConnectionClosedOK) as exc_info:
            await ws.recv()
    assert exc_info.value.code == 1000
    assert ws.close_code == 1000


async def test_websockets_handler_error_is_1011_for_hub_client(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        raise RuntimeError("peer handler bug (expected in this test)")

    uri = await websockets_server(handler)
    ws = await client(uri)
    with pytest.raises(ConnectionClosedError) as exc_info:
        async with asyncio.timeout(WAIT):
            await ws.recv()
    assert exc_info.value.code == 1011


async def test_websockets_server_custom_close_for_hub_client(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.close(4005, "custom ☕")

    uri = await websockets_server(handler)
    ws = await client(uri)
    with pytest.raises(ConnectionClosedError) as exc_info:
        async with asyncio.timeout(WAIT):
            await ws.recv()
    assert (exc_info.value.code, exc_info.value.reason) == (4005, "custom ☕")
    assert (ws.close_code, ws.close_reason) == (4005, "custom ☕")


async def test_hub_client_max_size_against_websockets_server(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    outcome = PeerOutcome()

    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.send(b"y" * 2048)
        await outcome.report(ws)

    uri = await websockets_server(handler)
    ws = await client(uri, max_size=1024)
    async with asyncio.timeout(WAIT):
        with pytest.raises(ConnectionClosedError) as exc_info:
            await ws.recv()
        closed = await outcome.get()
    assert exc_info.value.sent is not None and exc_info.value.sent.code == 1009
    assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1009


async def test_websockets_server_max_size_for_hub_client(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    uri = await websockets_server(ws_echo, max_size=1024)
    ws = await client(uri)
    async with asyncio.timeout(WAIT):
        await ws.send(b"x" * 1025)
        with pytest.raises(ConnectionClosedError) as exc_info:
            await ws.recv()
    assert exc_info.value.code == 1009
    assert ws.close_code == 1009


async def test_websockets_server_sees_hub_client_port(
    websockets_server: Callable[..., Awaitable[str]], client: Connect
) -> None:
    peers: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        peers.set_result(ws.remote_address)
        await ws.wait_closed()

    uri = await websockets_server(handler)
    ws = await client(uri)
    async with asyncio.timeout(WAIT):
        assert tuple((await peers)[:2]) == tuple(ws.local_address[:2])
