"""Memory per idle connection: hub's WebSocket server against a ``websockets`` echo server
(``--mode echo``, the default), and hub-server against a naive ``websockets`` hub, with every
connection a live subscriber (``--mode hub``).

For each server and compression setting, a fresh server process is started (``python -m
hub.protocol``, ``benchmarks/peers/websockets_echo.py``), warmed up with a few connections that
come and go, and its resident set size (VmRSS in /proc/PID/status) is read. Then this process
opens N connections to it, each of which does the opening handshake and one echo round trip (so
that the server's buffers, and its compressor and decompressor when permessage-deflate is on, are
touched) and then stays idle. The RSS is read again, and::

    KiB per connection = (RSS with N idle connections - RSS after the warm-up) / N

The warm-up is the baseline: what a server allocates once, for its first connections (imports,
caches, allocator arenas), is not charged to the N connections.

Every client offers permessage-deflate, as browsers do, and checks the answer: a ``none`` server
must decline it, a ``deflate`` server must accept it. hub's command line is read at run time
(``python -m hub.protocol --help``) to find how to switch compression; when hub's server does not
negotiate permessage-deflate, its ``deflate`` row says so instead of a number.

``--mode hub`` does the same for ``hub-server`` (default settings, the handshake rate lifted) and
the naive hub of the fan-out benchmark (``benchmarks/peers/naive_hub.py``), with N connections
(5,000 by default) that each speak ``hub.v1.json``: read the ``welcome``, subscribe (half of them to
one shared topic ``room``, the other half each to its own ``user.<i>``, so that both a larger
subscriber set and a topic of its own are counted) and wait for the ``ok``. One extra connection
then publishes once to ``room``, every subscriber of ``room`` must receive exactly that ``msg`` (and
the others nothing), and the publisher leaves before the RSS is read. The clients offer
permessage-deflate or not; the naive hub declines it (it runs with ``compression=None``), so with
the offer it is measured a second time with its ``--compression deflate``.

The client uses the standard library only and reuses the frame helpers and the server runner of
``echo.py``. Run ``python benchmarks/memory.py --help``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from echo import (
    HOST,
    JSON_OPTION,
    OP_BINARY,
    OP_CONT,
    OP_TEXT,
    OURS,
    PEER,
    PEER_SCRIPT,
    REPO_ROOT,
    STARTUP_TIMEOUT_OPTION,
    BenchmarkError,
    Connection,
    ProtocolError,
    Server,
    check_connections,
    check_subprotocol,
    client_frame,
    close_all,
    environment,
    exit_on_sigterm,
    exit_status,
    format_number,
    format_table,
    log,
    median_or_none,
    response_headers,
    script_command,
    shows_trouble,
)
from fanout import (
    NAIVE_SCRIPT,
    SUBPROTOCOL,
    check_sub_ok,
    fill_template,
    json_object,
    raise_file_limit,
    source_version,
)

COMPRESSIONS = ("none", "deflate")
# The offer every client makes, letting the server choose the client's window.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
SYNC_TAIL = b"\x00\x00\xff\xff"
# Connections opened at once: both servers listen with asyncio's default backlog of 100.
BATCH = 100
# Descriptors beyond one per connection, for the interpreter and the servers' own files.
SPARE_FILES = 256
FILE_LIMIT_HINT = ": use fewer --conns"


# --- the clients ---------------------------------------------------------------------------


def extension_params(header: str) -> dict[str, str | None] | None:
    """The parameters of permessage-deflate in a Sec-WebSocket-Extensions value, if it is there."""
    for extension in header.split(","):
        name, *params = (part.strip() for part in extension.split(";"))
        if name.lower() == "permessage-deflate":
            parsed: dict[str, str | None] = {}
            for param in params:
                key, sep, value = param.partition("=")
                parsed[key.strip().lower()] = value.strip().strip('"') if sep else None
            return parsed
    return None


class Client(Connection):
    """A connection of this benchmark: whole frames, and permessage-deflate when negotiated.

    Each frame is read whole; data frames are put together into messages of the opcodes in
    ``OPCODES``, decompressed if the server set RSV1, and handed to :meth:`_message`. A subclass
    sets ``deflate`` (the server's permessage-deflate parameters, None when declined) in
    :meth:`_check_response`.
    """

    OPCODES: tuple[int, ...] = (OP_TEXT,)

    def __init__(
        self, port: int, key: bytes, subprotocol: str | None = None, offer_deflate: bool = False
    ) -> None:
        super().__init__(port, key, subprotocol, DEFLATE_OFFER if offer_deflate else None)
        self.deflate: dict[str, str | None] | None = None
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._compressed = False
        # When the server keeps its compression context, each message is inflated after all
        # the earlier ones, from scratch: a few messages per connection, and no zlib state (32 KiB
        # window) held per connection in this process.
        self._inflate_input = b""
        self._inflated = 0

    def abort(self) -> None:
        self._close_sent = True
        if self._transport is not None:
            self._transport.abort()

    def _send_text(self, text: bytes, smallest_window: int = 8) -> None:
        """Send ``text`` as one text message, compressed (RSV1) when permessage-deflate was
        negotiated: with a fresh compressor, whose output refers to nothing sent before, so it
        is valid whatever the server remembers, and the window the server allows, but at least
        2 ** ``smallest_window`` bytes."""
        assert self._transport is not None
        if self.deflate is None:
            self._transport.write(client_frame(OP_TEXT, text, self._key))
            return
        bits = max(int(self.deflate.get("client_max_window_bits") or 15), smallest_window)
        compressor = zlib.compressobj(wbits=-bits)
        data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not data.endswith(SYNC_TAIL):
            raise ProtocolError("zlib did not end the message with a sync flush")
        frame = client_frame(OP_TEXT, data[: -len(SYNC_TAIL)], self._key)
        self._transport.write(bytes((frame[0] | 0x40,)) + frame[1:])  # RSV1: compressed

    def _feed(self, data: bytes) -> None:
        try:
            self._buffer += data
            self._frames()
        except ProtocolError as exc:
            self._fail(str(exc))

    def _frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            if second & 0x80:
                raise ProtocolError("the server masked a frame")
            length, start = second & 0x7F, 2
            if length >= 126:
                start = 4 if length == 126 else 10
                if len(buffer) < start:
                    return
                length = int.from_bytes(buffer[2:start], "big")
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._frame(first, payload)

    def _frame(self, first: int, payload: bytes) -> None:
        if first & 0x08:
            self._control(first, payload)
            return
        opcode, rsv = first & 0x0F, first & 0x70
        if opcode in self.OPCODES:
            if self._fragments:
                raise ProtocolError("a new message before the last one ended")
            if rsv & ~0x40 or (rsv and self.deflate is None):
                raise ProtocolError("RSV bits set that no extension allows")
            self._compressed = bool(rsv)
        elif opcode != OP_CONT:
            raise ProtocolError(f"unexpected opcode {opcode:#x}")
        elif not self._fragments or rsv:
            raise ProtocolError("an unexpected continuation frame")
        self._fragments.append(payload)
        if not first & 0x80:
            return
        message = b"".join(self._fragments)
        self._fragments.clear()
        self._message(self._inflate(message) if self._compressed else message)

    def _inflate(self, data: bytes) -> bytes:
        assert self.deflate is not None
        data += SYNC_TAIL
        try:
            if "server_no_context_takeover" in self.deflate:
                return zlib.decompressobj(wbits=-15).decompress(data)
            self._inflate_input += data
            output = zlib.decompressobj(wbits=-15).decompress(self._inflate_input)
        except zlib.error as exc:
            raise ProtocolError(f"cannot decompress a message: {exc}") from None
        message = output[self._inflated :]
        self._inflated = len(output)
        return message

    def _message(self, payload: bytes) -> None:
        """A whole (decompressed) data message."""
        raise NotImplementedError


class IdleClient(Client):
    """Upgrade (offering permessage-deflate), send one text message, check its echo, then idle.

    Pings are answered. Anything else the server sends while idle, or the server closing the
    connection, is recorded in ``error``.
    """

    OPCODES = (OP_TEXT, OP_BINARY)

    def __init__(self, port: int, payload: bytes, key: bytes) -> None:
        super().__init__(port, key, offer_deflate=True)
        self.echoed: asyncio.Future[None] = self._loop.create_future()
        self._payload = payload

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.echoed.done():
            self.echoed.set_result(None)

    def _check_response(self, head: bytes) -> None:
        """Take the server's permessage-deflate answer, then send the message."""
        headers = response_headers(head, self._accept)
        self.deflate = extension_params(headers.get("sec-websocket-extensions", ""))
        self._send_text(self._payload)

    def _frame(self, first: int, payload: bytes) -> None:
        if not first & 0x08 and self.echoed.done():
            raise ProtocolError("a message from an echo server that was sent nothing")
        super()._frame(first, payload)

    def _message(self, payload: bytes) -> None:
        if payload != self._payload:
            raise ProtocolError("the echo differs from the message sent")
        self.echoed.set_result(None)


# --- measuring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One server and compression setting: how to start it, or why it cannot be measured."""

    server: str
    compression: str
    command: str | None
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.server} ({self.compression})"


