"""The small subset of HTTP/1.1 (RFC 9112) that a WebSocket handshake needs, sans-I/O and bounded.

Only message heads are parsed: the opening handshake (RFC 6455 section 4) is one GET request
without a body and one response. Every limit is enforced while bytes arrive, so a peer that
sends an endless line or endless headers is refused as soon as it crosses the limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from hub.exceptions import InvalidRequest, InvalidResponse

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_SIZE",
    "MAX_LINE_LENGTH",
    "HeadParser",
    "Headers",
    "HeadersLike",
    "Request",
    "Response",
]

MAX_LINE_LENGTH = 8192
MAX_HEADERS = 128
MAX_HEAD_SIZE = 65536

# RFC 9110 section 5.6.2 (token) and 5.5 (field value: visible chars, spaces and tabs, obs-text).
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?: (.*))?")
_REQUEST_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d)\.(\d)")


class Headers:
    """HTTP headers: case-insensitive names, several values per name, original order kept."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: HeadersLike | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}
        if items is not None:
            self.update(items)

    def update(self, items: HeadersLike) -> None:
        pairs = (
            items.raw_items()
            if isinstance(items, Headers)
            else (items.items() if isinstance(items, Mapping) else items)
        )
        for name, value in pairs:
            self[name] = value

    def __setitem__(self, name: str, value: str) -> None:
        """Add a value; an existing header of the same name keeps its values too."""
        self._items.append((name, value))
        self._index.setdefault(name.lower(), []).append(value)

    def __getitem__(self, name: str) -> str:
        """The header's value, or its values joined by ", " (RFC 9110 section 5.3)."""
        values = self._index[name.lower()]
        return values[0] if len(values) == 1 else ", ".join(values)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self[name] if name.lower() in self._index else default

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._items))

    def __len__(self) -> int:
        return len(self._items)

    def raw_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in received order, names as they were spelled."""
        return list(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and sorted(
            (n.lower(), v) for n, v in self._items
        ) == sorted((n.lower(), v) for n, v in other._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def serialize(self) -> bytes:
        return b"".join(f"{name}: {value}\r\n".encode() for name, value in self._items)


HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


def header_tokens(headers: Headers, name: str) -> list[str]:
    """The comma-separated, case-folded tokens of every ``name`` header (e.g. Connection)."""
    return [
        token.strip().lower()
        for value in headers.get_all(name)
        for token in value.split(",")
        if token.strip()
    ]


@dataclass
class Request:
    """A WebSocket handshake request: the request target (path and query) and the headers."""

    path: str
    headers: Headers = field(default_factory=Headers)
    method: str = "GET"

    def serialize(self) -> bytes:
        return (
            f"{self.method} {self.path} HTTP/1.1\r\n".encode() + self.headers.serialize() + b"\r\n"
        )


@dataclass
class Response:
    """An HTTP response: a 101 that completes the handshake, or a refusal with a body."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def serialize(self) -> bytes:
        head = f"HTTP/1.1 {self.status} {self.reason}\r\n".encode() + self.headers.serialize()
        return head + b"\r\n" + self.body


class HeadParser:
    """Collects one HTTP message head from incoming bytes, within limits.

    Feed bytes with :meth:`feed`; it returns None until the blank line that ends the head has
    arrived, then the parsed :class:`Request` (``is_request=True``) or :class:`Response`. Bytes
    after the head (the first WebSocket frames, or a response body) are left in :attr:`rest`.
    Raises :class:`InvalidRequest` / :class:`InvalidResponse` for a malformed or oversized head.
    """

    def __init__(self, *, is_request: bool) -> None:
        self.is_request = is_request
        self.rest = b""
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for line ends
        self._line_start = 0  # where the line being received starts
        self._lines = 0  # complete lines so far, the request or status line included

    def _error(self, message: str, status: int = 400) -> Exception:
        if self.is_request:
            error = InvalidRequest(message)
            error.status = status
            return error
        return InvalidResponse(message)

    def feed(self, data: bytes) -> Request | Response | None:
        buffer = self._buffer
        buffer += data
        # Each byte is scanned once, whatever the split: a peer that sends its head one byte
        # at a time must not make us rescan everything it sent so far (quadratic work).
        position = max(self._scanned - 1, self._line_start)  # a CR may end the previous chunk
        while (crlf := buffer.find(b"\r\n", position)) >= 0:
            self._check_line_length(crlf - self._line_start)
            if crlf == self._line_start and crlf > 0:  # the blank line that ends the head
                return self._parse_head(crlf)
            self._lines += 1
            if self._lines > MAX_HEADERS + 1:
                raise self._error("too many headers", 431)
            self._line_start = position = crlf + 2
        self._scanned = len(buffer)
        # Fail fast on a line or head that can no longer fit, before the peer sends all of it.
        # A trailing CR may be the start of the line's CRLF: it is not part of the line.
        self._check_line_length(len(buffer) - self._line_start - buffer.endswith(b"\r"))
        if len(buffer) > MAX_HEAD_SIZE:
            raise self._error("request head too large", 431)
        return None

    def _check_line_length(self, length: int) -> None:
        if length > MAX_LINE_LENGTH:
            if self._lines == 0 and self.is_request:
                raise self._error("request line too long", 414)
            raise self._error("line too long", 431)

    def _parse_head(self, end: int) -> Request | Response:
        if end + 2 > MAX_HEAD_SIZE:
            raise self._error("request head too large", 431)
        head = bytes(self._buffer[: end - 2])
        self.rest = bytes(self._buffer[end + 2 :])
        self._buffer = bytearray()
        first, *lines = head.split(b"\r\n")
        headers = self._parse_headers(lines)
        if self.is_request:
            return self._parse_request(first, headers)
        return self._parse_response(first, headers)

    def _parse_headers(self, lines: list[bytes]) -> Headers:
        # feed() already bounded the number of lines and the length of each (431, 414).
        headers = Headers()
        for line in lines:
            name, colon, value = line.partition(b":")
            # RFC 9112 section 5.1-5.2: no whitespace before the colon, no obsolete line folding.
            if not colon or not _TOKEN.fullmatch(name):
                raise self._error(f"invalid header line {line[:64]!r}")
            value = value.strip(b" \t")
            if not _VALUE.fullmatch(value):
                raise self._error(f"invalid value for header {name.decode()}")
            headers[name.decode()] = value.decode("latin-1")
        return headers

    def _parse_request(self, line: bytes, headers: Headers) -> Request:
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            raise self._error(f"invalid request line {line[:64]!r}")
        method, target, major, minor = match.groups()
        # RFC 6455 section 4.1: "The method of the request MUST be GET, and the HTTP version MUST
        # be at least 1.1."
        if (int(major), int(minor)) < (1, 1):
            raise self._error("HTTP version must be at least 1.1")
        if method != b"GET":
            raise self._error(f"method {method.decode()} not allowed; use GET", 405)
        path = target.decode("ascii", errors="replace")
        if not path.startswith("/"):
            raise self._error("request target must be an absolute path")
        return Request(path, headers, method.decode())

    def _parse_response(self, line: bytes, headers: Headers) -> Response:
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise self._error(f"invalid status line {line[:64]!r}")
        status, reason = match.groups()
        return Response(int(status), (reason or b"").decode("latin-1"), headers, self.rest)
