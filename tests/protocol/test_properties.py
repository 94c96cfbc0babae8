"""Property-based tests of the sans-I/O parsers against hostile input (hypothesis).

For every byte string, cut into chunks at any points:

- the frame parser (:class:`FrameReader`, and :class:`Connection` as server and as client) gives
  the same frames / events / output as when the bytes arrive in one piece, or fails with a
  :class:`ProtocolError` whose close code is 1002, 1007 or 1009, and nothing else;
- the handshake parser (:class:`HeadParser` for requests and for responses, then
  :meth:`ServerHandshake.accept` / :meth:`ClientHandshake.check_response` on what it parsed) gives
  the same head as in one piece, or fails with a :class:`HandshakeError` carrying an HTTP status;
- memory stays bounded: after each chunk a reader holds at most one partial frame, whose header
  passed the size checks, and a head parser at most ``MAX_HEAD_SIZE`` bytes; under
  permessage-deflate no message inflates past ``max_size`` (decompression bombs get 1009).

Inputs come in three kinds: fully random bytes; well-formed streams built from frame and head
specifications (valid or breaking one rule at a time, so that deep states are reached), checked
against an independent model of RFC 6455; and those streams with one byte corrupted, a cut or
junk appended. Round trips check that what one side sends the other receives unchanged.

Hangs are caught by pytest-timeout; the number of examples comes from the profile chosen in
:mod:`tests.hypothesis_profiles`.
"""

from __future__ import annotations

import base64
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TypeVar

import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from hub.exceptions import HandshakeError, InvalidPayloadData, PayloadTooBig, ProtocolError
from hub.protocol.connection import CLIENT, CLOSING, OPEN, SERVER, Connection, Side, State
from hub.protocol.frames import Close
from hub.protocol.handshake import ClientHandshake, ServerHandshake
from hub.protocol.http11 import MAX_HEAD_SIZE, MAX_LINE_LENGTH, HeadParser, Request, Response
from hub.protocol.permessage_deflate import DeflateConfig, PerMessageDeflate
from hub.protocol.reader import Frame, FrameReader
from tests.hypothesis_profiles import budget

# The raw peer's wire helpers are RFC 6455 written out independently of hub, too.
from tests.protocol.rawpeer import BINARY, CLOSE, CONT, PING, PONG, TEXT, mask
from tests.protocol.rawpeer import accept_key as expected_accept

# --- the model: RFC 6455 written out again, independently of hub ------------------------------

KNOWN_OPCODES = (CONT, TEXT, BINARY, CLOSE, PING, PONG)
#: Longest payload of a control frame (section 5.5), also the longest header is 2 + 8 + 4 bytes.
CONTROL_MAX, HEADER_MAX = 125, 14
#: Close codes a peer may send (section 7.4.1 and the IANA registry; 3000-4999 for apps).
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
#: The close codes a protocol error may carry (sections 7.4.1 and 8.1).
ERROR_CODES = {1002, 1007, 1009}
#: The HTTP statuses a handshake may fail with: 4xx for a request, 502 for a bad response.
REQUEST_STATUSES = {400, 403, 405, 414, 426, 431}

MAX_SIZES = st.sampled_from([None, 0, 16, 125, 200, 1000, 2**20])
SIDES = st.sampled_from([SERVER, CLIENT])


def close_code_is_valid(code: int) -> bool:
    return code in VALID_CLOSE_CODES or 3000 <= code <= 4999


def utf8_ok(data: bytes, *, final: bool) -> bool:
    """Whether ``data`` is UTF-8, or (``final=False``) a prefix of some UTF-8 string."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return not final and exc.end == len(data) and exc.reason == "unexpected end of data"
    return True


@dataclass(frozen=True)
class Spec:
    """One frame to put on the wire, valid or not; encoded without hub's serializer."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = False
    key: bytes = b"\x00\x00\x00\x00"
    length_bits: int = 0  # 0: the shortest length encoding; 16 or 64: a longer one (allowed)

    def encode(self) -> bytes:
        first = (0x80 if self.fin else 0) | self.rsv | self.opcode
        size = len(self.payload)
        mask_bit = 0x80 if self.masked else 0
        bits = self.length_bits or (7 if size < 126 else 16 if size < 65536 else 64)
        if bits == 7:
            header = bytes((first, mask_bit | size))
        elif bits == 16:
            header = struct.pack("!BBH", first, mask_bit | 126, size)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, size)
        if self.masked:
            return header + self.key + mask(self.payload, self.key)
        return header + self.payload


def encode(specs: Sequence[Spec]) -> bytes:
    return b"".join(spec.encode() for spec in specs)


@dataclass
class ReaderModel:
    """What a correct reader yields for a sequence of whole frames."""

    frames: list[Frame] = field(default_factory=list)
    error_codes: set[int] = field(default_factory=set)  # the violations of the first bad frame


def model_reader(specs: Sequence[Spec], mask_expected: bool, max_size: int | None) -> ReaderModel:
    model = ReaderModel()
    fragmented: int | None = None
    size = 0
    for spec in specs:
        codes: set[int] = set()
        if spec.rsv:
            codes.add(1002)  # no extension negotiated (section 5.2)
        if spec.opcode not in KNOWN_OPCODES:
            codes.add(1002)
        if spec.masked != mask_expected:
            codes.add(1002)  # section 5.1
        if spec.opcode >= 0x8:
            if not spec.fin or len(spec.payload) > CONTROL_MAX:
                codes.add(1002)  # section 5.5
        elif spec.opcode == CONT and fragmented is None:
            codes.add(1002)  # section 5.4
        elif spec.opcode != CONT and fragmented is not None:
            codes.add(1002)
        else:
            new_size = len(spec.payload) + (size if spec.opcode == CONT else 0)
            if max_size is not None and new_size > max_size:
                codes.add(1009)  # section 7.4.1
        if codes:
            model.error_codes = codes
            return model
        if spec.opcode < 0x8:
            size = len(spec.payload) + (size if spec.opcode == CONT else 0)
            fragmented = None if spec.fin else (fragmented or spec.opcode)
        model.frames.append(Frame(spec.opcode, spec.payload, spec.fin, spec.rsv))
    return model


