"""The opening handshake (RFC 6455 section 4), both sides, sans-I/O.

Server: :meth:`ServerHandshake.accept` checks a parsed :class:`Request` and returns the 101
:class:`Response` (or raises a :class:`HandshakeError` whose ``status`` says how to refuse it;
:func:`reject` builds that refusal). Client: :meth:`ClientHandshake.request` builds the request
and :meth:`ClientHandshake.check_response` validates the server's answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import NamedTuple

from hub.exceptions import (
    HandshakeError,
    InvalidOrigin,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    InvalidVersion,
    NegotiationError,
)
from hub.protocol.connection import protocol_logger
from hub.protocol.extensions import parse_extensions
from hub.protocol.http11 import Headers, HeadersLike, Request, Response, header_tokens
from hub.protocol.permessage_deflate import (
    DeflateConfig,
    PerMessageDeflate,
    accept_offer,
    client_accept,
    client_offer,
)

__all__ = [
    "Accepted",
    "ClientHandshake",
    "SelectSubprotocol",
    "ServerHandshake",
    "accept_key",
    "generate_key",
    "http_response",
    "reject",
]

# Section 1.3: the GUID concatenated to the key before hashing.
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SERVER_AGENT = "hub"

#: ``select_subprotocol(offered, supported)`` returns the chosen one, or None for none.
SelectSubprotocol = Callable[[Sequence[str], Sequence[str]], str | None]


def generate_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64-encoded (section 4.1)."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value that proves the server read ``key`` (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def reject(status: int, text: str, headers: HeadersLike | None = None) -> Response:
    """An HTTP error response with a plain-text body that tells a human what went wrong."""
    response_headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
    if headers is not None:
        response_headers.update(headers)
    return http_response(status, response_headers, (text.rstrip("\n") + "\n").encode())


def http_response(status: int, headers: HeadersLike, body: bytes) -> Response:
    """A plain HTTP response after which the server closes the connection, framed so that the
    client knows where the body ends (Content-Length and Connection added unless given)."""
    response_headers = Headers(headers)
    if "Content-Length" not in response_headers:
        response_headers["Content-Length"] = str(len(body))
    if "Connection" not in response_headers:
        response_headers["Connection"] = "close"
    return Response(status, _status_phrase(status), response_headers, body)


def _status_phrase(status: int) -> str:
    """The standard reason phrase for an HTTP status ("Error" for unknown ones)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [
        token.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for token in value.split(",")
        if token.strip()
    ]


def _check_upgrade_headers(headers: Headers, error: type[HandshakeError]) -> None:
    """Section 4.2.1 items 3-4 / 4.1 items 2-3: Upgrade: websocket and Connection: Upgrade."""
    if "upgrade" not in header_tokens(headers, "Connection"):
        raise error("missing 'Connection: Upgrade' header")
    if "websocket" not in header_tokens(headers, "Upgrade"):
        raise error("missing 'Upgrade: websocket' header")


