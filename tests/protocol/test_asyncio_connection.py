"""hub.protocol.asyncio.connection over real sockets: recv/send/ping/pong/close, flow control,
keepalive, timeouts and the connection's properties.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from hub.protocol import (
    Close,
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    State,
    WebSocketClientProtocol,
    WebSocketServer,
    WebSocketServerProtocol,
)
from tests.protocol.rawpeer import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    RawClient,
    RawFrame,
    RawServer,
    build_frame,
    read_but_never_answer,
    read_frame,
    small_buffer_socket,
)
from tests.protocol.support import WAIT, Capture, Connect, StartServer, port_of, uri_of

#: Frame overhead of a masked client frame with a 64-bit length: 2 + 8 + 4 bytes.
MAX_FRAME_OVERHEAD = 14


def write_buffer_bound(write_limit: int, message: bytes) -> int:
    """The most a blocked sender may have buffered in the transport.

    Frames are coalesced and written once per loop turn (or at once when ``write_limit`` bytes are
    pending), so the transport can hold up to ``write_limit`` before it pauses, plus one coalesced
    batch of under ``write_limit`` bytes and the frame that completed it.
    """
    return 2 * write_limit + len(message) + MAX_FRAME_OVERHEAD


async def send_blocks(
    ws: WebSocketClientProtocol | WebSocketServerProtocol, message: bytes
) -> asyncio.Task[None] | None:
    """Start ``ws.send(message)``; return its task if it is waiting (flow control), else None.

    send() only suspends to wait for the write buffer to drain, so a task that is not done after
    its first step is blocked by back-pressure.
    """
    task = asyncio.ensure_future(ws.send(message))
    await asyncio.sleep(0)  # let the task take its first step
    if task.done():
        task.result()
        return None
    return task


async def still_pending(task: asyncio.Task[Any], seconds: float = 0.2) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


# --- receiving and sending ---------------------------------------------------------------------


async def test_recv_text_and_binary(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        await ws.send("café ☕")
        text = await ws.recv()
        await ws.send(b"\x00\x01\xfe\xff")
        binary = await ws.recv()
    assert text == "café ☕" and type(text) is str
    assert binary == b"\x00\x01\xfe\xff" and type(binary) is bytes


@pytest.mark.parametrize(
    "message",
    [b"bytes", bytearray(b"bytearray"), memoryview(b"xmemoryviewx")[1:-1]],
    ids=["bytes", "bytearray", "memoryview"],
)
async def test_send_bytes_like(
    echo_uri: str, client: Connect, message: bytes | bytearray | memoryview
) -> None:
    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        await ws.send(message)
        received = await ws.recv()
    assert type(received) is bytes
    assert received == bytes(message)


async def test_send_empty_messages(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        await ws.send("")
        assert await ws.recv() == ""
        await ws.send(b"")
        assert await ws.recv() == b""


class FrameRecorder:
    """A raw server that records the client's frames and answers its close frame."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[RawFrame] = asyncio.Queue()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            frame = await read_frame(reader)
            await self.frames.put(frame)
            if frame.opcode == CLOSE:
                writer.write(build_frame(CLOSE, frame.payload[:2], masked=False))
                writer.close()
                return

    async def next(self) -> RawFrame:
        async with asyncio.timeout(WAIT):
            return await self.frames.get()


async def test_send_list_of_fragments_fragments_on_the_wire(client: Connect) -> None:
    recorder = FrameRecorder()
    async with RawServer(recorder) as raw:
        ws = await client(raw.uri)
        await ws.send(["frag", "ment", "ed ☕"])
        await ws.send([b"\x01", b"\x02"])
        frames = [await recorder.next() for _ in range(5)]
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (TEXT, False, b"frag"),
        (CONT, False, b"ment"),
        (CONT, True, "ed ☕".encode()),
        (BINARY, False, b"\x01"),
        (CONT, True, b"\x02"),
    ]
    assert all(f.masked for f in frames), "client frames must be masked (RFC 6455 5.3)"


async def test_send_fragments_round_trip(echo_uri: str, client: Connect) -> None:
    async def fragments() -> AsyncIterator[str]:
        for part in ("async ", "gen", "erator"):
            await asyncio.sleep(0)
            yield part

    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        await ws.send(["li", "st"])
        assert await ws.recv() == "list"
        await ws.send((b"tu", b"ple"))
        assert await ws.recv() == b"tuple"
        await ws.send(fragments())
        assert await ws.recv() == "async generator"


