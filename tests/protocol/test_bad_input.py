"""A hostile or broken peer, byte by byte, over a raw TCP socket.

Every malformed frame must fail the connection with the close code RFC 6455 assigns (sections
5.2-5.5, 7.4.1, 8.1), the server must then close TCP, log nothing at ERROR, and keep serving its
other connections. Malformed handshakes get an HTTP error status; a handshake that never completes
is dropped after ``open_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator

import pytest

from hub.protocol import (
    ConnectionClosed,
    ConnectionClosedError,
    ProtocolError,
    WebSocketClientProtocol,
    WebSocketServer,
    WebSocketServerProtocol,
    connect,
)
from tests.protocol.rawpeer import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    RawClient,
    build_frame,
    close_payload,
    read_http_head,
    upgrade_request,
)
from tests.protocol.support import WAIT, StartServer, port_of, uri_of

MAX_SIZE = 1024
OPEN_TIMEOUT = 0.3


class Observed:
    """An echo handler that records how each connection ended, by request path."""

    def __init__(self) -> None:
        self.endings: dict[str, asyncio.Future[ConnectionClosed]] = {}

    def ending(self, path: str) -> asyncio.Future[ConnectionClosed]:
        if path not in self.endings:
            self.endings[path] = asyncio.get_running_loop().create_future()
        return self.endings[path]

    async def handler(self, ws: WebSocketServerProtocol, path: str) -> None:
        try:
            while True:
                await ws.send(await ws.recv())
        except ConnectionClosed as exc:
            self.ending(path).set_result(exc)
            raise


@pytest.fixture
def observed() -> Observed:
    return Observed()


@pytest.fixture
async def server(start_server: StartServer, observed: Observed) -> WebSocketServer:
    return await start_server(
        observed.handler, max_size=MAX_SIZE, open_timeout=OPEN_TIMEOUT, ping_interval=None
    )


@pytest.fixture
async def witness(server: WebSocketServer) -> AsyncIterator[WebSocketClientProtocol]:
    """A well-behaved client on the same server, which must not notice the bad one."""
    ws = await connect(uri_of(server, "/witness"), ping_interval=None)
    yield ws
    async with asyncio.timeout(WAIT):
        await ws.close()


async def still_works(ws: WebSocketClientProtocol, message: str) -> None:
    async with asyncio.timeout(WAIT):
        await ws.send(message)
        assert await ws.recv() == message


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="hub.protocol")
    return caplog


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


# --- malformed frames ----------------------------------------------------------------------------


def frame_with_64_bit_length(length: int) -> bytes:
    """A masked binary frame header that advertises ``length`` bytes and carries none."""
    return struct.pack("!BBQ", 0x80 | BINARY, 0x80 | 127, length) + b"\x00\x00\x00\x00"


FRAME_CASES: list[tuple[str, bytes, int]] = [
    # Section 5.2: RSV1-3 MUST be 0 unless an extension defines them.
    ("rsv1", build_frame(TEXT, b"hi", rsv=0x40), 1002),
    ("rsv2", build_frame(TEXT, b"hi", rsv=0x20), 1002),
    ("rsv3", build_frame(BINARY, b"hi", rsv=0x10), 1002),
    ("rsv1-on-ping", build_frame(PING, b"", rsv=0x40), 1002),
    # Section 5.2: reserved opcodes.
    *[(f"opcode-{op:#x}", build_frame(op, b"x"), 1002) for op in (3, 4, 5, 6, 7)],
    *[(f"opcode-{op:#x}", build_frame(op, b""), 1002) for op in (0xB, 0xC, 0xD, 0xE, 0xF)],
    # Section 5.1: a server MUST close the connection upon an unmasked frame.
    ("unmasked-text", build_frame(TEXT, b"hi", masked=False), 1002),
    ("unmasked-ping", build_frame(PING, b"hi", masked=False), 1002),
    # Section 5.5: control frames are at most 125 bytes and never fragmented.
    ("fragmented-ping", build_frame(PING, b"x", fin=False), 1002),
    ("fragmented-close", build_frame(CLOSE, close_payload(1000), fin=False), 1002),
    ("oversized-ping", build_frame(PING, b"x" * 126), 1002),
    ("oversized-pong", build_frame(PONG, b"x" * 126), 1002),
    ("oversized-close", build_frame(CLOSE, close_payload(1000, b"x" * 124)), 1002),
    # Section 5.4: continuation frames only inside a fragmented message, and no new message
    # before the fragmented one ends.
    ("continuation-first", build_frame(CONT, b"x"), 1002),
    ("continuation-after-final", build_frame(TEXT, b"a") + build_frame(CONT, b"b"), 1002),
    (
        "text-inside-fragmented-text",
        build_frame(TEXT, b"a", fin=False) + build_frame(TEXT, b"b"),
        1002,
    ),
    (
        "binary-inside-fragmented-binary",
        build_frame(BINARY, b"a", fin=False) + build_frame(BINARY, b"b"),
        1002,
    ),
    # Section 5.2: the most significant bit of a 64-bit length MUST be 0.
    ("64-bit-length-msb", frame_with_64_bit_length(1 << 63), 1002),
    # Section 5.5.1 and 7.4: close payloads.
    ("close-1-byte", build_frame(CLOSE, b"\x03"), 1002),
    *[
        (f"close-code-{code}", build_frame(CLOSE, close_payload(code)), 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)
    ],
    # Section 8.1: text must be UTF-8; 7.4.1: 1007 for data inconsistent with the type.
    ("text-invalid-utf8", build_frame(TEXT, b"\xff\xfe"), 1007),
    ("text-surrogate", build_frame(TEXT, b"\xed\xa0\x80"), 1007),
    ("text-overlong", build_frame(TEXT, b"\xc0\xaf"), 1007),
    ("text-truncated", build_frame(TEXT, b"ok\xe2\x82"), 1007),
    (
        "fragmented-text-invalid-utf8",
        build_frame(TEXT, b"ok", fin=False) + build_frame(CONT, b"\xc3\x28"),
        1007,
    ),
    (
        "fragmented-text-truncated-at-end",
        build_frame(TEXT, b"ok\xc3", fin=False) + build_frame(CONT, b""),
        1007,
    ),
    ("close-reason-invalid-utf8", build_frame(CLOSE, close_payload(1000, b"\xff")), 1007),
    # Section 7.4.1: 1009 for a message too big to process.
    ("message-too-big", build_frame(BINARY, b"x" * (MAX_SIZE + 1)), 1009),
    ("text-too-big", build_frame(TEXT, b"x" * (MAX_SIZE + 1)), 1009),
    (
        "fragments-too-big",
        build_frame(BINARY, b"x" * 600, fin=False) + build_frame(CONT, b"y" * 600),
        1009,
    ),
    ("length-too-big-header-only", frame_with_64_bit_length(1 << 40), 1009),
]


@pytest.mark.parametrize(
    ("data", "code"),
    [(data, code) for _, data, code in FRAME_CASES],
    ids=[name for name, _, _ in FRAME_CASES],
)
async def test_malformed_frame(
    server: WebSocketServer,
    witness: WebSocketClientProtocol,
    observed: Observed,
    log: pytest.LogCaptureFixture,
    data: bytes,
    code: int,
) -> None:
    raw = await RawClient.connect(port_of(server), "/bad")
    try:
        raw.send(data)
        await still_works(witness, "during")
        async with asyncio.timeout(WAIT):
            others, close = await raw.recv_until_close()
            assert await raw.expect_eof() == b"", "the server must close TCP after failing"
            ending = await observed.ending("/bad")
    finally:
        await raw.aclose()

    assert others == [], "nothing but the close frame should come back"
    assert close.close_code == code
    assert not close.masked
    # The handler saw the failure as a closed connection, with the violation as its cause.
    assert isinstance(ending, ConnectionClosedError)
    assert ending.sent is not None and ending.sent.code == code
    assert isinstance(ending.__cause__, ProtocolError)
    assert ending.__cause__.code == code

    await still_works(witness, "after")
    async with asyncio.timeout(WAIT):
        fresh = await connect(uri_of(server, "/fresh"))
        await fresh.send("new connection")
        assert await fresh.recv() == "new connection"
        await fresh.close()
    assert errors_logged(log) == []


async def test_garbage_after_a_close_frame_is_ignored(
    server: WebSocketServer, witness: WebSocketClientProtocol, log: pytest.LogCaptureFixture
) -> None:
    """Section 5.5.1: nothing may follow a close frame; a server ignores what does."""
    raw = await RawClient.connect(port_of(server), "/bad")
    try:
        raw.send(build_frame(CLOSE, close_payload(1000)) + b"\xff\xff\xff garbage")
        async with asyncio.timeout(WAIT):
            others, close = await raw.recv_until_close()
            assert await raw.expect_eof() == b""
    finally:
        await raw.aclose()
    assert others == []
    assert close.close_code == 1000
    await still_works(witness, "after")
    assert errors_logged(log) == []


async def test_split_frames_byte_by_byte_are_fine(
    server: WebSocketServer, log: pytest.LogCaptureFixture
) -> None:
    """The control case: well-formed frames fed one byte per write still work."""
    raw = await RawClient.connect(port_of(server), "/good")
    try:
        data = build_frame(TEXT, "fragmenté".encode(), fin=False) + build_frame(CONT, b" ok")
        async with asyncio.timeout(WAIT):
            for i in range(len(data)):
                raw.send(data[i : i + 1])
                await raw.writer.drain()
            frame = await raw.recv_frame()
            assert (frame.opcode, frame.payload) == (TEXT, "fragmenté ok".encode())
            raw.send_frame(CLOSE, close_payload(1000))
            _, close = await raw.recv_until_close()
            assert close.close_code == 1000
            assert await raw.expect_eof() == b""
    finally:
        await raw.aclose()
    assert errors_logged(log) == []


# --- malformed handshakes ------------------------------------------------------------------------


async def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    """Send raw bytes, read the HTTP response and then until EOF."""
    raw = await RawClient.open(port)
    try:
        raw.send(request)
        async with asyncio.timeout(WAIT):
            head = await read_http_head(raw.reader)
            rest = await raw.expect_eof()
    finally:
        await raw.aclose()
    return head.status, head.headers, rest


def request_with(**changes: str | None) -> bytes:
    """A valid upgrade request with headers replaced (a value) or removed (None);
    ``Sec_WebSocket_Key`` stands for ``Sec-WebSocket-Key``.
    """
    names = {name: name.replace("_", "-") for name in changes}
    request, _ = upgrade_request(
        "/",
        omit=tuple(names[name] for name, value in changes.items() if value is None),
        extra={names[name]: value for name, value in changes.items() if value is not None},
    )
    return request


HANDSHAKE_CASES: list[tuple[str, bytes, int]] = [
    ("garbage", b"GARBAGE\r\n\r\n", 400),
    ("binary-garbage-line", b"\x00\x01\x02\x03\xff\r\n\r\n", 400),
    ("http-1.0", b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", 400),
    ("post", request_with().replace(b"GET ", b"POST ", 1), 405),
    ("not-absolute-path", request_with().replace(b"GET / ", b"GET chat ", 1), 400),
    ("huge-header-line", b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000, 431),
    ("huge-request-line", b"GET /" + b"a" * 9000, 414),
    (
        "too-many-headers",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
        431,
    ),
    ("header-without-colon", b"GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n", 400),
    ("missing-host", request_with(Host=None), 400),
    ("missing-upgrade", request_with(Upgrade=None), 400),
    ("wrong-upgrade", request_with(Upgrade="h2c"), 400),
    ("missing-connection", request_with(Connection=None), 400),
    ("missing-key", request_with(Sec_WebSocket_Key=None), 400),
    ("short-key", request_with(Sec_WebSocket_Key="c2hvcnQ="), 400),
    ("non-base64-key", request_with(Sec_WebSocket_Key="not base64 at all!!!!!=="), 400),
    ("missing-version", request_with(Sec_WebSocket_Version=None), 426),
    ("wrong-version", request_with(Sec_WebSocket_Version="8"), 426),
]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [(data, status) for _, data, status in HANDSHAKE_CASES],
    ids=[name for name, _, _ in HANDSHAKE_CASES],
)
async def test_malformed_handshake(
    server: WebSocketServer,
    witness: WebSocketClientProtocol,
    log: pytest.LogCaptureFixture,
    request_bytes: bytes,
    status: int,
) -> None:
    got, headers, _ = await http_exchange(port_of(server), request_bytes)
    assert got == status
    if status == 426:
        # Section 4.4: tell the client which versions the server speaks.
        assert headers.get("sec-websocket-version") == ["13"]
    assert errors_logged(log) == []
    assert any(r.name == "hub.protocol" and r.levelno == logging.INFO for r in log.records), (
        "a failed handshake is logged at INFO"
    )
    await still_works(witness, "after a bad handshake")


@pytest.mark.parametrize(
    "partial",
    [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1"],
    ids=["silent", "unfinished-request", "tls-client-hello"],
)
async def test_handshake_that_never_completes_is_dropped(
    server: WebSocketServer,
    witness: WebSocketClientProtocol,
    log: pytest.LogCaptureFixture,
    partial: bytes,
) -> None:
    raw = await RawClient.open(port_of(server))
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        raw.send(partial)
        await still_works(witness, "meanwhile")
        async with asyncio.timeout(WAIT):
            leftover = await raw.expect_eof()
        elapsed = loop.time() - start
    finally:
        await raw.aclose()
    assert b"101" not in leftover
    assert OPEN_TIMEOUT * 0.8 <= elapsed <= OPEN_TIMEOUT + 0.5, elapsed
    assert errors_logged(log) == []
    await still_works(witness, "after")
