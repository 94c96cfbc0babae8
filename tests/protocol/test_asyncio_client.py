"""hub.protocol.asyncio.client over real sockets: connect/unix_connect, the handshake, timeouts."""

from __future__ import annotations

import asyncio
import base64
import ssl

import pytest

from hub.protocol import (
    ConnectionClosedOK,
    HandshakeError,
    HandshakeTimeout,
    Headers,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    NegotiationError,
    WebSocketClientProtocol,
    WebSocketServerProtocol,
    connect,
)
from hub.protocol.asyncio.server import HTTPResponse
from tests.protocol.rawpeer import (
    CLOSE,
    TEXT,
    RawServer,
    accept_key,
    build_frame,
    read_frame,
    read_http_head,
)
from tests.protocol.support import WAIT, Capture, Connect, StartServer, port_of, uri_of


async def test_connect_is_awaitable(echo_uri: str) -> None:
    async with asyncio.timeout(WAIT):
        ws = await connect(echo_uri)
        assert isinstance(ws, WebSocketClientProtocol)
        assert ws.open
        await ws.send("hi")
        assert await ws.recv() == "hi"
        await ws.close()
    assert ws.closed
    assert ws.close_code == 1000


async def test_connect_as_async_context_manager(start_server: StartServer) -> None:
    capture = Capture()
    server = await start_server(capture.handler)
    async with asyncio.timeout(WAIT):
        async with connect(uri_of(server)) as ws:
            server_ws = await capture.next()
            assert ws.open
        assert ws.closed
        await server_ws.wait_closed()
    assert ws.close_code == 1000
    assert server_ws.close_code == 1000


async def test_connect_context_manager_closes_on_error(start_server: StartServer) -> None:
    capture = Capture()
    server = await start_server(capture.handler)
    with pytest.raises(ZeroDivisionError):
        async with asyncio.timeout(WAIT), connect(uri_of(server)) as ws:
            await capture.next()
            1 / 0  # noqa: B018
    assert ws.closed


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1/",
        "https://127.0.0.1/",
        "ftp://127.0.0.1/",
        "127.0.0.1:8765",
        "ws://127.0.0.1/#fragment",
        "ws:///no-host",
    ],
)
async def test_invalid_uri_is_an_invalid_request(uri: str) -> None:
    with pytest.raises(InvalidRequest):
        async with asyncio.timeout(WAIT):
            await connect(uri)


async def test_ssl_context_with_a_ws_uri_is_refused(echo_uri: str) -> None:
    with pytest.raises(InvalidRequest):
        async with asyncio.timeout(WAIT):
            await connect(echo_uri, ssl=ssl.create_default_context())


async def test_server_refusal_is_invalid_status(start_server: StartServer) -> None:
    def refuse(path: str, headers: Headers) -> HTTPResponse | None:
        return 403, [("Content-Type", "text/plain")], b"members only\n"

    server = await start_server(process_request=refuse)
    with pytest.raises(InvalidStatus) as exc_info:
        async with asyncio.timeout(WAIT):
            await connect(uri_of(server))
    assert exc_info.value.status == 403
    assert exc_info.value.body == b"members only\n"
    assert isinstance(exc_info.value, HandshakeError)


async def test_open_timeout_against_a_server_that_never_answers() -> None:
    async def accept_and_stay_silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read(65536)
        await asyncio.Event().wait()

    async with RawServer(accept_and_stay_silent, handshake=False) as raw:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(HandshakeTimeout) as exc_info:
            async with asyncio.timeout(WAIT):
                await connect(raw.uri, open_timeout=0.3)
        elapsed = loop.time() - start
    assert isinstance(exc_info.value, TimeoutError)
    assert 0.25 <= elapsed <= 0.8, elapsed