async def test_send_async_generator_fragments_on_the_wire(client: Connect) -> None:
    async def fragments() -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"

    recorder = FrameRecorder()
    async with RawServer(recorder) as raw:
        ws = await client(raw.uri)
        await ws.send(fragments())
        frames = [await recorder.next() for _ in range(2)]
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (BINARY, False, b"one"),
        (CONT, True, b"two"),
    ]


async def test_send_a_dict_is_a_type_error(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri)
    with pytest.raises(TypeError):
        await ws.send({"not": "encoded"})
    with pytest.raises(TypeError):
        await ws.send(42)  # type: ignore[arg-type]
    # Nothing was sent, so the connection is still fine.
    async with asyncio.timeout(WAIT):
        await ws.send("still open")
        assert await ws.recv() == "still open"


async def test_send_mixed_fragment_types_is_a_type_error(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri)
    with pytest.raises(TypeError):
        await ws.send(["text", b"bytes"])


async def test_mixed_fragments_after_a_sent_fragment_fail_the_connection(
    echo_uri: str, client: Connect
) -> None:
    """Once a fragment is on the wire the message cannot be withdrawn: fail with 1011."""
    ws = await client(echo_uri, close_timeout=0.5)
    with pytest.raises(TypeError):
        await ws.send(["one", "two", b"three"])
    async with asyncio.timeout(WAIT):
        await ws.wait_closed()
    with pytest.raises(ConnectionClosedError) as exc_info:
        await ws.recv()
    assert exc_info.value.sent is not None
    assert exc_info.value.sent.code == 1011


async def test_messages_are_not_interleaved_with_a_fragmented_send(
    echo_uri: str, client: Connect
) -> None:
    release = asyncio.Event()

    async def slow_fragments() -> AsyncIterator[str]:
        yield "a"
        await release.wait()
        yield "b"

    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        fragmented = asyncio.ensure_future(ws.send(slow_fragments()))
        await asyncio.sleep(0)
        other = asyncio.ensure_future(ws.send("other"))
        await asyncio.sleep(0)
        assert not other.done(), "a message was sent in the middle of a fragmented message"
        release.set()
        await asyncio.gather(fragmented, other)
        assert await ws.recv() == "ab"
        assert await ws.recv() == "other"


# --- iteration and closed connections ------------------------------------------------------------


async def test_async_iteration_ends_quietly_on_normal_close(
    start_server: StartServer, client: Connect
) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        for i in range(3):
            await ws.send(f"message {i}")

    server = await start_server(handler)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        received = [message async for message in ws]
    assert received == ["message 0", "message 1", "message 2"]
    assert ws.close_code == 1000


async def test_async_iteration_raises_on_abnormal_close(
    start_server: StartServer, client: Connect
) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send("one")
        await ws.send("two")
        raise RuntimeError("handler bug")

    server = await start_server(handler)
    ws = await client(uri_of(server))
    received: list[str | bytes] = []
    with pytest.raises(ConnectionClosedError) as exc_info:
        async with asyncio.timeout(WAIT):
            async for message in ws:
                received.append(message)
    assert received == ["one", "two"]
    assert exc_info.value.code == 1011


async def test_connection_lost_without_close_frame_is_1006(client: Connect) -> None:
    async def send_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(build_frame(TEXT, b"last words", masked=False))
        await writer.drain()
        writer.close()

    async with RawServer(send_then_drop) as raw:
        ws = await client(raw.uri)
        received: list[str | bytes] = []
        with pytest.raises(ConnectionClosedError) as exc_info:
            async with asyncio.timeout(WAIT):
                async for message in ws:
                    received.append(message)
    assert received == ["last words"]
    assert exc_info.value.code == 1006
    assert exc_info.value.rcvd is None
    assert ws.close_code == 1006
    assert ws.close_reason == ""


async def test_queued_messages_survive_the_close(
    start_server: StartServer, client: Connect
) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send("first")
        await ws.send("second")

    server = await start_server(handler)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        await ws.wait_closed()
        assert await ws.recv() == "first"
        assert await ws.recv() == "second"
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()


