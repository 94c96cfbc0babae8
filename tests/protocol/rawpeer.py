"""A hand-written WebSocket peer for the socket tests, independent of hub's own protocol code.

Nothing here imports ``hub``: frames are built and parsed, and the handshake is done, from RFC 6455
directly, so a bug in hub's framing or handshake cannot cancel itself out in the tests.

- :func:`build_frame` builds any frame, including malformed ones (RSV bits, reserved opcodes,
  bogus lengths, unmasked client frames).
- :class:`RawClient` opens a TCP connection, sends an upgrade request and reads frames.
- :class:`RawServer` accepts TCP connections, optionally answers the upgrade, then hands the
  streams to a test-supplied behaviour (never read, never answer pings, ...).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = [
    "HttpHead",
    "RawClient",
    "RawFrame",
    "RawServer",
    "accept_key",
    "build_frame",
    "close_payload",
    "mask",
    "read_frame",
    "read_http_head",
    "small_buffer_socket",
    "upgrade_request",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for ``key`` (RFC 6455 section 4.2.2, item 5.4)."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (section 5.3)."""
    size = len(payload)
    if size == 0:
        return b""
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
    key: bytes | None = None,
) -> bytes:
    """One frame as bytes; ``rsv`` is the RSV bits in place (0x40, 0x20, 0x10).

    ``length`` overrides the advertised payload length (for frames that lie about their size).
    """
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 1 << 16:
        header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = os.urandom(4) if key is None else key
    return header + key + mask(payload, key)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


@dataclass(frozen=True)
class RawFrame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE
        return int.from_bytes(self.payload[:2], "big") if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        assert self.opcode == CLOSE
        return self.payload[2:]


async def read_frame(reader: asyncio.StreamReader) -> RawFrame:
    """Read one frame; unmask it if it is masked. Raises IncompleteReadError at EOF."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    masked = bool(second & 0x80)
    key = await reader.readexactly(4) if masked else b""
    payload = await reader.readexactly(size)
    if masked:
        payload = mask(payload, key)
    return RawFrame(bool(first & 0x80), first & 0x70, first & 0x0F, payload, masked)


@dataclass(frozen=True)
class HttpHead:
    """A parsed HTTP head: the first line split into words, headers with lower-cased names."""

    first_line: str
    headers: dict[str, list[str]]

    @property
    def status(self) -> int:
        return int(self.first_line.split(" ", 2)[1])

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return None if not values else ", ".join(values)


async def read_http_head(reader: asyncio.StreamReader) -> HttpHead:
    raw = await reader.readuntil(b"\r\n\r\n")
    first, *lines = raw[:-4].decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return HttpHead(first, headers)


def upgrade_request(
    path: str = "/",
    *,
    key: str | None = None,
    host: str = "127.0.0.1",
    extra: Mapping[str, str] | None = None,
    omit: tuple[str, ...] = (),
) -> tuple[bytes, str]:
    """A valid upgrade request (section 4.1), minus the ``omit`` headers, plus ``extra``."""
    key = base64.b64encode(os.urandom(16)).decode() if key is None else key
    headers = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    for name in omit:
        del headers[name]
    headers.update(extra or {})
    lines = [f"GET {path} HTTP/1.1"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def small_buffer_socket(*, rcvbuf: int | None = None, sndbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP socket with small kernel buffers, so back-pressure shows up quickly.

    Buffer sizes must be set before connect()/listen() to limit the TCP window.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.setblocking(False)
    return sock


class RawClient:
    """A TCP client that speaks WebSocket by hand: for malformed frames and silent peers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, *, sock: socket.socket | None = None) -> RawClient:
        """Open a TCP connection without any handshake (on ``sock`` if given)."""
        if sock is not None:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @classmethod
    async def connect(
        cls, port: int, path: str = "/", *, sock: socket.socket | None = None
    ) -> RawClient:
        """Open a TCP connection and complete the opening handshake; check the server's 101."""
        client = await cls.open(port, sock=sock)
        request, key = upgrade_request(path)
        client.writer.write(request)
        head = await read_http_head(client.reader)
        assert head.status == 101, head
        assert head.header("Sec-WebSocket-Accept") == accept_key(key)
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **options: object) -> None:
        self.writer.write(build_frame(opcode, payload, **options))  # type: ignore[arg-type]

    async def recv_frame(self) -> RawFrame:
        return await read_frame(self.reader)

    async def recv_until_close(self) -> tuple[list[RawFrame], RawFrame]:
        """Read frames up to and including a close frame; return (the others, the close frame)."""
        others: list[RawFrame] = []
        while True:
            frame = await self.recv_frame()
            if frame.opcode == CLOSE:
                return others, frame
            others.append(frame)

    async def expect_eof(self) -> bytes:
        """Read until the server closes TCP; return what came before (should be nothing)."""
        try:
            return await self.reader.read()
        except ConnectionResetError:
            return b""

    def pause_reading(self) -> None:
        """Stop reading: TCP fills up and pushes back on the server."""
        transport = self.writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self.writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.resume_reading()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server on 127.0.0.1 that answers the upgrade (if ``handshake``), then runs
    ``behaviour(reader, writer)`` for each connection. Use as ``async with RawServer(...)``.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        handshake: bool = True,
        sock: socket.socket | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.handshake = handshake
        self.sock = sock
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        #: The request head of each connection, once read.
        self.requests: list[HttpHead] = []

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Never cancel this task itself: on Python 3.11, asyncio logs an ERROR ("Exception in
        # callback StreamReaderProtocol...") for a cancelled client_connected_cb task. The
        # behaviour runs in an inner task that __aexit__ stops through ``self._stop``.
        self.writers.append(writer)
        outer = asyncio.current_task()
        assert outer is not None
        self.tasks.add(outer)
        inner = asyncio.ensure_future(self._run(reader, writer))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({inner, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            inner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await inner
            self.tasks.discard(outer)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.handshake:
                head = await read_http_head(reader)
                self.requests.append(head)
                key = head.header("Sec-WebSocket-Key")
                assert key is not None
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
                )
            await self.behaviour(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    async def __aenter__(self) -> RawServer:
        if self.sock is not None:
            self.sock.bind(("127.0.0.1", 0))
            self.server = await asyncio.start_server(self._serve, sock=self.sock)
        else:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.server is not None
        self.server.close()
        self._stop.set()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1)
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()


async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A peer that completes the handshake, then neither reads nor writes anything."""
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()
    await asyncio.Event().wait()


async def read_but_never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A peer that reads everything (so TCP never pushes back) and never answers anything."""
    while await reader.read(65536):
        pass
    await asyncio.Event().wait()
