"""Slow and silent peers: each one is dropped within its timeouts, and nobody else waits for it.

Against hub's server: a client that sends its handshake one byte at a time, a peer that never
reads while the handler keeps sending, a peer that never answers the closing handshake, and a
thousand half-open connections. Against hub's client: a raw server that never answers the close
and one that never reads.

Every server case runs a *witness*: a well-behaved client on the same server that does an echo
round trip while the bad peer is connected (the check that the bad peer is still there comes right
after it) and again once the bad peer is gone. The client cases run their witness against an echo
server in the same event loop. Timeouts are small so that the cases stay fast; ``SLACK`` is what
the checks allow on top of a timeout for scheduling on a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hub.protocol import (
    ConnectionClosed,
    ConnectionClosedError,
    WebSocketClientProtocol,
    WebSocketCommonProtocol,
    WebSocketServer,
    WebSocketServerProtocol,
)
from tests.protocol.rawpeer import (
    CLOSE,
    PING,
    RawClient,
    RawFrame,
    RawServer,
    read_frame,
    small_buffer_socket,
    upgrade_request,
)
from tests.protocol.support import WAIT, Connect, StartServer, echo, port_of, uri_of

#: Allowed on top of a timeout for the event loop to get round to it on a busy machine.
SLACK = 0.5
#: Timers may fire this early (the event loop's clock resolution, rounded up generously).
EARLY = 0.01
#: write_limit for the flow-control cases, and the size of each message sent into a full pipe.
WRITE_LIMIT = 16384
MESSAGE = b"x" * 4096
#: Frame overhead: 2 + 8 bytes of header and a 4-byte mask (clients).
MAX_FRAME_OVERHEAD = 14
#: Room for the control frames (keepalive ping, close frame) queued behind a blocked send.
CONTROL_FRAMES = 2 * (MAX_FRAME_OVERHEAD + 125)
#: Small kernel buffers for both ends of a flow-control case, so the pipe fills quickly.
SOCKET_BUFFER = 4096


def write_buffer_bound(write_limit: int, message: bytes) -> int:
    """The most a connection may hold for writing while the peer reads nothing.

    The transport takes up to ``write_limit`` before it pauses the sender; frames queued in one
    loop turn are coalesced into one write of under ``write_limit``, plus the frame that completed
    it; the keepalive ping and the close frame come on top.
    """
    return 2 * write_limit + len(message) + MAX_FRAME_OVERHEAD + CONTROL_FRAMES


def buffered(ws: WebSocketCommonProtocol) -> int:
    """Bytes held for writing: the transport's buffer plus frames not yet handed to it."""
    assert ws.transport is not None
    return ws.transport.get_write_buffer_size() + ws._pending_size


class RecordingServerProtocol(WebSocketServerProtocol):
    """Remembers the most bytes it ever held for writing, checked after every write."""

    most_buffered = 0

    def _flush(self) -> None:
        super()._flush()
        self.most_buffered = max(self.most_buffered, buffered(self))


class RecordingClientProtocol(WebSocketClientProtocol):
    """Remembers the most bytes it ever held for writing, checked after every write."""

    most_buffered = 0

    def _flush(self) -> None:
        super()._flush()
        self.most_buffered = max(self.most_buffered, buffered(self))


BadHandler = Callable[[WebSocketServerProtocol], Awaitable[None]]


def routed(bad: BadHandler) -> Callable[[WebSocketServerProtocol, str], Awaitable[None]]:
    """A handler that echoes on ``/witness`` and runs ``bad`` on every other path."""

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        if path == "/witness":
            await echo(ws, path)
        else:
            await bad(ws)

    return handler


async def serve_to_a_tight_pipe(
    start_server: StartServer, client: Connect, bad: BadHandler, path: str, **options: Any
) -> tuple[WebSocketServer, WebSocketClientProtocol, RawClient]:
    """A server (small send buffers, ``write_limit=WRITE_LIMIT``) running ``bad`` for a raw
    client with a small receive buffer on ``path``, and a witness client on ``/witness``."""
    listener = small_buffer_socket(sndbuf=SOCKET_BUFFER)
    listener.bind(("127.0.0.1", 0))
    server = await start_server(routed(bad), sock=listener, write_limit=WRITE_LIMIT, **options)
    witness = await client(uri_of(server, "/witness"), ping_interval=None)
    raw = await RawClient.connect(
        port_of(server), path, sock=small_buffer_socket(rcvbuf=SOCKET_BUFFER)
    )
    return server, witness, raw