async def test_send_after_close_raises_connection_closed(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        await ws.close()
        with pytest.raises(ConnectionClosedOK):
            await ws.send("too late")
        with pytest.raises(ConnectionClosedOK):
            await ws.ping()
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        await ws.close()  # closing again is a no-op


# --- ping and pong -------------------------------------------------------------------------------


async def test_ping_returns_a_future_resolved_with_the_round_trip_time(
    echo_uri: str, client: Connect
) -> None:
    ws = await client(echo_uri, ping_interval=None)
    assert ws.latency == 0.0
    async with asyncio.timeout(WAIT):
        waiter = await ws.ping()
        assert isinstance(waiter, asyncio.Future)
        rtt = await waiter
    assert type(rtt) is float
    assert rtt > 0
    assert ws.latency == rtt


async def test_ping_with_data(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri, ping_interval=None)
    async with asyncio.timeout(WAIT):
        text_pong = await ws.ping("text data")
        binary_pong = await ws.ping(b"\x00binary")
        assert isinstance(await text_pong, float)
        assert isinstance(await binary_pong, float)


async def test_ping_with_the_same_pending_data_is_refused(client: Connect) -> None:
    async def answer_pings_on_release(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await release.wait()
        while True:
            frame = await read_frame(reader)
            if frame.opcode == PING:
                writer.write(build_frame(PONG, frame.payload, masked=False))

    release = asyncio.Event()
    async with RawServer(answer_pings_on_release) as raw:
        ws = await client(raw.uri, ping_interval=None, close_timeout=0.2)
        first = await ws.ping(b"same")
        with pytest.raises(ConcurrencyError):
            await ws.ping(b"same")
        other = await ws.ping(b"other")
        release.set()
        async with asyncio.timeout(WAIT):
            assert isinstance(await first, float)
            assert isinstance(await other, float)
            # Answered, so the same data may be used again.
            assert isinstance(await (await ws.ping(b"same")), float)


async def test_pong_sends_an_unsolicited_pong(client: Connect) -> None:
    recorder = FrameRecorder()
    async with RawServer(recorder) as raw:
        ws = await client(raw.uri, ping_interval=None)
        await ws.pong(b"heartbeat")
        await ws.pong("text heartbeat")
        frames = [await recorder.next() for _ in range(2)]
    assert [(f.opcode, f.payload) for f in frames] == [
        (PONG, b"heartbeat"),
        (PONG, b"text heartbeat"),
    ]


async def test_unsolicited_pong_is_ignored_by_the_peer(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri, ping_interval=None)
    async with asyncio.timeout(WAIT):
        await ws.pong(b"beat")
        await ws.send("after the pong")
        assert await ws.recv() == "after the pong"


async def test_server_answers_a_ping_with_the_same_payload(echo_server: WebSocketServer) -> None:
    raw = await RawClient.connect(port_of(echo_server))
    try:
        raw.send_frame(PING, b"are you there")
        async with asyncio.timeout(WAIT):
            frame = await raw.recv_frame()
        assert (frame.opcode, frame.payload, frame.masked) == (PONG, b"are you there", False)
    finally:
        await raw.aclose()


# --- closing -------------------------------------------------------------------------------------


async def test_client_close_with_code_and_reason(
    start_server: StartServer, client: Connect
) -> None:
    seen: asyncio.Future[ConnectionClosed] = asyncio.get_running_loop().create_future()
    server_side: list[WebSocketServerProtocol] = []

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        server_side.append(ws)
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            seen.set_result(exc)

    server = await start_server(handler)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        await ws.close(4001, "going home")
        closed = await seen
        await server_side[0].wait_closed()

    assert isinstance(closed, ConnectionClosedError)  # 4001 is not a normal closure
    assert closed.rcvd == Close(4001, "going home")
    assert closed.sent is not None and closed.sent.code == 4001
    assert closed.code == 4001
    assert closed.reason == "going home"
    assert server_side[0].close_code == 4001
    assert server_side[0].close_reason == "going home"
    # The client sees the server's echo of its code (RFC 6455 5.5.1).
    assert ws.close_code == 4001
    assert ws.closed


async def test_server_close_with_code_and_reason(
    start_server: StartServer, client: Connect
) -> None:
    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.close(4002, "server says bye")

    server = await start_server(handler)
    ws = await client(uri_of(server))
    with pytest.raises(ConnectionClosedError) as exc_info:
        async with asyncio.timeout(WAIT):
            await ws.recv()
    exc = exc_info.value
    assert exc.rcvd == Close(4002, "server says bye")
    assert exc.sent is not None and exc.sent.code == 4002
    assert (exc.code, exc.reason) == (4002, "server says bye")
    assert (ws.close_code, ws.close_reason) == (4002, "server says bye")


async def test_normal_close_is_connection_closed_ok(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        await ws.close(1000, "done")
        with pytest.raises(ConnectionClosedOK) as exc_info:
            await ws.recv()
    assert exc_info.value.sent == Close(1000, "done")
    assert exc_info.value.rcvd is not None and exc_info.value.rcvd.code == 1000


async def test_close_timeout_on_the_client(client: Connect) -> None:
    async with RawServer(read_but_never_answer) as raw:
        ws = await client(raw.uri, close_timeout=0.3)
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(WAIT):
            await ws.close()
        elapsed = loop.time() - start
    assert 0.25 <= elapsed <= 0.8, elapsed
    assert ws.closed
    assert ws.state is State.CLOSED
    assert ws.close_code == 1006


async def test_close_timeout_on_the_server(start_server: StartServer) -> None:
    durations: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await ws.close()
        durations.set_result(loop.time() - start)

    server = await start_server(handler, close_timeout=0.3)
    raw = await RawClient.connect(port_of(server))
    try:
        async with asyncio.timeout(WAIT):
            frame = await raw.recv_frame()
            assert frame.opcode == CLOSE and frame.close_code == 1000
            # Never answer; the server gives up after close_timeout and drops TCP.
            assert await raw.expect_eof() == b""
            elapsed = await durations
    finally:
        await raw.aclose()
    assert 0.25 <= elapsed <= 0.8, elapsed


async def test_max_size_exceeded_fails_with_1009(
    start_server: StartServer, client: Connect
) -> None:
    server = await start_server(max_size=1024)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        await ws.send(b"x" * 1024)
        assert await ws.recv() == b"x" * 1024
        await ws.send(b"x" * 1025)
        with pytest.raises(ConnectionClosedError) as exc_info:
            await ws.recv()
    assert exc_info.value.code == 1009
    assert ws.close_code == 1009


async def test_max_size_counts_all_fragments(start_server: StartServer, client: Connect) -> None:
    server = await start_server(max_size=1024)
    ws = await client(uri_of(server))
    async with asyncio.timeout(WAIT):
        await ws.send([b"x" * 600, b"y" * 600])
        with pytest.raises(ConnectionClosedError) as exc_info:
            await ws.recv()
    assert exc_info.value.code == 1009


async def test_client_max_size(start_server: StartServer, client: Connect) -> None:
    seen: asyncio.Future[ConnectionClosed] = asyncio.get_running_loop().create_future()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        await ws.send("y" * 101)
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            seen.set_result(exc)

    server = await start_server(handler)
    ws = await client(uri_of(server), max_size=100)
    async with asyncio.timeout(WAIT):
        with pytest.raises(ConnectionClosedError) as exc_info:
            await ws.recv()
        server_view = await seen
    assert exc_info.value.sent is not None and exc_info.value.sent.code == 1009
    assert server_view.code == 1009


# --- properties and concurrency ------------------------------------------------------------------


async def test_properties(start_server: StartServer, client: Connect) -> None:
    capture = Capture()
    server = await start_server(capture.handler)
    port = port_of(server)
    ws = await client(uri_of(server), ping_interval=None)
    server_ws = await capture.next()

    assert ws.open and server_ws.open
    assert not ws.closed and not server_ws.closed
    assert ws.state is State.OPEN and server_ws.state is State.OPEN
    assert ws.remote_address[:2] == ("127.0.0.1", port)
    assert ws.local_address[0] == "127.0.0.1"
    assert server_ws.remote_address == ws.local_address
    assert server_ws.local_address == ws.remote_address
    assert ws.close_code is None and ws.close_reason is None
    assert ws.latency == 0.0

    async with asyncio.timeout(WAIT):
        await (await ws.ping())
        assert ws.latency > 0
        await ws.close(1000, "bye")
        await server_ws.wait_closed()

    assert not ws.open and not server_ws.open
    assert ws.closed and server_ws.closed
    assert ws.state is State.CLOSED and server_ws.state is State.CLOSED
    assert (ws.close_code, ws.close_reason) == (1000, "")
    assert (server_ws.close_code, server_ws.close_reason) == (1000, "bye")
    # Addresses stay available after the close, for logging.
    assert ws.remote_address[:2] == ("127.0.0.1", port)


async def test_open_is_false_once_close_is_sent(client: Connect) -> None:
    async with RawServer(read_but_never_answer) as raw:
        ws = await client(raw.uri, close_timeout=0.3)
        closing = asyncio.ensure_future(ws.close())
        await asyncio.sleep(0)
        assert not ws.open
        assert ws.state is State.CLOSING
        assert not ws.closed
        async with asyncio.timeout(WAIT):
            await closing
        assert cast(State, ws.state) is State.CLOSED


async def test_concurrent_recv_is_refused(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        first = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)
        with pytest.raises(ConcurrencyError):
            await ws.recv()
        await ws.send("for the first one")
        assert await first == "for the first one"


async def test_cancelled_recv_loses_nothing(echo_uri: str, client: Connect) -> None:
    ws = await client(echo_uri)
    async with asyncio.timeout(WAIT):
        waiting = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await ws.send("kept")
        assert await ws.recv() == "kept"


class CancelOnArrival(WebSocketClientProtocol):
    """Cancels ``victim`` right after data arrives: between waking recv() and recv() resuming."""

    victim: asyncio.Task[Any] | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.victim is not None:
            self.victim.cancel()
            self.victim = None


async def test_recv_cancelled_as_the_message_arrives_loses_nothing(
    echo_uri: str, client: Connect
) -> None:
    ws = await client(echo_uri, create_protocol=CancelOnArrival)
    assert isinstance(ws, CancelOnArrival)
    async with asyncio.timeout(WAIT):
        waiting = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)
        ws.victim = waiting
        await ws.send("precious")
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await ws.recv() == "precious"


# --- flow control --------------------------------------------------------------------------------


async def test_max_queue_makes_the_server_stop_reading(
    start_server: StartServer, client: Connect
) -> None:
    capture = Capture()
    listener = small_buffer_socket(rcvbuf=4096)
    listener.bind(("127.0.0.1", 0))
    # No compression: these messages would shrink to a few bytes and never fill a buffer.
    server = await start_server(
        capture.handler, sock=listener, max_queue=2, close_timeout=0.5, compression=None
    )
    sock = small_buffer_socket(sndbuf=4096)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port_of(server)))
    ws = await client(
        uri_of(server), sock=sock, write_limit=16384, ping_interval=None, compression=None
    )
    server_ws = await capture.next()
    assert server_ws.transport is not None

    def message(i: int) -> bytes:
        return b"%08d" % i + b"." * 16376

    async with asyncio.timeout(WAIT):
        sent = 0
        while True:
            assert sent < 500, "the client never felt back-pressure: the server kept reading"
            blocked = await send_blocks(ws, message(sent))
            sent += 1
            # A send may wait briefly while the server is still reading; the handler reads
            # nothing, so once max_queue messages are queued the wait must last.
            if blocked is not None and await still_pending(blocked):
                break
        assert not server_ws.transport.is_reading()

        # Once the handler reads, everything arrives, in order, and the client unblocks.
        for i in range(sent):
            assert await server_ws.recv() == message(i)
        await blocked
        assert server_ws.transport.is_reading()


