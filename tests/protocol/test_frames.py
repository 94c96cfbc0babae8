"""hub.protocol.frames: opcodes, serialization (RFC 6455 5.2/5.3), close payloads (5.5.1, 7.4)."""

from __future__ import annotations

import struct

import pytest

from hub.exceptions import InvalidPayloadData, ProtocolError
from hub.protocol.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    MAX_CONTROL_PAYLOAD,
    Close,
    Opcode,
    is_valid_close_code,
    serialize_frame,
)
from hub.protocol.masking import apply_mask


def split_masked(frame: bytes, header_size: int) -> tuple[bytes, bytes, bytes]:
    """(header, masking key, unmasked payload) of a masked frame with the given header size."""
    header = frame[:header_size]
    key = frame[header_size : header_size + 4]
    return header, key, apply_mask(frame[header_size + 4 :], key)


# --- Section 5.2: base framing protocol -----------------------------------------------------------


class TestSection5_2Opcodes:
    def test_values(self) -> None:
        assert int(Opcode.CONT) == 0x0
        assert int(Opcode.TEXT) == 0x1
        assert int(Opcode.BINARY) == 0x2
        assert int(Opcode.CLOSE) == 0x8
        assert int(Opcode.PING) == 0x9
        assert int(Opcode.PONG) == 0xA

    def test_reserved_opcodes_are_not_defined(self) -> None:
        defined = {int(op) for op in Opcode}
        for reserved in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]:
            assert reserved not in defined

    def test_control_opcodes_have_high_bit(self) -> None:
        # Section 5.5: control frames are identified by opcodes where the MSB is 1.
        assert all(op & 0x8 for op in CONTROL_OPCODES)
        assert not any(op & 0x8 for op in DATA_OPCODES)
        assert set(Opcode) == CONTROL_OPCODES | DATA_OPCODES
        assert MAX_CONTROL_PAYLOAD == 125