async def round_trip(ws: WebSocketClientProtocol, text: str) -> float:
    """One echo round trip on ``ws``; its duration in seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(WAIT):
        await ws.send(text)
        assert await ws.recv() == text
    return loop.time() - start


async def send_until_blocked(
    ws: WebSocketCommonProtocol, message: bytes, limit: int = 1000
) -> tuple[asyncio.Task[None], int]:
    """Send ``message`` until a send() waits for the peer; return its task and the sends before.

    send() only suspends to wait for the write buffer to drain, so a send that is not done after
    its first step is blocked by back-pressure.
    """
    for sent in range(limit):
        task = asyncio.ensure_future(ws.send(message))
        await asyncio.sleep(0)  # let the task take its first step
        if not task.done():
            return task, sent
        task.result()
    raise AssertionError(f"send() never waited after {limit} messages to a peer that reads nothing")


async def time_to_eof(raw: RawClient, since: float) -> tuple[float, bytes]:
    """Read until the peer closes TCP; return the seconds since ``since`` and what was read."""
    leftover = await raw.expect_eof()
    return asyncio.get_running_loop().time() - since, leftover


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


# --- a client that sends its handshake one byte at a time -----------------------------------------

OPEN_TIMEOUT = 0.5
BYTE_DELAY = 0.1
SLOW_CLIENTS = 3


async def drip(raw: RawClient, data: bytes, sent: list[int], started: asyncio.Event) -> None:
    """The deliberately slow peer: one byte every BYTE_DELAY seconds until the server drops it."""
    for i in range(len(data)):
        if raw.writer.is_closing() or raw.reader.at_eof():
            return
        raw.send(data[i : i + 1])
        sent[0] = i + 1
        if i == 2:
            started.set()
        await asyncio.sleep(BYTE_DELAY)


async def test_handshake_one_byte_at_a_time_is_dropped_at_open_timeout(
    start_server: StartServer, client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.protocol")
    server = await start_server(echo, open_timeout=OPEN_TIMEOUT, ping_interval=None)
    witness = await client(uri_of(server, "/witness"), ping_interval=None)
    request, _ = upgrade_request("/slow")
    assert len(request) * BYTE_DELAY > 10 * OPEN_TIMEOUT, "precondition: the request is slow"
    loop = asyncio.get_running_loop()

    raws: list[RawClient] = []
    drips: list[asyncio.Task[None]] = []
    try:
        sent = [[0] for _ in range(SLOW_CLIENTS)]
        started = [asyncio.Event() for _ in range(SLOW_CLIENTS)]
        endings: list[asyncio.Task[tuple[float, bytes]]] = []
        for i in range(SLOW_CLIENTS):
            before = loop.time()  # the server's open_timeout starts after this
            raw = await RawClient.open(port_of(server))
            raws.append(raw)
            endings.append(asyncio.ensure_future(time_to_eof(raw, before)))
            drips.append(asyncio.ensure_future(drip(raw, request, sent[i], started[i])))
        async with asyncio.timeout(WAIT):
            for event in started:
                await event.wait()
            await round_trip(witness, "while the slow clients drip")
        assert not any(ending.done() for ending in endings), "dropped before open_timeout"
        assert len(server.connections) == SLOW_CLIENTS + 1

        async with asyncio.timeout(OPEN_TIMEOUT + WAIT):
            results = await asyncio.gather(*endings)
    finally:
        for task in drips:
            task.cancel()
        for raw in raws:
            await raw.aclose()

    for (elapsed, leftover), (count,) in zip(results, sent, strict=True):
        assert leftover == b"", "a timed-out handshake gets no answer"
        assert OPEN_TIMEOUT <= elapsed <= OPEN_TIMEOUT + SLACK, elapsed
        assert count <= (OPEN_TIMEOUT + SLACK) / BYTE_DELAY + 1 < len(request)
    timed_out = [r for r in caplog.records if "opening handshake timed out" in r.getMessage()]
    assert len(timed_out) == SLOW_CLIENTS
    assert all(r.levelno == logging.INFO for r in timed_out)
    assert warnings_logged(caplog) == []
    await round_trip(witness, "after")
    assert len(server.connections) == 1


# --- a peer that never reads -------------------------------------------------------------------


async def test_peer_that_never_reads_is_closed_by_keepalive(
    start_server: StartServer, client: Connect
) -> None:
    """The handler keeps sending; send() blocks at write_limit; keepalive ends it.

    The peer answers no ping (it reads nothing), so the connection fails with 1011 after
    ping_interval + ping_timeout; the close frame cannot get out either, so TCP is aborted
    close_timeout later.
    """
    ping_interval, ping_timeout, close_timeout = 0.3, 0.3, 0.3
    loop = asyncio.get_running_loop()
    blocked: asyncio.Future[tuple[RecordingServerProtocol, int]] = loop.create_future()
    ended: asyncio.Future[tuple[float, ConnectionClosed]] = loop.create_future()

    async def flood(ws: WebSocketServerProtocol) -> None:
        assert isinstance(ws, RecordingServerProtocol)
        start = loop.time()
        task, sent = await send_until_blocked(ws, MESSAGE)
        blocked.set_result((ws, sent))
        try:
            await task  # returns once the connection is lost
            await ws.send(MESSAGE)
        except ConnectionClosed as exc:
            ended.set_result((loop.time() - start, exc))
        else:
            ended.set_exception(AssertionError("send() on a closed connection did not raise"))

    server, witness, raw = await serve_to_a_tight_pipe(
        start_server,
        client,
        flood,
        "/flood",
        create_protocol=RecordingServerProtocol,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
    )
    try:
        raw.pause_reading()
        async with asyncio.timeout(WAIT):
            bad, sent = await blocked
            await round_trip(witness, "while the server's send() is blocked")
        assert not bad.closed
        assert sent * len(MESSAGE) < 1 << 20, "the pipe took far more than its buffers hold"

        limit = ping_interval + ping_timeout + close_timeout
        async with asyncio.timeout(limit + WAIT):
            elapsed, exc = await ended
        raw.resume_reading()
        async with asyncio.timeout(WAIT):
            await raw.expect_eof()  # the TCP connection is closed
    finally:
        await raw.aclose()

    assert ping_interval + ping_timeout <= elapsed <= limit + SLACK, elapsed
    assert isinstance(exc, ConnectionClosedError)
    assert exc.sent is not None and exc.sent.code == 1011
    assert exc.rcvd is None
    assert bad.close_code == 1006
    assert WRITE_LIMIT < bad.most_buffered <= write_buffer_bound(WRITE_LIMIT, MESSAGE), (
        bad.most_buffered
    )
    await round_trip(witness, "after")
    assert len(server.connections) == 1


# --- a peer that never answers the closing handshake ----------------------------------------------


async def read_until_eof(raw: RawClient) -> list[RawFrame]:
    """Read (never answer) every frame until the server closes TCP."""
    frames: list[RawFrame] = []
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionResetError):
        while True:
            frames.append(await raw.recv_frame())
    return frames


@pytest.mark.parametrize("peer_reads", [True, False], ids=["reads-never-answers", "never-reads"])
async def test_server_close_against_a_peer_that_never_answers(
    start_server: StartServer, client: Connect, peer_reads: bool
) -> None:
    """close() returns after close_timeout and the TCP connection is closed.

    ``never-reads``: the peer also stopped reading, with the pipe full: the close frame cannot
    even be written, and close() is called while a send() is blocked.
    """
    close_timeout = 0.4
    loop = asyncio.get_running_loop()
    closing: asyncio.Future[WebSocketServerProtocol] = loop.create_future()
    closed_in: asyncio.Future[float] = loop.create_future()

    async def close_and_time(ws: WebSocketServerProtocol) -> None:
        blocked: asyncio.Task[None] | None = None
        if not peer_reads:
            blocked, _ = await send_until_blocked(ws, MESSAGE)
        closing.set_result(ws)
        start = loop.time()
        await ws.close()
        closed_in.set_result(loop.time() - start)
        if blocked is not None:
            await blocked  # returns once the connection is lost

    server, witness, raw = await serve_to_a_tight_pipe(
        start_server,
        client,
        close_and_time,
        "/bad",
        ping_interval=None,
        close_timeout=close_timeout,
    )
    try:
        if peer_reads:
            reading = asyncio.ensure_future(read_until_eof(raw))
        else:
            raw.pause_reading()
        async with asyncio.timeout(WAIT):
            bad = await closing
            await round_trip(witness, "while the server waits for the close frame")
        assert not bad.closed
        async with asyncio.timeout(close_timeout + WAIT):
            elapsed = await closed_in
        async with asyncio.timeout(WAIT):
            if peer_reads:
                frames = await reading
                assert [f.opcode for f in frames] == [CLOSE]
                assert frames[0].close_code == 1000
            else:
                raw.resume_reading()
                await raw.expect_eof()  # the TCP connection is closed
    finally:
        await raw.aclose()

    assert close_timeout - EARLY <= elapsed <= close_timeout + SLACK, elapsed
    assert bad.closed
    assert bad.close_code == 1006
    await round_trip(witness, "after")
    assert len(server.connections) == 1


async def test_server_shutdown_against_a_peer_that_never_answers(
    start_server: StartServer, client: Connect
) -> None:
    """server.close() says 1001 to everyone: the witness is closed at once, the silent peer at
    close_timeout, and wait_closed() returns then.
    """
    close_timeout = 0.4
    server = await start_server(echo, ping_interval=None, close_timeout=close_timeout)
    witness = await client(uri_of(server, "/witness"), ping_interval=None)
    raw = await RawClient.connect(port_of(server), "/silent")
    loop = asyncio.get_running_loop()
    try:
        reading = asyncio.ensure_future(read_until_eof(raw))
        await round_trip(witness, "while the silent peer is connected")
        start = loop.time()
        server.close()
        async with asyncio.timeout(WAIT):
            await witness.wait_closed()
            witness_closed = loop.time() - start
            await server.wait_closed()
            shutdown = loop.time() - start
            frames = await reading
    finally:
        await raw.aclose()

    assert witness.close_code == 1001
    assert witness_closed < close_timeout, "the witness waited for the silent peer"
    assert close_timeout - EARLY <= shutdown <= close_timeout + SLACK, shutdown
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1001)]


# --- hub's client against a raw server that never answers the close or never reads ----------------


async def test_client_close_against_a_server_that_never_answers(
    echo_server: WebSocketServer, client: Connect
) -> None:
    close_timeout = 0.4
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[list[RawFrame]] = loop.create_future()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames: list[RawFrame] = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionResetError):
            while True:
                frames.append(await read_frame(reader))
        ended.set_result(frames)

    witness = await client(uri_of(echo_server, "/witness"), ping_interval=None)
    async with RawServer(never_answer) as raw:
        ws = await client(raw.uri, ping_interval=None, close_timeout=close_timeout)
        start = loop.time()
        closing = asyncio.ensure_future(ws.close())
        await round_trip(witness, "while the client waits for the close frame")
        assert not closing.done()
        async with asyncio.timeout(close_timeout + WAIT):
            await closing
            elapsed = loop.time() - start
            frames = await ended  # the server saw the TCP connection closed

    assert close_timeout - EARLY <= elapsed <= close_timeout + SLACK, elapsed
    assert ws.closed
    assert ws.close_code == 1006
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1000)]
    assert all(f.masked for f in frames)
    await round_trip(witness, "after")


@pytest.mark.parametrize("ending", ["keepalive", "close"])
async def test_client_against_a_server_that_never_reads(
    echo_server: WebSocketServer, client: Connect, ending: str
) -> None:
    """send() blocks at write_limit; keepalive (or close() while send() is blocked) ends it."""
    ping_interval, ping_timeout, close_timeout = 0.3, 0.3, 0.3
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    ended: asyncio.Future[None] = loop.create_future()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()
        await release.wait()
        transport.resume_reading()
        with contextlib.suppress(ConnectionResetError):
            while await reader.read(65536):
                pass
        ended.set_result(None)

    witness = await client(uri_of(echo_server, "/witness"), ping_interval=None)
    listener = small_buffer_socket(rcvbuf=SOCKET_BUFFER)
    async with RawServer(never_read, sock=listener) as raw:
        sock = small_buffer_socket(sndbuf=SOCKET_BUFFER)
        await loop.sock_connect(sock, ("127.0.0.1", raw.port))
        before = loop.time()  # the client's keepalive starts after this
        ws = await client(
            raw.uri,
            sock=sock,
            create_protocol=RecordingClientProtocol,
            write_limit=WRITE_LIMIT,
            ping_interval=ping_interval if ending == "keepalive" else None,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
        )
        assert isinstance(ws, RecordingClientProtocol)
        async with asyncio.timeout(WAIT):
            blocked, sent = await send_until_blocked(ws, MESSAGE)
            await round_trip(witness, "while the client's send() is blocked")
        assert sent * len(MESSAGE) < 1 << 20, "the pipe took far more than its buffers hold"
        assert not ws.closed

        if ending == "close":
            start = loop.time()
            async with asyncio.timeout(close_timeout + WAIT):
                await ws.close()
            elapsed = loop.time() - start
            low, high = close_timeout, close_timeout
        else:
            async with asyncio.timeout(ping_interval + ping_timeout + close_timeout + WAIT):
                await ws.wait_closed()
            elapsed = loop.time() - before
            low, high = ping_interval + ping_timeout, ping_interval + ping_timeout + close_timeout
        async with asyncio.timeout(WAIT):
            await blocked  # send() returns once the connection is lost
            release.set()
            await ended  # the server saw the TCP connection closed

    assert low - EARLY <= elapsed <= high + SLACK, elapsed
    with pytest.raises(ConnectionClosedError) as exc_info:
        await ws.recv()
    expected = 1011 if ending == "keepalive" else 1000
    assert exc_info.value.sent is not None and exc_info.value.sent.code == expected
    assert exc_info.value.rcvd is None
    assert WRITE_LIMIT < ws.most_buffered <= write_buffer_bound(WRITE_LIMIT, MESSAGE), (
        ws.most_buffered
    )
    await round_trip(witness, "after")


# --- a thousand half-open connections ------------------------------------------------------------

HALF_OPEN = 1000
#: Descriptors needed: both ends of every connection, plus the witness, pytest and the interpreter.
FILES_NEEDED = 2 * HALF_OPEN + 256
MASS_OPEN_TIMEOUT = 2.0
MASS_PING_INTERVAL = 1.0
MASS_PING_TIMEOUT = 1.0
MASS_CLOSE_TIMEOUT = 0.5
#: The witness must get every echo within this, whatever the thousand others do.
PROMPT = 1.0
#: Extra slack for the mass case: a thousand connections are dropped in the same instant.
MASS_SLACK = 1.0
#: Pause between the witness's probes: a measuring cadence, not a synchronisation.
PROBE_INTERVAL = 0.05


@contextlib.contextmanager
def open_files_limit(needed: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to ``needed`` for the block; skip if the hard one is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files; the hard RLIMIT_NOFILE is {hard}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    else:
        yield


@dataclass
class HalfOpen:
    """How one of the thousand ended, and the frames it got.

    ``longest`` is from before the TCP connect to EOF, ``shortest`` from the end of its set-up
    (connected, bytes sent, 101 read) to EOF: the server's timer started in between.
    """

    kind: str
    longest: float
    shortest: float
    frames: list[RawFrame]


KINDS = ("silent", "half-handshake", "open-then-silent")


async def probe(witness: WebSocketClientProtocol, stop: asyncio.Event) -> list[float]:
    """Echo round trips on the witness until ``stop``; their durations."""
    times: list[float] = []
    while not stop.is_set():
        times.append(await round_trip(witness, f"probe {len(times)}"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROBE_INTERVAL):
                await stop.wait()
    return times


@pytest.mark.slow
async def test_a_thousand_half_open_connections(
    start_server: StartServer, client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A third never send a byte, a third send half a handshake, a third complete the handshake
    and then send nothing (they read, but answer no ping). The server keeps answering the witness
    promptly, drops the first two thirds at open_timeout and the last third by keepalive.
    """
    with open_files_limit(FILES_NEEDED):
        await run_half_open(start_server, client, caplog)