async def test_open_timeout_against_a_partial_response() -> None:
    async def answer_half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_http_head(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
        await asyncio.Event().wait()

    async with RawServer(answer_half, handshake=False) as raw:
        with pytest.raises(HandshakeTimeout):
            async with asyncio.timeout(WAIT):
                await connect(raw.uri, open_timeout=0.2)


async def test_nothing_listening_is_an_os_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        async with asyncio.timeout(WAIT):
            await connect(f"ws://127.0.0.1:{port}/")


def response_behaviour(response: bytes) -> RawServer:
    """A raw server that reads the request and answers ``response`` with the key filled in."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_http_head(reader)
        key = head.header("Sec-WebSocket-Key") or ""
        writer.write(response.replace(b"{accept}", accept_key(key).encode()))
        await writer.drain()
        writer.close()

    return RawServer(answer, handshake=False)


GOOD_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: {accept}\r\n"
)


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (
            GOOD_101.replace(b"{accept}", base64.b64encode(b"x" * 20)) + b"\r\n",
            InvalidResponse,
        ),
        (GOOD_101.replace(b"Upgrade: websocket\r\n", b"") + b"\r\n", InvalidResponse),
        (GOOD_101.replace(b"Connection: Upgrade\r\n", b"") + b"\r\n", InvalidResponse),
        (GOOD_101 + b"Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n", NegotiationError),
        (GOOD_101 + b"Sec-WebSocket-Protocol: unrequested\r\n\r\n", NegotiationError),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", InvalidResponse),
        (b"HTTP/1.1 101 Switching", InvalidResponse),  # then the connection closes
        (b"", InvalidResponse),  # closed without a word
    ],
    ids=[
        "wrong-accept",
        "no-upgrade",
        "no-connection",
        "unrequested-extension",
        "unrequested-subprotocol",
        "not-http",
        "truncated",
        "closed",
    ],
)
async def test_invalid_handshake_responses(response: bytes, error: type[HandshakeError]) -> None:
    async with response_behaviour(response) as raw:
        with pytest.raises(error):
            async with asyncio.timeout(WAIT):
                await connect(raw.uri)


async def test_request_headers(start_server: StartServer, client: Connect) -> None:
    capture = Capture()
    server = await start_server(capture.handler)
    port = port_of(server)
    ws = await client(
        f"ws://127.0.0.1:{port}/path?q=1", origin="https://app.example", user_agent="probe/1"
    )
    server_ws = await capture.next()
    headers = server_ws.request_headers
    assert headers["Host"] == f"127.0.0.1:{port}"
    assert headers["Upgrade"].lower() == "websocket"
    assert "upgrade" in headers["Connection"].lower()
    assert headers["Sec-WebSocket-Version"] == "13"
    assert len(base64.b64decode(headers["Sec-WebSocket-Key"])) == 16
    assert headers["Origin"] == "https://app.example"
    assert headers["User-Agent"] == "probe/1"
    assert server_ws.path == ws.path == "/path?q=1"
    assert ws.response_headers["Sec-WebSocket-Accept"] == accept_key(headers["Sec-WebSocket-Key"])


async def test_no_user_agent(start_server: StartServer, client: Connect) -> None:
    capture = Capture()
    server = await start_server(capture.handler)
    await client(uri_of(server), user_agent=None)
    server_ws = await capture.next()
    assert "User-Agent" not in server_ws.request_headers


async def test_create_protocol(echo_uri: str, client: Connect) -> None:
    class Custom(WebSocketClientProtocol):
        pass

    ws = await client(echo_uri, create_protocol=Custom)
    assert type(ws) is Custom
    async with asyncio.timeout(WAIT):
        await ws.send("custom")
        assert await ws.recv() == "custom"


async def test_frames_right_after_the_101_are_not_lost(client: Connect) -> None:
    """A server may send frames in the same segment as its 101 response (section 4.1)."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_http_head(reader)
        key = head.header("Sec-WebSocket-Key") or ""
        writer.write(
            GOOD_101.replace(b"{accept}", accept_key(key).encode())
            + b"\r\n"
            + build_frame(TEXT, b"greeting", masked=False)
            + build_frame(TEXT, b"second", masked=False)
        )
        await asyncio.Event().wait()

    async with RawServer(greet, handshake=False) as raw:
        ws = await client(raw.uri, close_timeout=0.2)
        async with asyncio.timeout(WAIT):
            assert await ws.recv() == "greeting"
            assert await ws.recv() == "second"


async def test_server_greeting_from_a_hub_handler(
    start_server: StartServer, client: Connect
) -> None:
    async def greet(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send("welcome")
        await ws.send("and again")

    server = await start_server(greet)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        assert await ws.recv() == "welcome"
        assert await ws.recv() == "and again"
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()


async def test_client_waits_for_the_server_to_close_tcp(client: Connect) -> None:
    """RFC 6455 section 7.1.1: the server closes TCP first; the client waits for it."""
    release = asyncio.Event()

    async def close_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frame = await read_frame(reader)
        assert frame.opcode == CLOSE and frame.masked
        writer.write(build_frame(CLOSE, frame.payload[:2], masked=False))
        await release.wait()
        writer.close()

    async with RawServer(close_late) as raw:
        ws = await client(raw.uri, close_timeout=1.5)
        closing = asyncio.ensure_future(ws.close())
        done, _ = await asyncio.wait({closing}, timeout=0.2)
        assert not done, "the client returned before the server closed TCP"
        release.set()
        async with asyncio.timeout(WAIT):
            await closing
    assert ws.close_code == 1000