class TestSection5_2SerializeUnmasked:
    @pytest.mark.parametrize(
        ("length", "header"),
        [
            (0, b"\x82\x00"),
            (1, b"\x82\x01"),
            (125, b"\x82\x7d"),
            (126, b"\x82\x7e" + struct.pack("!H", 126)),
            (65535, b"\x82\x7e" + struct.pack("!H", 65535)),
            (65536, b"\x82\x7f" + struct.pack("!Q", 65536)),
            (70000, b"\x82\x7f" + struct.pack("!Q", 70000)),
        ],
    )
    def test_length_encodings(self, length: int, header: bytes) -> None:
        # 7-bit for 0-125, 126 + 16-bit for 126-65535, 127 + 64-bit above: the minimal encoding.
        data = bytes(range(256)) * (length // 256 + 1)
        data = data[:length]
        assert serialize_frame(Opcode.BINARY, data, mask=False) == header + data

    def test_rfc_example_unmasked_text(self) -> None:
        # Section 5.7: a single-frame unmasked text message "Hello".
        assert serialize_frame(Opcode.TEXT, b"Hello", mask=False) == b"\x81\x05Hello"

    def test_rfc_example_fragments(self) -> None:
        # Section 5.7: a fragmented unmasked text message "Hel" + "lo".
        assert serialize_frame(Opcode.TEXT, b"Hel", fin=False, mask=False) == b"\x01\x03Hel"
        assert serialize_frame(Opcode.CONT, b"lo", mask=False) == b"\x80\x02lo"

    def test_rfc_example_ping(self) -> None:
        # Section 5.7: unmasked ping with body "Hello".
        assert serialize_frame(Opcode.PING, b"Hello", mask=False) == b"\x89\x05Hello"

    @pytest.mark.parametrize("opcode", list(Opcode))
    def test_opcode_and_fin(self, opcode: Opcode) -> None:
        assert serialize_frame(opcode, b"", mask=False)[0] == 0x80 | opcode
        assert serialize_frame(opcode, b"", fin=False, mask=False)[0] == opcode

    @pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
    def test_rsv_bits(self, rsv: int) -> None:
        assert serialize_frame(Opcode.TEXT, b"x", mask=False, rsv=rsv)[0] == 0x80 | rsv | 0x1


class TestSection5_3SerializeMasked:
    @pytest.mark.parametrize(
        ("length", "header_size", "length_field"),
        [
            (0, 2, 0),
            (125, 2, 125),
            (126, 4, 126),
            (65535, 4, 126),
            (65536, 10, 127),
        ],
    )
    def test_mask_bit_key_and_payload(
        self, length: int, header_size: int, length_field: int
    ) -> None:
        data = (b"0123456789abcdef" * (length // 16 + 1))[:length]
        frame = serialize_frame(Opcode.BINARY, data, mask=True)
        assert len(frame) == header_size + 4 + length
        header, _key, unmasked = split_masked(frame, header_size)
        assert header[0] == 0x82
        assert header[1] == 0x80 | length_field
        if length_field == 126:
            assert struct.unpack("!H", header[2:4]) == (length,)
        elif length_field == 127:
            assert struct.unpack("!Q", header[2:10]) == (length,)
        assert unmasked == data

    def test_payload_is_actually_masked(self) -> None:
        data = b"A" * 64
        frames = [serialize_frame(Opcode.BINARY, data, mask=True) for _ in range(8)]
        # With 8 random keys, at least one masks the payload into something else.
        assert any(frame[6:] != data for frame in frames)

    def test_fresh_key_per_frame(self) -> None:
        # Section 5.3: the masking key must be unpredictable, so a new one for each frame.
        keys = {serialize_frame(Opcode.TEXT, b"x", mask=True)[2:6] for _ in range(2000)}
        assert len(keys) > 1990

    def test_keys_across_buffer_refills(self) -> None:
        # The key source buffers 4 KiB of randomness (1024 keys); keys stay 4 bytes across refills.
        for _ in range(3000):
            frame = serialize_frame(Opcode.PING, b"abc", mask=True)
            assert len(frame) == 2 + 4 + 3
            assert apply_mask(frame[6:], frame[2:6]) == b"abc"


# --- Sections 5.5.1 and 7.4: close frame payloads -------------------------------------------------


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


class TestSection7_4CloseCodes:
    @pytest.mark.parametrize("code", VALID_CODES)
    def test_valid(self, code: int) -> None:
        assert is_valid_close_code(code)

    @pytest.mark.parametrize("code", INVALID_CODES)
    def test_invalid(self, code: int) -> None:
        assert not is_valid_close_code(code)


class TestSection5_5_1ClosePayload:
    def test_empty_payload_is_1005(self) -> None:
        assert Close.parse(b"") == Close(1005, "")

    def test_one_byte_payload(self) -> None:
        with pytest.raises(ProtocolError) as info:
            Close.parse(b"\x03")
        assert info.value.code == 1002

    @pytest.mark.parametrize("code", VALID_CODES)
    def test_valid_code(self, code: int) -> None:
        assert Close.parse(code.to_bytes(2, "big")) == Close(code, "")

    @pytest.mark.parametrize("code", INVALID_CODES)
    def test_invalid_code(self, code: int) -> None:
        with pytest.raises(ProtocolError) as info:
            Close.parse(code.to_bytes(2, "big") + b"bye")
        assert info.value.code == 1002
        assert not isinstance(info.value, InvalidPayloadData)

    def test_reason(self) -> None:
        assert Close.parse(b"\x03\xe8bye") == Close(1000, "bye")
        assert Close.parse(b"\x03\xe9" + "café ☕".encode()) == Close(1001, "café ☕")

    @pytest.mark.parametrize("reason", [b"\xff", b"caf\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
    def test_reason_not_utf8(self, reason: bytes) -> None:
        with pytest.raises(InvalidPayloadData) as info:
            Close.parse(b"\x03\xe8" + reason)
        assert info.value.code == 1007

    def test_serialize(self) -> None:
        assert Close(1000).serialize() == b"\x03\xe8"
        assert Close(1001, "bye").serialize() == b"\x03\xe9bye"
        assert Close(4000, "é").serialize() == b"\x0f\xa0\xc3\xa9"

    def test_serialize_1005_is_empty(self) -> None:
        # 1005 means "no status code"; it is sent as a close frame without payload.
        assert Close(1005).serialize() == b""

    @pytest.mark.parametrize("close", [Close(1000), Close(1011, "oops"), Close(3000, "ß" * 60)])
    def test_round_trip(self, close: Close) -> None:
        assert Close.parse(close.serialize()) == close

    def test_str(self) -> None:
        assert str(Close(1000)) == "1000"
        assert str(Close(1001, "going away")) == "1001 (going away)"
