"""hub.protocol.reader.FrameReader: RFC 6455 section 5 framing rules, on bytes only."""

from __future__ import annotations

import random
import struct

import pytest

from hub.exceptions import PayloadTooBig, ProtocolError
from hub.protocol.frames import Opcode, serialize_frame
from hub.protocol.reader import Frame, FrameReader

# A reader for each role: a server expects masked frames (section 5.1), a client unmasked ones.
ROLES = [pytest.param(True, id="server-reads-masked"), pytest.param(False, id="client-reads")]


def make(
    opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool, rsv: int = 0
) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, mask=masked, rsv=rsv)


def raw_header(first: int, length: int, *, masked: bool, length_bits: int | None = None) -> bytes:
    """A frame header with a chosen length encoding (7, 16 or 64 bits), plus a zero mask key."""
    mask_bit = 0x80 if masked else 0
    if length_bits is None:
        length_bits = 7 if length < 126 else 16 if length < 65536 else 64
    if length_bits == 7:
        header = bytes((first, mask_bit | length))
    elif length_bits == 16:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    return header + (b"\x00\x00\x00\x00" if masked else b"")


def reader(masked: bool, max_size: int | None = None, allowed_rsv: int = 0) -> FrameReader:
    return FrameReader(mask_expected=masked, max_size=max_size, allowed_rsv=allowed_rsv)


def feed_whole(data: bytes, masked: bool, max_size: int | None = None) -> list[Frame]:
    return reader(masked, max_size).feed(data)


def feed_bytewise(data: bytes, masked: bool, max_size: int | None = None) -> list[Frame]:
    r = reader(masked, max_size)
    frames: list[Frame] = []
    for i in range(len(data)):
        frames += r.feed(data[i : i + 1])
    assert r.error is None
    return frames


def feed_split(data: bytes, masked: bool, seed: int, max_size: int | None = None) -> list[Frame]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randrange(1, 12))))
    r = reader(masked, max_size)
    frames: list[Frame] = []
    start = 0
    for cut in [*cuts, len(data)]:
        frames += r.feed(data[start:cut])
        start = cut
    assert r.error is None
    return frames


def assert_fails(r: FrameReader, data: bytes, code: int = 1002) -> list[Frame]:
    frames = r.feed(data)
    assert r.error is not None
    assert isinstance(r.error, ProtocolError)
    assert r.error.code == code
    return frames


# --- Section 5.2: base framing protocol -----------------------------------------------------------


@pytest.mark.parametrize("masked", ROLES)
class TestSection5_2PayloadLength:
    @pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 65537])
    def test_lengths(self, masked: bool, length: int) -> None:
        data = random.Random(length).randbytes(length)
        frames = feed_whole(make(Opcode.BINARY, data, masked=masked), masked)
        assert frames == [Frame(Opcode.BINARY, data, True, 0)]

    @pytest.mark.parametrize(
        ("length", "bits"), [(125, 7), (126, 16), (65535, 16), (65536, 64), (70000, 64)]
    )
    def test_length_encodings(self, masked: bool, length: int, bits: int) -> None:
        data = b"z" * length
        encoded = raw_header(0x82, length, masked=masked, length_bits=bits) + data
        assert feed_whole(encoded, masked) == [Frame(Opcode.BINARY, data)]

    def test_64_bit_length_with_high_bit(self, masked: bool) -> None:
        # Section 5.2: "the most significant bit MUST be 0".
        r = reader(masked)
        frames = assert_fails(r, raw_header(0x82, 1 << 63, masked=masked, length_bits=64))
        assert frames == []

    def test_64_bit_length_with_high_bit_and_no_max_size(self, masked: bool) -> None:
        r = reader(masked, max_size=None)
        assert_fails(r, raw_header(0x82, (1 << 64) - 1, masked=masked, length_bits=64))

    def test_incomplete_frame_yields_nothing(self, masked: bool) -> None:
        frame = make(Opcode.TEXT, b"hello", masked=masked)
        r = reader(masked)
        assert r.feed(frame[:-1]) == []
        assert r.error is None
        assert r.feed(frame[-1:]) == [Frame(Opcode.TEXT, b"hello")]

    def test_empty_feed(self, masked: bool) -> None:
        r = reader(masked)
        assert r.feed(b"") == []
        assert r.error is None


