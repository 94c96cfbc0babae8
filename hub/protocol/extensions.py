"""The ``Sec-WebSocket-Extensions`` header (RFC 6455 section 9.1): parse and serialize.

::

    extension-list = 1#extension
    extension      = extension-token *( ";" extension-param )
    extension-param = token [ "=" (token | quoted-string) ]

A quoted-string value must itself be a token once unquoted (section 9.1). Parsing is strict:
anything outside the grammar raises ``ValueError`` with a message that names the problem, and
the handshake turns it into a 400 (server) or a failed connection (client).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["ExtensionOffer", "parse_extensions", "serialize_extension"]

#: An extension and its parameters: ``("permessage-deflate", [("client_max_window_bits", None)])``
ExtensionOffer = tuple[str, list[tuple[str, str | None]]]

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_OWS = re.compile(r"[ \t]*")


class _Cursor:
    """A position in one header value, with the small steps of the grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def skip_spaces(self) -> None:
        match = _OWS.match(self.text, self.position)
        assert match is not None  # OWS matches the empty string
        self.position = match.end()

    def at_end(self) -> bool:
        return self.position >= len(self.text)

    def peek(self) -> str:
        return self.text[self.position : self.position + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.position += 1

    def token(self) -> str:
        match = _TOKEN.match(self.text, self.position)
        if match is None:
            raise self.error("expected a token")
        self.position = match.end()
        return match.group()

    def value(self) -> str:
        if self.peek() != '"':
            return self.token()
        match = _QUOTED.match(self.text, self.position)
        if match is None:
            raise self.error("unterminated quoted string")
        self.position = match.end()
        unquoted = re.sub(r"\\(.)", r"\1", match.group(1))
        if not _TOKEN.fullmatch(unquoted):
            raise self.error("a quoted parameter value must be a token once unquoted")
        return unquoted

    def error(self, problem: str) -> ValueError:
        return ValueError(f"{problem} at position {self.position} of {self.text!r}")


def _parse_value(text: str) -> list[ExtensionOffer]:
    cursor = _Cursor(text)
    offers: list[ExtensionOffer] = []
    while True:
        cursor.skip_spaces()
        if cursor.peek() == ",":  # RFC 9110 section 5.6.1: empty list elements are allowed
            cursor.expect(",")
            continue
        if cursor.at_end():
            return offers
        name = cursor.token()
        params: list[tuple[str, str | None]] = []
        cursor.skip_spaces()
        while cursor.peek() == ";":
            cursor.expect(";")
            cursor.skip_spaces()
            param = cursor.token()
            cursor.skip_spaces()
            value: str | None = None
            if cursor.peek() == "=":
                cursor.expect("=")
                cursor.skip_spaces()
                value = cursor.value()
                cursor.skip_spaces()
            params.append((param, value))
        offers.append((name, params))
        if not cursor.at_end():
            cursor.expect(",")


def parse_extensions(values: Iterable[str]) -> list[ExtensionOffer]:
    """Parse every ``Sec-WebSocket-Extensions`` value, in order; raise ValueError if invalid."""
    offers: list[ExtensionOffer] = []
    for text in values:
        offers.extend(_parse_value(text))
    return offers


def serialize_extension(name: str, params: Sequence[tuple[str, str | None]]) -> str:
    """``permessage-deflate; server_no_context_takeover; client_max_window_bits=12``."""
    parts = [name] + [param if value is None else f"{param}={value}" for param, value in params]
    return "; ".join(parts)