@dataclass
class ServerHandshake:
    """Server-side handshake policy: allowed origins, subprotocols, extra response headers.

    ``origins``: if given, the Origin header must be one of these (``None`` in the list admits
    requests without Origin, i.e. non-browser clients). ``subprotocols``: the server's supported
    subprotocols, in order of preference; ``select_subprotocol`` overrides how one is picked.
    """

    origins: Sequence[str | None] | None = None
    subprotocols: Sequence[str] = ()
    select_subprotocol: SelectSubprotocol | None = None
    extra_headers: HeadersLike | None = None
    #: permessage-deflate settings; None turns compression off.
    compression: DeflateConfig | None = None
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None

    def accept(self, request: Request) -> Accepted:
        """Return the 101 response and what was negotiated, or raise a HandshakeError."""
        headers = request.headers
        if len(headers.get_all("Host")) != 1:  # Section 4.2.1 item 2; RFC 9112 section 3.2.
            raise InvalidRequest("expected exactly one Host header")
        _check_upgrade_headers(headers, InvalidRequest)
        key = headers.get_all("Sec-WebSocket-Key")
        if len(key) != 1:
            raise InvalidRequest("expected exactly one Sec-WebSocket-Key header")
        try:
            raw_key = base64.b64decode(key[0].encode(), validate=True)
        except binascii.Error:
            raw_key = b""
        if len(raw_key) != 16:  # Section 4.2.1 item 5: 16 bytes, base64-encoded.
            raise InvalidRequest(f"invalid Sec-WebSocket-Key {key[0]!r}")
        if headers.get_all("Sec-WebSocket-Version") != ["13"]:
            # Section 4.4: answer 426 with the versions we support.
            raise InvalidVersion(
                f"unsupported Sec-WebSocket-Version {headers.get('Sec-WebSocket-Version')!r}; "
                "this server speaks version 13"
            )
        self._check_origin(headers)
        subprotocol = self._negotiate_subprotocol(headers)
        extension, deflate = self._negotiate_compression(headers)

        response_headers = Headers(
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_key(key[0])),
            ]
        )
        if subprotocol is not None:
            response_headers["Sec-WebSocket-Protocol"] = subprotocol
        if extension is not None:
            response_headers["Sec-WebSocket-Extensions"] = extension
        if self.extra_headers is not None:
            response_headers.update(self.extra_headers)
        return Accepted(
            Response(101, "Switching Protocols", response_headers), subprotocol, deflate
        )

    def _negotiate_compression(
        self, headers: Headers
    ) -> tuple[str | None, PerMessageDeflate | None]:
        try:
            offers = parse_extensions(headers.get_all("Sec-WebSocket-Extensions"))
        except ValueError as exc:
            raise InvalidRequest(f"invalid Sec-WebSocket-Extensions header: {exc}") from exc
        if self.compression is None:
            return None, None
        outcome = accept_offer(offers, self.compression)
        # RFC 7692 section 5: an offer we cannot accept is declined and the connection goes on
        # uncompressed; say why, for whoever wonders where compression went.
        logger = self.logger or protocol_logger
        for reason in outcome.declined:
            logger.info("permessage-deflate offer declined: %s", reason)
        return outcome.header, outcome.codec

    def _check_origin(self, headers: Headers) -> None:
        if self.origins is None:
            return
        origins = headers.get_all("Origin")
        if len(origins) > 1:
            raise InvalidOrigin("more than one Origin header")
        origin = origins[0] if origins else None
        if origin not in self.origins:
            raise InvalidOrigin(f"origin {origin!r} is not allowed")

    def _negotiate_subprotocol(self, headers: Headers) -> str | None:
        offered = _offered_subprotocols(headers)
        if self.select_subprotocol is not None:
            chosen = self.select_subprotocol(offered, self.subprotocols)
        else:
            # Server preference wins: the first supported subprotocol the client offered.
            chosen = next((p for p in self.subprotocols if p in offered), None)
        if chosen is not None and chosen not in offered:
            raise NegotiationError(f"selected subprotocol {chosen!r} was not offered")
        return chosen


class Accepted(NamedTuple):
    """What the server's handshake produced: the 101 response and the negotiated options."""

    response: Response
    subprotocol: str | None
    deflate: PerMessageDeflate | None


@dataclass
class ClientHandshake:
    """Client-side handshake: build the upgrade request, then validate the server's response."""

    host: str
    resource: str = "/"
    subprotocols: Sequence[str] = ()
    origin: str | None = None
    extra_headers: HeadersLike | None = None
    user_agent: str | None = SERVER_AGENT
    #: permessage-deflate offer; None offers no compression.
    compression: DeflateConfig | None = None

    def __post_init__(self) -> None:
        self.key = generate_key()
        #: The negotiated codec, once check_response() accepted the server's answer.
        self.deflate: PerMessageDeflate | None = None

    def request(self) -> Request:
        headers = Headers(
            [
                ("Host", self.host),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", self.key),
                ("Sec-WebSocket-Version", "13"),
            ]
        )
        if self.origin is not None:
            headers["Origin"] = self.origin
        if self.subprotocols:
            headers["Sec-WebSocket-Protocol"] = ", ".join(self.subprotocols)
        if self.compression is not None:
            headers["Sec-WebSocket-Extensions"] = client_offer(self.compression)
        if self.user_agent is not None:
            headers["User-Agent"] = self.user_agent
        if self.extra_headers is not None:
            headers.update(self.extra_headers)
        return Request(self.resource, headers)

    def check_response(self, response: Response) -> str | None:
        """Validate the response (section 4.1, the client's checks); return the subprotocol."""
        if response.status != 101:
            raise InvalidStatus(response.status, response.reason, response.body)
        headers = response.headers
        _check_upgrade_headers(headers, InvalidResponse)
        if headers.get_all("Sec-WebSocket-Accept") != [accept_key(self.key)]:
            raise InvalidResponse("wrong or missing Sec-WebSocket-Accept")
        self.deflate = self._check_extensions(headers)
        chosen = headers.get_all("Sec-WebSocket-Protocol")
        if not chosen:
            return None
        if len(chosen) > 1 or chosen[0] not in self.subprotocols:
            raise NegotiationError(f"server selected a subprotocol that was not offered: {chosen}")
        return chosen[0]

    def _check_extensions(self, headers: Headers) -> PerMessageDeflate | None:
        """Section 4.1 item 5: the server may only select extensions that we offered."""
        try:
            extensions = parse_extensions(headers.get_all("Sec-WebSocket-Extensions"))
        except ValueError as exc:
            raise InvalidResponse(f"invalid Sec-WebSocket-Extensions header: {exc}") from exc
        if not extensions:
            return None
        if self.compression is None:
            raise InvalidResponse("server selected an extension that was not offered")
        return client_accept(extensions, self.compression)