# A stream mixing every length class, fragments and control frames.
def mixed_stream(masked: bool) -> tuple[bytes, list[Frame]]:
    rng = random.Random(7)
    items: list[Frame] = [
        Frame(Opcode.TEXT, "héllo".encode()),
        Frame(Opcode.BINARY, rng.randbytes(125)),
        Frame(Opcode.BINARY, rng.randbytes(126)),
        Frame(Opcode.PING, b"ping"),
        Frame(Opcode.BINARY, rng.randbytes(3000), fin=False),
        Frame(Opcode.PONG, b""),
        Frame(Opcode.CONT, rng.randbytes(65535), fin=False),
        Frame(Opcode.CONT, rng.randbytes(65536), fin=True),
        Frame(Opcode.TEXT, b""),
        Frame(Opcode.CLOSE, b"\x03\xe8bye"),
    ]
    data = b"".join(make(f.opcode, f.payload, fin=f.fin, masked=masked) for f in items)
    return data, items


@pytest.mark.parametrize("masked", ROLES)
class TestSection5_2IncrementalParsing:
    def test_whole(self, masked: bool) -> None:
        data, expected = mixed_stream(masked)
        assert feed_whole(data, masked) == expected

    def test_byte_by_byte(self, masked: bool) -> None:
        data, expected = mixed_stream(masked)
        assert feed_bytewise(data, masked) == expected

    @pytest.mark.parametrize("seed", range(20))
    def test_random_splits(self, masked: bool, seed: int) -> None:
        data, expected = mixed_stream(masked)
        assert feed_split(data, masked, seed) == expected

    @pytest.mark.parametrize("length", [125, 126, 65535, 65536])
    def test_split_inside_header_at_every_point(self, masked: bool, length: int) -> None:
        frame = make(Opcode.BINARY, b"q" * length, masked=masked)
        header_size = len(frame) - length
        for cut in range(1, header_size + 2):
            r = reader(masked)
            assert r.feed(frame[:cut]) == []
            assert r.feed(frame[cut:]) == [Frame(Opcode.BINARY, b"q" * length)]

    def test_many_small_frames_in_one_chunk(self, masked: bool) -> None:
        # More than the compaction threshold of consumed bytes, then a frame split across feeds.
        frames = [Frame(Opcode.BINARY, bytes([i % 256]) * 100) for i in range(1000)]
        data = b"".join(make(f.opcode, f.payload, masked=masked) for f in frames)
        tail = make(Opcode.TEXT, b"tail", masked=masked)
        r = reader(masked)
        assert r.feed(data + tail[:3]) == frames
        assert r.feed(tail[3:]) == [Frame(Opcode.TEXT, b"tail")]


@pytest.mark.parametrize("masked", ROLES)
class TestSection5_2ReservedBits:
    @pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
    def test_reserved_bits_without_extension(self, masked: bool, rsv: int) -> None:
        assert_fails(reader(masked), make(Opcode.TEXT, b"x", masked=masked, rsv=rsv))

    @pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
    def test_reserved_bits_detected_from_header(self, masked: bool, rsv: int) -> None:
        frame = make(Opcode.BINARY, b"x" * 1000, masked=masked, rsv=rsv)
        assert_fails(reader(masked), frame[:8])

    def test_allowed_rsv(self, masked: bool) -> None:
        r = reader(masked, allowed_rsv=0x40)
        frames = r.feed(make(Opcode.TEXT, b"x", masked=masked, rsv=0x40))
        assert frames == [Frame(Opcode.TEXT, b"x", True, 0x40)]
        assert_fails(r, make(Opcode.TEXT, b"x", masked=masked, rsv=0x20))


@pytest.mark.parametrize("masked", ROLES)
class TestSection5_2ReservedOpcodes:
    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_reserved_opcode(self, masked: bool, opcode: int) -> None:
        assert_fails(reader(masked), make(opcode, b"", masked=masked))

    @pytest.mark.parametrize("opcode", [3, 0xB])
    def test_reserved_opcode_detected_from_header(self, masked: bool, opcode: int) -> None:
        assert_fails(reader(masked), raw_header(0x80 | opcode, 100, masked=masked))


# --- Section 5.1 / 5.3: masking direction ---------------------------------------------------------


class TestSection5_3MaskingDirection:
    def test_server_rejects_unmasked_frame(self) -> None:
        assert_fails(reader(True), make(Opcode.TEXT, b"hi", masked=False))

    def test_client_rejects_masked_frame(self) -> None:
        assert_fails(reader(False), make(Opcode.TEXT, b"hi", masked=True))

    @pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.CLOSE, Opcode.CONT])
    def test_direction_applies_to_every_opcode(self, opcode: Opcode) -> None:
        assert_fails(reader(True), make(opcode, b"", masked=False))
        assert_fails(reader(False), make(opcode, b"", masked=True))

    def test_server_unmasks(self) -> None:
        key = b"\x37\xfa\x21\x3d"
        # Section 5.7: a single-frame masked text message "Hello".
        frame = b"\x81\x85" + key + b"\x7f\x9f\x4d\x51\x58"
        assert reader(True).feed(frame) == [Frame(Opcode.TEXT, b"Hello")]


