"""Memory per idle connection: hub's WebSocket server against a ``websockets`` echo server.

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

The client uses the standard library only and reuses the frame helpers and the server runner of
``echo.py``. Run ``python benchmarks/memory.py --help``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

from echo import (
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PEER_SCRIPT,
    REPO_ROOT,
    BenchmarkError,
    ProtocolError,
    Server,
    client_frame,
    close_frame,
    environment,
    handshake_request,
)

OURS = "hub"
PEER = "websockets"
COMPRESSIONS = ("none", "deflate")
MAX_HANDSHAKE_RESPONSE = 16 * 1024
# The offer every client makes, letting the server choose the client's window.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
SYNC_TAIL = b"\x00\x00\xff\xff"
# Connections opened at once: both servers listen with asyncio's default backlog of 100.
BATCH = 100
# Descriptors beyond one per connection, for the interpreter and the servers' own files.
SPARE_FILES = 256


# --- the idle client -----------------------------------------------------------------------


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


class IdleClient(asyncio.Protocol):
    """Upgrade (offering permessage-deflate), send one text message, check its echo, then idle.

    Pings are answered. Anything else the server sends while idle, or the server closing the
    connection, is recorded in ``error``.
    """

    def __init__(self, port: int, payload: bytes, key: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.echoed: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: str | None = None
        self.deflate: dict[str, str | None] | None = None
        request, self._accept = handshake_request(port)
        # handshake_request ends with the blank line: add the offer before it.
        self._request = request[:-2] + f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n\r\n".encode()
        self._payload = payload
        self._key = key
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._open = False
        self._closing = False
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._compressed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        try:
            if self._open:
                self._buffer += data
                self._frames()
            else:
                self._handshake(data)
        except ProtocolError as exc:
            self._fail(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing and self.error is None:
            self.error = f"connection lost: {exc or 'closed by the server'}"
        for future in (self.echoed, self.closed):
            if not future.done():
                future.set_result(None)

    async def close(self, grace: float) -> None:
        """Closing handshake; wait for the server to close TCP, abort after ``grace`` seconds."""
        if self._transport is None or self.closed.done():
            return
        self._closing = True
        self._transport.write(close_frame(self._key))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), grace)
        except TimeoutError:
            self._transport.abort()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def _handshake(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HANDSHAKE_RESPONSE:
                raise ProtocolError("handshake response too long")
            return
        status, *lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
        if not status.startswith("HTTP/1.1 101"):
            raise ProtocolError(f"upgrade refused: {status!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != self._accept:
            raise ProtocolError("wrong or missing Sec-WebSocket-Accept")
        self.deflate = extension_params(headers.get("sec-websocket-extensions", ""))
        self._open = True
        self._buffer += self._head[end + 4 :]
        self._head.clear()
        self._send_message()
        self._frames()

    def _send_message(self) -> None:
        assert self._transport is not None
        if self.deflate is None:
            self._transport.write(client_frame(OP_TEXT, self._payload, self._key))
            return
        bits = self.deflate.get("client_max_window_bits") or "15"
        compressor = zlib.compressobj(wbits=-int(bits))
        data = compressor.compress(self._payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not data.endswith(SYNC_TAIL):
            raise ProtocolError("zlib did not end the message with a sync flush")
        frame = client_frame(OP_TEXT, data[: -len(SYNC_TAIL)], self._key)
        self._transport.write(bytes((frame[0] | 0x40,)) + frame[1:])  # RSV1: compressed

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
        opcode, fin, rsv = first & 0x0F, bool(first & 0x80), first & 0x70
        assert self._transport is not None
        if opcode == OP_PING:
            self._transport.write(client_frame(OP_PONG, payload, self._key))
            return
        if opcode == OP_PONG:
            return
        if opcode == OP_CLOSE:
            if not self._closing:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                raise ProtocolError(f"the server closed the connection (code {code})")
            return
        if opcode not in (OP_TEXT, OP_BINARY, OP_CONT):
            raise ProtocolError(f"unexpected opcode {opcode:#x}")
        if self.echoed.done():
            raise ProtocolError("a message from an echo server that was sent nothing")
        if opcode != OP_CONT:
            if rsv & ~0x40 or (rsv and self.deflate is None):
                raise ProtocolError("RSV bits set that no extension allows")
            self._compressed = bool(rsv)
        self._fragments.append(payload)
        if not fin:
            return
        message = b"".join(self._fragments)
        self._fragments.clear()
        if self._compressed:
            message = zlib.decompressobj(wbits=-15).decompress(message + SYNC_TAIL)
        if message != self._payload:
            raise ProtocolError("the echo differs from the message sent")
        self.echoed.set_result(None)

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        if self._transport is not None:
            self._transport.abort()


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

    @property
    def kib_per_conn(self) -> float:
        return (self.rss_after - self.rss_before) / self.conns

    @property
    def anon_kib_per_conn(self) -> float | None:
        if self.anon_before is None or self.anon_after is None:
            return None
        return (self.anon_after - self.anon_before) / self.conns


@dataclass
class Result:
    target: Target
    runs: list[Measurement] = field(default_factory=list)
    error: str | None = None

    def kib_per_conn(self) -> float | None:
        return statistics.median(m.kib_per_conn for m in self.runs) if self.runs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.target.server,
            "compression": self.target.compression,
            "command": self.target.command,
            "note": self.target.note or None,
            "error": self.error,
            "kib_per_conn": self.kib_per_conn(),
            "runs": [
                {
                    **asdict(m),
                    "kib_per_conn": m.kib_per_conn,
                    "anon_kib_per_conn": m.anon_kib_per_conn,
                }
                for m in self.runs
            ],
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
    errors = [f"connection {i}: {c.error}" for i, c in enumerate(clients) if c.error]
    if errors:
        server.check_alive()
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise BenchmarkError(f"{server.name}: {'; '.join(errors[:3])}{more}")
    for client in clients:
        if (client.deflate is not None) != expect_deflate:
            said = "accepted" if client.deflate is not None else "declined"
            raise NotNegotiated(f"{server.name} {said} permessage-deflate")


class NotNegotiated(BenchmarkError):
    """The server's permessage-deflate answer does not match its compression setting."""


