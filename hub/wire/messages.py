"""The requests a client sends (PROTOCOL.md, "Frames from the client"), validated at the edge.

:func:`parse_request` turns a decoded frame (a dict from JSON or msgpack) into one of the request
models, or raises the :class:`~hub.exceptions.RequestError` whose ``code`` the hub answers with:
``bad_request`` (not a map, missing or mistyped fields), ``unknown_op``, ``invalid_topic``. The
request's ``id`` is recovered even from an invalid request when it is readable, so that the
error reply can echo it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hub.broker.topics import validate_pattern, validate_topic
from hub.exceptions import BadRequest, UnknownOp

__all__ = [
    "OPS",
    "History",
    "Pattern",
    "PatternRecovery",
    "Position",
    "Presence",
    "Pub",
    "Refresh",
    "Request",
    "Sub",
    "Topic",
    "Unsub",
    "parse_request",
    "request_id",
]

#: Section "Frames from the client": ids are client-chosen integers from 1 to 2**53.
MAX_ID = 2**53

RequestId = Annotated[int, Field(ge=1, le=MAX_ID, strict=True)]


class _Request(BaseModel):
    # Unknown fields are ignored (a newer client may send more); types are not coerced.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    id: RequestId | None = None


class Position(BaseModel):
    """A place in a topic's stream: the epoch and the last offset seen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    epoch: str
    offset: Annotated[int, Field(ge=0)]


#: A concrete topic (pub, history, presence) and a subscription pattern (sub, unsub). The
#: validators raise InvalidTopic, which pydantic lets through unwrapped (it is no ValueError).
Topic = Annotated[str, AfterValidator(validate_topic)]
Pattern = Annotated[str, AfterValidator(validate_pattern)]


class PatternRecovery(BaseModel):
    """Where a wildcard subscription stopped: the ``time`` of its last ``ok`` and the last
    position of every concrete topic it received."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    since: Annotated[int, Field(ge=0)]
    topics: dict[Topic, Position] = Field(default_factory=dict)


class Sub(_Request):
    op: Literal["sub"]
    topic: Pattern
    recover: Position | PatternRecovery | None = None
    join_leave: bool = False


class Unsub(_Request):
    op: Literal["unsub"]
    topic: Pattern


class Pub(_Request):
    op: Literal["pub"]
    topic: Topic
    data: Any


class History(_Request):
    op: Literal["history"]
    topic: Topic
    since: Position | None = None
    limit: Annotated[int, Field(ge=1)] | None = None
    reverse: bool = False


class Presence(_Request):
    op: Literal["presence"]
    topic: Topic


class Refresh(_Request):
    """A new token for the connection, before the current one expires."""

    op: Literal["refresh"]
    token: Annotated[str, Field(min_length=1, max_length=16384)]


Request = Annotated[Sub | Unsub | Pub | History | Presence | Refresh, Field(discriminator="op")]
_REQUEST = TypeAdapter[Sub | Unsub | Pub | History | Presence | Refresh](Request)
OPS = frozenset({"sub", "unsub", "pub", "history", "presence", "refresh"})


def request_id(frame: object) -> int | None:
    """The frame's ``id`` if it is a valid one, so that even an error reply can echo it."""
    if isinstance(frame, dict):
        value = frame.get("id")
        if type(value) is int and 1 <= value <= MAX_ID:
            return value
    return None


def parse_request(frame: object) -> Sub | Unsub | Pub | History | Presence | Refresh:
    """Validate a decoded frame; raise BadRequest, UnknownOp or InvalidTopic with a message."""
    if not isinstance(frame, dict):
        raise BadRequest(f"a request must be a map, not {type(frame).__name__}")
    op = frame.get("op")
    if not isinstance(op, str):
        raise BadRequest("a request needs an 'op' string")
    if op not in OPS:
        raise UnknownOp(f"unknown op {op[:64]!r}")
    try:
        return _REQUEST.validate_python(frame)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "request"
        raise BadRequest(f"{where}: {first['msg']}") from None
