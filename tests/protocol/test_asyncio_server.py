"""hub.protocol.asyncio.server over real sockets: serve/unix_serve, handlers, hooks, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import urllib.request
from collections.abc import Sequence
from email.message import Message
from pathlib import Path

import pytest

from hub.protocol import (
    ConnectionClosedError,
    ConnectionClosedOK,
    Headers,
    InvalidStatus,
    WebSocketServerProtocol,
    connect,
    serve,
    unix_connect,
    unix_serve,
)
from hub.protocol.asyncio.server import HTTPResponse
from tests.protocol.support import (
    WAIT,
    Capture,
    Connect,
    StartServer,
    TLSFiles,
    echo,
    port_of,
    uri_of,
)


async def refused(port: int) -> bool:
    """Whether nothing accepts TCP connections on 127.0.0.1:``port`` any more."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def http_get(port: int, path: str, limit: float = WAIT) -> tuple[bytes, bytes]:
    """A bare HTTP/1.1 GET over an asyncio stream; return (head, body) read until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        async with asyncio.timeout(limit):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def urllib_get(url: str) -> tuple[int, bytes, Message]:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return response.status, response.read(), response.headers


# --- starting and stopping ----------------------------------------------------------------------


async def test_serve_is_awaitable_and_closes() -> None:
    server = await serve(echo, "127.0.0.1", 0)
    try:
        assert server.sockets, "a listening server exposes its sockets"
        host, port = server.sockets[0].getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        assert server.is_serving()
        async with asyncio.timeout(WAIT):
            ws = await connect(f"ws://127.0.0.1:{port}/")
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.close()
    finally:
        server.close()
        async with asyncio.timeout(WAIT):
            await server.wait_closed()
    assert not server.is_serving()
    assert await refused(port)


def test_serve_refuses_an_unknown_compression_before_listening() -> None:
    with pytest.raises(ValueError, match="compression must be"):
        serve(echo, "127.0.0.1", 0, compression="gzip")  # type: ignore[arg-type]


async def test_serve_as_async_context_manager() -> None:
    async with asyncio.timeout(WAIT):
        async with serve(echo, "127.0.0.1", 0) as server:
            port = port_of(server)
            ws = await connect(f"ws://127.0.0.1:{port}/")
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"
        # Leaving the block shut the server down, and said goodbye to the open connection.
        with pytest.raises(ConnectionClosedOK) as exc_info:
            await ws.recv()
    assert exc_info.value.code == 1001
    assert await refused(port)


async def test_unix_serve_and_unix_connect(tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    seen: list[str] = []

    async def handler(ws: WebSocketServerProtocol, request_path: str) -> None:
        seen.append(request_path)
        await echo(ws, request_path)

    async with asyncio.timeout(WAIT):
        async with unix_serve(handler, path) as server:
            assert server.sockets[0].family == socket.AF_UNIX
            async with unix_connect(path, "ws://localhost/over/unix") as ws:
                await ws.send("over a unix socket")
                assert await ws.recv() == "over a unix socket"
            assert ws.close_code == 1000
    assert seen == ["/over/unix"]


async def test_serve_on_a_prebound_socket(start_server: StartServer, client: Connect) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = await start_server(echo, sock=sock)
    assert port_of(server) == port
    ws = await client(f"ws://127.0.0.1:{port}/")
    async with asyncio.timeout(WAIT):
        await ws.send("pre-bound")
        assert await ws.recv() == "pre-bound"


async def test_wss_with_a_self_signed_certificate(
    start_server: StartServer, client: Connect, tls_files: TLSFiles
) -> None:
    server = await start_server(echo, ssl=tls_files.server_context())
    ws = await client(f"wss://127.0.0.1:{port_of(server)}/", ssl=tls_files.client_context())
    assert ws.transport is not None
    assert ws.transport.get_extra_info("ssl_object") is not None, "the connection is not TLS"
    async with asyncio.timeout(WAIT):
        await ws.send("secret")
        assert await ws.recv() == "secret"
        await ws.send(b"x" * 200_000)
        assert await ws.recv() == b"x" * 200_000


async def test_wss_rejects_an_untrusted_certificate(
    start_server: StartServer, tls_files: TLSFiles
) -> None:
    server = await start_server(echo, ssl=tls_files.server_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        async with asyncio.timeout(WAIT):
            # The default context trusts the system CAs only, not our self-signed certificate.
            await connect(f"wss://127.0.0.1:{port_of(server)}/")


# --- handlers ------------------------------------------------------------------------------------


async def test_handler_gets_websocket_and_path(start_server: StartServer, client: Connect) -> None:
    calls: list[tuple[WebSocketServerProtocol, str]] = []

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        calls.append((ws, path))
        await ws.send(path)

    server = await start_server(handler)
    ws = await client(uri_of(server, "/chat/room?id=7"))
    async with asyncio.timeout(WAIT):
        assert await ws.recv() == "/chat/room?id=7"
    assert len(calls) == 1
    assert isinstance(calls[0][0], WebSocketServerProtocol)
    assert calls[0][0].path == "/chat/room?id=7"


async def test_partial_handler_with_extra_argument(
    start_server: StartServer, client: Connect
) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str, *, extra: str) -> None:
        await ws.send(f"{path} {extra}")

    server = await start_server(functools.partial(handler, extra="spam"))
    ws = await client(uri_of(server, "/eggs"))
    async with asyncio.timeout(WAIT):
        assert await ws.recv() == "/eggs spam"


async def test_one_argument_handler(start_server: StartServer, client: Connect) -> None:
    async def handler(ws: WebSocketServerProtocol) -> None:
        await ws.send(f"{ws.path} {ws.request_headers['X-Probe']}")

    server = await start_server(handler)
    ws = await client(uri_of(server, "/solo"), extra_headers={"X-Probe": "42"})
    async with asyncio.timeout(WAIT):
        assert await ws.recv() == "/solo 42"


async def test_handler_return_closes_with_1000(start_server: StartServer, client: Connect) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send("bye")

    server = await start_server(handler)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        assert await ws.recv() == "bye"
        with pytest.raises(ConnectionClosedOK) as exc_info:
            await ws.recv()
    assert exc_info.value.code == 1000
    assert ws.close_code == 1000


async def test_handler_exception_is_logged_and_closes_with_1011(
    start_server: StartServer, client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.protocol")

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.recv()
        raise RuntimeError("handler bug")

    server = await start_server(handler)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        await ws.send("trigger")
        with pytest.raises(ConnectionClosedError) as exc_info:
            await ws.recv()
    assert exc_info.value.code == 1011
    assert ws.close_code == 1011
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["hub.protocol"]
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)
    assert str(errors[0].exc_info[1]) == "handler bug"


# --- hooks ---------------------------------------------------------------------------------------


class HealthCheck(WebSocketServerProtocol):
    def process_request(self, path: str, request_headers: Headers) -> HTTPResponse | None:
        if path == "/healthz":
            return 200, [("Content-Type", "text/plain")], b"OK\n"
        return None


class AsyncHealthCheck(WebSocketServerProtocol):
    async def process_request(self, path: str, request_headers: Headers) -> HTTPResponse | None:
        await asyncio.sleep(0)  # a real hook would ask a database here
        if path == "/healthz":
            return 200, {"Content-Type": "text/plain"}, b"OK (async)\n"
        if path == "/forbidden":
            return 403, {}, b"go away\n"
        return None


@pytest.mark.parametrize(
    ("protocol", "body"), [(HealthCheck, b"OK\n"), (AsyncHealthCheck, b"OK (async)\n")]
)
async def test_process_request_answers_plain_http(
    start_server: StartServer,
    client: Connect,
    protocol: type[WebSocketServerProtocol],
    body: bytes,
) -> None:
    server = await start_server(echo, create_protocol=protocol)
    port = port_of(server)

    head, received = await http_get(port, "/healthz")
    assert head.split(b"\r\n")[0].startswith(b"HTTP/1.1 200 ")
    assert b"content-type: text/plain" in head.lower()
    assert received == body

    status, received, headers = await asyncio.to_thread(
        urllib_get, f"http://127.0.0.1:{port}/healthz"
    )
    assert status == 200
    assert received == body
    assert headers["Content-Type"] == "text/plain"

    # Other paths still upgrade.
    ws = await client(uri_of(server, "/ws"))
    async with asyncio.timeout(WAIT):
        await ws.send("still a websocket server")
        assert await ws.recv() == "still a websocket server"


async def test_async_process_request_can_refuse(start_server: StartServer) -> None:
    server = await start_server(echo, create_protocol=AsyncHealthCheck)
    with pytest.raises(InvalidStatus) as exc_info:
        async with asyncio.timeout(WAIT):
            await connect(uri_of(server, "/forbidden"))
    assert exc_info.value.status == 403
    assert exc_info.value.body == b"go away\n"


async def test_process_request_option(start_server: StartServer) -> None:
    seen: list[tuple[str, str | None]] = []

    def process_request(path: str, headers: Headers) -> HTTPResponse | None:
        seen.append((path, headers.get("User-Agent")))
        return 418, [("X-Teapot", "yes")], b"short and stout"

    server = await start_server(echo, process_request=process_request)
    head, body = await http_get(port_of(server), "/tea")
    assert head.startswith(b"HTTP/1.1 418 ")
    assert b"X-Teapot: yes" in head
    assert body == b"short and stout"
    assert seen == [("/tea", None)]


async def test_process_request_that_raises_gets_a_500_not_a_hang(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a process_request hook must be answered (500) and logged, like a handler bug.

    Not spelled out in the API spec; it is what the handler path does (log at ERROR, answer the
    peer) and what websockets' legacy server does (500 Internal Server Error).
    """
    caplog.set_level(logging.INFO, logger="hub.protocol")

    class Buggy(WebSocketServerProtocol):
        def process_request(self, path: str, request_headers: Headers) -> HTTPResponse | None:
            raise RuntimeError("hook bug")

    server = await start_server(echo, create_protocol=Buggy)
    try:
        head, _ = await http_get(port_of(server), "/", limit=1)
    except TimeoutError:
        pytest.fail("no HTTP response and no TCP close within 1 s: the connection hangs")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert any(r.name == "hub.protocol" and r.levelno == logging.ERROR for r in caplog.records)