@dataclass
class Measurement:
    """One run of one target. Sizes are KiB, from /proc/PID/status."""

    conns: int
    rss_started: int
    rss_before: int
    rss_after: int
    anon_before: int | None
    anon_after: int | None
    open_seconds: float

    @classmethod
    def from_status(
        cls,
        conns: int,
        started: dict[str, int],
        before: dict[str, int],
        after: dict[str, int],
        open_seconds: float,
        **more: Any,
    ) -> Self:
        """A run from the /proc/PID/status readings at the start, after the warm-up (the
        baseline) and with the ``conns`` connections open; ``more`` for a subclass's fields."""
        return cls(
            conns=conns,
            rss_started=started["VmRSS"],
            rss_before=before["VmRSS"],
            rss_after=after["VmRSS"],
            anon_before=before.get("RssAnon"),
            anon_after=after.get("RssAnon"),
            open_seconds=open_seconds,
            **more,
        )

    @property
    def kib_per_conn(self) -> float:
        return (self.rss_after - self.rss_before) / self.conns

    @property
    def anon_kib_per_conn(self) -> float | None:
        if self.anon_before is None or self.anon_after is None:
            return None
        return (self.anon_after - self.anon_before) / self.conns

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "kib_per_conn": self.kib_per_conn,
            "anon_kib_per_conn": self.anon_kib_per_conn,
        }