# --- Section 5.4: fragmentation -------------------------------------------------------------------


@pytest.mark.parametrize("masked", ROLES)
class TestSection5_4Fragmentation:
    def test_fragments_are_returned_as_frames(self, masked: bool) -> None:
        data = (
            make(Opcode.TEXT, b"Hel", fin=False, masked=masked)
            + make(Opcode.CONT, b"l", fin=False, masked=masked)
            + make(Opcode.CONT, b"o", masked=masked)
        )
        r = reader(masked)
        assert r.feed(data) == [
            Frame(Opcode.TEXT, b"Hel", False),
            Frame(Opcode.CONT, b"l", False),
            Frame(Opcode.CONT, b"o", True),
        ]
        assert not r.in_fragmented_message

    def test_in_fragmented_message(self, masked: bool) -> None:
        r = reader(masked)
        assert not r.in_fragmented_message
        r.feed(make(Opcode.BINARY, b"a", fin=False, masked=masked))
        assert r.in_fragmented_message
        r.feed(make(Opcode.PING, b"", masked=masked))
        assert r.in_fragmented_message
        r.feed(make(Opcode.CONT, b"b", masked=masked))
        assert not r.in_fragmented_message

    def test_control_frames_between_fragments(self, masked: bool) -> None:
        data = (
            make(Opcode.BINARY, b"a", fin=False, masked=masked)
            + make(Opcode.PING, b"p", masked=masked)
            + make(Opcode.PONG, b"q", masked=masked)
            + make(Opcode.CONT, b"b", masked=masked)
        )
        r = reader(masked)
        assert [f.opcode for f in r.feed(data)] == [
            Opcode.BINARY,
            Opcode.PING,
            Opcode.PONG,
            Opcode.CONT,
        ]
        assert r.error is None

    def test_continuation_without_start(self, masked: bool) -> None:
        assert_fails(reader(masked), make(Opcode.CONT, b"x", masked=masked))

    def test_continuation_after_finished_message(self, masked: bool) -> None:
        r = reader(masked)
        frames = assert_fails(
            r,
            make(Opcode.TEXT, b"a", fin=False, masked=masked)
            + make(Opcode.CONT, b"b", masked=masked)
            + make(Opcode.CONT, b"c", masked=masked),
        )
        assert [f.payload for f in frames] == [b"a", b"b"]

    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
    def test_new_data_frame_inside_fragmented_message(self, masked: bool, opcode: Opcode) -> None:
        r = reader(masked)
        r.feed(make(Opcode.TEXT, b"a", fin=False, masked=masked))
        assert_fails(r, make(opcode, b"b", masked=masked))

    def test_new_data_frame_detected_from_header(self, masked: bool) -> None:
        r = reader(masked)
        r.feed(make(Opcode.BINARY, b"a", fin=False, masked=masked))
        assert_fails(r, raw_header(0x82, 1000, masked=masked))


# --- Section 5.5: control frames ------------------------------------------------------------------


@pytest.mark.parametrize("masked", ROLES)
class TestSection5_5ControlFrames:
    @pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
    def test_125_bytes_accepted(self, masked: bool, opcode: Opcode) -> None:
        payload = b"\x03\xe8" + b"r" * 123 if opcode == Opcode.CLOSE else b"p" * 125
        assert reader(masked).feed(make(opcode, payload, masked=masked)) == [Frame(opcode, payload)]

    @pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
    def test_longer_than_125_bytes(self, masked: bool, opcode: Opcode) -> None:
        assert_fails(reader(masked), make(opcode, b"p" * 126, masked=masked))

    @pytest.mark.parametrize("length", [126, 65535, 65536])
    def test_long_control_frame_detected_from_header(self, masked: bool, length: int) -> None:
        assert_fails(reader(masked), raw_header(0x89, length, masked=masked))

    @pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
    def test_fragmented_control_frame(self, masked: bool, opcode: Opcode) -> None:
        assert_fails(reader(masked), make(opcode, b"", fin=False, masked=masked))

    def test_control_frames_do_not_count_toward_max_size(self, masked: bool) -> None:
        r = reader(masked, max_size=10)
        data = (
            make(Opcode.TEXT, b"a" * 5, fin=False, masked=masked)
            + make(Opcode.PING, b"p" * 100, masked=masked)
            + make(Opcode.CONT, b"b" * 5, masked=masked)
        )
        assert len(r.feed(data)) == 3
        assert r.error is None