#: An event as (kind, value): NamedTuples compare as tuples, so Ping(b"x") == Pong(b"x").
Ev = tuple[str, object]
#: A frame sent by a connection: (opcode, payload), with the close code for a close frame.
Out = tuple[int, object]


@dataclass
class ConnectionModel:
    events: list[Ev] = field(default_factory=list)
    output: list[Out] = field(default_factory=list)
    failure: set[int] | None = None  # the close codes the connection may fail with
    state: State = OPEN


def model_connection(specs: Sequence[Spec], side: Side, max_size: int | None) -> ConnectionModel:
    """Events and output of a correct connection (section 5-8) for whole, well-formed frames."""
    reader = model_reader(specs, side is SERVER, max_size)
    model = ConnectionModel()

    def fail(codes: set[int]) -> ConnectionModel:
        model.failure, model.state = codes, CLOSING
        model.output.append((CLOSE, codes))  # the close frame carries one of the codes
        return model

    text: bytes | None = None  # the text message being received, if any
    binary: bytes | None = None
    for frame in reader.frames:
        if frame.opcode < 0x8:
            if frame.opcode == TEXT:
                text = frame.payload
            elif frame.opcode == BINARY:
                binary = frame.payload
            elif text is not None:
                text += frame.payload
            else:
                assert binary is not None
                binary += frame.payload
            if text is not None:
                # Invalid UTF-8 fails the connection as soon as it arrives (section 8.1).
                if not utf8_ok(text, final=frame.fin):
                    return fail({1007})
                if frame.fin:
                    model.events.append(("Message", text.decode()))
                    text = None
            elif binary is not None and frame.fin:
                model.events.append(("Message", binary))
                binary = None
        if frame.opcode == PING:
            model.events.append(("Ping", frame.payload))
            model.output.append((PONG, frame.payload))
        elif frame.opcode == PONG:
            model.events.append(("Pong", frame.payload))
        elif frame.opcode == CLOSE:
            payload = frame.payload
            if len(payload) == 1:
                return fail({1002})
            code = int.from_bytes(payload[:2], "big") if payload else 1005
            if payload and not close_code_is_valid(code):
                return fail({1002})
            if not utf8_ok(payload[2:], final=True):
                return fail({1007})
            model.events.append(("Close", (code, payload[2:].decode())))
            model.output.append((CLOSE, code))  # echo the code (section 5.5.1)
            model.state = CLOSING
            return model  # anything after a close frame is ignored
    if reader.error_codes:
        return fail(reader.error_codes)
    return model


# --- running the code under test --------------------------------------------------------------


def chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (repeated cuts give empty chunks, which must be harmless)."""
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    return [data[start:end] for start, end in pairwise(bounds)]


def reader_bound(max_size: int | None, compressed: bool = False) -> int | None:
    """Most bytes a reader may keep between two chunks: one partial frame whose header passed.

    A data frame's header is refused when its length exceeds ``max_size``, a control frame's
    when it exceeds 125 (whatever ``max_size``), so the partial frame is shorter than the larger
    of the two plus the 14-byte longest header. While the next chunk is parsed the buffer holds
    at most this plus that chunk. Under permessage-deflate a compressed frame may exceed
    ``max_size`` by deflate's overhead (``max_size / 1024 + 1024``): its inflated size is bounded.
    """
    if max_size is None:
        return None
    if compressed:
        max_size += (max_size >> 10) + 1024
    return max(max_size, CONTROL_MAX) + HEADER_MAX


@dataclass
class ReaderRun:
    frames: list[Frame]
    error: ProtocolError | None


def run_reader(chunks: Sequence[bytes], mask_expected: bool, max_size: int | None) -> ReaderRun:
    reader = FrameReader(mask_expected=mask_expected, max_size=max_size)
    bound = reader_bound(max_size)
    frames: list[Frame] = []
    for chunk in chunks:
        frames += reader.feed(chunk)
        if bound is not None:
            assert len(reader._buffer) <= bound
    if reader.error is not None:
        assert type(reader.error) in (ProtocolError, PayloadTooBig)
        assert reader.error.code in ERROR_CODES
    return ReaderRun(frames, reader.error)


def error_key(error: Exception | None) -> tuple[type[Exception], int] | None:
    if error is None:
        return None
    code = getattr(error, "code", getattr(error, "status", 0))
    return type(error), code


@dataclass
class ConnectionRun:
    events: list[Ev]
    output: list[Out]
    eof: bool
    failure: ProtocolError | None
    state: State


def event_key(event: object) -> Ev:
    if isinstance(event, Close):
        return "Close", (event.code, event.reason)
    assert isinstance(event, tuple)
    return type(event).__name__, event[0]


def parse_output(side: Side, output: Sequence[bytes]) -> tuple[list[Out], bool]:
    """The frames a connection wrote, read back as its peer would; and whether it sent EOF."""
    eof = b"" in output
    if eof:
        assert output.index(b"") == len(output) - 1, "wrote after closing TCP"
    peer = FrameReader(mask_expected=side is CLIENT, max_size=None)
    frames = peer.feed(b"".join(output))
    assert peer.error is None and not peer._buffer
    sent: list[Out] = []
    for frame in frames:
        assert frame.fin and frame.rsv == 0
        if frame.opcode == CLOSE:
            sent.append((CLOSE, Close.parse(frame.payload).code))
        else:
            sent.append((frame.opcode, frame.payload))
    return sent, eof


def run_connection(
    side: Side,
    chunks: Sequence[bytes],
    max_size: int | None,
    deflate: Callable[[], PerMessageDeflate] | None = None,
) -> ConnectionRun:
    codec = None if deflate is None else deflate()
    connection = Connection(side, max_size=max_size, deflate=codec)
    bound = reader_bound(max_size, compressed=codec is not None)
    events: list[Ev] = []
    output: list[bytes] = []
    for chunk in chunks:
        connection.receive_data(chunk)
        events += [event_key(event) for event in connection.events_received()]
        output += connection.data_to_send()
        if bound is not None:
            assert len(connection._reader._buffer) <= bound
            assert max_size is not None
            assert sum(len(part) for part in connection._parts) <= max_size
    if max_size is not None:  # inflated too: a decompression bomb stops at max_size
        for kind, value in events:
            assert kind != "Message" or len(value) <= max_size  # type: ignore[arg-type]
    failure = connection.failure
    if failure is not None:
        assert failure.code in ERROR_CODES
        assert isinstance(failure, InvalidPayloadData) == (failure.code == 1007)
        assert connection.close_sent is not None
        assert connection.close_sent.code == failure.code
    sent, eof = parse_output(side, output)
    assert eof == (side is SERVER and connection.state is CLOSING)  # section 7.1.1
    return ConnectionRun(events, sent, eof, failure, connection.state)


def check_connection_against_model(run: ConnectionRun, model: ConnectionModel) -> None:
    assert run.events == model.events
    assert run.state is model.state
    if model.failure is None:
        assert run.failure is None
        assert run.output == model.output
    else:
        assert run.failure is not None and run.failure.code in model.failure
        assert run.output[:-1] == model.output[:-1]
        assert run.output[-1] == (CLOSE, run.failure.code)


T = TypeVar("T")

# --- strategies -------------------------------------------------------------------------------

KEYS = st.binary(min_size=4, max_size=4)
#: Payloads of every length class: short, around 125/126, around the masking strategy's switch.
PAYLOADS = st.one_of(
    st.binary(max_size=24),
    st.binary(max_size=24),
    st.builds(
        lambda unit, n: (unit * n)[:n], st.binary(min_size=1, max_size=4), st.integers(0, 1100)
    ),
)
TEXTS = st.text(max_size=24).map(str.encode)
#: UTF-8 with one flaw: a lone continuation, a truncated sequence, a surrogate, an overlong form.
BAD_UTF8 = st.builds(
    lambda before, bad, after: before + bad + after,
    TEXTS,
    st.sampled_from(
        [b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xff"]
    ),
    TEXTS,
)
CLOSE_PAYLOADS = st.one_of(
    st.builds(
        lambda code, reason: code.to_bytes(2, "big") + reason,
        st.sampled_from(VALID_CLOSE_CODES) | st.integers(3000, 4999),
        TEXTS,
    ),
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.builds(
        lambda code, reason: code.to_bytes(2, "big") + reason,
        st.sampled_from(INVALID_CLOSE_CODES + VALID_CLOSE_CODES),
        TEXTS | BAD_UTF8,
    ),
)


def usually(
    usual: st.SearchStrategy[T], unusual: st.SearchStrategy[T], percent: int = 10
) -> st.SearchStrategy[T]:
    """``unusual`` in about ``percent`` % of the draws, ``usual`` otherwise."""
    return st.integers(0, 99).flatmap(lambda n: unusual if n < percent else usual)


OPCODES = usually(st.sampled_from(KNOWN_OPCODES), st.integers(0, 15), 20)


@st.composite
def raw_frames(draw: st.DrawFn, mask_expected: bool) -> Spec:
    """Any single frame: mostly valid in isolation, sometimes breaking one header rule."""
    opcode = draw(OPCODES)
    if opcode == CLOSE:
        payload = draw(CLOSE_PAYLOADS)
    elif opcode in (TEXT, CONT):
        payload = draw(TEXTS | BAD_UTF8 | PAYLOADS)
    elif opcode >= 0x8:
        payload = draw(usually(st.binary(max_size=CONTROL_MAX), PAYLOADS))
    else:
        payload = draw(PAYLOADS)
    return Spec(
        opcode,
        payload,
        fin=draw(st.booleans() if opcode < 0x8 else usually(st.just(True), st.just(False))),
        rsv=draw(usually(st.just(0), st.sampled_from([0x10, 0x20, 0x40, 0x70]))),
        masked=draw(usually(st.just(mask_expected), st.just(not mask_expected), 5)),
        key=draw(KEYS),
        length_bits=draw(usually(st.just(0), st.sampled_from([16, 64]), 20)),
    )


@st.composite
def close_frames(draw: st.DrawFn, mask_expected: bool) -> Spec:
    return Spec(CLOSE, draw(CLOSE_PAYLOADS), masked=mask_expected, key=draw(KEYS))


@st.composite
def messages(draw: st.DrawFn, mask_expected: bool) -> list[Spec]:
    """A data message, maybe fragmented (cut anywhere, even inside a UTF-8 sequence), with
    control frames between its fragments (section 5.4); some text is not UTF-8."""
    is_text = draw(st.booleans())
    data = draw(usually(TEXTS, BAD_UTF8, 15) if is_text else PAYLOADS)
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=4))
    parts = chunked(data, cuts)
    specs: list[Spec] = []
    for i, part in enumerate(parts):
        opcode = CONT if i else TEXT if is_text else BINARY
        last = i == len(parts) - 1
        specs.append(Spec(opcode, part, fin=last, masked=mask_expected, key=draw(KEYS)))
        if not last and draw(st.booleans()):
            control = draw(st.sampled_from([PING, PONG]))
            specs.append(Spec(control, draw(st.binary(max_size=8)), masked=mask_expected))
    return specs


@st.composite
def frame_streams(draw: st.DrawFn, mask_expected: bool) -> list[Spec]:
    """Frames that reach deep states: whole messages, stray frames, a close frame at the end."""
    items = draw(
        st.lists(
            usually(
                messages(mask_expected), raw_frames(mask_expected).map(lambda spec: [spec]), 35
            ),
            max_size=6,
        )
    )
    if draw(st.booleans()):
        items.append([draw(close_frames(mask_expected))])
    return [spec for item in items for spec in item]


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one byte corrupted, or cut short, or with junk after it."""
    how = draw(st.sampled_from(["flip", "flip", "cut", "append"]))
    if how == "append" or not data:
        return data + draw(st.binary(min_size=1, max_size=16))
    position = draw(st.integers(0, len(data) - 1))
    if how == "cut":
        return data[:position]
    flip = draw(st.integers(1, 255))
    return data[:position] + bytes((data[position] ^ flip,)) + data[position + 1 :]