async def test_messages_sent_before_the_peers_close_are_all_delivered(
    start_server: StartServer, client: Connect
) -> None:
    """Messages that precede the peer's close frame are the application's to read (RFC 6455
    section 1.4: the close frame comes after the data), even beyond max_queue when they
    arrive in the same read as the close; only after our own close may data be dropped."""
    capture = Capture()
    server = await start_server(capture.handler, max_queue=2)
    ws = await client(uri_of(server), ping_interval=None)
    server_ws = await capture.next()
    async with asyncio.timeout(WAIT):
        for i in range(100):
            await ws.send(f"m{i}")  # coalesced, with the close frame, into one write
        await ws.close()
        received = [message async for message in server_ws]
    assert received == [f"m{i}" for i in range(100)]
    assert server_ws.close_code == 1000


async def server_with_paused_reading(
    start_server: StartServer, client: Connect
) -> tuple[WebSocketServer, WebSocketClientProtocol, WebSocketServerProtocol]:
    """A server whose handler never reads (max_queue=2), a client, and the server's side."""
    capture = Capture()
    server = await start_server(capture.handler, max_queue=2, close_timeout=1.0)
    ws = await client(uri_of(server), ping_interval=None)
    return server, ws, await capture.next()


async def fill_until_reading_pauses(
    ws: WebSocketClientProtocol, server_ws: WebSocketServerProtocol
) -> None:
    """One write, one read on the server: the ping is answered, then three messages fill the
    queue (max_queue=2) and reading pauses. The pong tells us the server got there."""
    pong = await ws.ping(b"sync")
    for i in range(3):
        await ws.send(f"unread {i}")
    await pong
    assert server_ws.transport is not None
    assert not server_ws.transport.is_reading(), "precondition: reading is paused"


