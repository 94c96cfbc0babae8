"""The sans-I/O WebSocket connection: RFC 6455 after the opening handshake.

Theory of operation
-------------------
A :class:`Connection` is a state machine with no I/O. The I/O layer feeds it what the socket
received (:meth:`Connection.receive_data`, :meth:`Connection.receive_eof`) and what the
application wants to send (:meth:`Connection.send_text`, :meth:`Connection.send_close`, ...).
After each call it drains two outputs:

- :meth:`Connection.events_received`: complete messages (:class:`Message`, already UTF-8-decoded
  for text) and control frames (:class:`Ping`, :class:`Pong`, :class:`~hub.protocol.frames.Close`);
- :meth:`Connection.data_to_send`: byte strings to write, in order; an empty ``b""`` means "close
  the TCP connection now" (section 7.1.1: the server closes TCP first).

States (section 4 ends in OPEN; section 7 defines the rest)::

    OPEN ──send_close()/close frame received/fail()──▶ CLOSING ──receive_eof()──▶ CLOSED

Errors from the peer never escape as exceptions: the connection is *failed* (section 7.1.7) with
the close code the error carries, the error is kept in :attr:`Connection.failure`, and input is
discarded from then on. The I/O layer raises ``failure`` to the application, chained, when it
reports the closed connection.
"""

from __future__ import annotations

import codecs
import enum
import logging
from typing import NamedTuple

from hub.exceptions import InvalidPayloadData, ProtocolError, UsageError
from hub.protocol.frames import MAX_CONTROL_PAYLOAD, Close, Opcode, is_valid_close_code
from hub.protocol.frames import serialize_frame as _serialize
from hub.protocol.permessage_deflate import PerMessageDeflate
from hub.protocol.reader import RSV1, Frame, FrameReader

#: The protocol layer logs handler errors at ERROR, failed handshakes at INFO, frames at DEBUG.
protocol_logger = logging.getLogger("hub.protocol")

__all__ = [
    "CLIENT",
    "CLOSED",
    "CLOSING",
    "OPEN",
    "SERVER",
    "Connection",
    "Event",
    "Message",
    "Ping",
    "Pong",
    "PreparedMessage",
    "Side",
    "State",
]