async def test_subprotocol_negotiation_prefers_server_order(
    start_server: StartServer, client: Connect
) -> None:
    capture = Capture()
    server = await start_server(capture.handler, subprotocols=["chat", "superchat"])
    ws = await client(uri_of(server), subprotocols=["superchat", "chat"])
    server_ws = await capture.next()
    assert ws.subprotocol == "chat"
    assert server_ws.subprotocol == "chat"
    assert ws.response_headers.get("Sec-WebSocket-Protocol") == "chat"


async def test_no_common_subprotocol_means_none(start_server: StartServer, client: Connect) -> None:
    capture = Capture()
    server = await start_server(capture.handler, subprotocols=["chat"])
    ws = await client(uri_of(server), subprotocols=["other"])
    server_ws = await capture.next()
    assert ws.subprotocol is None
    assert server_ws.subprotocol is None
    assert "Sec-WebSocket-Protocol" not in ws.response_headers


async def test_select_subprotocol_override(start_server: StartServer, client: Connect) -> None:
    class ClientPreference(WebSocketServerProtocol):
        def select_subprotocol(
            self, offered: Sequence[str], supported: Sequence[str]
        ) -> str | None:
            return next((p for p in offered if p in supported), None)

    capture = Capture()
    server = await start_server(
        capture.handler, subprotocols=["chat", "superchat"], create_protocol=ClientPreference
    )
    ws = await client(uri_of(server), subprotocols=["superchat", "chat"])
    server_ws = await capture.next()
    assert ws.subprotocol == "superchat"
    assert server_ws.subprotocol == "superchat"