# --- Section 7.4.1 (1009): max_size ---------------------------------------------------------------


@pytest.mark.parametrize("masked", ROLES)
class TestMaxSize:
    @pytest.mark.parametrize("max_size", [0, 125, 126, 65535, 65536])
    def test_exactly_max_size_accepted(self, masked: bool, max_size: int) -> None:
        data = b"m" * max_size
        r = reader(masked, max_size=max_size)
        assert r.feed(make(Opcode.BINARY, data, masked=masked)) == [Frame(Opcode.BINARY, data)]
        assert r.error is None

    @pytest.mark.parametrize("max_size", [0, 125, 126, 65535])
    def test_single_frame_over(self, masked: bool, max_size: int) -> None:
        r = reader(masked, max_size=max_size)
        assert_fails(r, make(Opcode.BINARY, b"m" * (max_size + 1), masked=masked), code=1009)
        assert isinstance(r.error, PayloadTooBig)

    @pytest.mark.parametrize("length", [1001, 65536, 2**31, 2**62])
    def test_single_frame_over_detected_from_header(self, masked: bool, length: int) -> None:
        # Only the header arrives: the reader must not wait for (or buffer) the payload.
        r = reader(masked, max_size=1000)
        frames = assert_fails(r, raw_header(0x82, length, masked=masked), code=1009)
        assert frames == []

    def test_fragmented_message_over(self, masked: bool) -> None:
        r = reader(masked, max_size=10)
        frames = r.feed(
            make(Opcode.TEXT, b"a" * 4, fin=False, masked=masked)
            + make(Opcode.CONT, b"b" * 4, fin=False, masked=masked)
        )
        assert len(frames) == 2
        assert r.error is None
        assert_fails(r, raw_header(0x80, 3, masked=masked), code=1009)

    def test_fragmented_message_exactly_max_size(self, masked: bool) -> None:
        r = reader(masked, max_size=10)
        frames = r.feed(
            make(Opcode.BINARY, b"a" * 4, fin=False, masked=masked)
            + make(Opcode.CONT, b"b" * 4, fin=False, masked=masked)
            + make(Opcode.CONT, b"c" * 2, masked=masked)
        )
        assert len(frames) == 3
        assert r.error is None

    def test_size_resets_between_messages(self, masked: bool) -> None:
        r = reader(masked, max_size=10)
        for _ in range(5):
            frames = r.feed(
                make(Opcode.BINARY, b"a" * 6, fin=False, masked=masked)
                + make(Opcode.CONT, b"b" * 4, masked=masked)
            )
            assert len(frames) == 2
        assert r.error is None

    def test_none_is_unlimited(self, masked: bool) -> None:
        data = b"u" * (2**20 + 1)
        r = reader(masked, max_size=None)
        frames = r.feed(
            make(Opcode.BINARY, data, fin=False, masked=masked)
            + make(Opcode.CONT, data, masked=masked)
        )
        assert [len(f.payload) for f in frames] == [len(data), len(data)]
        assert r.error is None


# --- Errors: earlier frames survive, later input is ignored ---------------------------------------


@pytest.mark.parametrize("masked", ROLES)
class TestErrorHandling:
    def test_frames_before_error_are_returned(self, masked: bool) -> None:
        r = reader(masked)
        frames = assert_fails(
            r,
            make(Opcode.TEXT, b"one", masked=masked)
            + make(Opcode.PING, b"two", masked=masked)
            + make(5, b"bad", masked=masked)
            + make(Opcode.TEXT, b"after", masked=masked),
        )
        assert frames == [Frame(Opcode.TEXT, b"one"), Frame(Opcode.PING, b"two")]

    def test_input_ignored_after_error(self, masked: bool) -> None:
        r = reader(masked)
        assert_fails(r, make(Opcode.CONT, b"", masked=masked))
        error = r.error
        assert r.feed(make(Opcode.TEXT, b"ok", masked=masked)) == []
        assert r.error is error

    def test_error_code_is_1002_by_default(self, masked: bool) -> None:
        r = reader(masked)
        assert_fails(r, make(Opcode.PING, b"", fin=False, masked=masked))
        assert type(r.error) is ProtocolError