@dataclass
class Result:
    target: Target
    runs: list[Measurement] = field(default_factory=list)
    error: str | None = None

    def kib_per_conn(self) -> float | None:
        return median_or_none([m.kib_per_conn for m in self.runs])

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.target.server,
            "compression": self.target.compression,
            "command": self.target.command,
            "note": self.target.note or None,
            "error": self.error,
            "kib_per_conn": self.kib_per_conn(),
            "runs": [m.to_json() for m in self.runs],
        }


@dataclass(frozen=True)
class Options:
    conns: int
    warmup: int
    payload: bytes
    settle: float
    timeout: float


def proc_status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/PID/status (VmRSS, RssAnon, ...), in KiB."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise BenchmarkError(f"cannot read /proc/{pid}/status: {exc}") from exc
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0])
    if "VmRSS" not in fields:
        raise BenchmarkError(f"no VmRSS in /proc/{pid}/status")
    return fields


async def settled_status(pid: int, settle: float) -> dict[str, int]:
    """/proc status after ``settle`` seconds of quiet, the median VmRSS of three readings."""
    await asyncio.sleep(settle)
    readings = []
    for _ in range(3):
        readings.append(proc_status(pid))
        await asyncio.sleep(0.05)
    readings.sort(key=lambda fields: fields["VmRSS"])
    return readings[1]


async def open_clients(
    server: Server, count: int, opts: Options, expect_deflate: bool
) -> list[IdleClient]:
    """Open ``count`` connections, BATCH at a time, each with its echo checked."""
    loop = asyncio.get_running_loop()
    clients: list[IdleClient] = []

    async def open_one() -> None:
        key = os.urandom(4)
        client = IdleClient(server.port, opts.payload, key)
        clients.append(client)
        await loop.create_connection(lambda: client, HOST, server.port)
        await client.echoed

    try:
        async with asyncio.timeout(opts.timeout):
            for start in range(0, count, BATCH):
                await asyncio.gather(*(open_one() for _ in range(min(BATCH, count - start))))
    except (OSError, TimeoutError) as exc:
        server.check_alive()
        abort_all(clients)
        raise BenchmarkError(f"{server.name}: cannot open {count} connections: {exc!r}") from exc
    try:
        check_clients(server, clients, expect_deflate)
    except BenchmarkError:
        abort_all(clients)
        raise
    return clients


def check_clients(server: Server, clients: Sequence[IdleClient], expect_deflate: bool) -> None:
    check_connections(server, clients)
    for client in clients:
        if (client.deflate is not None) != expect_deflate:
            said = "accepted" if client.deflate is not None else "declined"
            raise NotNegotiated(f"{server.name} {said} permessage-deflate")


class NotNegotiated(BenchmarkError):
    """The server's permessage-deflate answer does not match its compression setting."""


def abort_all(clients: Sequence[Client]) -> None:
    for client in clients:
        client.abort()


async def measure(server: Server, opts: Options, expect_deflate: bool) -> Measurement:
    """Warm up, read the RSS, open ``opts.conns`` idle connections, read it again, close them."""
    pid = server.process.pid
    started = proc_status(pid)
    if opts.warmup:
        warm = await open_clients(server, opts.warmup, opts, expect_deflate)
        await close_all(warm, opts.timeout)
    before = await settled_status(pid, opts.settle)

    loop = asyncio.get_running_loop()
    start = loop.time()
    clients = await open_clients(server, opts.conns, opts, expect_deflate)
    open_seconds = loop.time() - start
    try:
        after = await settled_status(pid, opts.settle)
        server.check_alive()
        check_clients(server, clients, expect_deflate)  # still open, nothing unexpected
    finally:
        await close_all(clients, opts.timeout)
    return Measurement.from_status(opts.conns, started, before, after, open_seconds)


# --- targets -------------------------------------------------------------------------------