@st.composite
def cuts_for(draw: st.DrawFn, data: bytes) -> list[int]:
    """Where to cut ``data``: anywhere, one byte at a time, or line by line (for HTTP heads)."""
    how = draw(st.integers(0, 9))
    if how == 0 and len(data) <= 4096:
        return list(range(1, len(data)))
    if how == 1:
        return [i for i in range(len(data)) if data.startswith(b"\r\n", i)]
    return draw(st.lists(st.integers(0, len(data)), max_size=12))


#: Random bytes, some of them after a plausible first byte so that more reach the length field.
RANDOM_FRAME_BYTES = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda first, rest: bytes((first,)) + rest,
        st.sampled_from([0x81, 0x82, 0x01, 0x00, 0x80, 0x88, 0x89, 0x8A]),
        st.binary(max_size=200),
    ),
)


# --- frame parser properties ------------------------------------------------------------------


def check_reader_split_invariance(
    data: bytes, cuts: Sequence[int], mask_expected: bool, max_size: int | None
) -> ReaderRun:
    whole = run_reader([data], mask_expected, max_size)
    split = run_reader(chunked(data, cuts), mask_expected, max_size)
    assert split.frames == whole.frames
    assert error_key(split.error) == error_key(whole.error)
    event(f"reader: {whole.error.code if whole.error else 'ok'}")
    return whole


@budget(2)
@given(st.data(), RANDOM_FRAME_BYTES, st.booleans(), MAX_SIZES)
def test_reader_random_bytes(
    data: st.DataObject, stream: bytes, mask_expected: bool, max_size: int | None
) -> None:
    check_reader_split_invariance(stream, data.draw(cuts_for(stream)), mask_expected, max_size)


@budget(2)
@given(st.data(), st.booleans(), MAX_SIZES)
def test_reader_structured_streams_match_the_model(
    data: st.DataObject, mask_expected: bool, max_size: int | None
) -> None:
    specs = data.draw(frame_streams(mask_expected))
    stream = encode(specs)
    whole = check_reader_split_invariance(
        stream, data.draw(cuts_for(stream)), mask_expected, max_size
    )
    model = model_reader(specs, mask_expected, max_size)
    assert whole.frames == model.frames
    if model.error_codes:
        assert whole.error is not None and whole.error.code in model.error_codes
    else:
        assert whole.error is None


@budget(2)
@given(st.data(), st.booleans(), MAX_SIZES)
def test_reader_corrupted_streams(
    data: st.DataObject, mask_expected: bool, max_size: int | None
) -> None:
    stream = data.draw(mutated(encode(data.draw(frame_streams(mask_expected)))))
    check_reader_split_invariance(stream, data.draw(cuts_for(stream)), mask_expected, max_size)


def check_connection_split_invariance(
    side: Side,
    data: bytes,
    cuts: Sequence[int],
    max_size: int | None,
    deflate: Callable[[], PerMessageDeflate] | None = None,
) -> ConnectionRun:
    whole = run_connection(side, [data], max_size, deflate)
    split = run_connection(side, chunked(data, cuts), max_size, deflate)
    assert split.events == whole.events
    assert split.output == whole.output
    assert split.eof == whole.eof
    assert split.state is whole.state
    assert error_key(split.failure) == error_key(whole.failure)
    event(f"connection: {whole.failure.code if whole.failure else whole.state.name}")
    return whole


@budget(2)
@given(st.data(), RANDOM_FRAME_BYTES, SIDES, MAX_SIZES)
def test_connection_random_bytes(
    data: st.DataObject, stream: bytes, side: Side, max_size: int | None
) -> None:
    check_connection_split_invariance(side, stream, data.draw(cuts_for(stream)), max_size)


@budget(3)
@given(st.data(), SIDES, MAX_SIZES)
def test_connection_structured_streams_match_the_model(
    data: st.DataObject, side: Side, max_size: int | None
) -> None:
    specs = data.draw(frame_streams(side is SERVER))
    stream = encode(specs)
    whole = check_connection_split_invariance(side, stream, data.draw(cuts_for(stream)), max_size)
    check_connection_against_model(whole, model_connection(specs, side, max_size))


@budget(2)
@given(st.data(), SIDES, MAX_SIZES)
def test_connection_corrupted_streams(
    data: st.DataObject, side: Side, max_size: int | None
) -> None:
    stream = data.draw(mutated(encode(data.draw(frame_streams(side is SERVER)))))
    check_connection_split_invariance(side, stream, data.draw(cuts_for(stream)), max_size)


# --- round trips between two connections ------------------------------------------------------

#: What the application sends: ("text", str, cuts), ("binary", bytes, cuts), ("ping", bytes).
Op = tuple[str, object, list[int]]

OPS: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=40), st.lists(st.integers(0, 200), max_size=3)),
    st.tuples(st.just("binary"), PAYLOADS, st.lists(st.integers(0, 1200), max_size=3)),
    st.tuples(st.just("ping"), st.binary(max_size=CONTROL_MAX), st.just([])),
    st.tuples(st.just("pong"), st.binary(max_size=CONTROL_MAX), st.just([])),
)


def send(connection: Connection, op: Op) -> Ev:
    """Send ``op``, fragmented at its cuts; return the event the peer should see."""
    kind, value, cuts = op
    if kind == "ping":
        assert isinstance(value, bytes)
        connection.send_ping(value)
        return "Ping", value
    if kind == "pong":
        assert isinstance(value, bytes)
        connection.send_pong(value)
        return "Pong", value
    if isinstance(value, str):
        # The first fragment is a str; the rest are bytes cut anywhere, inside a character too.
        encoded = value.encode()
        first_chars = min(cuts, default=len(value)) % (len(value) + 1)
        first = value[:first_chars]
        rest = chunked(encoded[len(first.encode()) :], [c % (len(encoded) + 1) for c in cuts[1:]])
        connection.send_text(first, fin=not rest)
    else:
        assert isinstance(value, bytes)
        parts = chunked(value, cuts)
        first_bytes, rest = parts[0], parts[1:]
        connection.send_binary(first_bytes, fin=not rest)
    for i, part in enumerate(rest):
        connection.send_continuation(part, fin=i == len(rest) - 1)
    return "Message", value


