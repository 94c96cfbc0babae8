"""JSON in text frames, msgpack in binary frames; garbage is a bad_request, never a crash."""

from __future__ import annotations

import msgpack
import pytest

from hub.exceptions import BadRequest
from hub.wire.codecs import JSON, MSGPACK, select_codec

MESSAGE = {
    "op": "msg",
    "topic": "chat.room1",
    "sub": "chat.*",
    "data": {"text": "héllo"},
    "offset": 3,
}


def test_json_round_trip_is_a_compact_text_frame() -> None:
    encoded = JSON.encode(MESSAGE)
    assert isinstance(encoded, str)
    assert " " not in encoded.replace("héllo", "")
    assert JSON.decode(encoded) == MESSAGE


def test_msgpack_round_trip_is_a_binary_frame() -> None:
    encoded = MSGPACK.encode({**MESSAGE, "data": b"\x00\xff"})
    assert isinstance(encoded, bytes)
    assert MSGPACK.decode(encoded) == {**MESSAGE, "data": b"\x00\xff"}


@pytest.mark.parametrize("frame", ["{", "nope", '{"a": }', "\ud800"])
def test_bad_json(frame: str) -> None:
    with pytest.raises(BadRequest, match="invalid JSON"):
        JSON.decode(frame)


@pytest.mark.parametrize("frame", [b"\xc1", b"\x92\x01", b"\xdd\xff\xff\xff\xff"])
def test_bad_msgpack(frame: bytes) -> None:
    with pytest.raises(BadRequest, match="invalid msgpack"):
        MSGPACK.decode(frame)


def test_msgpack_with_trailing_data_is_refused() -> None:
    with pytest.raises(BadRequest):
        MSGPACK.decode(msgpack.packb({"op": "sub"}) + b"\x01")


def test_frame_type_must_match_the_codec() -> None:
    with pytest.raises(BadRequest, match="text frames"):
        JSON.decode(b'{"op": "sub"}')
    with pytest.raises(BadRequest, match="binary frames"):
        MSGPACK.decode('{"op": "sub"}')


def test_select_codec() -> None:
    assert select_codec(None) is JSON
    assert select_codec("hub.v1.json") is JSON
    assert select_codec("hub.v1.msgpack") is MSGPACK