async def run_half_open(
    start_server: StartServer, client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    loop = asyncio.get_running_loop()
    server = await start_server(
        echo,
        open_timeout=MASS_OPEN_TIMEOUT,
        ping_interval=MASS_PING_INTERVAL,
        ping_timeout=MASS_PING_TIMEOUT,
        close_timeout=MASS_CLOSE_TIMEOUT,
        backlog=HALF_OPEN + 100,
    )
    port = port_of(server)
    witness = await client(uri_of(server, "/witness"), ping_interval=None)
    (witness_server_side,) = server.connections
    request, _ = upgrade_request("/half-open")

    raws: list[RawClient] = []
    set_up_count = 0
    all_set_up: asyncio.Future[None] = loop.create_future()

    async def half_open(kind: str) -> HalfOpen:
        nonlocal set_up_count
        before = loop.time()
        try:
            if kind == "open-then-silent":
                raw = await RawClient.connect(port, "/half-open")
            else:
                raw = await RawClient.open(port)
            raws.append(raw)
            if kind == "half-handshake":
                raw.send(request[: len(request) // 2])
        except BaseException as exc:
            if not all_set_up.done():
                all_set_up.set_exception(exc)
            raise
        since = loop.time()
        set_up_count += 1
        if set_up_count == HALF_OPEN:
            all_set_up.set_result(None)
        frames = await read_until_eof(raw)
        end = loop.time()
        return HalfOpen(kind, end - before, end - since, frames)

    stop = asyncio.Event()
    start = loop.time()
    tasks = [asyncio.ensure_future(half_open(KINDS[i % 3])) for i in range(HALF_OPEN)]
    probing: asyncio.Task[list[float]] | None = None
    try:
        async with asyncio.timeout(WAIT + 3):
            await all_set_up
        set_up_in = loop.time() - start
        assert not any(task.done() for task in tasks), (
            f"setting up took {set_up_in:.2f} s, longer than open_timeout: raise the timeouts"
        )
        during = await round_trip(witness, "with a thousand half-open connections")
        assert len(server.connections) == HALF_OPEN + 1, "a half-open connection is gone already"
        probing = asyncio.ensure_future(probe(witness, stop))

        budget = max(MASS_OPEN_TIMEOUT, MASS_PING_INTERVAL + MASS_PING_TIMEOUT + MASS_CLOSE_TIMEOUT)
        async with asyncio.timeout(set_up_in + budget + MASS_SLACK + WAIT):
            outcomes = await asyncio.gather(*tasks)
            # Every server-side handler has returned and unregistered its connection.
            handlers = [
                ws.handler_task
                for ws in list(server.connections)
                if ws is not witness_server_side and ws.handler_task is not None
            ]
            if handlers:
                await asyncio.wait(handlers)
        stop.set()
        async with asyncio.timeout(WAIT):
            probes = await probing
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        if probing is not None:
            probing.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if probing is not None:
            await asyncio.gather(probing, return_exceptions=True)
        await asyncio.gather(*(raw.aclose() for raw in raws))

    slowest = max([during, *probes])
    assert slowest < PROMPT, f"the witness waited {slowest:.2f} s for an echo"
    assert len(probes) >= 10, probes
    by_kind = {kind: [o for o in outcomes if o.kind == kind] for kind in KINDS}
    for kind in ("silent", "half-handshake"):
        assert all(o.frames == [] for o in by_kind[kind])
        shortest = min(o.longest for o in by_kind[kind])
        longest = max(o.shortest for o in by_kind[kind])
        assert shortest >= MASS_OPEN_TIMEOUT, (kind, shortest)
        assert longest <= MASS_OPEN_TIMEOUT + MASS_SLACK, (kind, longest)
    keepalive = MASS_PING_INTERVAL + MASS_PING_TIMEOUT
    shortest = min(o.longest for o in by_kind["open-then-silent"])
    longest = max(o.shortest for o in by_kind["open-then-silent"])
    assert shortest >= keepalive, shortest
    assert longest <= keepalive + MASS_CLOSE_TIMEOUT + MASS_SLACK, longest
    for outcome in by_kind["open-then-silent"]:
        assert [f.opcode for f in outcome.frames] == [PING, CLOSE]
        assert outcome.frames[-1].close_code == 1011
    assert warnings_logged(caplog) == []
    assert server.connections == {witness_server_side}
    await round_trip(witness, "after")