def deliver(sender: Connection, receiver: Connection, cuts: Sequence[int]) -> list[Ev]:
    wire = b"".join(sender.data_to_send())
    for chunk in chunked(wire, cuts):
        receiver.receive_data(chunk)
    return [event_key(event) for event in receiver.events_received()]


@budget(2)
@given(
    st.data(),
    SIDES,
    st.lists(OPS, max_size=8),
    st.sampled_from(VALID_CLOSE_CODES),
    st.text(max_size=20),
)
def test_round_trip(
    data: st.DataObject, sender_side: Side, ops: list[Op], code: int, reason: str
) -> None:
    deflate = data.draw(st.none() | st.tuples(st.booleans(), st.booleans(), st.integers(0, 64)))
    sender_codec = receiver_codec = None
    if deflate is not None:  # permessage-deflate, each side's context kept or not
        sender_takeover, receiver_takeover, min_size = deflate
        sender_codec = codec(sender_takeover, receiver_takeover, min_size=min_size)()
        receiver_codec = codec(receiver_takeover, sender_takeover, min_size=min_size)()
    sender = Connection(sender_side, max_size=None, deflate=sender_codec)
    receiver = Connection(
        CLIENT if sender_side is SERVER else SERVER, max_size=None, deflate=receiver_codec
    )
    expected = [send(sender, op) for op in ops]
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=10))
    assert deliver(sender, receiver, cuts) == expected
    assert receiver.failure is None and receiver.state is OPEN
    # The receiver answered each ping with a pong carrying the same payload (section 5.5.3).
    pongs = [("Pong", value) for kind, value in expected if kind == "Ping"]
    assert deliver(receiver, sender, cuts) == pongs
    # Closing handshake (section 7): the close code and reason arrive, the code comes back.
    sender.send_close(code, reason)
    assert deliver(sender, receiver, cuts) == [("Close", (code, reason))]
    assert deliver(receiver, sender, cuts) == [("Close", (code, ""))]
    assert (sender.state, receiver.state) == (CLOSING, CLOSING)
    assert sender.failure is None and receiver.failure is None


# --- permessage-deflate (RFC 7692) -------------------------------------------------------------


def codec(
    local_takeover: bool, remote_takeover: bool, remote_bits: int = 15, min_size: int = 0
) -> Callable[[], PerMessageDeflate]:
    """A factory of fresh codecs (a codec keeps state across messages)."""
    return lambda: PerMessageDeflate(
        local_no_context_takeover=not local_takeover,
        remote_no_context_takeover=not remote_takeover,
        local_max_window_bits=15,
        remote_max_window_bits=remote_bits,
        config=DeflateConfig(min_size=min_size),
    )