def hub_targets() -> list[Target]:
    """hub's two targets, from what ``python -m hub.protocol --help`` offers."""
    base = "{python} -m hub.protocol --host {host} --port {port}"
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "hub.protocol", "--help"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchmarkError(f"python -m hub.protocol --help failed: {exc!r}") from exc
    text = completed.stdout
    choices = re.search(r"--compression[ =]\{([^}]*)\}", text)
    if choices:
        # A flag with a choice of values: pick ours by name.
        names = [name.strip() for name in choices.group(1).split(",")]
        none = next((n for n in names if n.lower() in ("none", "off", "no")), None)
        deflate = next((n for n in names if "deflate" in n.lower()), None)
        return [
            Target(OURS, "none", f"{base} --compression {none}" if none else None),
            Target(OURS, "deflate", f"{base} --compression {deflate}" if deflate else None),
        ]
    if "--no-compression" in text:
        # Compression on by default and switched off by a flag. (Before hub had compression, it
        # accepted --no-compression and said so: its deflate row then reports not negotiated.)
        return [
            Target(OURS, "none", f"{base} --no-compression"),
            Target(OURS, "deflate", base),
        ]
    return [
        Target(OURS, "none", base),
        Target(OURS, "deflate", None, "python -m hub.protocol has no compression option"),
    ]


def peer_targets() -> list[Target]:
    base = script_command(PEER_SCRIPT)
    return [Target(PEER, name, f"{base} --compression {name}") for name in COMPRESSIONS]


def run_target(target: Target, opts: Options, repeat: int, startup_timeout: float) -> Result:
    result = Result(target)
    if target.command is None:
        return result
    for _ in range(repeat):
        server = Server.start(target.label, target.command, startup_timeout, None)
        try:
            measurement = asyncio.run(measure(server, opts, target.compression == "deflate"))
        except NotNegotiated as exc:
            result.error = f"not negotiated: {exc}"
            return result
        finally:
            server.stop()
        result.runs.append(measurement)
        log(f"{target.label:<22} {measurement.kib_per_conn:7.1f} KiB per connection")
    return result


# --- hub mode: idle subscribed connections -------------------------------------------------

# Half of the connections share one topic, the other half each have their own, so that both
# kinds of registry entry are counted: one more subscriber in a large set, and a topic of its own.
SHARED_TOPIC = "room"
OWN_TOPIC = "user.{}"
WARMUP_TOPIC = "warmup.{}"
# The one publication (as the ``data`` string): 32 bytes or more, so hub compresses the msg.
PUBLICATION = "memory benchmark: one publication to every subscriber of room"
#: Default settings, but for the handshake rate: thousands of connections come from one address.
HUB_CMD = (
    "{bin}/hub-server --host {host} --port {port}"
    " --handshake-rate 1000000000 --handshake-burst 1000000"
)
NAIVE_CMD = script_command(NAIVE_SCRIPT)
HUB_MODE_CONNS = 5000
HUB_MODE_TIMEOUT = 60.0
# How often the delivery check looks at the subscribers, seconds.
POLL = 0.01


def topic_of(index: int, own: str) -> str:
    """Even connections share SHARED_TOPIC; odd ones get ``own`` with their index."""
    return SHARED_TOPIC if index % 2 == 0 else own.format(index)