async def test_close_completes_while_reading_is_paused(
    start_server: StartServer, client: Connect
) -> None:
    """close() must still read the peer's close frame when max_queue paused reading.

    RFC 6455 section 7.1.2-7.1.3: after sending a close frame, an endpoint waits for the peer's
    close frame; it can only see it if it reads. With reading paused by a full queue the closing
    handshake can only end by close_timeout, and is then reported as abnormal (1006).
    """
    _server, ws, server_ws = await server_with_paused_reading(start_server, client)
    async with asyncio.timeout(WAIT):
        await fill_until_reading_pauses(ws, server_ws)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await server_ws.close(1000, "done")
        elapsed = loop.time() - start
        await ws.wait_closed()
    assert elapsed < 0.5, f"close() waited {elapsed:.2f} s: the close frame was never read"
    assert server_ws.close_code == 1000
    assert ws.close_code == 1000


async def test_server_shutdown_with_a_handler_that_does_not_read(
    start_server: StartServer, client: Connect
) -> None:
    """server.close() says 1001 to every connection, including one whose queue is full."""
    server, ws, server_ws = await server_with_paused_reading(start_server, client)
    async with asyncio.timeout(WAIT):
        await fill_until_reading_pauses(ws, server_ws)
        loop = asyncio.get_running_loop()
        start = loop.time()
        server.close()
        await server.wait_closed()
        elapsed = loop.time() - start
    assert elapsed < 0.5, f"shutdown took {elapsed:.2f} s: the client's close frame was not read"
    assert ws.close_code == 1001
    assert server_ws.close_code == 1001


