"""Frames on the wire (RFC 6455 section 5.2): opcodes, serialization, close frame payloads.

Parsing lives in :mod:`hub.protocol.reader`; this module only knows how a frame looks.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import NamedTuple

from hub.exceptions import InvalidPayloadData, ProtocolError
from hub.protocol.masking import apply_mask

__all__ = [
    "CONTROL_OPCODES",
    "DATA_OPCODES",
    "Close",
    "Opcode",
    "serialize_frame",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (section 5.2); 3-7 and 11-15 are reserved and fail the connection."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})

# Section 5.5: control frames carry at most 125 bytes of payload and are never fragmented.
MAX_CONTROL_PAYLOAD = 125

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


class _MaskSource:
    """Masking keys from the OS CSPRNG, fetched 4 KiB at a time to save a syscall per frame.

    Section 5.3 requires keys that the application cannot predict; os.urandom is unpredictable,
    and buffering it does not change that.
    """

    __slots__ = ("_buffer", "_position")

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0

    def next_key(self) -> bytes:
        position = self._position
        if position >= len(self._buffer):
            self._buffer = os.urandom(4096)
            position = 0
        self._position = position + 4
        return self._buffer[position : position + 4]


next_mask_key = _MaskSource().next_key


def serialize_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool, rsv: int = 0
) -> bytes:
    """Return the bytes of one frame; clients pass ``mask=True`` (section 5.3), servers ``False``.

    ``rsv`` is the RSV1-3 bits already shifted into place (0x40 for RSV1), for extensions.
    """
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    if mask:
        key = next_mask_key()
        if length < 126:
            header = bytes((first, 0x80 | length))
        elif length < 65536:
            header = _PACK_16(first, 0xFE, length)
        else:
            header = _PACK_64(first, 0xFF, length)
        return header + key + apply_mask(payload, key)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return _PACK_16(first, 126, length) + payload
    return _PACK_64(first, 127, length) + payload


# --- close frames (section 5.5.1 and 7.4) ---------------------------------------------------------

# Section 7.4.1 defines 1000-1011; 1012-1014 were registered with IANA later. 1004-1006 and 1015
# are reserved: 1005/1006/1015 are only ever *reported*, never sent in a frame.
_VALID_DEFINED_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (section 7.4: 3000-4999 belong to apps)."""
    return code in _VALID_DEFINED_CODES or 3000 <= code <= 4999


class Close(NamedTuple):
    """A close frame's content: ``code`` (1005 when the frame had no payload) and ``reason``."""

    code: int
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.code} ({self.reason})" if self.reason else str(self.code)

    @classmethod
    def parse(cls, payload: bytes) -> Close:
        """Read a received close payload; raise :class:`ProtocolError` (1002 or 1007) if invalid."""
        if len(payload) == 0:
            return cls(1005, "")
        if len(payload) == 1:
            raise ProtocolError("close frame with a 1-byte payload")
        code = int.from_bytes(payload[:2], "big")
        if not is_valid_close_code(code):
            raise ProtocolError(f"invalid close code {code}")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError as exc:
            raise InvalidPayloadData("close reason is not valid UTF-8") from exc
        return cls(code, reason)

    def serialize(self) -> bytes:
        """The close payload to send; 1005 (no status) is sent as an empty payload."""
        if self.code == 1005:
            return b""
        return self.code.to_bytes(2, "big") + self.reason.encode()
