"""hub.protocol.connection.Connection: RFC 6455 after the handshake, in both roles, on bytes only.

A server expects masked frames and sends unmasked ones; a client the reverse (section 5.1). Every
test that does not depend on the role runs for both: :func:`peer_frame` builds bytes as the
*peer* would send them, and :func:`parse_sent` reads what the connection wrote as the peer would.
"""

from __future__ import annotations

import logging

import pytest

from hub.exceptions import InvalidPayloadData, PayloadTooBig, ProtocolError, UsageError
from hub.protocol import connection as connection_module
from hub.protocol.connection import (
    CLIENT,
    CLOSED,
    CLOSING,
    OPEN,
    SERVER,
    Connection,
    Message,
    Ping,
    Pong,
    Side,
)
from hub.protocol.frames import Close, Opcode, serialize_frame
from hub.protocol.reader import Frame, FrameReader
from tests.protocol.rawpeer import close_payload

SIDES = [pytest.param(SERVER, id="server"), pytest.param(CLIENT, id="client")]


@pytest.fixture(params=SIDES)
def side(request: pytest.FixtureRequest) -> Side:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def conn(side: Side) -> Connection:
    return Connection(side)


def peer_frame(side: Side, opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A frame as the peer of ``side`` sends it: a client peer masks, a server peer does not."""
    return serialize_frame(opcode, payload, fin=fin, mask=side is SERVER)


def parse_sent(side: Side, chunks: list[bytes]) -> list[Frame]:
    """Parse bytes written by ``side`` as its peer would (checking the masking direction)."""
    data = b"".join(chunks)
    peer = FrameReader(mask_expected=side is CLIENT, max_size=None)
    frames = peer.feed(data)
    assert peer.error is None, peer.error
    assert not peer.feed(b"")
    return frames


def sent_frames(conn: Connection) -> list[Frame]:
    """Drain data_to_send and return the frames in it (the EOF marker, if any, is dropped)."""
    return parse_sent(conn.side, [chunk for chunk in conn.data_to_send() if chunk])


def drain(conn: Connection) -> tuple[list[Frame], bool]:
    """Drain data_to_send: (frames, whether the EOF marker b"" was queued, and queued last)."""
    chunks = conn.data_to_send()
    eof = b"" in chunks
    if eof:
        assert chunks[-1] == b"", "nothing may follow the EOF marker"
        assert chunks.count(b"") == 1
    return parse_sent(conn.side, [c for c in chunks if c]), eof


def close_frame(code: int, reason: str = "") -> Frame:
    return Frame(Opcode.CLOSE, Close(code, reason).serialize())


def assert_failed(conn: Connection, code: int, error_type: type[ProtocolError]) -> None:
    """The connection was failed with ``code``: one close frame sent, EOF for a server."""
    assert isinstance(conn.failure, error_type)
    assert conn.failure.code == code
    assert conn.state is CLOSING
    frames, eof = drain(conn)
    assert len(frames) == 1
    assert frames[0].opcode == Opcode.CLOSE
    assert Close.parse(frames[0].payload).code == code
    assert conn.close_sent is not None
    assert conn.close_sent.code == code
    assert conn.close_rcvd_then_sent is False
    assert eof is (conn.side is SERVER)
    assert conn.eof_sent is (conn.side is SERVER)


class TestInitialState:
    def test_open(self, conn: Connection) -> None:
        assert conn.state is OPEN
        assert conn.close_rcvd is None
        assert conn.close_sent is None
        assert conn.close_rcvd_then_sent is None
        assert conn.failure is None
        assert not conn.eof_sent
        assert conn.events_received() == []
        assert conn.data_to_send() == []


# --- Section 5.6: data frames ---------------------------------------------------------------------


class TestSection5_6DataFrames:
    def test_receive_text(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT, "héllo €".encode()))
        assert conn.events_received() == [Message("héllo €")]
        assert conn.data_to_send() == []

    def test_receive_binary(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.BINARY, b"\x00\xff\x80"))
        assert conn.events_received() == [Message(b"\x00\xff\x80")]

    def test_message_types(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"t") + peer_frame(side, Opcode.BINARY))
        text, binary = conn.events_received()
        assert isinstance(text, Message)
        assert isinstance(binary, Message)
        assert type(text.data) is str
        assert type(binary.data) is bytes

    def test_receive_empty_messages(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT) + peer_frame(side, Opcode.BINARY))
        assert conn.events_received() == [Message(""), Message(b"")]

    def test_events_are_drained(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"a"))
        assert conn.events_received() == [Message("a")]
        assert conn.events_received() == []

    def test_several_messages_in_one_chunk(self, side: Side, conn: Connection) -> None:
        conn.receive_data(b"".join(peer_frame(side, Opcode.TEXT, b"%d" % i) for i in range(10)))
        assert conn.events_received() == [Message(str(i)) for i in range(10)]

    def test_message_fed_byte_by_byte(self, side: Side, conn: Connection) -> None:
        data = peer_frame(side, Opcode.TEXT, "ça".encode() * 100)
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
            if i < len(data) - 1:
                assert conn.events_received() == []
        assert conn.events_received() == [Message("ça" * 100)]

    def test_send_text(self, conn: Connection) -> None:
        conn.send_text("héllo")
        assert sent_frames(conn) == [Frame(Opcode.TEXT, "héllo".encode())]

    def test_send_binary(self, conn: Connection) -> None:
        conn.send_binary(b"\x01\x02")
        conn.send_binary(bytearray(b"\x03"))
        conn.send_binary(memoryview(b"\x04"))
        assert sent_frames(conn) == [
            Frame(Opcode.BINARY, b"\x01\x02"),
            Frame(Opcode.BINARY, b"\x03"),
            Frame(Opcode.BINARY, b"\x04"),
        ]

    def test_send_large(self, conn: Connection) -> None:
        data = bytes(range(256)) * 300
        conn.send_binary(data)
        assert sent_frames(conn) == [Frame(Opcode.BINARY, data)]

    def test_sent_masking_direction(self, side: Side, conn: Connection) -> None:
        conn.send_text("x")
        (chunk,) = conn.data_to_send()
        assert bool(chunk[1] & 0x80) is (side is CLIENT)

    def test_max_size(self, side: Side) -> None:
        conn = Connection(side, max_size=10)
        conn.receive_data(peer_frame(side, Opcode.BINARY, b"x" * 10))
        assert conn.events_received() == [Message(b"x" * 10)]
        conn.receive_data(peer_frame(side, Opcode.BINARY, b"x" * 11))
        assert conn.events_received() == []
        assert_failed(conn, 1009, PayloadTooBig)

    def test_max_size_none(self, side: Side) -> None:
        conn = Connection(side, max_size=None)
        data = b"x" * (2**20 + 1)
        conn.receive_data(peer_frame(side, Opcode.BINARY, data))
        assert conn.events_received() == [Message(data)]

    def test_default_max_size_is_1_mib(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.BINARY, b"x" * 2**20))
        assert conn.events_received() == [Message(b"x" * 2**20)]
        conn.receive_data(peer_frame(side, Opcode.BINARY, b"x" * (2**20 + 1))[:14])
        assert_failed(conn, 1009, PayloadTooBig)


# --- Section 8.1: UTF-8 in text messages ----------------------------------------------------------

INVALID_UTF8 = [
    pytest.param(b"\xff", id="invalid-start-byte"),
    pytest.param(b"\xc0\xaf", id="overlong"),
    pytest.param(b"\xed\xa0\x80", id="surrogate"),
    pytest.param(b"\xf4\x90\x80\x80", id="above-U+10FFFF"),
    pytest.param(b"abc\x80", id="lone-continuation"),
    pytest.param(b"caf\xc3", id="truncated"),
]


class TestSection8_1Utf8:
    @pytest.mark.parametrize("payload", INVALID_UTF8)
    def test_invalid_utf8(self, side: Side, conn: Connection, payload: bytes) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT, payload))
        assert conn.events_received() == []
        assert_failed(conn, 1007, InvalidPayloadData)

    def test_invalid_utf8_server_closes_tcp(self) -> None:
        conn = Connection(SERVER)
        conn.receive_data(peer_frame(SERVER, Opcode.TEXT, b"\xff"))
        chunks = conn.data_to_send()
        assert chunks[-1] == b""
        (frame,) = parse_sent(SERVER, chunks[:-1])
        assert frame.opcode == Opcode.CLOSE
        assert Close.parse(frame.payload).code == 1007

    def test_invalid_utf8_in_binary_is_fine(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.BINARY, b"\xff\xfe"))
        assert conn.events_received() == [Message(b"\xff\xfe")]
        assert conn.failure is None

    def test_valid_utf8_edge_cases(self, side: Side, conn: Connection) -> None:
        text = "\x00\x7f\x80\u07ff\u0800\ud7ff\ue000\uffff\U00010000\U0010ffff"
        conn.receive_data(peer_frame(side, Opcode.TEXT, text.encode()))
        assert conn.events_received() == [Message(text)]

    def test_multibyte_char_split_across_fragments(self, side: Side, conn: Connection) -> None:
        encoded = "κόσμε€😀".encode()
        # Split at every byte: each character is cut in every possible place.
        data = peer_frame(side, Opcode.TEXT, encoded[:1], fin=False)
        for i in range(1, len(encoded) - 1):
            data += peer_frame(side, Opcode.CONT, encoded[i : i + 1], fin=False)
        data += peer_frame(side, Opcode.CONT, encoded[-1:])
        conn.receive_data(data)
        assert conn.events_received() == [Message("κόσμε€😀")]
        assert conn.failure is None

    @pytest.mark.parametrize(
        "bad",
        [
            pytest.param(b"\xff", id="invalid-start-byte"),
            pytest.param(b"\xf4\x90\x80\x80", id="above-U+10FFFF"),
            pytest.param(b"\xed\xa0\x80", id="surrogate"),
        ],
    )
    def test_fail_fast_in_first_fragment(self, side: Side, conn: Connection, bad: bytes) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"ok" + bad, fin=False))
        # The final fragment has not arrived: the connection fails anyway.
        assert_failed(conn, 1007, InvalidPayloadData)
        conn.receive_data(peer_frame(side, Opcode.CONT, b"end"))
        assert conn.events_received() == []

    def test_fail_fast_in_middle_fragment(self, side: Side, conn: Connection) -> None:
        conn.receive_data(
            peer_frame(side, Opcode.TEXT, "κό".encode(), fin=False)
            + peer_frame(side, Opcode.CONT, b"\xce\xbc\xff", fin=False)
        )
        assert conn.events_received() == []
        assert_failed(conn, 1007, InvalidPayloadData)

    def test_fail_fast_across_fragment_boundary(self, side: Side, conn: Connection) -> None:
        # \xf4 may start a valid sequence; \x90 after it cannot (above U+10FFFF).
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"a\xf4", fin=False))
        assert conn.failure is None
        conn.receive_data(peer_frame(side, Opcode.CONT, b"\x90", fin=False))
        assert_failed(conn, 1007, InvalidPayloadData)

    def test_truncated_at_final_fragment(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"caf", fin=False))
        conn.receive_data(peer_frame(side, Opcode.CONT, b"\xc3", fin=False))
        assert conn.failure is None
        conn.receive_data(peer_frame(side, Opcode.CONT, b""))
        assert conn.events_received() == []
        assert_failed(conn, 1007, InvalidPayloadData)

    def test_decoder_reset_between_messages(self, side: Side, conn: Connection) -> None:
        conn.receive_data(
            peer_frame(side, Opcode.TEXT, b"a", fin=False)
            + peer_frame(side, Opcode.CONT, b"b")
            + peer_frame(side, Opcode.BINARY, b"\xc3", fin=False)
            + peer_frame(side, Opcode.CONT, b"\xff")
            + peer_frame(side, Opcode.TEXT, b"\xc3", fin=False)
            + peer_frame(side, Opcode.CONT, b"\xa9")
        )
        assert conn.events_received() == [Message("ab"), Message(b"\xc3\xff"), Message("é")]
        assert conn.failure is None


# --- Section 5.4: fragmentation -------------------------------------------------------------------


class TestSection5_4Fragmentation:
    def test_receive_fragmented_text(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"Hel", fin=False))
        conn.receive_data(peer_frame(side, Opcode.CONT, b"l", fin=False))
        assert conn.events_received() == []
        conn.receive_data(peer_frame(side, Opcode.CONT, b"o"))
        assert conn.events_received() == [Message("Hello")]

    def test_receive_fragmented_binary(self, side: Side, conn: Connection) -> None:
        conn.receive_data(
            peer_frame(side, Opcode.BINARY, b"\x01", fin=False)
            + peer_frame(side, Opcode.CONT, b"", fin=False)
            + peer_frame(side, Opcode.CONT, b"\x02\x03")
        )
        assert conn.events_received() == [Message(b"\x01\x02\x03")]

    def test_ping_between_fragments(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"Hel", fin=False))
        conn.receive_data(peer_frame(side, Opcode.PING, b"in the middle"))
        # Section 5.4/5.5: control frames may be injected; the pong goes out at once.
        assert conn.events_received() == [Ping(b"in the middle")]
        assert sent_frames(conn) == [Frame(Opcode.PONG, b"in the middle")]
        conn.receive_data(peer_frame(side, Opcode.PONG, b"p"))
        conn.receive_data(peer_frame(side, Opcode.CONT, b"lo"))
        assert conn.events_received() == [Pong(b"p"), Message("Hello")]

    def test_continuation_without_start(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.CONT, b"x"))
        assert_failed(conn, 1002, ProtocolError)

    def test_new_message_inside_fragmented_message(self, side: Side, conn: Connection) -> None:
        conn.receive_data(
            peer_frame(side, Opcode.TEXT, b"a", fin=False) + peer_frame(side, Opcode.TEXT, b"b")
        )
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    def test_fragmented_message_over_max_size(self, side: Side) -> None:
        conn = Connection(side, max_size=5)
        conn.receive_data(
            peer_frame(side, Opcode.BINARY, b"abc", fin=False)
            + peer_frame(side, Opcode.CONT, b"def")
        )
        assert conn.events_received() == []
        assert_failed(conn, 1009, PayloadTooBig)

    def test_send_fragmented_text(self, conn: Connection) -> None:
        conn.send_text("Hel", fin=False)
        conn.send_continuation(b"l", fin=False)
        conn.send_continuation(b"o", fin=True)
        assert sent_frames(conn) == [
            Frame(Opcode.TEXT, b"Hel", False),
            Frame(Opcode.CONT, b"l", False),
            Frame(Opcode.CONT, b"o", True),
        ]

    def test_send_fragmented_binary_then_new_message(self, conn: Connection) -> None:
        conn.send_binary(b"a", fin=False)
        conn.send_continuation(b"b", fin=True)
        conn.send_text("next")
        assert sent_frames(conn) == [
            Frame(Opcode.BINARY, b"a", False),
            Frame(Opcode.CONT, b"b", True),
            Frame(Opcode.TEXT, b"next", True),
        ]

    def test_control_frames_while_sending_fragments(self, conn: Connection) -> None:
        conn.send_text("a", fin=False)
        conn.send_ping(b"p")
        conn.send_pong(b"q")
        conn.send_continuation(b"b", fin=True)
        assert [f.opcode for f in sent_frames(conn)] == [
            Opcode.TEXT,
            Opcode.PING,
            Opcode.PONG,
            Opcode.CONT,
        ]

    @pytest.mark.parametrize("start", ["text", "binary"])
    def test_new_message_while_sending_fragments(self, conn: Connection, start: str) -> None:
        conn.send_text("a", fin=False)
        with pytest.raises(UsageError):
            if start == "text":
                conn.send_text("b")
            else:
                conn.send_binary(b"b")
        # The failed call sent nothing and the message can still be finished.
        conn.send_continuation(b"c", fin=True)
        assert [f.payload for f in sent_frames(conn)] == [b"a", b"c"]

    def test_continuation_without_fragmented_message(self, conn: Connection) -> None:
        with pytest.raises(UsageError):
            conn.send_continuation(b"x", fin=True)
        conn.send_text("a", fin=False)
        conn.send_continuation(b"b", fin=True)
        with pytest.raises(UsageError):
            conn.send_continuation(b"x", fin=False)
        assert len(sent_frames(conn)) == 2


# --- Section 5.5.2 / 5.5.3: ping and pong ---------------------------------------------------------


class TestSection5_5PingPong:
    @pytest.mark.parametrize("payload", [b"", b"hello", b"\x00\xff" * 62 + b"x"])
    def test_ping_is_answered(self, side: Side, conn: Connection, payload: bytes) -> None:
        conn.receive_data(peer_frame(side, Opcode.PING, payload))
        assert conn.events_received() == [Ping(payload)]
        assert sent_frames(conn) == [Frame(Opcode.PONG, payload)]

    def test_pong_is_reported(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.PONG, b"beat"))
        assert conn.events_received() == [Pong(b"beat")]
        assert conn.data_to_send() == []

    def test_ping_too_long(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.PING, b"x" * 126))
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    def test_fragmented_ping(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.PING, b"x", fin=False))
        assert_failed(conn, 1002, ProtocolError)

    def test_send_ping_and_pong(self, conn: Connection) -> None:
        conn.send_ping(b"abc")
        conn.send_pong(b"")
        conn.send_ping(b"p" * 125)
        assert sent_frames(conn) == [
            Frame(Opcode.PING, b"abc"),
            Frame(Opcode.PONG, b""),
            Frame(Opcode.PING, b"p" * 125),
        ]

    @pytest.mark.parametrize("method", ["send_ping", "send_pong"])
    def test_send_control_too_long(self, conn: Connection, method: str) -> None:
        with pytest.raises(UsageError):
            getattr(conn, method)(b"x" * 126)
        assert conn.data_to_send() == []

    def test_ping_answered_after_we_sent_close(self, side: Side, conn: Connection) -> None:
        # Section 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
        # response, unless it already received a Close frame." Having *sent* one is no excuse,
        # and section 5.5.1 only forbids data frames after a Close frame.
        conn.send_close()
        conn.data_to_send()
        conn.receive_data(peer_frame(side, Opcode.PING, b"still there?"))
        assert conn.events_received() == [Ping(b"still there?")]
        assert sent_frames(conn) == [Frame(Opcode.PONG, b"still there?")]


# --- Section 7.1-7.4: closing ---------------------------------------------------------------------


class TestSection7_1ClosingHandshake:
    def test_we_close_first(self, side: Side, conn: Connection) -> None:
        conn.send_close(1000, "bye")
        assert conn.state is CLOSING
        assert conn.close_sent == Close(1000, "bye")
        assert conn.close_rcvd is None
        assert conn.close_rcvd_then_sent is False
        frames, eof = drain(conn)
        assert frames == [close_frame(1000, "bye")]
        assert not eof  # Wait for the peer's close frame first.

        conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(1000, b"ok")))
        assert conn.events_received() == [Close(1000, "ok")]
        assert conn.close_rcvd == Close(1000, "ok")
        assert conn.close_sent == Close(1000, "bye")
        assert conn.close_rcvd_then_sent is False
        assert conn.state is CLOSING
        frames, eof = drain(conn)
        assert frames == []  # No second close frame.
        # Section 7.1.1: the server closes the TCP connection first; the client waits.
        assert eof is (side is SERVER)

        conn.receive_eof()
        assert conn.state is CLOSED
        assert conn.data_to_send() == []

    def test_peer_closes_first(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(1001, b"going")))
        assert conn.events_received() == [Close(1001, "going")]
        assert conn.state is CLOSING
        assert conn.close_rcvd == Close(1001, "going")
        assert conn.close_sent is not None
        assert conn.close_sent.code == 1001  # Section 5.5.1: echo the status code.
        assert conn.close_rcvd_then_sent is True
        frames, eof = drain(conn)
        assert len(frames) == 1
        assert frames[0].opcode == Opcode.CLOSE
        assert Close.parse(frames[0].payload).code == 1001
        assert eof is (side is SERVER)
        assert conn.eof_sent is (side is SERVER)

        conn.receive_eof()
        assert conn.state is CLOSED

    def test_server_sends_eof_after_close_frame(self) -> None:
        conn = Connection(SERVER)
        conn.receive_data(peer_frame(SERVER, Opcode.CLOSE, close_payload(1000)))
        chunks = conn.data_to_send()
        assert len(chunks) == 2
        assert chunks[1] == b""
        assert parse_sent(SERVER, chunks[:1]) == [close_frame(1000)]

    def test_client_does_not_send_eof(self) -> None:
        conn = Connection(CLIENT)
        conn.receive_data(peer_frame(CLIENT, Opcode.CLOSE, close_payload(1000)))
        chunks = conn.data_to_send()
        assert b"" not in chunks
        assert not conn.eof_sent

    def test_empty_close_is_1005_and_echoed_empty(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.CLOSE, b""))
        assert conn.events_received() == [Close(1005, "")]
        assert conn.close_rcvd == Close(1005, "")
        assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"")]

    def test_data_after_close_frame_is_discarded(self, side: Side, conn: Connection) -> None:
        conn.receive_data(
            peer_frame(side, Opcode.TEXT, b"before")
            + peer_frame(side, Opcode.CLOSE, close_payload(1000))
            + peer_frame(side, Opcode.TEXT, b"after")
            + peer_frame(side, Opcode.PING, b"p")
        )
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"later") + b"\xff\xff garbage")
        assert conn.events_received() == [Message("before"), Close(1000, "")]
        assert sent_frames(conn) == [close_frame(1000)]
        assert conn.failure is None

    def test_messages_still_received_after_we_close(self, side: Side, conn: Connection) -> None:
        # Section 7.1.2: after sending a close frame, keep reading until the peer's close frame.
        conn.send_close()
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"in flight"))
        assert conn.events_received() == [Message("in flight")]

    def test_receive_eof_without_close(self, conn: Connection) -> None:
        conn.receive_eof()
        assert conn.state is CLOSED
        assert conn.close_rcvd is None
        assert conn.close_sent is None
        assert conn.data_to_send() == []

    def test_input_after_eof_is_discarded(self, side: Side, conn: Connection) -> None:
        conn.receive_eof()
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"late"))
        assert conn.events_received() == []
        assert conn.state is CLOSED

    def test_receive_eof_after_closing_handshake(self, side: Side, conn: Connection) -> None:
        conn.send_close()
        conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(1000)))
        conn.receive_eof()
        assert conn.state is CLOSED
        assert conn.close_rcvd == Close(1000)
        assert conn.close_sent == Close(1000)


class TestSection7_4ClosePayload:
    def test_one_byte_payload(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.CLOSE, b"\x03"))
        assert conn.events_received() == []
        assert conn.close_rcvd is None
        assert_failed(conn, 1002, ProtocolError)

    @pytest.mark.parametrize(
        "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
    )
    def test_invalid_code(self, side: Side, conn: Connection, code: int) -> None:
        conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(code)))
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    @pytest.mark.parametrize(
        "code",
        [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999],
    )
    def test_valid_code(self, side: Side, conn: Connection, code: int) -> None:
        conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(code, b"why")))
        assert conn.events_received() == [Close(code, "why")]
        assert conn.failure is None
        frames = sent_frames(conn)
        assert len(frames) == 1
        assert Close.parse(frames[0].payload).code == code

    def test_reason_not_utf8(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(1000, b"\xff")))
        assert conn.events_received() == []
        assert_failed(conn, 1007, InvalidPayloadData)

    def test_utf8_reason(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(1000, "ça".encode())))
        assert conn.events_received() == [Close(1000, "ça")]

    def test_invalid_close_after_we_closed(self, side: Side, conn: Connection) -> None:
        conn.send_close(1000)
        conn.data_to_send()
        conn.receive_data(peer_frame(side, Opcode.CLOSE, b"\x03"))
        assert isinstance(conn.failure, ProtocolError)
        frames, eof = drain(conn)
        assert frames == []  # Our close frame is already sent.
        assert eof is (side is SERVER)


class TestSendClose:
    @pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4999])
    def test_send_close(self, conn: Connection, code: int) -> None:
        conn.send_close(code, "reason")
        assert sent_frames(conn) == [close_frame(code, "reason")]

    def test_default_is_1000(self, conn: Connection) -> None:
        conn.send_close()
        assert conn.close_sent == Close(1000, "")
        assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"\x03\xe8")]

    def test_1005_sends_empty_close(self, conn: Connection) -> None:
        conn.send_close(1005)
        assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"")]

    @pytest.mark.parametrize("code", [0, 999, 1004, 1006, 1015, 2000, 5000])
    def test_invalid_code(self, conn: Connection, code: int) -> None:
        with pytest.raises(UsageError):
            conn.send_close(code)
        assert conn.state is OPEN
        assert conn.close_sent is None
        assert conn.data_to_send() == []

    def test_reason_limit(self, conn: Connection) -> None:
        with pytest.raises(UsageError):
            conn.send_close(1000, "x" * 124)
        with pytest.raises(UsageError):
            conn.send_close(1000, "é" * 62)  # 124 bytes once encoded
        assert conn.state is OPEN
        conn.send_close(1000, "x" * 123)
        assert sent_frames(conn) == [close_frame(1000, "x" * 123)]

    def test_close_twice(self, conn: Connection) -> None:
        conn.send_close()
        with pytest.raises(UsageError):
            conn.send_close()

    def test_close_after_peer_closed(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(1000)))
        with pytest.raises(UsageError):
            conn.send_close()

    @pytest.mark.parametrize(
        "send",
        [
            pytest.param(lambda c: c.send_text("x"), id="text"),
            pytest.param(lambda c: c.send_binary(b"x"), id="binary"),
            pytest.param(lambda c: c.send_ping(b"x"), id="ping"),
            pytest.param(lambda c: c.send_pong(b"x"), id="pong"),
        ],
    )
    @pytest.mark.parametrize("how", ["send_close", "peer_close", "eof", "fail"])
    def test_send_after_close(self, side: Side, conn: Connection, send: object, how: str) -> None:
        if how == "send_close":
            conn.send_close()
        elif how == "peer_close":
            conn.receive_data(peer_frame(side, Opcode.CLOSE, close_payload(1000)))
        elif how == "eof":
            conn.receive_eof()
        else:
            conn.fail(1011)
        conn.data_to_send()
        with pytest.raises(UsageError):
            send(conn)  # type: ignore[operator]
        assert conn.data_to_send() == []

    def test_continuation_after_close(self, conn: Connection) -> None:
        conn.send_text("a", fin=False)
        conn.send_close()
        with pytest.raises(UsageError):
            conn.send_continuation(b"b", fin=True)


# --- Section 7.1.7: failing the connection --------------------------------------------------------


class TestSection7_1_7Fail:
    def test_fail(self, side: Side, conn: Connection) -> None:
        conn.fail(1011, "internal error")
        assert conn.state is CLOSING
        assert conn.close_sent == Close(1011, "internal error")
        assert conn.close_rcvd_then_sent is False
        assert conn.failure is None  # Not the peer's fault.
        frames, eof = drain(conn)
        assert frames == [close_frame(1011, "internal error")]
        assert eof is (side is SERVER)

    def test_close_frame_sent_once(self, side: Side, conn: Connection) -> None:
        conn.fail(1011)
        conn.fail(1002)
        conn.receive_data(peer_frame(side, Opcode.CONT, b"bad"))
        frames, eof = drain(conn)
        assert frames == [close_frame(1011)]
        assert eof is (side is SERVER)
        assert conn.close_sent == Close(1011)

    def test_discards_input_afterwards(self, side: Side, conn: Connection) -> None:
        conn.fail(1008)
        conn.data_to_send()
        conn.receive_data(
            peer_frame(side, Opcode.TEXT, b"x")
            + peer_frame(side, Opcode.PING, b"p")
            + peer_frame(side, Opcode.CLOSE, close_payload(1000))
        )
        assert conn.events_received() == []
        assert conn.data_to_send() == []
        assert conn.close_rcvd is None

    def test_1006_sends_no_close_frame(self, side: Side, conn: Connection) -> None:
        conn.fail(1006)
        frames, eof = drain(conn)
        assert frames == []
        assert conn.close_sent is None
        assert eof is (side is SERVER)
        assert conn.state is CLOSING

    def test_long_reason_truncated(self, conn: Connection) -> None:
        conn.fail(1011, "é" * 100)
        (frame,) = sent_frames(conn)
        assert len(frame.payload) <= 125
        close = Close.parse(frame.payload)
        assert close.code == 1011
        assert close.reason == "é" * 61

    def test_fail_after_we_closed(self, side: Side, conn: Connection) -> None:
        conn.send_close(1000)
        conn.data_to_send()
        conn.fail(1011)
        frames, eof = drain(conn)
        assert frames == []
        assert conn.close_sent == Close(1000)
        assert eof is (side is SERVER)

    def test_fail_after_eof_stays_closed(self, conn: Connection) -> None:
        # OPEN -> CLOSING -> CLOSED only moves forward: the TCP connection is gone.
        conn.receive_eof()
        conn.fail(1011)
        assert conn.state is CLOSED
        assert conn.data_to_send() == []

    def test_peer_error_sets_failure(self, side: Side, conn: Connection) -> None:
        conn.receive_data(peer_frame(side, 0x3, b""))
        assert isinstance(conn.failure, ProtocolError)
        assert conn.failure.code == 1002
        assert "opcode" in str(conn.failure)
        assert_failed(conn, 1002, ProtocolError)

    @pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
    def test_reserved_bits(self, side: Side, conn: Connection, rsv: int) -> None:
        conn.receive_data(serialize_frame(Opcode.TEXT, b"x", mask=side is SERVER, rsv=rsv))
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    def test_wrong_masking_direction(self, side: Side, conn: Connection) -> None:
        # Section 5.1: the server fails on an unmasked frame, the client on a masked one.
        conn.receive_data(serialize_frame(Opcode.TEXT, b"x", mask=side is CLIENT))
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    def test_events_before_error_are_kept(self, side: Side, conn: Connection) -> None:
        conn.receive_data(
            peer_frame(side, Opcode.TEXT, b"first")
            + peer_frame(side, Opcode.PING, b"p")
            + peer_frame(side, 0xB, b"")
            + peer_frame(side, Opcode.TEXT, b"never")
        )
        assert conn.events_received() == [Message("first"), Ping(b"p")]
        frames, eof = drain(conn)
        assert [f.opcode for f in frames] == [Opcode.PONG, Opcode.CLOSE]
        assert frames[0].payload == b"p"
        assert Close.parse(frames[1].payload).code == 1002
        assert eof is (side is SERVER)
        assert conn.failure is not None

    def test_events_before_bad_utf8_are_kept(self, side: Side, conn: Connection) -> None:
        conn.receive_data(
            peer_frame(side, Opcode.BINARY, b"ok")
            + peer_frame(side, Opcode.TEXT, b"\xff")
            + peer_frame(side, Opcode.TEXT, b"never")
        )
        assert conn.events_received() == [Message(b"ok")]
        assert_failed(conn, 1007, InvalidPayloadData)


# --- Logging --------------------------------------------------------------------------------------


class TestLogging:
    def test_frames_logged_at_debug(self, side: Side, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="hub.protocol")
        conn = Connection(side)
        conn.receive_data(peer_frame(side, Opcode.TEXT, b"hello in"))
        conn.send_binary(b"hello out")
        messages = [r.getMessage() for r in caplog.records if r.name == "hub.protocol"]
        assert any(m.startswith("<") and "TEXT" in m and "hello in" in m for m in messages)
        assert any(m.startswith(">") and "BINARY" in m and "hello out" in m for m in messages)
        assert all(r.levelno == logging.DEBUG for r in caplog.records)

    def test_failure_logged_at_debug(self, side: Side, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="hub.protocol")
        conn = Connection(side)
        conn.receive_data(peer_frame(side, Opcode.CONT, b""))
        assert any("1002" in r.getMessage() for r in caplog.records)

    def test_custom_logger(self, side: Side, caplog: pytest.LogCaptureFixture) -> None:
        logger = logging.getLogger("tests.custom")
        caplog.set_level(logging.DEBUG, logger="tests.custom")
        conn = Connection(side, logger=logger)
        conn.send_text("x")
        assert [r.name for r in caplog.records] == ["tests.custom"]

    def test_long_payload_shortened(self, side: Side, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="hub.protocol")
        conn = Connection(side)
        conn.send_binary(b"a" * 1000)
        (message,) = [r.getMessage() for r in caplog.records]
        assert "1000 bytes" in message
        assert "a" * 100 not in message

    def test_nothing_logged_or_formatted_above_debug(
        self, side: Side, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        caplog.set_level(logging.INFO, logger="hub.protocol")
        calls: list[object] = []

        def spy(*args: object) -> str:
            calls.append(args)
            return "formatted"

        monkeypatch.setattr(connection_module, "describe_frame", spy)
        conn = Connection(side)
        conn.send_text("out")
        conn.receive_data(
            peer_frame(side, Opcode.TEXT, b"in")
            + peer_frame(side, Opcode.PING, b"p")
            + peer_frame(side, 0x3, b"")
        )
        assert conn.events_received() == [Message("in"), Ping(b"p")]
        assert conn.failure is not None
        assert calls == []
        assert [r for r in caplog.records if r.name == "hub.protocol"] == []


def test_describe_frame() -> None:
    describe = connection_module.describe_frame
    assert describe(Opcode.TEXT, b"hi", True) == "TEXT b'hi' [2 bytes]"
    assert describe(Opcode.CONT, b"x" * 30, False) == f"CONT {b'x' * 24!r}... [30 bytes] [fragment]"
    assert describe(0x3, b"", True) == "0x3 b'' [0 bytes]"
