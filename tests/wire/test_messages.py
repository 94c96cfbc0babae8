"""Request validation at the edge: every kind of bad frame gets the contract's error code."""

from __future__ import annotations

import pytest

from hub.exceptions import BadRequest, InvalidTopic, RequestError, UnknownOp
from hub.wire.messages import (
    MAX_ID,
    History,
    Position,
    Presence,
    Pub,
    Sub,
    Unsub,
    parse_request,
    request_id,
)


class TestValidRequests:
    def test_sub(self) -> None:
        assert parse_request({"op": "sub", "topic": "chat.*", "id": 7}) == Sub(
            op="sub", topic="chat.*", id=7
        )

    def test_sub_with_recover(self) -> None:
        request = parse_request({"op": "sub", "topic": "a", "recover": {"epoch": "e", "offset": 3}})
        assert isinstance(request, Sub)
        assert request.recover == Position(epoch="e", offset=3)

    def test_unsub(self) -> None:
        assert isinstance(parse_request({"op": "unsub", "topic": "chat.>"}), Unsub)

    @pytest.mark.parametrize("data", [None, 1, 1.5, "s", [1, {"a": None}], {"k": [True]}, b"\x00"])
    def test_pub_data_is_opaque(self, data: object) -> None:
        request = parse_request({"op": "pub", "topic": "chat.room1", "data": data})
        assert isinstance(request, Pub)
        assert request.data == data

    def test_history_and_presence(self) -> None:
        assert isinstance(parse_request({"op": "history", "topic": "a", "limit": 10}), History)
        assert isinstance(parse_request({"op": "presence", "topic": "a"}), Presence)

    def test_unknown_fields_are_ignored(self) -> None:
        assert isinstance(parse_request({"op": "sub", "topic": "a", "future": 1}), Sub)

    @pytest.mark.parametrize("request_id_value", [1, MAX_ID])
    def test_id_bounds(self, request_id_value: int) -> None:
        assert (
            parse_request({"op": "unsub", "topic": "a", "id": request_id_value}).id
            == request_id_value
        )


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        (5, BadRequest, "must be a map"),
        ([{"op": "sub"}], BadRequest, "must be a map"),
        ({}, BadRequest, "needs an 'op'"),
        ({"op": 1}, BadRequest, "needs an 'op'"),
        ({"op": "subscribe", "topic": "a"}, UnknownOp, "unknown op"),
        ({"op": "sub"}, BadRequest, "topic"),
        ({"op": "sub", "topic": 5}, BadRequest, "topic"),
        ({"op": "sub", "topic": "a", "id": 0}, BadRequest, "id"),
        ({"op": "sub", "topic": "a", "id": MAX_ID + 1}, BadRequest, "id"),
        ({"op": "sub", "topic": "a", "id": True}, BadRequest, "id"),
        ({"op": "sub", "topic": "a", "id": "1"}, BadRequest, "id"),
        ({"op": "sub", "topic": "a", "recover": {"epoch": "e"}}, BadRequest, "recover"),
        (
            {"op": "sub", "topic": "a", "recover": {"epoch": "e", "offset": -1}},
            BadRequest,
            "recover",
        ),
        ({"op": "pub", "topic": "a"}, BadRequest, "data"),
        ({"op": "history", "topic": "a", "limit": 0}, BadRequest, "limit"),
        ({"op": "sub", "topic": "a..b"}, InvalidTopic, "invalid token"),
        ({"op": "sub", "topic": "chat.>.x"}, InvalidTopic, "last token"),
        (
            {"op": "pub", "topic": "chat.*", "data": 1},
            InvalidTopic,
            "only allowed in subscriptions",
        ),
        ({"op": "history", "topic": ">"}, InvalidTopic, "only allowed in subscriptions"),
        ({"op": "presence", "topic": "x" * 256}, InvalidTopic, "1 to 255"),
    ],
)
def test_invalid_requests(frame: object, error: type[RequestError], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        parse_request(frame)
    assert info.value.code == error.code


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"op": "nope", "id": 3}, 3),
        ({"op": "sub", "id": 0}, None),
        ({"id": True}, None),
        ({"id": "3"}, None),
        ("garbage", None),
    ],
)
def test_request_id_is_recovered_from_invalid_requests(frame: object, expected: int | None) -> None:
    assert request_id(frame) == expected
