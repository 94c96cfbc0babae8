"""Incremental frame parser (RFC 6455 section 5): bytes in, frames out, in any split.

Every rule that can be checked from the frame header is checked as soon as the header is
complete, before waiting for the payload, so a hostile peer cannot make us buffer a 2 GiB frame
that we would reject anyway.
"""

from __future__ import annotations

from typing import NamedTuple

from hub.exceptions import PayloadTooBig, ProtocolError
from hub.protocol.frames import MAX_CONTROL_PAYLOAD, Opcode
from hub.protocol.masking import apply_mask

__all__ = ["Frame", "FrameReader"]

_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)
#: The RSV1 bit: "compressed message" under permessage-deflate (RFC 7692 section 6).
RSV1 = 0x40


class Frame(NamedTuple):
    """One frame with its payload already unmasked; ``rsv`` holds the RSV1-3 bits (0x70 mask)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0


class FrameReader:
    """Turns received bytes into :class:`Frame` objects, enforcing section 5's framing rules.

    Call :meth:`feed` with each chunk of bytes; it returns the frames completed so far. After a
    violation it returns the frames that preceded it, sets :attr:`error` and ignores further input:
    the caller fails the connection with ``error.code``.
    """

    def __init__(self, *, mask_expected: bool, max_size: int | None, allowed_rsv: int = 0) -> None:
        self.mask_expected = mask_expected
        self.max_size = max_size
        self.allowed_rsv = allowed_rsv
        self.error: ProtocolError | None = None
        self._buffer = bytearray()
        # Opcode of the data message being fragmented (section 5.4), None between messages.
        self._fragmented_opcode: int | None = None
        self._message_size = 0
        self._compressed = False  # whether the fragmented message has RSV1 (RFC 7692)
        # First bytes of the fast path: a whole text or binary message (FIN set), with RSV1
        # too when permessage-deflate allows it (RFC 7692 section 6.1: a compressed message).
        self._whole_message_firsts = frozenset(
            (0x81, 0x82, 0xC1, 0xC2) if allowed_rsv & RSV1 else (0x81, 0x82)
        )

    @property
    def in_fragmented_message(self) -> bool:
        return self._fragmented_opcode is not None

    def feed(self, data: bytes) -> list[Frame]:
        if self.error is not None:
            return []
        buffer = self._buffer
        # Parse straight from the received bytes unless a partial frame is waiting for them.
        if buffer:
            buffer += data
            source: bytes | bytearray = buffer
        else:
            source = data
        frames: list[Frame] = []
        try:
            consumed = self._parse(source, frames)
        except ProtocolError as exc:
            self.error = exc
            self._buffer = bytearray()
            return frames
        if source is buffer:
            del buffer[:consumed]  # amortized O(1) at the front of a bytearray
        elif consumed < len(data):
            buffer += data[consumed:]
        return frames

    def _parse(self, data: bytes | bytearray, frames: list[Frame]) -> int:
        """Append every complete frame in ``data`` to ``frames``; return the bytes consumed."""
        position = 0
        available = len(data)
        mask_expected = self.mask_expected
        max_size = self.max_size
        whole_message_firsts = self._whole_message_firsts
        while available - position >= 2:
            first, second = data[position], data[position + 1]
            length = second & 0x7F
            header_size = 2
            if length == 126:
                header_size = 4
            elif length == 127:
                header_size = 10
            masked = second >= 0x80
            if masked:
                header_size += 4
            if available - position < header_size:
                break
            if length == 126:
                length = int.from_bytes(data[position + 2 : position + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[position + 2 : position + 10], "big")
                if length >> 63:  # Section 5.2: the most significant bit MUST be 0.
                    raise ProtocolError("64-bit payload length with the high bit set")
            # Fast path for the common frame: a whole text or binary message. It needs no
            # fragmentation tracking; the next fragmented message goes the slow path first.
            simple = (
                first in whole_message_firsts
                and masked is mask_expected
                and self._fragmented_opcode is None
                and (max_size is None or length <= max_size)
            )
            if not simple:
                self._check_header(first, length, masked)
            start = position + header_size
            end = start + length
            if available < end:
                break
            if masked:
                payload = apply_mask(data[start:end], bytes(data[start - 4 : start]))
            else:
                payload = bytes(data[start:end])
            opcode = first & 0x0F
            fin = first >= 0x80
            if not simple and opcode < 0x8:
                self._track_fragmentation(opcode, length, fin, first & RSV1)
            frames.append(Frame(opcode, payload, fin, first & 0x70))
            position = end
        return position

    def _check_header(self, first: int, length: int, masked: bool) -> None:
        """Validate one frame header (sections 5.2-5.5) against the fragmentation state.

        A split frame's header is checked again each time more of it arrives, so this must not
        change any state; :meth:`_track_fragmentation` does once the frame is complete.
        """
        opcode = first & 0x0F
        fin = first & 0x80
        if first & 0x70 & ~self.allowed_rsv:
            raise ProtocolError("reserved bits set without a negotiated extension")
        if opcode not in _KNOWN_OPCODES:
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        if first & RSV1 and opcode not in (Opcode.TEXT, Opcode.BINARY):
            # RFC 7692 section 6.1: RSV1 marks the first frame of a compressed message only.
            raise ProtocolError("RSV1 set on a control or continuation frame")
        if masked != self.mask_expected:
            # Section 5.1: a server MUST close on an unmasked client frame and vice versa.
            raise ProtocolError(
                "unmasked client frame" if self.mask_expected else "masked server frame"
            )
        if opcode >= 0x8:
            if not fin:
                raise ProtocolError("fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError("control frame payload longer than 125 bytes")
            return
        if opcode == Opcode.CONT:
            if self._fragmented_opcode is None:
                raise ProtocolError("continuation frame outside a fragmented message")
        elif self._fragmented_opcode is not None:
            raise ProtocolError("new data frame inside a fragmented message")
        if self.max_size is not None:
            compressed = self._compressed if opcode == Opcode.CONT else bool(first & RSV1)
            if compressed:
                # A compressed message is bounded by max_size once inflated, which the deflate
                # layer checks while inflating, frame by frame. Here only the frame being
                # buffered is bounded: by max_size plus deflate's worst-case overhead (stored
                # blocks cost up to ~4% at mem_level 1), since each frame is inflated and
                # released before the next one is read.
                size = length
                limit = self.max_size + (self.max_size >> 4) + 1024
            else:
                size = length if opcode != Opcode.CONT else self._message_size + length
                limit = self.max_size
            if size > limit:
                raise PayloadTooBig(f"message of {size} bytes exceeds max_size {self.max_size}")

    def _track_fragmentation(self, opcode: int, length: int, fin: bool, rsv1: int) -> None:
        if opcode == Opcode.CONT:
            self._message_size += length
        else:
            self._message_size = length
            self._fragmented_opcode = opcode
            self._compressed = bool(rsv1)
        if fin:
            self._fragmented_opcode = None