class Side(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    CONNECTING = 0  # only reported by I/O layers: a Connection starts after the handshake
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


SERVER, CLIENT = Side.SERVER, Side.CLIENT
OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED


class Message(NamedTuple):
    """A complete data message: ``str`` for a text message, ``bytes`` for a binary one."""

    data: str | bytes


class Ping(NamedTuple):
    """A ping was received; the connection already queued the pong (section 5.5.2)."""

    data: bytes


class Pong(NamedTuple):
    """A pong was received (section 5.5.3)."""

    data: bytes


Event = Message | Ping | Pong | Close

_new_utf8_decoder = codecs.getincrementaldecoder("utf-8")

#: Longest close reason that fits a control frame: 125 bytes minus the 2-byte code.
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2

_OPCODE_NAMES = {int(op): op.name for op in Opcode}


def describe_frame(opcode: int, payload: bytes | str, fin: bool) -> str:
    """A short description of a frame for DEBUG logs: opcode, start of payload, size."""
    name = _OPCODE_NAMES.get(opcode, hex(opcode))
    shown = payload[:24]
    more = "..." if len(payload) > 24 else ""
    flag = "" if fin else " [fragment]"
    return f"{name} {shown!r}{more} [{len(payload)} bytes]{flag}"


class Connection:
    """A WebSocket connection after the handshake; see the module docstring for how to drive it.

    ``max_size`` bounds one message (1009 beyond it), after decompression; ``None`` means no
    bound. ``deflate`` is the permessage-deflate codec the handshake negotiated, if any.
    """

    def __init__(
        self,
        side: Side,
        *,
        max_size: int | None = 2**20,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        deflate: PerMessageDeflate | None = None,
    ) -> None:
        self.side = side
        self.state = OPEN
        self.logger = logger or protocol_logger
        # Checked once: formatting every frame for a disabled DEBUG log would cost more than it.
        self.debug = self.logger.isEnabledFor(logging.DEBUG)
        self._mask = side is CLIENT
        self.max_size = max_size
        self.deflate = deflate
        self._reader = FrameReader(
            mask_expected=side is SERVER,
            max_size=max_size,
            allowed_rsv=0 if deflate is None else RSV1,
        )
        self._events: list[Event] = []
        self._output: list[bytes] = []
        self._discarding = False
        #: Close frames received and sent, and which came first; None until they happen.
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.close_rcvd_then_sent: bool | None = None
        #: The peer's protocol violation that made us fail the connection, if any.
        self.failure: ProtocolError | None = None
        self.eof_sent = False
        # Incoming fragmented message (section 5.4): parts so far, and the decoder if it is text.
        self._parts: list[str] | list[bytes] = []
        self._decoder: codecs.IncrementalDecoder | None = None
        # Whether the message being received is compressed (RSV1 on its first frame).
        self._inflating = False
        # Outgoing fragmented message: True between its first and its last frame, and whether
        # its frames are compressed.
        self._sending_fragments = False
        self._deflating = False

    # --- input ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; then read :meth:`events_received`."""
        if self._discarding:
            return
        for frame in self._reader.feed(data):
            try:
                self._receive_frame(frame)
            except ProtocolError as exc:
                self._fail_with(exc)
            if self._discarding:
                return
        if self._reader.error is not None:
            self._fail_with(self._reader.error)

    def receive_eof(self) -> None:
        """The peer closed the TCP connection (or it was lost); the connection is now CLOSED."""
        self.state = CLOSED
        self._discarding = True

    def events_received(self) -> list[Event]:
        """Return and forget the events produced since the last call."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Return and forget the bytes to write; ``b""`` means close the TCP connection."""
        output, self._output = self._output, []
        return output

    def _receive_frame(self, frame: Frame) -> None:
        opcode, payload, fin = frame.opcode, frame.payload, frame.fin
        inflated = False
        if opcode < 0x8 and self.deflate is not None:
            if opcode != Opcode.CONT:
                self._inflating = bool(frame.rsv & RSV1)
            if self._inflating:
                payload = self.deflate.decompress(payload, final=fin, max_size=self.max_size)
                inflated = True
        if self.debug:
            tag = " [compressed]" if inflated else ""
            self.logger.debug("< %s%s", describe_frame(opcode, payload, fin), tag)
        if opcode == Opcode.TEXT:
            if fin:
                try:
                    text = payload.decode()
                except UnicodeDecodeError as exc:
                    raise InvalidPayloadData("invalid UTF-8 in text message") from exc
                self._events.append(Message(text))
            else:
                self._decoder = _new_utf8_decoder()
                self._parts = [self._decode_fragment(payload, final=False)]
        elif opcode == Opcode.BINARY:
            if fin:
                self._events.append(Message(payload))
            else:
                self._decoder = None
                self._parts = [payload]
        elif opcode == Opcode.CONT:
            self._receive_continuation(payload, fin)
        elif opcode == Opcode.PING:
            self._events.append(Ping(payload))
            # Section 5.5.2: answer with a pong carrying the same payload "unless it already
            # received a Close frame" (frames after a received close are discarded anyway).
            if self.close_rcvd is None:
                self._send_frame(Opcode.PONG, payload)
        elif opcode == Opcode.PONG:
            self._events.append(Pong(payload))
        else:
            self._receive_close(Close.parse(payload))

    def _decode_fragment(self, payload: bytes, *, final: bool) -> str:
        # The incremental decoder raises at the first invalid sequence it sees, so an invalid
        # fragment fails the connection before the rest of the message arrives (section 8.1).
        assert self._decoder is not None
        try:
            return self._decoder.decode(payload, final)
        except UnicodeDecodeError as exc:
            raise InvalidPayloadData("invalid UTF-8 in text message") from exc

    def _receive_continuation(self, payload: bytes, fin: bool) -> None:
        if self._decoder is not None:
            text_parts: list[str] = self._parts  # type: ignore[assignment]
            text_parts.append(self._decode_fragment(payload, final=fin))
            if fin:
                self._events.append(Message("".join(text_parts)))
        else:
            binary_parts: list[bytes] = self._parts  # type: ignore[assignment]
            binary_parts.append(payload)
            if fin:
                self._events.append(Message(b"".join(binary_parts)))
        if fin:
            self._parts = []
            self._decoder = None

    def _receive_close(self, close: Close) -> None:
        self.close_rcvd = close
        if self.state is OPEN:
            # Section 5.5.1: answer a close frame with a close frame, echoing the status code.
            self._send_close_frame(Close(close.code))
            self.close_rcvd_then_sent = True
        self.state = CLOSING
        if self.side is SERVER:
            self._send_eof()
        # Section 5.5.1: the peer sends nothing after its close frame; ignore anything that does.
        self._discarding = True
        self._events.append(close)

    # --- output -----------------------------------------------------------------------------------

    def send_text(self, data: str, *, fin: bool = True) -> None:
        """Queue a text message (or its first fragment when ``fin`` is False)."""
        self._send_data(Opcode.TEXT, data.encode(), fin)

    def send_binary(self, data: bytes | bytearray | memoryview, *, fin: bool = True) -> None:
        """Queue a binary message (or its first fragment when ``fin`` is False)."""
        self._send_data(Opcode.BINARY, bytes(data), fin)

    def send_continuation(self, data: bytes, *, fin: bool) -> None:
        """Queue the next fragment of the message started with ``fin=False`` (section 5.4)."""
        self._send_data(Opcode.CONT, data, fin)

    def send_prepared(self, message: PreparedMessage) -> None:
        """Queue a whole message serialized once for many connections (server side only)."""
        self._output.append(self.prepared_frame(message))

    def prepared_frame(self, message: PreparedMessage) -> bytes:
        """The frame that :meth:`send_prepared` would queue, returned instead of queued.

        For a caller that writes the bytes itself, in order: it must have taken
        :meth:`data_to_send` first, since this frame goes after everything queued before it.
        """
        if self.state is not OPEN or self._sending_fragments:
            self._check_can_send_data(new_message=True)  # raises the error that applies
        if self._mask:
            raise UsageError("prepared messages are for servers: client frames are masked")
        if self.debug:
            self.logger.debug(
                "> %s [prepared]", describe_frame(message.opcode, message.payload, True)
            )
        return message.frame_for(self.deflate)

    def send_ping(self, data: bytes) -> None:
        """Queue a ping; a pong with the same payload should come back (section 5.5.2)."""
        self._check_control(data)
        self._send_frame(Opcode.PING, data)

    def send_pong(self, data: bytes) -> None:
        """Queue an unsolicited pong, e.g. as a unidirectional heartbeat (section 5.5.3)."""
        self._check_control(data)
        self._send_frame(Opcode.PONG, data)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (section 7.1.2); wait for the peer's close frame next."""
        if self.state is not OPEN:
            raise UsageError(f"cannot close: connection is {self.state.name}")
        if code == 1005 and reason:
            raise UsageError("a close frame without a code (1005) cannot carry a reason")
        if code != 1005 and not is_valid_close_code(code):
            raise UsageError(f"invalid close code {code}")
        close = Close(code, reason)
        if len(close.serialize()) > MAX_CONTROL_PAYLOAD:
            raise UsageError(f"close reason longer than {MAX_CLOSE_REASON} bytes")
        self._send_close_frame(close)
        self.close_rcvd_then_sent = False
        self.state = CLOSING

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (section 7.1.7): send a close frame if possible, then stop reading.

        A server also closes the TCP connection at once; a client waits for the server to do it.
        """
        if self.state is CLOSED:
            return
        if self.state is OPEN and code != 1006:
            encoded = reason.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")
            self._send_close_frame(Close(code, encoded))
            self.close_rcvd_then_sent = False
        self.state = CLOSING
        if self.side is SERVER:
            self._send_eof()
        self._discarding = True

    def _fail_with(self, error: ProtocolError) -> None:
        self.failure = error
        self.logger.debug("! failing connection with %d: %s", error.code, error)
        self.fail(error.code, str(error))

    def _check_can_send_data(self, *, new_message: bool) -> None:
        if self.state is not OPEN:
            raise UsageError(f"cannot send: connection is {self.state.name}")
        if new_message and self._sending_fragments:
            raise UsageError("cannot start a message while a fragmented message is being sent")
        if not new_message and not self._sending_fragments:
            raise UsageError("no fragmented message is being sent")

    def _check_control(self, data: bytes) -> None:
        if self.state is not OPEN:
            raise UsageError(f"cannot send: connection is {self.state.name}")
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise UsageError("control frame payload longer than 125 bytes")

    def _send_close_frame(self, close: Close) -> None:
        self.close_sent = close
        self._send_frame(Opcode.CLOSE, close.serialize())

    def _send_data(self, opcode: int, payload: bytes, fin: bool) -> None:
        self._check_can_send_data(new_message=opcode != Opcode.CONT)
        deflate = self.deflate
        if opcode != Opcode.CONT:
            self._deflating = deflate is not None and deflate.should_compress(len(payload))
        self._sending_fragments = not fin
        if not self._deflating:
            self._send_frame(opcode, payload, fin)
            return
        assert deflate is not None
        if self.debug:
            self.logger.debug("> %s [compressed]", describe_frame(opcode, payload, fin))
        # RFC 7692 section 6.1: RSV1 on the first frame of the message only.
        rsv = 0 if opcode == Opcode.CONT else RSV1
        compressed = deflate.compress(payload, final=fin)
        self._output.append(_serialize(opcode, compressed, fin=fin, mask=self._mask, rsv=rsv))

    def _send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        if self.debug:
            self.logger.debug("> %s", describe_frame(opcode, payload, fin))
        self._output.append(_serialize(opcode, payload, fin=fin, mask=self._mask))

    def _send_eof(self) -> None:
        if not self.eof_sent:
            self.eof_sent = True
            self._output.append(b"")


class PreparedMessage:
    """A data message serialized once and sent, byte for byte, to many server connections.

    A hub's fan-out sends one publication to thousands of subscribers: preparing it turns the
    per-subscriber work (UTF-8 encoding, framing and, with permessage-deflate, compression)
    into a dictionary lookup. Frames are cached per compression key (see
    ``PerMessageDeflate.shareable_key``); a connection whose compressor keeps its context gets its
    own compressed frame, since those bytes depend on what it sent before.
    """

    __slots__ = ("_frames", "opcode", "payload")

    def __len__(self) -> int:
        return len(self.payload)

    def __init__(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.opcode, self.payload = Opcode.TEXT, data.encode()
        else:
            self.opcode, self.payload = Opcode.BINARY, bytes(data)
        self._frames: dict[object, bytes] = {}

    def frame_for(self, deflate: PerMessageDeflate | None) -> bytes:
        """The frame for a connection with this codec: built once per compression key."""
        key = None
        if deflate is not None and deflate.should_compress(len(self.payload)):
            key = deflate.shareable_key
            if key is None:
                return self._build(deflate)  # context takeover: only this connection's compressor
        else:
            deflate = None
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = self._build(deflate)
        return frame

    def _build(self, deflate: PerMessageDeflate | None) -> bytes:
        if deflate is None:
            return _serialize(self.opcode, self.payload, mask=False)
        compressed = deflate.compress(self.payload, final=True)
        return _serialize(self.opcode, compressed, mask=False, rsv=RSV1)