async def test_select_subprotocol_option(start_server: StartServer, client: Connect) -> None:
    def select(offered: Sequence[str], supported: Sequence[str]) -> str | None:
        return offered[-1] if offered else None

    capture = Capture()
    server = await start_server(capture.handler, select_subprotocol=select)
    ws = await client(uri_of(server), subprotocols=["a", "b", "c"])
    server_ws = await capture.next()
    assert ws.subprotocol == server_ws.subprotocol == "c"


async def test_selecting_a_subprotocol_not_offered_is_refused(start_server: StartServer) -> None:
    class Rogue(WebSocketServerProtocol):
        def select_subprotocol(
            self, offered: Sequence[str], supported: Sequence[str]
        ) -> str | None:
            return "rogue"

    server = await start_server(echo, create_protocol=Rogue)
    with pytest.raises(InvalidStatus) as exc_info:
        async with asyncio.timeout(WAIT):
            await connect(uri_of(server), subprotocols=["chat"])
    assert exc_info.value.status == 400


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://good.example", True),
        ("https://evil.example", False),
        (None, False),
    ],
)
async def test_origins_allow_list(
    start_server: StartServer, client: Connect, origin: str | None, allowed: bool
) -> None:
    server = await start_server(echo, origins=["https://good.example"])
    if allowed:
        ws = await client(uri_of(server), origin=origin)
        assert ws.open
        assert ws.request_headers["Origin"] == origin
    else:
        with pytest.raises(InvalidStatus) as exc_info:
            async with asyncio.timeout(WAIT):
                await connect(uri_of(server), origin=origin)
        assert exc_info.value.status == 403