class HubClient(Client):
    """One connection to a hub, speaking the ``hub.v1.json`` subset of PROTOCOL.md.

    It upgrades offering ``hub.v1.json`` (and permessage-deflate if ``offer_deflate``), reads the
    ``welcome``, then sends requests one at a time with :meth:`request`, compressed when
    permessage-deflate was negotiated (so that the server's decompressor is used, as a browser's
    messages would). Every ``msg`` frame is kept in ``messages``. Pings are answered. An ``error``
    frame, anything else unexpected, or the server closing the connection is recorded in
    ``error``, and the futures then resolve to None.
    """

    def __init__(self, port: int, key: bytes, topic: str | None, offer_deflate: bool) -> None:
        super().__init__(port, key, SUBPROTOCOL, offer_deflate)
        self.topic = topic
        self.welcome: asyncio.Future[dict[str, Any] | None] = self._loop.create_future()
        self.extensions = ""  # the server's Sec-WebSocket-Extensions answer
        self.sub_ok: dict[str, Any] | None = None
        self.messages: list[dict[str, Any]] = []
        self._offer = offer_deflate
        self._reply: asyncio.Future[dict[str, Any] | None] | None = None
        self._reply_to: tuple[str, int] | None = None  # (op, id) of the request in flight

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for future in (self.welcome, self._reply):
            if future is not None and not future.done():
                future.set_result(None)

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send ``frame`` (which has an ``op`` and an ``id``) and return the ``ok`` for it."""
        if self._reply is not None and not self._reply.done():
            raise RuntimeError("one request at a time")
        self._reply = self._loop.create_future()
        self._reply_to = (frame["op"], frame["id"])
        # zlib cannot compress with an 8-bit window; a message this short has no distance beyond
        # 256 bytes anyway.
        self._send_text(json.dumps(frame, separators=(",", ":")).encode(), smallest_window=9)
        reply = await self._reply
        if reply is None:
            raise ProtocolError(self.error or "no reply")
        return reply

    def _check_response(self, head: bytes) -> None:
        headers = response_headers(head, self._accept)
        check_subprotocol(headers, SUBPROTOCOL)
        self.extensions = headers.get("sec-websocket-extensions", "")
        self.deflate = extension_params(self.extensions)
        if self.extensions and (not self._offer or self.deflate is None):
            raise ProtocolError(f"an extension that was not offered: {self.extensions!r}")

    def _message(self, payload: bytes) -> None:
        message = json_object(payload)
        op = message.get("op")
        if not self.welcome.done():
            if op != "welcome":
                raise ProtocolError(f"the first frame is not a welcome: {payload[:80]!r}")
            if message.get("version") != 1 or not isinstance(message.get("client"), str):
                raise ProtocolError(f"a welcome without version 1 and a client: {message}")
            self.welcome.set_result(message)
            return
        if op == "ok" and self._reply_to is not None and message.get("id") == self._reply_to[1]:
            assert self._reply is not None
            if self._reply.done():
                raise ProtocolError(f"a second ok for id {self._reply_to[1]}")
            if self._reply_to[0] == "sub":
                self.sub_ok = message  # before any msg that follows in the same read
            self._reply.set_result(message)
            return
        if op == "msg" and self.sub_ok is not None:
            self.messages.append(message)
            return
        raise ProtocolError(f"unexpected frame: {payload[:200]!r}")


@dataclass(frozen=True)
class HubTarget:
    """A hub server set up one way, and whether its clients offer permessage-deflate."""

    server: str
    setup: str  # the server's own permessage-deflate setting, for the table
    offer: bool
    command: str

    @property
    def label(self) -> str:
        offer = "deflate" if self.offer else "none"
        return f"{self.server}, server deflate {self.setup}, clients offer {offer}"


@dataclass
class HubMeasurement(Measurement):
    """One run of one hub target, with what was negotiated and how long the steps took."""

    extensions: str  # the server's Sec-WebSocket-Extensions answer, "" when declined
    publish_seconds: float  # from sending the pub to the last room subscriber's msg


@dataclass
class HubResult:
    target: HubTarget
    runs: list[HubMeasurement] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def kib_per_conn(self) -> float | None:
        return median_or_none([m.kib_per_conn for m in self.runs])

    def anon_kib_per_conn(self) -> float | None:
        return median_or_none([m.anon_kib_per_conn for m in self.runs])

    def negotiated(self) -> str | None:
        return self.runs[0].extensions if self.runs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.target.server,
            "server_deflate": self.target.setup,
            "clients_offer_deflate": self.target.offer,
            "command": self.target.command,
            "negotiated": self.negotiated(),
            "kib_per_conn": self.kib_per_conn(),
            "anon_kib_per_conn": self.anon_kib_per_conn(),
            "runs": [m.to_json() for m in self.runs],
            "warnings": self.warnings,
        }


def hub_targets_for(compressions: Sequence[str]) -> list[HubTarget]:
    """hub-server and the naive hub with default settings; with the deflate offer, the naive
    hub a second time with its --compression deflate (websockets' default permessage-deflate)."""
    hub = "on (default)"
    naive = "off (default)"
    targets: list[HubTarget] = []
    for compression in compressions:
        offer = compression == "deflate"
        targets.append(HubTarget("hub", hub, offer, HUB_CMD))
        targets.append(HubTarget("naive", naive, offer, NAIVE_CMD))
    if "deflate" in compressions:
        targets.append(
            HubTarget(
                "naive", "on (--compression deflate)", True, f"{NAIVE_CMD} --compression deflate"
            )
        )
    return targets


async def open_hub_clients(
    server: Server, topics: Sequence[str | None], opts: Options, offer: bool
) -> list[HubClient]:
    """Connect one client per topic, BATCH at a time; each reads its welcome and, if it has a
    topic, subscribes and waits for the ok. Within ``opts.timeout`` seconds, or BenchmarkError."""
    loop = asyncio.get_running_loop()
    clients: list[HubClient] = []
    todo: Iterator[str | None] = iter(topics)

    async def open_one(topic: str | None) -> None:
        client = HubClient(server.port, os.urandom(4), topic, offer)
        clients.append(client)
        await loop.create_connection(lambda: client, HOST, server.port)
        if await client.welcome is None:
            raise ProtocolError(client.error or "closed before the welcome")
        if topic is None:
            return
        check_sub_ok(await client.request({"op": "sub", "topic": topic, "id": 1}))

    async def worker() -> None:
        for topic in todo:
            await open_one(topic)

    try:
        async with asyncio.timeout(opts.timeout), asyncio.TaskGroup() as group:
            for _ in range(min(BATCH, len(topics))):
                group.create_task(worker())
    except (TimeoutError, ExceptionGroup) as exc:
        abort_all(clients)
        server.check_alive()
        errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        raise BenchmarkError(
            f"{server.name}: cannot open and subscribe {len(topics)} connections"
            f" within {opts.timeout:g} s: {errors[0]!r}"
        ) from exc
    try:
        check_hub_clients(server, clients)
    except BenchmarkError:
        abort_all(clients)
        raise
    return clients


def check_hub_clients(server: Server, clients: Sequence[HubClient], published: bool = False) -> str:
    """Check that no connection failed, that all negotiated the same extensions, and, after
    ``published``, that each subscriber of SHARED_TOPIC has received it and nothing else, and
    every other subscriber nothing. Return the extensions (the same for all)."""
    check_connections(server, clients)
    answers = {client.extensions for client in clients}
    if len(answers) > 1:
        raise BenchmarkError(f"{server.name}: different extensions negotiated: {sorted(answers)}")
    for i, client in enumerate(clients):
        if client.topic is None:
            continue
        if client.topic != SHARED_TOPIC or not published:
            if client.messages:
                raise BenchmarkError(
                    f"{server.name}: connection {i} on {client.topic} got {client.messages[0]}"
                )
            continue
        if len(client.messages) != 1:
            raise BenchmarkError(
                f"{server.name}: connection {i} on {SHARED_TOPIC} got"
                f" {len(client.messages)} msg frames, not 1"
            )
        assert client.sub_ok is not None
        expected = {
            "op": "msg",
            "topic": SHARED_TOPIC,
            "sub": SHARED_TOPIC,
            "data": PUBLICATION,
            "offset": client.sub_ok["offset"] + 1,
            "epoch": client.sub_ok["epoch"],
        }
        got = client.messages[0]
        if {name: got.get(name) for name in expected} != expected:
            raise BenchmarkError(f"{server.name}: connection {i} got {got}, expected {expected}")
    return answers.pop() if answers else ""


async def publish_and_check(
    server: Server, clients: Sequence[HubClient], opts: Options, offer: bool
) -> float:
    """From one extra connection, publish PUBLICATION to SHARED_TOPIC, wait until every
    subscriber of it has a msg, and close that connection. Return the seconds from the pub to
    the last delivery."""
    loop = asyncio.get_running_loop()
    (publisher,) = await open_hub_clients(server, [None], opts, offer)
    try:
        start = loop.time()
        request = {"op": "pub", "topic": SHARED_TOPIC, "data": PUBLICATION, "id": 1}
        waiting = [c for c in clients if c.topic == SHARED_TOPIC]
        try:
            async with asyncio.timeout(opts.timeout):
                ok = await publisher.request(request)
                while waiting:
                    await asyncio.sleep(POLL)
                    waiting = [c for c in waiting if not c.messages and c.error is None]
        except TimeoutError:
            server.check_alive()
            raise BenchmarkError(
                f"{server.name}: {len(waiting)} subscribers of {SHARED_TOPIC} without the"
                f" publication after {opts.timeout:g} s"
            ) from None
        except ProtocolError as exc:
            server.check_alive()
            raise BenchmarkError(f"{server.name}: publishing failed: {exc}") from exc
        seconds = loop.time() - start
        if not isinstance(ok.get("offset"), int):
            raise BenchmarkError(f"{server.name}: a pub ok without offset: {ok}")
        return seconds
    finally:
        await publisher.close(opts.timeout)


async def subscribe_round(
    server: Server, count: int, own: str, opts: Options, offer: bool
) -> tuple[list[HubClient], float, float, str]:
    """Open ``count`` subscribers (topic_of), publish once and check the deliveries. Return the
    clients, the seconds to open them, the seconds to deliver, and the extensions negotiated."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    clients = await open_hub_clients(server, [topic_of(i, own) for i in range(count)], opts, offer)
    open_seconds = loop.time() - start
    try:
        publish_seconds = await publish_and_check(server, clients, opts, offer)
        extensions = check_hub_clients(server, clients, published=True)
    except BaseException:
        abort_all(clients)
        raise
    return clients, open_seconds, publish_seconds, extensions


async def measure_hub(server: Server, opts: Options, offer: bool) -> HubMeasurement:
    """Warm up with subscribers that come and go, read the RSS, open ``opts.conns`` live
    subscribers, publish once, read the RSS again, close them."""
    pid = server.process.pid
    started = proc_status(pid)
    if opts.warmup:
        warm, *_ = await subscribe_round(server, opts.warmup, WARMUP_TOPIC, opts, offer)
        await close_all(warm, opts.timeout)
    before = await settled_status(pid, opts.settle)

    clients, open_seconds, publish_seconds, extensions = await subscribe_round(
        server, opts.conns, OWN_TOPIC, opts, offer
    )
    try:
        after = await settled_status(pid, opts.settle)
        server.check_alive()
        check_hub_clients(server, clients, published=True)  # still open, nothing more
    finally:
        await close_all(clients, opts.timeout)
    return HubMeasurement.from_status(
        opts.conns,
        started,
        before,
        after,
        open_seconds,
        extensions=extensions,
        publish_seconds=publish_seconds,
    )


def run_hub_target(
    target: HubTarget, opts: Options, repeat: int, startup_timeout: float
) -> HubResult:
    result = HubResult(target)
    for _ in range(repeat):
        server = Server.start(target.server, fill_template(target.command), startup_timeout, None)
        try:
            measurement = asyncio.run(measure_hub(server, opts, target.offer))
            text = server.log_tail()
        finally:
            server.stop()
        if shows_trouble(text):
            result.warnings.append(f"the server's log may show trouble; its last lines:\n{text}")
        result.runs.append(measurement)
        log(
            f"{target.label:<72} {measurement.kib_per_conn:5.1f} KiB per connection"
            f" (opened in {measurement.open_seconds:.1f} s,"
            f" published in {measurement.publish_seconds * 1000:.0f} ms)"
        )
    return result


def render_hub_table(results: Sequence[HubResult], conns: int) -> str:
    header = (
        "server",
        "server deflate",
        "clients offer",
        "negotiated",
        "KiB/conn",
        "anon KiB/conn",
        "RSS baseline",
        f"RSS +{conns} conns",
    )
    rows = [header]
    for result in results:
        run = result.runs[0] if result.runs else None
        negotiated = result.negotiated()
        rows.append(
            (
                result.target.server,
                result.target.setup,
                "deflate" if result.target.offer else "none",
                "" if negotiated is None else "deflate" if negotiated else "none",
                format_number(result.kib_per_conn(), 1),
                format_number(result.anon_kib_per_conn(), 1),
                "" if run is None else f"{run.rss_before / 1024:.1f} MiB",
                "" if run is None else f"{run.rss_after / 1024:.1f} MiB",
            )
        )
    lines = [format_table(rows, right=range(4, len(header)))]

    def value_of(server: str, offer: bool, setup_on: bool) -> HubResult | None:
        for result in results:
            target = result.target
            if (target.server, target.offer) == (server, offer) and (
                target.setup.startswith("on") == setup_on
            ):
                return result
        return None

    def ratio(ours: HubResult | None, peer: HubResult | None, text: str) -> None:
        a = ours.kib_per_conn() if ours else None
        b = peer.kib_per_conn() if peer else None
        if a is not None and b:
            lines.append(f"{text}: {a / b:.2f}")

    ratio(value_of("hub", False, True), value_of("naive", False, False), "hub / naive, no offer")
    naive_declined = value_of("naive", True, False)
    declined = naive_declined is not None and naive_declined.negotiated() == ""
    ratio(
        value_of("hub", True, True),
        naive_declined,
        "hub / naive, deflate offered" + (" (the naive hub declined it)" if declined else ""),
    )
    ratio(
        value_of("hub", True, True),
        value_of("naive", True, True),
        "hub / naive --compression deflate, both compressing",
    )
    for result in results:
        if result.negotiated():
            lines.append(f"{result.target.label}: {result.negotiated()}")
    return "\n".join(lines)


def run_hub_mode(args: argparse.Namespace, opts: Options, compressions: Sequence[str]) -> int:
    try:
        raise_file_limit(opts.conns + SPARE_FILES, FILE_LIMIT_HINT)
        targets = hub_targets_for(compressions)
        log(f"{len(targets)} servers to measure with {opts.conns} idle subscribed connections each")
        results = [run_hub_target(t, opts, args.repeat, args.startup_timeout) for t in targets]
    except (BenchmarkError, KeyboardInterrupt) as exc:
        return exit_status(exc)
    shared = (opts.conns + 1) // 2
    if args.json:
        report = {
            "mode": "hub",
            "environment": {**environment(), "source": source_version()},
            "config": {
                "conns": opts.conns,
                "shared_topic": SHARED_TOPIC,
                "shared_topic_subscribers": shared,
                "own_topic": OWN_TOPIC,
                "own_topic_subscribers": opts.conns - shared,
                "warmup": opts.warmup,
                "settle_s": opts.settle,
                "repeat": args.repeat,
                "deflate_offer": DEFLATE_OFFER,
            },
            "results": [result.to_json() for result in results],
        }
        print(json.dumps(report, indent=2))
        return 0
    env = environment()
    print(
        f"memory per idle subscribed connection: {opts.conns} connections per server"
        f" ({shared} on {SHARED_TOPIC!r}, {opts.conns - shared} on their own"
        f" {OWN_TOPIC.format('<i>')!r}), one publication to {SHARED_TOPIC!r} received,"
        f" repeat {args.repeat}; Python {env['python']}, websockets {env['websockets']},"
        f" source {source_version()}"
    )
    print(render_hub_table(results, opts.conns))
    print(
        "KiB/conn: (VmRSS with the idle subscribed connections - VmRSS after a warm-up)"
        " / connections; anon: the same for RssAnon; RSS columns are from the first run"
    )
    for result in results:
        for warning in result.warnings:
            print(f"warning: {result.target.label}: {warning}")
    return 0


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Memory per idle connection. --mode echo (default): hub's WebSocket server"
        " (python -m hub.protocol) against a websockets echo server. --mode hub: hub-server"
        " against the naive websockets hub (benchmarks/peers/naive_hub.py), each connection"
        f" subscribed (half to {SHARED_TOPIC!r}, half to its own {OWN_TOPIC.format('<i>')!r})"
        f" and checked to receive one publication to {SHARED_TOPIC!r}.",
    )
    parser.add_argument(
        "--mode",
        choices=["echo", "hub"],
        default="echo",
        help="echo: bare WebSocket echo servers; hub: idle subscribed connections to hub-server"
        " and the naive hub (default echo)",
    )
    parser.add_argument(
        "--conns",
        type=int,
        help=f"idle connections per server (default 1000; {HUB_MODE_CONNS} with --mode hub)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="connections opened and closed before the first reading (hub mode: they subscribe"
        " and receive one publication too; default 50)",
    )
    parser.add_argument(
        "--message-size",
        type=int,
        default=1024,
        help="echo mode: bytes of the one text message each connection echoes (default 1024)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.3,
        help="quiet seconds before each RSS reading (default 0.3)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per server and setting, each on a fresh server; medians are reported",
    )
    parser.add_argument(
        "--compression",
        choices=[*COMPRESSIONS, "both"],
        default="both",
        help="echo mode: the servers' permessage-deflate settings to measure; hub mode: whether"
        " the clients offer permessage-deflate (with deflate, the naive hub also runs with"
        " --compression deflate); default both",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="limit for each step (opening, publishing, closing all connections), seconds"
        f" (default 20; {HUB_MODE_TIMEOUT:g} with --mode hub)",
    )
    parser.add_argument("--startup-timeout", **STARTUP_TIMEOUT_OPTION)
    parser.add_argument("--json", **JSON_OPTION)
    args = parser.parse_args(argv)
    hub_mode = args.mode == "hub"
    if args.conns is None:
        args.conns = HUB_MODE_CONNS if hub_mode else 1000
    if args.timeout is None:
        args.timeout = HUB_MODE_TIMEOUT if hub_mode else 20.0
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.conns < 1 or args.repeat < 1 or args.warmup < 0 or args.message_size < 1:
        parser.error("--conns, --repeat and --message-size must be positive, --warmup not negative")
    if args.settle < 0:
        parser.error("--settle must not be negative")
    return args


def render_table(results: Sequence[Result], conns: int) -> str:
    header = ("server", "compression", "KiB/conn", "RSS idle", f"RSS +{conns} conns", "note")
    rows = [header]
    for result in results:
        run = result.runs[0] if result.runs else None
        rows.append(
            (
                result.target.server,
                result.target.compression,
                format_number(result.kib_per_conn(), 1),
                "" if run is None else f"{run.rss_before / 1024:.1f} MiB",
                "" if run is None else f"{run.rss_after / 1024:.1f} MiB",
                result.error or result.target.note,
            )
        )
    lines = [format_table(rows, right=(2, 3, 4))]
    values = {(r.target.server, r.target.compression): r.kib_per_conn() for r in results}
    for compression in COMPRESSIONS:
        ours, peer = values.get((OURS, compression)), values.get((PEER, compression))
        if ours is not None and peer:
            lines.append(f"{OURS} / {PEER}, compression {compression}: {ours / peer:.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    compressions = COMPRESSIONS if args.compression == "both" else (args.compression,)
    opts = Options(
        conns=args.conns,
        warmup=min(args.warmup, args.conns),
        payload=(b"hub memory benchmark, one idle connection; " * (args.message_size // 43 + 1))[
            : args.message_size
        ],
        settle=args.settle,
        timeout=args.timeout,
    )

    exit_on_sigterm()
    if args.mode == "hub":
        return run_hub_mode(args, opts, compressions)
    try:
        raise_file_limit(args.conns + SPARE_FILES, FILE_LIMIT_HINT)
        targets = [
            target
            for target in (*hub_targets(), *peer_targets())
            if target.compression in compressions
        ]
        targets.sort(key=lambda t: (COMPRESSIONS.index(t.compression), t.server != OURS))
        log(f"{len(targets)} servers to measure with {args.conns} idle connections each")
        results = [run_target(t, opts, args.repeat, args.startup_timeout) for t in targets]
    except (BenchmarkError, KeyboardInterrupt) as exc:
        return exit_status(exc)

    if args.json:
        report = {
            "environment": environment(),
            "config": {
                "conns": opts.conns,
                "warmup": opts.warmup,
                "message_size": len(opts.payload),
                "settle_s": opts.settle,
                "repeat": args.repeat,
            },
            "results": [result.to_json() for result in results],
        }
        print(json.dumps(report, indent=2))
    else:
        env = environment()
        print(
            f"memory per idle connection: {opts.conns} connections per server, one "
            f"{len(opts.payload)}-byte echo each, repeat {args.repeat}; Python {env['python']}, "
            f"websockets {env['websockets']}"
        )
        print(render_table(results, opts.conns))
        print(
            "KiB/conn: (VmRSS with the idle connections - VmRSS after a warm-up) / connections;"
            " RSS columns are from the first run"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