async def test_write_limit_blocks_send_while_the_peer_does_not_read(client: Connect) -> None:
    resume = asyncio.Event()

    async def read_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()
        await resume.wait()
        transport.resume_reading()
        while True:
            frame = await read_frame(reader)
            if frame.opcode == CLOSE:
                writer.write(build_frame(CLOSE, frame.payload[:2], masked=False))
                writer.close()
                return

    write_limit = 32768
    message = b"w" * 16384
    listener = small_buffer_socket(rcvbuf=4096)
    async with RawServer(read_later, sock=listener) as raw:
        sock = small_buffer_socket(sndbuf=4096)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", raw.port))
        ws = await client(raw.uri, sock=sock, write_limit=write_limit, ping_interval=None)
        assert ws.transport is not None
        async with asyncio.timeout(WAIT):
            blocked: asyncio.Task[None] | None = None
            sent = 0
            while blocked is None:
                assert sent < 500, "send() never waited although the peer reads nothing"
                blocked = await send_blocks(ws, message)
                sent += 1
            assert await still_pending(blocked)
            buffered = ws.transport.get_write_buffer_size()
            assert write_limit < buffered <= write_buffer_bound(write_limit, message)
            resume.set()
            await blocked
            await ws.close()


async def test_write_limit_on_the_server_side(start_server: StartServer) -> None:
    capture = Capture()
    listener = small_buffer_socket(sndbuf=4096)
    listener.bind(("127.0.0.1", 0))
    write_limit = 32768
    server = await start_server(
        capture.handler, sock=listener, write_limit=write_limit, ping_interval=None
    )
    raw = await RawClient.connect(port_of(server), sock=small_buffer_socket(rcvbuf=4096))
    try:
        raw.pause_reading()
        server_ws = await capture.next()
        assert server_ws.transport is not None
        message = b"s" * 16384
        async with asyncio.timeout(WAIT):
            blocked: asyncio.Task[None] | None = None
            sent = 0
            while blocked is None:
                assert sent < 500, "send() never waited although the peer reads nothing"
                blocked = await send_blocks(server_ws, message)
                sent += 1
            assert await still_pending(blocked)
            buffered = server_ws.transport.get_write_buffer_size()
            assert write_limit < buffered <= write_buffer_bound(write_limit, message)
            raw.resume_reading()
            for _ in range(sent):
                frame = await raw.recv_frame()
                assert (frame.opcode, len(frame.payload)) == (BINARY, len(message))
            await blocked
    finally:
        await raw.aclose()


