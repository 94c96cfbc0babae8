"""Echo throughput benchmark: hub's WebSocket server against a ``websockets`` echo server.

Both servers run as subprocesses on free loopback ports and are driven by the same load client
in this process. For every case the client holds connections to both servers and loads one
server at a time, taking turns in short timed slices (ABBA order: A B B A A B ...), so that the
noise of a shared machine falls on both alike. Read the ratio column, not the absolute rates.

The load client is deliberately minimal and uses the standard library only (it imports neither
hub nor websockets): it does the HTTP upgrade itself, builds each masked frame once per case,
writes pre-built bytes, and reads the echoes by frame header alone, without looking at payloads.
Each connection keeps ``--window`` messages in flight. Before a server is timed, one echo of
every message used is checked byte for byte on a separate connection.

Run ``python benchmarks/echo.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar, cast

HOST = "127.0.0.1"
MAX_SIZE = 16 * 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "websockets_echo.py"

OURS = "hub"
PEER = "websockets"
T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")


def script_command(script: Path) -> str:
    """The command template that runs a Python ``script`` on ``{host}`` and ``{port}``."""
    return "{python} " + shlex.quote(str(script)) + " --host {host} --port {port}"


DEFAULT_OURS_CMD = (
    "{python} -m hub.protocol --host {host} --port {port} --max-size 16777216 --no-compression"
)
DEFAULT_PEER_CMD = script_command(PEER_SCRIPT) + " --max-size 16777216"

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
KIND_OPCODES = {"text": OP_TEXT, "binary": OP_BINARY}
MAX_HANDSHAKE_RESPONSE = 16 * 1024
# Pre-built multi-frame batches are kept up to this many bytes per case; larger ones are made
# on demand.
BATCH_CACHE_BYTES = 8 * 1024 * 1024
# A server's output is shown after the table when it contains one of these.
TROUBLE_WORDS = ("error", "exception", "traceback", "warning", "failed")
# Seconds a server gets to refill its pipeline after a pause, before a timed slice starts.
SETTLE = 0.05
# A case is flagged as possibly limited by the load client above this share of one core.
CLIENT_BOUND_CPU = 0.9


class BenchmarkError(Exception):
    """The benchmark cannot produce a valid result."""


class ProtocolError(Exception):
    """The server's bytes are not what an echo server must send."""


