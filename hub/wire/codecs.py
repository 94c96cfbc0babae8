"""The two encodings of the wire protocol, chosen by WebSocket subprotocol (PROTOCOL.md).

- ``hub.v1.json``: one JSON object per **text** frame (the default when none is offered);
- ``hub.v1.msgpack``: one msgpack map per **binary** frame.

``decode`` raises :class:`~hub.exceptions.BadRequest` for a frame of the wrong type or that does
not decode; ``encode`` returns the frame payload, ``str`` for JSON and ``bytes`` for msgpack, so
that the protocol layer sends it as the right frame type.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import msgpack

from hub.exceptions import BadRequest
from hub.protocol.connection import PreparedMessage

__all__ = ["CODECS", "JSON", "MSGPACK", "Codec", "JsonCodec", "MsgpackCodec", "select_codec"]


class Codec(Protocol):
    subprotocol: str

    def decode(self, frame: Any) -> Any: ...

    def encode(self, message: Any) -> Any: ...

    def prepare(self, message: Any) -> Any:
        """What the fan-out hands to every subscriber using this codec (encoded once)."""
        ...


class JsonCodec:
    subprotocol = "hub.v1.json"

    def __init__(self) -> None:
        # Compact separators: every byte is sent to every subscriber.
        # allow_nan=False: NaN and Infinity are not JSON, and strict parsers refuse them.
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def decode(self, frame: str | bytes) -> Any:
        if not isinstance(frame, str):
            raise BadRequest("hub.v1.json takes text frames; got a binary frame")
        try:
            return json.loads(frame)
        except ValueError as exc:
            raise BadRequest(f"invalid JSON: {exc}") from None

    def encode(self, message: Any) -> str:
        return self._encoder.encode(message)

    def prepare(self, message: Any) -> PreparedMessage:
        return PreparedMessage(self.encode(message))


class MsgpackCodec:
    subprotocol = "hub.v1.msgpack"

    def decode(self, frame: str | bytes) -> Any:
        if not isinstance(frame, bytes):
            raise BadRequest("hub.v1.msgpack takes binary frames; got a text frame")
        try:
            # strict_map_key=False: data maps may have non-string keys; the request itself is
            # checked by the models. raw=False: msgpack str -> Python str, bin -> bytes.
            return msgpack.unpackb(frame, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated exception types
            raise BadRequest(f"invalid msgpack: {exc}") from None

    def encode(self, message: Any) -> bytes:
        return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]

    def prepare(self, message: Any) -> PreparedMessage:
        return PreparedMessage(self.encode(message))


JSON = JsonCodec()
MSGPACK = MsgpackCodec()
CODECS: dict[str, Codec] = {JSON.subprotocol: JSON, MSGPACK.subprotocol: MSGPACK}


def select_codec(subprotocol: str | None) -> Codec:
    """The codec for the negotiated subprotocol; JSON when the client offered none."""
    return JSON if subprotocol is None else CODECS[subprotocol]
