"""hub.wire: the hub's wire protocol, version 1 (the contract is PROTOCOL.md; docs/protocol.md)."""

from __future__ import annotations

from hub.wire.codecs import CODECS, JSON, MSGPACK, Codec, select_codec
from hub.wire.messages import (
    History,
    Position,
    Presence,
    Pub,
    Sub,
    Unsub,
    parse_request,
    request_id,
)

__all__ = [
    "CODECS",
    "JSON",
    "MSGPACK",
    "Codec",
    "History",
    "Position",
    "Presence",
    "Pub",
    "Sub",
    "Unsub",
    "parse_request",
    "request_id",
    "select_codec",
]