async def test_origins_allow_list_with_none_admits_non_browsers(
    start_server: StartServer, client: Connect
) -> None:
    server = await start_server(echo, origins=["https://good.example", None])
    ws = await client(uri_of(server))
    assert ws.open


async def test_extra_headers_both_ways(start_server: StartServer, client: Connect) -> None:
    capture = Capture()
    server = await start_server(capture.handler, extra_headers={"X-Server": "hub-server"})
    ws = await client(uri_of(server), extra_headers=[("X-Client", "hub-client")])
    server_ws = await capture.next()
    assert ws.response_headers["X-Server"] == "hub-server"
    assert server_ws.response_headers["X-Server"] == "hub-server"
    assert server_ws.request_headers["X-Client"] == "hub-client"
    assert ws.request_headers["X-Client"] == "hub-client"


# --- shutdown ------------------------------------------------------------------------------------


async def test_close_says_1001_and_waits_for_handlers(
    start_server: StartServer, client: Connect
) -> None:
    started = asyncio.Event()
    events: list[str] = []

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        started.set()
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            await asyncio.sleep(0.05)  # deliberately slow cleanup, which close() must wait for
            events.append("handler finished")

    server = await start_server(handler)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        await started.wait()
        server.close()
        await server.wait_closed()
        events.append("wait_closed returned")
        with pytest.raises(ConnectionClosedOK) as exc_info:
            await ws.recv()
    assert events == ["handler finished", "wait_closed returned"]
    assert exc_info.value.code == 1001
    assert ws.close_code == 1001
    assert not server.is_serving()


async def test_close_with_a_connection_still_in_the_handshake(start_server: StartServer) -> None:
    request_started = asyncio.Event()

    class Watched(WebSocketServerProtocol):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            request_started.set()

    server = await start_server(echo, create_protocol=Watched)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    try:
        writer.write(b"GET / HTTP/1.1\r\n")  # and never the rest
        async with asyncio.timeout(WAIT):
            await request_started.wait()
            server.close()
            await server.wait_closed()
            try:
                leftover = await reader.read()
            except ConnectionResetError:
                leftover = b""
        assert b"101" not in leftover
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_wait_closed_is_idempotent_and_close_twice_is_harmless(
    start_server: StartServer,
) -> None:
    server = await start_server(echo)
    server.close()
    server.close()
    async with asyncio.timeout(WAIT):
        await server.wait_closed()
        await server.wait_closed()
    assert not server.is_serving()