# --- frames and handshake ------------------------------------------------------------------


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` (RFC 6455, section 5.3)."""
    n = len(payload)
    if n == 0:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")
    return masked.to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One complete (FIN) client frame, masked with ``key``."""
    first = 0x80 | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + key + mask(payload, key)


def close_frame(key: bytes, code: int = 1000) -> bytes:
    return client_frame(OP_CLOSE, struct.pack("!H", code), key)


def handshake_request(
    port: int, subprotocol: str | None = None, extensions: str | None = None
) -> tuple[bytes, str]:
    """An upgrade request (offering ``subprotocol`` and ``extensions``, if given) and the
    ``Sec-WebSocket-Accept`` value the server must answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    request = (
        "GET / HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
    )
    if subprotocol is not None:
        request += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
    if extensions is not None:
        request += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    return (request + "\r\n").encode(), accept


def response_headers(head: bytes, accept: str) -> dict[str, str]:
    """The headers of a handshake response ``head`` (up to the blank line; names lowercased),
    or ProtocolError unless it accepts the upgrade."""
    status, *lines = head.decode("latin-1").split("\r\n")
    if not status.startswith("HTTP/1.1 101"):
        raise ProtocolError(f"upgrade refused: {status!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept:
        raise ProtocolError("wrong or missing Sec-WebSocket-Accept")
    return headers


def check_subprotocol(headers: dict[str, str], subprotocol: str) -> None:
    """Raise ProtocolError unless the response ``headers`` chose ``subprotocol``."""
    chosen = headers.get("sec-websocket-protocol")
    if chosen is None:
        raise ProtocolError(f"server did not accept subprotocol {subprotocol}")
    if chosen != subprotocol:
        raise ProtocolError(f"server chose subprotocol {chosen!r}")


def check_handshake_response(head: bytes, accept: str, subprotocol: str | None = None) -> None:
    """Raise ProtocolError unless ``head`` (up to the blank line) accepts the upgrade, with
    ``subprotocol`` if one was offered and no extension."""
    headers = response_headers(head, accept)
    if "sec-websocket-extensions" in headers:
        raise ProtocolError("server negotiated an extension that was not offered")
    if subprotocol is not None:
        check_subprotocol(headers, subprotocol)


@dataclass(frozen=True)
class Message:
    """The message of one case, framed once and reused for every send."""

    kind: str
    payload: bytes
    key: bytes
    frame: bytes

    @property
    def opcode(self) -> int:
        return KIND_OPCODES[self.kind]

    @property
    def size(self) -> int:
        return len(self.payload)

    @classmethod
    def build(cls, kind: str, size: int, rng: random.Random) -> Message:
        if kind == "text":
            alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-"
            payload = bytes(rng.choices(alphabet, k=size))
        else:
            payload = rng.randbytes(size)
        # A key without zero bytes, so no server can skip unmasking.
        key = bytes(rng.randrange(1, 256) for _ in range(4))
        return cls(kind, payload, key, client_frame(KIND_OPCODES[kind], payload, key))


class FrameBatches:
    """``frame * k`` for the batch sizes the client writes, built once per case."""

    def __init__(self, frame: bytes, window: int) -> None:
        self._frame = frame
        self._cache = [b""]
        total = 0
        for k in range(1, window + 1):
            total += k * len(frame)
            if total > BATCH_CACHE_BYTES and k > 1:
                break
            self._cache.append(frame * k)

    def get(self, k: int) -> bytes:
        return self._cache[k] if k < len(self._cache) else self._frame * k


# --- the load client -----------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """A load-client connection: the HTTP upgrade, then every byte to :meth:`_feed`.

    It answers pings, does the closing handshake, and records the first thing the server got
    wrong in ``error`` (then aborts). ``opened`` and ``closed`` resolve when the upgrade is done
    and when the connection is gone, also on a failure.
    """

    def __init__(
        self,
        port: int,
        key: bytes,
        subprotocol: str | None = None,
        extensions: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.error: str | None = None
        self.warning: str | None = None
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._request, self._accept = handshake_request(port, subprotocol, extensions)
        self._subprotocol = subprotocol
        self._key = key  # masks every frame this connection sends
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._open = False
        self._close_sent = False

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._open:
            self._feed(data)
        else:
            self._handshake(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._close_sent and self.error is None:
            self.error = f"connection lost: {exc or 'closed by the server'}"
        for future in (self.opened, self.closed):
            if not future.done():
                future.set_result(None)

    # sending and closing

    def write(self, frames: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frames)

    async def close(self, grace: float) -> None:
        """The closing handshake, waiting for the server to end the TCP connection."""
        transport = self._transport
        if transport is None or self.closed.done():
            return
        self._close_sent = True
        transport.write(close_frame(self._key))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), grace)
        except TimeoutError:
            self.warning = self.warning or "server did not close TCP after the closing handshake"
            transport.abort()

    # incoming bytes

    def _handshake(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HANDSHAKE_RESPONSE:
                self._fail("handshake response too long")
            return
        rest = bytes(self._head[end + 4 :])
        try:
            self._check_response(bytes(self._head[:end]))
        except ProtocolError as exc:
            self._fail(str(exc))
            return
        self._open = True
        self._head.clear()
        self.opened.set_result(None)
        if rest:
            self._feed(rest)

    def _check_response(self, head: bytes) -> None:
        """Raise ProtocolError unless the response ``head`` accepts the upgrade as offered."""
        check_handshake_response(head, self._accept, self._subprotocol)

    def _feed(self, data: bytes) -> None:
        """Bytes after the upgrade."""
        raise NotImplementedError

    def _control(self, first: int, payload: bytes) -> None:
        """A control frame: a ping is answered, a close the client did not start is an error."""
        if first & 0xF0 != 0x80:
            raise ProtocolError("fragmented control frame or RSV bits set")
        opcode = first & 0x0F
        if opcode == OP_PING:
            self.write(client_frame(OP_PONG, payload, self._key))
        elif opcode == OP_CLOSE:
            if not self._close_sent:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                reason = payload[2:].decode(errors="replace")
                raise ProtocolError(f"the server closed the connection ({code} {reason})")
        elif opcode != OP_PONG:
            raise ProtocolError(f"unknown control opcode {opcode:#x}")

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        if self._transport is not None:
            self._transport.abort()


class EchoClient(Connection):
    """One benchmark connection: upgrade, then, while resumed, keep ``window`` messages in flight.

    Echoed frames are read by header only. The expected case (one unfragmented frame of the
    sent opcode and length) takes a short path; fragmented echoes and control frames are
    handled too, and anything an echo server must not send is recorded in ``error``.
    """

    def __init__(self, port: int, message: Message, batches: FrameBatches, window: int) -> None:
        super().__init__(port, message.key)
        self.received = 0
        self._drained: asyncio.Future[None] = self._loop.create_future()
        self._message = message
        self._batches = batches
        self._window = window
        self._fast_first_byte = 0x80 | message.opcode
        self._size = message.size
        self._in_flight = 0
        self._paused = True
        self._pending = b""  # an incomplete frame header (or control frame) from the last read
        self._skip = 0  # payload bytes of the current frame still to arrive
        self._skip_completes = False  # whether the current frame ends an echoed message
        self._message_length = -1  # payload so far of a fragmented message; -1 outside one

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._drained.done():
            self._drained.set_result(None)

    # load control

    def resume(self) -> None:
        """Fill the window and refill it with every echo until paused."""
        if not self._open or self.closed.done() or not self._paused:
            return
        assert self._transport is not None
        self._paused = False
        self._drained = self._loop.create_future()
        missing = self._window - self._in_flight
        if missing > 0:
            self._transport.write(self._batches.get(missing))
            self._in_flight += missing

    async def pause(self, grace: float) -> None:
        """Stop refilling and wait until the messages in flight have been echoed."""
        self._paused = True
        if self._in_flight == 0 or self.closed.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), grace)
        except TimeoutError:
            self.warning = f"{self._in_flight} echoes still missing {grace:g} s after a pause"

    async def close(self, grace: float) -> None:
        """Drain, then do the closing handshake, waiting for the server to end the TCP link."""
        await self.pause(grace)
        await super().close(grace)

    # incoming bytes

    def _feed(self, data: bytes) -> None:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        end = len(data)
        pos = 0
        echoed = 0
        if self._skip:
            if self._skip > end:
                self._skip -= end
                return
            pos = self._skip
            self._skip = 0
            echoed = int(self._skip_completes)
        fast_first_byte = self._fast_first_byte
        size = self._size
        try:
            while end - pos >= 2:
                first = data[pos]
                length = data[pos + 1]
                if length & 0x80:
                    raise ProtocolError("the server masked a frame")
                if length < 126:
                    start = pos + 2
                else:
                    start = pos + (4 if length == 126 else 10)
                    if start > end:
                        break
                    length = int.from_bytes(data[pos + 2 : start], "big")
                stop = start + length
                if first == fast_first_byte and length == size and self._message_length < 0:
                    completes = True
                elif first & 0x08:
                    if length > 125:
                        raise ProtocolError("control frame longer than 125 bytes")
                    if stop > end:
                        break  # keep the whole control frame for the next read
                    self._control(first, data[start:stop])
                    pos = stop
                    continue
                else:
                    completes = self._data_frame(first, length)
                if stop > end:
                    self._skip = stop - end
                    self._skip_completes = completes
                    pos = end
                    break
                pos = stop
                echoed += completes
        except ProtocolError as exc:
            self._fail(str(exc))
            return
        if pos < end:
            self._pending = data[pos:]
        if echoed:
            self._echoed(echoed)

    def _echoed(self, count: int) -> None:
        self.received += count
        self._in_flight -= count
        if self._in_flight < 0:
            self._fail("more echoes than messages sent")
        elif self._paused:
            if self._in_flight == 0 and not self._drained.done():
                self._drained.set_result(None)
        else:
            assert self._transport is not None
            self._transport.write(self._batches.get(count))
            self._in_flight += count

    def _data_frame(self, first: int, length: int) -> bool:
        """Check a frame off the short path; return whether it completes a message."""
        if first & 0x70:
            raise ProtocolError("RSV bits set, but no extension was negotiated")
        opcode = first & 0x0F
        if opcode == OP_CONT:
            if self._message_length < 0:
                raise ProtocolError("continuation frame outside a message")
            self._message_length += length
        elif opcode == self._message.opcode:
            if self._message_length >= 0:
                raise ProtocolError("new message before the fragmented one ended")
            self._message_length = length
        else:
            raise ProtocolError(f"opcode {opcode:#x} in an echo of a {self._message.kind} message")
        fin = bool(first & 0x80)
        if self._message_length > self._size or (fin and self._message_length != self._size):
            raise ProtocolError(f"echo is not {self._size} bytes long")
        if fin:
            self._message_length = -1
        return fin


async def read_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one whole (possibly fragmented) data message, skipping control frames."""
    opcode: int | None = None
    parts: list[bytes] = []
    while True:
        first, second = await reader.readexactly(2)
        if second & 0x80:
            raise ProtocolError("the server masked a frame")
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        frame_opcode = first & 0x0F
        if frame_opcode == OP_CLOSE:
            raise ProtocolError("the server closed the connection")
        if frame_opcode & 0x08:
            continue
        if first & 0x70:
            raise ProtocolError("RSV bits set, but no extension was negotiated")
        if opcode is None:
            opcode = frame_opcode
        parts.append(payload)
        if first & 0x80:
            return opcode, b"".join(parts)


async def verify_echo(port: int, message: Message) -> None:
    """Check on a fresh connection that the server echoes ``message`` exactly."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        request, accept = handshake_request(port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        check_handshake_response(head[:-4], accept)
        writer.write(message.frame)
        opcode, payload = await read_message(reader)
        if opcode != message.opcode:
            raise ProtocolError(f"{message.kind} message echoed with opcode {opcode:#x}")
        if payload != message.payload:
            raise ProtocolError(f"{message.size}-byte {message.kind} message echoed altered")
        writer.write(close_frame(message.key))
        # The server's close frame, then EOF; a slow close is left to the timed connections to
        # report.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def expand_command(template: str, port: int) -> list[str]:
    values = {"{python}": sys.executable, "{host}": HOST, "{port}": str(port)}
    argv = shlex.split(template)
    for placeholder, value in values.items():
        argv = [arg.replace(placeholder, value) for arg in argv]
    return argv


def stat_cpu_seconds(pid: int, *, user_only: bool = False) -> float | None:
    """CPU time of all threads of ``pid`` from /proc/PID/stat, in clock ticks (10 ms), if /proc
    has it: user plus system time, or with ``user_only`` the user-mode part alone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) if user_only else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def started_servers(
    commands: Mapping[str, str], timeout: float, cpu: int | None = None
) -> Iterator[dict[str, Server]]:
    """Start a server for each named command, one after the other, and stop them all when the
    block ends, however it ends."""
    servers: dict[str, Server] = {}
    try:
        for name, template in commands.items():
            servers[name] = server = Server.start(name, template, timeout, cpu)
            log(f"{name} server on port {server.port}: {shlex.join(server.argv)}")
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def shows_trouble(log_text: str) -> bool:
    """Whether a server's output has a word that suggests something went wrong."""
    return any(word in log_text.lower() for word in TROUBLE_WORDS)


def log_warnings(logs: Mapping[str, str]) -> list[str]:
    """A warning with the last lines of each server's log that shows trouble."""
    return [
        f"{name} server's log may show trouble; its last lines:\n{text}"
        for name, text in logs.items()
        if shows_trouble(text)
    ]


@dataclass
class Server:
    """An echo server subprocess in its own process group; its output goes to ``log``."""

    name: str
    argv: list[str]
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, template: str, timeout: float, cpu: int | None) -> Server:
        """Start ``template`` on a free port and wait until it accepts connections."""
        for attempt in range(3):
            port = free_port()
            argv = expand_command(template, port)
            fd, log_name = tempfile.mkstemp(prefix=f"echo-bench-{name}-", suffix=".log")
            with os.fdopen(fd, "wb") as log_file:
                process = subprocess.Popen(
                    argv,
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            server = cls(name, argv, port, process, Path(log_name))
            if cpu is not None:
                os.sched_setaffinity(process.pid, {cpu})
            try:
                server.wait_ready(timeout)
            except BenchmarkError:
                port_taken = "in use" in server.log_tail()
                server.stop()
                if port_taken and attempt < 2:
                    continue  # another process took the port first
                raise
            return server
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(
                    f"{self.name} server exited with {self.process.returncode}: "
                    f"{shlex.join(self.argv)}\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchmarkError(f"{self.name} server not accepting connections after {timeout:g} s")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchmarkError(
                f"{self.name} server died (exit {self.process.returncode})\n{self.log_tail()}"
            )

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time of the server process (all threads), if /proc has it."""
        return stat_cpu_seconds(self.process.pid)

    def log_text(self) -> str:
        """Everything the server wrote so far ("" once the log is gone)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server's process group, killing it if it lingers; remove the log."""
        if self.process.poll() is None:
            for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.log.unlink(missing_ok=True)


# --- measurement ---------------------------------------------------------------------------


class Rated(Protocol):
    @property
    def rate(self) -> float: ...


def sum_or_none(values: Iterable[float | None]) -> float | None:
    """The sum, or None if any value is unknown."""
    values = list(values)
    return None if None in values else sum(value or 0.0 for value in values)


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median, or None if there are no values or any is unknown."""
    if not values or any(value is None for value in values):
        return None
    return statistics.median(value or 0.0 for value in values)


def slice_count(duration: float, slice_: float) -> int:
    """How many slices of about ``slice_`` seconds make up ``duration`` timed seconds."""
    return max(1, round(duration / slice_))


async def alternate(
    pools: Mapping[str, P], first: str, count: int, measure: Callable[[P], Awaitable[R]]
) -> dict[str, list[R]]:
    """Run ``count`` slices on each pool in ABBA order, ``first`` first."""
    order = [first, *(name for name in pools if name != first)]
    slices: dict[str, list[R]] = {name: [] for name in order}
    for i in range(count):
        for name in order if i % 2 == 0 else reversed(order):
            slices[name].append(await measure(pools[name]))
    return slices


def rounds(items: Sequence[T], repeat: int, names: tuple[str, str]) -> Iterator[tuple[int, T, str]]:
    """Every item ``repeat`` times, with the name of the server that goes first: the two take
    turns from one item to the next and from one repetition to the next. Yields the number of
    this run (from 1), the item and that name."""
    done = 0
    for rep in range(repeat):
        for index, item in enumerate(items):
            done += 1
            yield done, item, names[(index + rep) % 2]


def slice_ratios(ours: Sequence[Sequence[Rated]], theirs: Sequence[Sequence[Rated]]) -> list[float]:
    """Ours / theirs for the slices that ran back to back, over all repetitions (each a list of
    slices); a slice in which theirs did nothing is left out."""
    return [
        our.rate / their.rate
        for our_slices, their_slices in zip(ours, theirs, strict=True)
        for our, their in zip(our_slices, their_slices, strict=True)
        if their.rate
    ]


def quartile_range(ratios: Sequence[float]) -> tuple[float, float]:
    """The interquartile range of the slice ratios (NaN when there are none)."""
    if len(ratios) < 2:
        return (ratios[0], ratios[0]) if ratios else (float("nan"), float("nan"))
    quartiles = statistics.quantiles(ratios, n=4)
    return quartiles[0], quartiles[2]


async def close_all(connections: Sequence[Connection], grace: float) -> list[str]:
    """Close every connection at once; the warnings they recorded, each once."""
    await asyncio.gather(*(connection.close(grace) for connection in connections))
    return sorted({c.warning for c in connections if c.warning})


def check_connections(
    server: Server, connections: Sequence[Connection], name: str | None = None
) -> None:
    """Raise BenchmarkError if any connection recorded an error, naming the first three; if
    the server died, say that instead."""
    errors = [f"connection {i}: {c.error}" for i, c in enumerate(connections) if c.error]
    if errors:
        server.check_alive()
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        name = server.name if name is None else name
        raise BenchmarkError(f"{name}: {'; '.join(errors[:3])}{more}")


@dataclass(frozen=True)
class Case:
    kind: str
    size: int
    conns: int

    @property
    def label(self) -> str:
        return f"{self.kind} {format_size(self.size)} x{self.conns}"


@dataclass(frozen=True)
class Run:
    """What one server did in one or more timed slices."""

    messages: int
    seconds: float
    client_cpu: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def client_load(self) -> float:
        return self.client_cpu / self.seconds

    @property
    def per_server_cpu(self) -> float | None:
        return self.messages / self.server_cpu if self.server_cpu else None

    @staticmethod
    def total(runs: Sequence[Run]) -> Run:
        return Run(
            sum(run.messages for run in runs),
            sum(run.seconds for run in runs),
            sum(run.client_cpu for run in runs),
            sum_or_none(run.server_cpu for run in runs),
        )

    def to_json(self, size: int) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "seconds": self.seconds,
            "msgs_per_s": self.rate,
            "mib_per_s": self.rate * size / 2**20,
            "client_cpu_s": self.client_cpu,
            "server_cpu_s": self.server_cpu,
        }


@dataclass
class Options:
    window: int
    duration: float
    slice: float
    warmup: float
    prime: float
    timeout: float


class Pool:
    """The connections of one case to one server, loaded only while measuring or warming up."""

    def __init__(self, server: Server, clients: list[EchoClient]) -> None:
        self.server = server
        self.clients = clients
        self._timed = [0] * len(clients)  # echoes per connection inside timed slices

    @classmethod
    async def open(cls, server: Server, case: Case, message: Message, opts: Options) -> Pool:
        loop = asyncio.get_running_loop()
        batches = FrameBatches(message.frame, opts.window)
        clients = [
            EchoClient(server.port, message, batches, opts.window) for _ in range(case.conns)
        ]
        pool = cls(server, clients)

        async def connect(client: EchoClient) -> None:
            await loop.create_connection(lambda: client, HOST, server.port)
            await client.opened

        try:
            try:
                async with asyncio.timeout(opts.timeout):
                    await asyncio.gather(*(connect(client) for client in clients))
            except (OSError, TimeoutError) as exc:
                reason = f"cannot open {case.conns} connections: {exc!r}"
                raise BenchmarkError(f"{server.name}: {reason}") from exc
            pool.check()
        except BenchmarkError:
            await pool.close(opts.timeout)
            raise
        return pool

    def check(self) -> None:
        check_connections(self.server, self.clients)

    async def warm_up(self, seconds: float, grace: float) -> None:
        for client in self.clients:
            client.resume()
        await asyncio.sleep(seconds)
        await asyncio.gather(*(client.pause(grace) for client in self.clients))
        self.check()

    async def measure(self, seconds: float, grace: float) -> Run:
        """Load the server, let it settle, count echoes for ``seconds``, then drain."""
        for client in self.clients:
            client.resume()
        await asyncio.sleep(SETTLE)
        before = [client.received for client in self.clients]
        wall, cpu, server_cpu = time.perf_counter(), time.process_time(), self.server.cpu_seconds()
        await asyncio.sleep(seconds)
        after = [client.received for client in self.clients]
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        server_cpu_after = self.server.cpu_seconds()
        await asyncio.gather(*(client.pause(grace) for client in self.clients))
        self.check()
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            self._timed[i] += a - b
        used = None
        if server_cpu is not None and server_cpu_after is not None:
            used = server_cpu_after - server_cpu
        return Run(sum(after) - sum(before), wall, cpu, used)

    def check_all_served(self) -> None:
        if stalled := self._timed.count(0):
            raise BenchmarkError(f"{self.server.name}: {stalled} connections got no echo at all")

    async def close(self, grace: float) -> list[str]:
        return await close_all(self.clients, grace)


@dataclass
class CaseResult:
    """All repetitions of one case: for each server, a list of timed slices per repetition."""

    case: Case
    slices: dict[str, list[list[Run]]] = field(default_factory=lambda: {OURS: [], PEER: []})

    def runs(self, name: str) -> list[Run]:
        return [Run.total(slices) for slices in self.slices[name]]

    def rate(self, name: str) -> float:
        return statistics.median(run.rate for run in self.runs(name))

    def ratio(self) -> float:
        """Median over repetitions of the hub/websockets message rate ratio."""
        pairs = zip(self.runs(OURS), self.runs(PEER), strict=True)
        return statistics.median(ours.rate / peer.rate for ours, peer in pairs)

    def cpu_ratio(self) -> float | None:
        """The same ratio for messages per second of server CPU time."""
        ratios = []
        for ours, peer in zip(self.runs(OURS), self.runs(PEER), strict=True):
            if ours.per_server_cpu is None or peer.per_server_cpu is None:
                return None
            ratios.append(ours.per_server_cpu / peer.per_server_cpu)
        return statistics.median(ratios)

    def slice_ratios(self) -> list[float]:
        """Ratios of the slices that ran back to back, over all repetitions."""
        return slice_ratios(self.slices[OURS], self.slices[PEER])

    def slice_spread(self) -> tuple[float, float]:
        """The interquartile range of the back-to-back slice ratios."""
        return quartile_range(self.slice_ratios())

    def client_load(self) -> float:
        return max(run.client_load for name in self.slices for run in self.runs(name))

    def to_json(self) -> dict[str, Any]:
        size = self.case.size
        servers = {
            name: {
                "msgs_per_s": self.rate(name),
                "repetitions": [
                    {
                        **Run.total(slices).to_json(size),
                        "slices": [run.to_json(size) for run in slices],
                    }
                    for slices in self.slices[name]
                ],
            }
            for name in self.slices
        }
        low, high = self.slice_spread()
        return {
            "case": self.case.label,
            "kind": self.case.kind,
            "size": size,
            "conns": self.case.conns,
            **servers,
            "ratio": self.ratio(),
            "ratio_per_server_cpu": self.cpu_ratio(),
            "slice_ratio_median": statistics.median(self.slice_ratios()),
            "slice_ratio_quartiles": [low, high],
            "max_client_cpu_share": self.client_load(),
        }


async def run_case(
    servers: dict[str, Server], case: Case, message: Message, opts: Options, first: str
) -> tuple[dict[str, list[Run]], list[str]]:
    """Time both servers on ``case`` in alternating slices, ``first`` first (ABBA order).

    Returns each server's slices and any warnings from closing the connections.
    """
    order = [first, *(name for name in servers if name != first)]
    pools: dict[str, Pool] = {}
    warnings: list[str] = []
    try:
        for name in order:
            pools[name] = await Pool.open(servers[name], case, message, opts)
        for name in order:
            await pools[name].warm_up(opts.warmup, opts.timeout)
        count = slice_count(opts.duration, opts.slice)
        seconds = opts.duration / count
        slices = await alternate(
            pools, first, count, lambda pool: pool.measure(seconds, opts.timeout)
        )
        for pool in pools.values():
            pool.check_all_served()
    finally:
        for name, pool in pools.items():
            notes = await pool.close(opts.timeout)
            warnings.extend(f"{case.label} on {name}: {note}" for note in notes)
    return slices, warnings


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def prime(
    servers: dict[str, Server], messages: dict[tuple[str, int], Message], conns: int, opts: Options
) -> None:
    """Load every server with every message, untimed, before any case is timed.

    A fresh Python server's speed with large messages depends on its history (glibc malloc
    adapts its mmap threshold to the buffers it frees: until then, page faults). Priming lets
    both servers reach their steady state first, so neither is measured while still adapting.
    """
    if opts.prime <= 0:
        return
    seconds = opts.prime / len({kind for kind, _ in messages})
    for (kind, size), message in sorted(messages.items(), key=lambda item: item[0][1]):
        for server in servers.values():
            pool = await Pool.open(server, Case(kind, size, conns), message, opts)
            try:
                await pool.warm_up(seconds, opts.timeout)
            finally:
                await pool.close(opts.timeout)
    log(f"primed both servers: {opts.prime:g} s per message size, {conns} connection(s)")


async def run_all(
    servers: dict[str, Server], cases: Sequence[Case], opts: Options, repeat: int, seed: int
) -> tuple[list[CaseResult], list[str]]:
    rng = random.Random(seed)
    messages = {
        (kind, size): Message.build(kind, size, rng)
        for kind in dict.fromkeys(c.kind for c in cases)
        for size in dict.fromkeys(c.size for c in cases)
    }
    for name, server in servers.items():
        for message in messages.values():
            try:
                async with asyncio.timeout(opts.timeout):
                    await verify_echo(server.port, message)
            except (ProtocolError, OSError, EOFError, TimeoutError) as exc:
                desc = f"{format_size(message.size)} {message.kind}"
                raise BenchmarkError(f"{name} failed the echo check ({desc}): {exc!r}") from exc
    log(f"echo check passed on both servers ({len(messages)} kinds and sizes of message)")
    await prime(servers, messages, max(case.conns for case in cases), opts)

    results = [CaseResult(case) for case in cases]
    warnings: list[str] = []
    for done, result, first in rounds(results, repeat, (OURS, PEER)):
        case = result.case
        try:
            slices, notes = await run_case(
                servers, case, messages[case.kind, case.size], opts, first
            )
        except BenchmarkError as exc:
            raise BenchmarkError(f"{case.label}: {exc}") from exc
        warnings.extend(notes)
        for name, runs in slices.items():
            result.slices[name].append(runs)
        ours, peer = Run.total(slices[OURS]), Run.total(slices[PEER])
        log(
            f"[{done}/{repeat * len(cases)}] {case.label:<20}"
            f" {OURS} {ours.rate:>9,.0f}  {PEER} {peer.rate:>9,.0f} msg/s"
            f"  ratio {ours.rate / peer.rate:.2f}"
            f"  client CPU {max(ours.client_load, peer.client_load):.0%}"
        )
    return results, warnings


# --- command line --------------------------------------------------------------------------

# Options that mean the same in every benchmark: parser.add_argument(name, **OPTION).
STARTUP_TIMEOUT_OPTION: dict[str, Any] = {
    "type": float,
    "default": 15.0,
    "help": "seconds a server may take to accept connections (default 15)",
}
JSON_OPTION: dict[str, Any] = {
    "action": "store_true",
    "help": "print JSON on stdout instead of the table",
}
# The notes under a table for the columns that every benchmark has.
SLICE_IQR_NOTE = (
    "slice IQR: interquartile range of the ratios of slices run back to back: the noise to expect"
)
CLIENT_CPU_NOTE = (
    "client CPU: the load client's share of one core; * marks a case it may have limited"
)


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that every server is stopped on the way out."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)


def exit_status(exc: BenchmarkError | KeyboardInterrupt) -> int:
    """Say why the run stopped; the exit status for it (1 for an error, 130 for Ctrl-C)."""
    if isinstance(exc, KeyboardInterrupt):
        log("interrupted")
        return 130
    log(f"error: {exc}")
    return 1


def format_table(rows: Sequence[Sequence[str]], right: Container[int] | None = None) -> str:
    """``rows`` (the header first) in aligned columns, with a rule under the header; the
    columns in ``right`` are right-aligned, by default all but the first."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(width) if (i > 0 if right is None else i in right) else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_client_load(load: float) -> str:
    """The client CPU cell: its share of one core, marked when it may have been the limit."""
    return f"{load:.0%}" + (" *" if load > CLIENT_BOUND_CPU else "")


def format_size(size: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def parse_size(text: str) -> int:
    text = text.strip()
    units = {"mib": 2**20, "m": 2**20, "kib": 2**10, "k": 2**10, "b": 1}
    lowered = text.lower()
    for suffix, scale in units.items():
        if lowered.endswith(suffix):
            return int(lowered.removesuffix(suffix).strip()) * scale
    return int(text)


def csv_of(convert: Callable[[str], T]) -> Callable[[str], list[T]]:
    """An argparse type for a comma-separated list of ``convert``-ed items."""

    def parse(text: str) -> list[T]:
        try:
            values = [convert(item) for item in text.split(",") if item.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values

    return parse


def kind_name(text: str) -> str:
    text = text.strip()
    if text not in KIND_OPCODES:
        raise ValueError(f"kind must be one of {', '.join(KIND_OPCODES)}, not {text!r}")
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Echo throughput of hub's WebSocket server against websockets.",
        epilog="In commands, {python}, {host} and {port} are replaced when a server starts.",
    )
    parser.add_argument(
        "--sizes",
        type=csv_of(parse_size),
        default=[32, 1024, 65536],
        help="message sizes, e.g. 32,1KiB,64KiB (default)",
    )
    parser.add_argument(
        "--conns",
        type=csv_of(int),
        default=[1, 100],
        help="concurrent connections per case (default 1,100)",
    )
    parser.add_argument(
        "--kinds",
        type=csv_of(kind_name),
        default=["text", "binary"],
        help="frame kinds: text,binary (default both)",
    )
    parser.add_argument(
        "--window", type=int, default=8, help="messages in flight per connection (default 8)"
    )
    parser.add_argument(
        "--duration", type=float, default=2.0, help="timed seconds per case and server (default 2)"
    )
    parser.add_argument(
        "--slice",
        type=float,
        default=0.25,
        help="the servers take turns every this many timed seconds (default 0.25)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="untimed seconds of load on each server before a case is timed (default 0.5)",
    )
    parser.add_argument(
        "--prime",
        type=float,
        default=1.0,
        help="untimed seconds of load per message size on each server before any case, with"
        " the most connections (default 1; 0 to skip)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="repetitions of every case; medians are reported (default 1)",
    )
    parser.add_argument("--seed", type=int, default=6455, help="seed for payloads and mask keys")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="limit for connecting, checking and closing, seconds (default 10)",
    )
    parser.add_argument("--startup-timeout", **STARTUP_TIMEOUT_OPTION)
    parser.add_argument(
        "--ours-cmd",
        default=DEFAULT_OURS_CMD,
        help=f"command for hub's server (default: {DEFAULT_OURS_CMD!r})",
    )
    parser.add_argument(
        "--peer-cmd",
        default=DEFAULT_PEER_CMD,
        help="command for the websockets peer (default: benchmarks/peers/...)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin this client to CPU 0 and both servers to CPU 1 (for a quiet machine only)",
    )
    parser.add_argument("--json", **JSON_OPTION)
    args = parser.parse_args(argv)
    for name in ("window", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if any(c < 1 for c in args.conns) or any(s < 0 or s > MAX_SIZE for s in args.sizes):
        parser.error(f"--conns must be positive and --sizes within 0..{MAX_SIZE}")
    if args.duration <= 0 or args.slice <= 0 or args.warmup < 0 or args.prime < 0:
        parser.error("--duration and --slice must be positive, --warmup and --prime not negative")
    return args


def render_table(results: Sequence[CaseResult]) -> str:
    header = (
        "case",
        f"{OURS} msg/s",
        f"{PEER} msg/s",
        "ratio",
        "slice IQR",
        "ratio/CPU",
        "client CPU",
    )
    rows = [header]
    for result in results:
        low, high = result.slice_spread()
        rows.append(
            (
                result.case.label,
                f"{result.rate(OURS):,.0f}",
                f"{result.rate(PEER):,.0f}",
                f"{result.ratio():.2f}",
                f"{low:.2f}-{high:.2f}",
                format_number(result.cpu_ratio()),
                format_client_load(result.client_load()),
            )
        )
    return format_table(rows)


TABLE_NOTES = f"""\
ratio: {OURS} msg/s / {PEER} msg/s, > 1 when {OURS} is faster (median over repetitions)
{SLICE_IQR_NOTE}
ratio/CPU: the same ratio for messages per second of each server process's own CPU time
{CLIENT_CPU_NOTE}"""


def json_report(
    env: dict[str, Any],
    config: dict[str, Any],
    servers: Mapping[str, Server],
    logs: Mapping[str, str],
    cases: list[dict[str, Any]],
    warnings: list[str],
) -> str:
    """The JSON output of a comparison of two servers."""
    report = {
        "environment": env,
        "config": config,
        "servers": {
            name: {"argv": server.argv, "log_tail": logs[name]} for name, server in servers.items()
        },
        "cases": cases,
        "warnings": warnings,
    }
    return json.dumps(report, indent=2)


def environment() -> dict[str, Any]:
    try:
        websockets_version = importlib.metadata.version("websockets")
    except importlib.metadata.PackageNotFoundError:
        websockets_version = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "websockets": websockets_version,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = [
        Case(kind, size, conns)
        for size in args.sizes
        for conns in args.conns
        for kind in args.kinds
    ]
    opts = Options(args.window, args.duration, args.slice, args.warmup, args.prime, args.timeout)
    slices = slice_count(opts.duration, opts.slice)
    per_case = 2 * (opts.duration + opts.warmup + slices * (SETTLE + 0.02) + 0.2)
    runs = len(cases) * args.repeat
    priming = 2 * len(args.sizes) * (opts.prime + 0.2 * len(args.kinds))
    log(f"{runs} cases to run, about {runs * per_case + priming:.0f} s")

    exit_on_sigterm()
    if args.pin:
        os.sched_setaffinity(0, {0})
    commands = {OURS: args.ours_cmd, PEER: args.peer_cmd}
    try:
        with started_servers(commands, args.startup_timeout, 1 if args.pin else None) as servers:
            results, warnings = asyncio.run(run_all(servers, cases, opts, args.repeat, args.seed))
            server_logs = {name: server.log_tail() for name, server in servers.items()}
    except (BenchmarkError, KeyboardInterrupt) as exc:
        return exit_status(exc)

    warnings += log_warnings(server_logs)
    if args.json:
        config = {
            "window": opts.window,
            "duration_s": opts.duration,
            "slice_s": opts.duration / slices,
            "settle_s": SETTLE,
            "warmup_s": opts.warmup,
            "prime_s": opts.prime,
            "repeat": args.repeat,
            "seed": args.seed,
            "pinned": args.pin,
        }
        cases_json = [result.to_json() for result in results]
        print(json_report(environment(), config, servers, server_logs, cases_json, warnings))
    else:
        env = environment()
        print(
            f"echo benchmark: window {opts.window}, {opts.duration:g} s per server and case "
            f"in {slices} slices, "
            f"repeat {args.repeat}; Python {env['python']}, {env['cpus']} CPUs, "
            f"websockets {env['websockets']}"
        )
        print(render_table(results))
        print(TABLE_NOTES)
        for warning in warnings:
            print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