# --- keepalive -----------------------------------------------------------------------------------


async def test_keepalive_fails_a_silent_client_with_1011(start_server: StartServer) -> None:
    seen: asyncio.Future[ConnectionClosed] = asyncio.get_running_loop().create_future()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            seen.set_result(exc)

    server = await start_server(handler, ping_interval=0.1, ping_timeout=0.1)
    raw = await RawClient.connect(port_of(server))
    try:
        async with asyncio.timeout(1.5):
            others, close = await raw.recv_until_close()  # never answering the pings
            assert await raw.expect_eof() == b""
            closed = await seen
    finally:
        await raw.aclose()
    assert [f.opcode for f in others] == [PING]
    assert close.close_code == 1011
    assert isinstance(closed, ConnectionClosedError)
    assert closed.sent is not None and closed.sent.code == 1011


async def test_keepalive_fails_a_silent_server_with_1011(client: Connect) -> None:
    async with RawServer(read_but_never_answer) as raw:
        ws = await client(raw.uri, ping_interval=0.1, ping_timeout=0.1, close_timeout=0.2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ConnectionClosedError) as exc_info:
            async with asyncio.timeout(1.5):
                await ws.recv()
        elapsed = loop.time() - start
    assert exc_info.value.sent is not None and exc_info.value.sent.code == 1011
    assert elapsed < 1.0


async def test_keepalive_with_a_live_server_keeps_the_connection(client: Connect) -> None:
    async def answer_pings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        while True:
            frame = await read_frame(reader)
            if frame.opcode == PING:
                writer.write(build_frame(PONG, frame.payload, masked=False))
                answered += 1
                # Sent after the pong, so it arrives after it: the client has read the pong
                # by the time recv() returns this.
                writer.write(build_frame(TEXT, b"answered %d" % answered, masked=False))
            elif frame.opcode == CLOSE:
                writer.write(build_frame(CLOSE, frame.payload[:2], masked=False))
                writer.close()
                return

    async with RawServer(answer_pings) as raw:
        ws = await client(raw.uri, ping_interval=0.05, ping_timeout=0.05)
        async with asyncio.timeout(WAIT):
            # Three keepalive pings, well past ping_timeout in total: the connection stays up.
            for i in range(1, 4):
                assert await ws.recv() == f"answered {i}"
        assert ws.open
        assert ws.latency > 0


async def test_keepalive_on_the_server_with_a_live_client(start_server: StartServer) -> None:
    result: asyncio.Future[tuple[bool, float]] = asyncio.get_running_loop().create_future()

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        assert await ws.recv() == "three pings answered"
        result.set_result((ws.open, ws.latency))
        await ws.close()

    server = await start_server(handler, ping_interval=0.05, ping_timeout=0.05)
    raw = await RawClient.connect(port_of(server))
    try:
        async with asyncio.timeout(WAIT):
            for _ in range(3):
                frame = await raw.recv_frame()
                assert frame.opcode == PING
                raw.send_frame(PONG, frame.payload)
            raw.send_frame(TEXT, b"three pings answered")
            still_open, latency = await result
    finally:
        await raw.aclose()
    assert still_open
    assert latency > 0