async def close_clients(clients: Sequence[IdleClient], grace: float) -> None:
    await asyncio.gather(*(client.close(grace) for client in clients))


def abort_all(clients: Sequence[IdleClient]) -> None:
    for client in clients:
        client.abort()


async def measure(server: Server, opts: Options, expect_deflate: bool) -> Measurement:
    """Warm up, read the RSS, open ``opts.conns`` idle connections, read it again, close them."""
    pid = server.process.pid
    started = proc_status(pid)
    if opts.warmup:
        warm = await open_clients(server, opts.warmup, opts, expect_deflate)
        await close_clients(warm, opts.timeout)
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
        await close_clients(clients, opts.timeout)
    return Measurement(
        conns=opts.conns,
        rss_started=started["VmRSS"],
        rss_before=before["VmRSS"],
        rss_after=after["VmRSS"],
        anon_before=before.get("RssAnon"),
        anon_after=after.get("RssAnon"),
        open_seconds=open_seconds,
    )


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
    base = "{python} " + shlex.quote(str(PEER_SCRIPT)) + " --host {host} --port {port}"
    return [Target(PEER, name, f"{base} --compression {name}") for name in COMPRESSIONS]


def raise_open_files_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE (inherited by the servers) to ``needed``, if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchmarkError(
            f"{needed} open files needed, but the hard RLIMIT_NOFILE is {hard}: use fewer --conns"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


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


# --- command line --------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Memory per idle connection of hub's WebSocket server and websockets'."
    )
    parser.add_argument(
        "--conns", type=int, default=1000, help="idle connections per server (default 1000)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="connections opened and closed before the first reading (default 50)",
    )
    parser.add_argument(
        "--message-size",
        type=int,
        default=1024,
        help="bytes of the one text message each connection echoes (default 1024)",
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
        help="settings to measure (default both)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="limit for opening or closing all connections, seconds (default 20)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=15.0,
        help="seconds a server may take to accept connections (default 15)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON on stdout instead of the table"
    )
    args = parser.parse_args(argv)
    if args.conns < 1 or args.repeat < 1 or args.warmup < 0 or args.message_size < 1:
        parser.error("--conns, --repeat and --message-size must be positive, --warmup not negative")
    if args.settle < 0:
        parser.error("--settle must not be negative")
    return args


def render_table(results: Sequence[Result], conns: int) -> str:
    header = ("server", "compression", "KiB/conn", "RSS idle", f"RSS +{conns} conns", "note")
    rows = [header]
    for result in results:
        value = result.kib_per_conn()
        run = result.runs[0] if result.runs else None
        rows.append(
            (
                result.target.server,
                result.target.compression,
                "n/a" if value is None else f"{value:.1f}",
                "" if run is None else f"{run.rss_before / 1024:.1f} MiB",
                "" if run is None else f"{run.rss_after / 1024:.1f} MiB",
                result.error or result.target.note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if i in (2, 3, 4) else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
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

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # so that every server is stopped on the way out

    signal.signal(signal.SIGTERM, interrupted)
    try:
        raise_open_files_limit(args.conns + SPARE_FILES)
        targets = [
            target
            for target in (*hub_targets(), *peer_targets())
            if target.compression in compressions
        ]
        targets.sort(key=lambda t: (COMPRESSIONS.index(t.compression), t.server != OURS))
        log(f"{len(targets)} servers to measure with {args.conns} idle connections each")
        results = [run_target(t, opts, args.repeat, args.startup_timeout) for t in targets]
    except BenchmarkError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130

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