def deflate_message(data: bytes, *, final_block: bool = False) -> bytes:
    """One message compressed as RFC 7692 section 7.2.1 says, with a compressor of its own."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    if final_block:  # a BFINAL block, then nothing: allowed (section 7.2.3.4)
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)
    compressed = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert compressed.endswith(b"\x00\x00\xff\xff")
    return compressed[:-4]


@st.composite
def compressed_messages(draw: st.DrawFn, mask_expected: bool) -> list[Spec]:
    """A compressed message (RSV1 on its first frame), fragmented or not: valid, a bomb (a
    small frame that inflates past max_size), a BFINAL block, or bytes that are not deflate."""
    is_text = draw(st.booleans())
    data = draw(usually(TEXTS, BAD_UTF8, 15) if is_text else PAYLOADS)
    kind = draw(st.sampled_from(["valid", "valid", "valid", "bomb", "final", "garbage"]))
    if kind == "bomb":
        data = b"\x00" * draw(st.sampled_from([2000, 70_000, 2**20 + 1]))
    wire = (
        draw(st.binary(max_size=40))
        if kind == "garbage"
        else deflate_message(data, final_block=kind == "final")
    )
    parts = chunked(wire, draw(st.lists(st.integers(0, len(wire)), max_size=3)))
    return [
        Spec(
            CONT if i else TEXT if is_text else BINARY,
            part,
            fin=i == len(parts) - 1,
            rsv=0 if i else 0x40,
            masked=mask_expected,
            key=draw(KEYS),
        )
        for i, part in enumerate(parts)
    ]


@st.composite
def deflate_streams(draw: st.DrawFn, mask_expected: bool) -> list[Spec]:
    items = draw(
        st.lists(
            st.one_of(
                compressed_messages(mask_expected),
                compressed_messages(mask_expected),
                messages(mask_expected),
                raw_frames(mask_expected).map(lambda spec: [spec]),
            ),
            max_size=5,
        )
    )
    return [spec for item in items for spec in item]


@budget(2)
@given(st.data(), SIDES, MAX_SIZES, st.booleans(), st.sampled_from([15, 15, 9]), st.booleans())
def test_connection_deflate_streams(
    data: st.DataObject,
    side: Side,
    max_size: int | None,
    takeover: bool,
    bits: int,
    corrupt: bool,
) -> None:
    """Compressed input: split-invariant, refused only with 1002/1007/1009, and bounded: no
    message (once inflated) over max_size, no buffer over its bound."""
    stream = encode(data.draw(deflate_streams(side is SERVER)))
    if corrupt:
        stream = data.draw(mutated(stream))
    cuts = data.draw(cuts_for(stream))
    check_connection_split_invariance(side, stream, cuts, max_size, codec(True, takeover, bits))


@budget(0.5)
@given(SIDES, st.sampled_from([0, 125, 1000, 2**16]), st.booleans())
def test_decompression_bomb_is_refused_with_1009(
    side: Side, max_size: int, fragmented: bool
) -> None:
    """1 MiB of zeros in a ~1 KiB frame: refused with 1009 once inflating passes max_size."""
    wire = deflate_message(b"\x00" * 2**20)
    parts = chunked(wire, [len(wire) // 2] if fragmented else [])
    specs = [
        Spec(
            CONT if i else BINARY,
            part,
            fin=i == len(parts) - 1,
            rsv=0 if i else 0x40,
            masked=side is SERVER,
        )
        for i, part in enumerate(parts)
    ]
    run = run_connection(side, [encode(specs)], max_size, codec(True, True))
    assert run.events == []
    assert run.failure is not None and run.failure.code == 1009


# --- the opening handshake --------------------------------------------------------------------

Head = Request | Response


@dataclass
class HeadRun:
    head: Head | None
    error: HandshakeError | None
    rest: bytes  # the bytes after the head: what the parser kept, then the chunks after it


def head_key(head: Head | None) -> object:
    if isinstance(head, Request):
        return ("request", head.method, head.path, head.headers.raw_items())
    if isinstance(head, Response):  # the body is only what arrived with the head: not compared
        return ("response", head.status, head.reason, head.headers.raw_items())
    return None


def run_head(chunks: Sequence[bytes], is_request: bool) -> HeadRun:
    parser = HeadParser(is_request=is_request)
    for i, chunk in enumerate(chunks):
        try:
            head = parser.feed(chunk)
        except HandshakeError as exc:
            assert exc.status in (REQUEST_STATUSES if is_request else {502})
            return HeadRun(None, exc, b"")
        if head is not None:
            assert isinstance(head, Request if is_request else Response)
            assert not parser._buffer
            return HeadRun(head, None, parser.rest + b"".join(chunks[i + 1 :]))
        assert len(parser._buffer) <= MAX_HEAD_SIZE
    return HeadRun(None, None, b"")


def check_head_split_invariance(data: bytes, cuts: Sequence[int], is_request: bool) -> HeadRun:
    """Same head (or a refusal in both cases) whatever the cuts.

    The status of a refusal may depend on the cuts: a head with two faults is refused for the
    first one the parser sees, and a long line is seen before the head is complete.
    """
    whole = run_head([data], is_request)
    split = run_head(chunked(data, cuts), is_request)
    assert head_key(split.head) == head_key(whole.head)
    assert (split.error is None) == (whole.error is None)
    assert split.rest == whole.rest
    event(f"head: {whole.error.status if whole.error else 'ok' if whole.head else 'incomplete'}")
    return whole


def tokens(values: Sequence[str]) -> list[str]:
    return [token.strip().lower() for value in values for token in value.split(",")]


def check_accepted(
    request: Request, response: Response, chosen: str | None, server: ServerHandshake
) -> None:
    """What RFC 6455 section 4.2 requires of a request that was accepted, and of the answer."""
    headers = request.headers
    assert request.method == "GET" and request.path.startswith("/")
    assert len(headers.get_all("Host")) == 1
    assert "upgrade" in tokens(headers.get_all("Connection"))
    assert "websocket" in tokens(headers.get_all("Upgrade"))
    [key] = headers.get_all("Sec-WebSocket-Key")
    assert len(base64.b64decode(key, validate=True)) == 16
    assert headers.get_all("Sec-WebSocket-Version") == ["13"]
    if server.origins is not None:  # section 10.2
        origins = headers.get_all("Origin")
        assert len(origins) <= 1
        assert (origins[0] if origins else None) in server.origins
    offered = [t.strip() for t in ",".join(headers.get_all("Sec-WebSocket-Protocol")).split(",")]
    assert chosen is None or (chosen in offered and chosen in server.subprotocols)
    assert response.status == 101
    assert response.headers.get_all("Sec-WebSocket-Accept") == [expected_accept(key)]
    assert response.headers.get_all("Sec-WebSocket-Protocol") == ([chosen] if chosen else [])
    # The answer, as sent and parsed back, satisfies our own client.
    client = ClientHandshake(headers["Host"], subprotocols=offered)
    client.key = key
    parsed = HeadParser(is_request=False).feed(response.serialize())
    assert isinstance(parsed, Response)
    assert client.check_response(parsed) == chosen


SUBPROTOCOLS = ["chat", "superchat", "v2.hub.example"]
ORIGINS = ["https://app.example", "http://localhost:8000"]
SERVERS = st.builds(
    ServerHandshake,
    origins=st.sampled_from([None, ORIGINS, [*ORIGINS, None], []]),
    subprotocols=st.lists(st.sampled_from(SUBPROTOCOLS), unique=True, max_size=3),
)
B64_KEYS = st.binary(min_size=16, max_size=16).map(lambda raw: base64.b64encode(raw).decode())
#: Header values that break something: empty, wrong, control characters, obs-text, long.
BAD_VALUES = st.one_of(
    st.sampled_from(
        ["", "13, 13", "8", "websocket2", "close", "dGhlIHNhbXBsZQ==", "!!!!", "é", " x "]
    ),
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=20),
    st.builds(lambda n: "v" * n, st.integers(MAX_LINE_LENGTH - 40, MAX_LINE_LENGTH + 2)),
)
JUNK_NAMES = st.sampled_from(
    [
        "X-Junk",
        "host",
        "SEC-WEBSOCKET-KEY",
        "Sec-WebSocket-Extensions",
        "Cookie",
        "Bad Name",
        "",
        "x\x00",
    ]
)


@dataclass
class HeadSpec:
    start: str
    headers: list[tuple[str, str]]
    separator: str = ": "
    trailer: bytes = b""  # what follows the head on the wire: the first frames, or a body

    def encode(self) -> bytes:
        lines = "".join(f"{name}{self.separator}{value}\r\n" for name, value in self.headers)
        return f"{self.start}\r\n{lines}\r\n".encode("latin-1", errors="replace") + self.trailer


@st.composite
def break_headers(draw: st.DrawFn, spec: HeadSpec, names: Sequence[str]) -> HeadSpec:
    """Drop, repeat or spoil some headers; add junk ones; change the separator."""
    headers = list(spec.headers)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["drop", "repeat", "value", "junk", "separator", "fold"]))
        if how == "drop" and headers:
            del headers[draw(st.integers(0, len(headers) - 1))]
        elif how == "repeat" and headers:
            headers.append(headers[draw(st.integers(0, len(headers) - 1))])
        elif how == "value":
            name = draw(st.sampled_from(names))
            headers = [(n, v) for n, v in headers if n != name] + [(name, draw(BAD_VALUES))]
        elif how == "junk":
            headers.append((draw(JUNK_NAMES), draw(BAD_VALUES)))
        elif how == "separator":
            spec.separator = draw(st.sampled_from([":", " : ", ":\t", ": \t "]))
        elif how == "fold" and headers:
            headers.append((" folded", "continuation"))  # obsolete line folding
    spec.headers = headers
    return spec


@st.composite
def request_heads(draw: st.DrawFn, *, valid: bool) -> HeadSpec:
    """A handshake request; with ``valid=False`` its line or headers break the rules."""
    offered = draw(st.lists(st.sampled_from([*SUBPROTOCOLS, "other"]), unique=True, max_size=3))
    headers = [
        ("Host", draw(st.sampled_from(["example.com", "127.0.0.1:8765", "[::1]"]))),
        ("Upgrade", draw(st.sampled_from(["websocket", "WebSocket", "h2c, websocket"]))),
        ("Connection", draw(st.sampled_from(["Upgrade", "keep-alive, Upgrade", "upgrade"]))),
        ("Sec-WebSocket-Key", draw(B64_KEYS)),
        ("Sec-WebSocket-Version", "13"),
    ]
    origin = draw(st.sampled_from([None, *ORIGINS, "https://evil.example"]))
    if origin is not None:
        headers.append(("Origin", origin))
    if offered:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(offered)))
    headers.append(("User-Agent", "hypothesis"))
    headers = draw(st.permutations(headers))
    if draw(st.booleans()):
        headers = [(name.lower(), value) for name, value in headers]
    target = draw(st.sampled_from(["/", "/chat", "/a/b?c=d&e=%20f"]))
    spec = HeadSpec(f"GET {target} HTTP/1.1", headers, trailer=draw(st.binary(max_size=8)))
    if valid:
        return spec
    if draw(st.booleans()):
        spec.start = draw(
            st.sampled_from(
                [
                    "POST / HTTP/1.1",
                    "GET / HTTP/1.0",
                    "GET / HTTP/2.0",
                    "GET * HTTP/1.1",
                    "GET http://example.com/ HTTP/1.1",
                    "GET / HTTP/1.1 ",
                    "GET  / HTTP/1.1",
                    "get / HTTP/1.1",
                    "GET / http/1.1",
                    "GET /" + "a" * MAX_LINE_LENGTH + " HTTP/1.1",
                    "",
                ]
            )
        )
    if draw(st.booleans()):
        spec.headers *= draw(st.sampled_from([1, 2, 30]))  # 150 headers are too many
    names = [
        "Host",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Origin",
        "Sec-WebSocket-Protocol",
    ]
    return draw(break_headers(spec, names))


@st.composite
def response_heads(draw: st.DrawFn, key: str, offered: Sequence[str], *, valid: bool) -> HeadSpec:
    """A handshake response to a client that sent ``key`` and offered ``offered``."""
    headers = [
        ("Upgrade", draw(st.sampled_from(["websocket", "WebSocket"]))),
        ("Connection", draw(st.sampled_from(["Upgrade", "upgrade"]))),
        ("Sec-WebSocket-Accept", expected_accept(key)),
    ]
    select = draw(st.booleans())
    if offered and select:
        headers.append(("Sec-WebSocket-Protocol", draw(st.sampled_from(offered))))
    headers.append(("Server", "hypothesis"))
    headers = draw(st.permutations(headers))
    spec = HeadSpec(
        "HTTP/1.1 101 Switching Protocols", headers, trailer=draw(st.binary(max_size=8))
    )
    if valid:
        return spec
    if draw(st.booleans()):
        spec.start = draw(
            st.sampled_from(
                [
                    "HTTP/1.1 101",
                    "HTTP/1.0 101 Switching Protocols",
                    "HTTP/1.1 200 OK",
                    "HTTP/1.1 403 Forbidden",
                    "HTTP/1.1 426 Upgrade Required",
                    "HTTP/2 101 x",
                    "HTTP/1.1 099 Low",
                    "HTTP/1.1 1010 Long",
                    "http/1.1 101 x",
                    "",
                    "HTTP/1.1 101 " + "x" * (MAX_LINE_LENGTH + 1),
                ]
            )
        )
    names = [
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Accept",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
    ]
    return draw(break_headers(spec, names))


REQUEST_PREFIXES = st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n"])
RESPONSE_PREFIXES = st.sampled_from([b"", b"HTTP/1.1 101 Switching Protocols\r\n"])


@budget(2)
@given(st.data(), st.booleans())
def test_head_parser_random_bytes(data: st.DataObject, is_request: bool) -> None:
    prefix = data.draw(REQUEST_PREFIXES if is_request else RESPONSE_PREFIXES)
    stream = prefix + data.draw(st.binary(max_size=300))
    if data.draw(st.booleans()):
        stream += b"\r\n\r\n"
    check_head_split_invariance(stream, data.draw(cuts_for(stream)), is_request)


@budget(3)
@given(st.data(), SERVERS, st.sampled_from(["valid", "invalid", "corrupted"]))
def test_requests_then_accept(data: st.DataObject, server: ServerHandshake, kind: str) -> None:
    spec = data.draw(request_heads(valid=kind == "valid"))
    stream = spec.encode()
    if kind == "corrupted":
        stream = data.draw(mutated(stream))
    run = check_head_split_invariance(stream, data.draw(cuts_for(stream)), is_request=True)
    if kind == "valid":
        assert isinstance(run.head, Request) and run.rest == spec.trailer
    if not isinstance(run.head, Request):
        return
    request = run.head
    try:
        accepted = server.accept(request)  # (response, subprotocol, ...)
        response, chosen = accepted[0], accepted[1]
    except HandshakeError as exc:
        note(f"refused: {exc!r}")
        event(f"accept: {exc.status}")
        assert exc.status in {400, 403, 426}
        origin = request.headers.get("Origin")
        # A valid request is refused only for its Origin (section 4.2.2 item 4 / 10.2).
        assert kind != "valid" or (server.origins is not None and origin not in server.origins)
        return
    check_accepted(request, response, chosen, server)
    if kind == "valid":
        offered = tokens(request.headers.get_all("Sec-WebSocket-Protocol"))
        assert chosen == next((p for p in server.subprotocols if p in offered), None)


@budget(3)
@given(
    st.data(),
    B64_KEYS,
    st.lists(st.sampled_from(SUBPROTOCOLS), unique=True, max_size=3),
    st.sampled_from(["valid", "invalid", "corrupted"]),
)
def test_responses_then_check(data: st.DataObject, key: str, offered: list[str], kind: str) -> None:
    spec = data.draw(response_heads(key, offered, valid=kind == "valid"))
    stream = spec.encode()
    if kind == "corrupted":
        stream = data.draw(mutated(stream))
    run = check_head_split_invariance(stream, data.draw(cuts_for(stream)), is_request=False)
    if kind == "valid":
        assert isinstance(run.head, Response) and run.rest == spec.trailer
    if not isinstance(run.head, Response):
        return
    client = ClientHandshake("example.com", subprotocols=offered)
    client.key = key
    try:
        chosen = client.check_response(run.head)
    except HandshakeError as exc:
        note(f"refused: {exc!r}")
        assert kind != "valid"
        # InvalidStatus carries the server's status; the rest 502, or 400 (NegotiationError).
        if run.head.status != 101:
            assert exc.status == run.head.status
        else:
            assert exc.status in {400, 502}
        return
    # What section 4.1 requires of a response that the client accepts.
    headers = run.head.headers
    assert run.head.status == 101
    assert "websocket" in tokens(headers.get_all("Upgrade"))
    assert "upgrade" in tokens(headers.get_all("Connection"))
    assert headers.get_all("Sec-WebSocket-Accept") == [expected_accept(key)]
    # We offered no extension: the server must select none (section 4.1 item 5).
    assert not any(tokens(headers.get_all("Sec-WebSocket-Extensions")))
    assert headers.get_all("Sec-WebSocket-Protocol") == ([chosen] if chosen else [])
    assert chosen is None or chosen in offered
    if kind == "valid":
        assert chosen == headers.get("Sec-WebSocket-Protocol")


HOSTS = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?(:[1-9][0-9]{0,4})?", fullmatch=True)
RESOURCES = st.from_regex(
    r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,30}(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,20})?",
    fullmatch=True,
)
TOKENS = st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}", fullmatch=True)


@budget(1)
@given(
    st.data(),
    HOSTS,
    RESOURCES,
    st.lists(TOKENS, unique=True, max_size=4),
    st.lists(TOKENS, unique=True, max_size=4),
    B64_KEYS,
)
def test_handshake_round_trip(
    data: st.DataObject,
    host: str,
    resource: str,
    offered: list[str],
    supported: list[str],
    key: str,
) -> None:
    client = ClientHandshake(host, resource, subprotocols=offered)
    client.key = key
    wire = client.request().serialize()
    run = check_head_split_invariance(wire, data.draw(cuts_for(wire)), is_request=True)
    assert isinstance(run.head, Request) and run.rest == b""
    assert (run.head.path, run.head.headers) == (resource, client.request().headers)
    server = ServerHandshake(subprotocols=supported)
    accepted = server.accept(run.head)
    response, chosen = accepted[0], accepted[1]
    assert chosen == next((p for p in supported if p in offered), None)
    wire = response.serialize()
    back = check_head_split_invariance(wire, data.draw(cuts_for(wire)), is_request=False)
    assert isinstance(back.head, Response)
    assert client.check_response(back.head) == chosen


# --- bugs found by the properties above, kept as minimal examples -----------------------------


def test_status_line_limit_does_not_depend_on_how_the_bytes_arrive() -> None:
    """A response whose status line exceeds MAX_LINE_LENGTH is refused when it arrives in two
    pieces (the check on a partial head), but accepted when it arrives in one piece: the check
    on a complete head skips the status line (HeadParser._parse_response)."""
    head = b"HTTP/1.1 101 " + b"x" * MAX_LINE_LENGTH + b"\r\n\r\n"
    whole = run_head([head], is_request=False)
    split = run_head([head[: MAX_LINE_LENGTH + 1], head[MAX_LINE_LENGTH + 1 :]], is_request=False)
    assert split.error is not None and split.error.status == 502
    assert whole.error is not None, "accepted in one piece, refused in two"


def feed_bytewise_seconds(parser_input: bytes) -> float:
    parser = HeadParser(is_request=True)
    start = time.process_time()  # CPU time: other processes on the machine do not count
    for i in range(len(parser_input)):
        assert parser.feed(parser_input[i : i + 1]) is None
    return time.process_time() - start


@pytest.mark.slow
def test_head_parser_work_is_linear_in_the_input() -> None:
    """A client that trickles its head one byte per segment must not cost quadratic CPU.

    HeadParser.feed searches the whole buffer for the blank line, and counts and searches CRLFs
    in it, on every call: feeding n bytes one at a time costs O(n^2), about 3 s of CPU for a
    head of MAX_HEAD_SIZE. Measured as a ratio, so that the machine's speed cancels out:
    4 times the bytes must cost well under 16 times the time (linear: ~4, quadratic: ~16).
    """
    line = b"X-Padding: " + b"v" * 1000 + b"\r\n"
    head = b"GET / HTTP/1.1\r\n" + line * 40  # 40 KiB, no blank line yet
    small, large = head[: len(head) // 4], head
    small_time = min(feed_bytewise_seconds(small) for _ in range(3))
    large_time = feed_bytewise_seconds(large)
    assert large_time / small_time < 8, f"{small_time:.3f} s for 1/4, {large_time:.3f} s for all"
