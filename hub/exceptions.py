"""Every error that hub raises, in one tree rooted at :class:`HubError`.

::

    HubError
    ├── HandshakeError              the opening handshake failed (carries the HTTP status)
    │   ├── InvalidRequest          400: malformed request, missing/bad Upgrade, Key, ...
    │   ├── InvalidOrigin           403: Origin not in the allowed list
    │   ├── InvalidVersion          426: Sec-WebSocket-Version is not 13
    │   ├── NegotiationError        400: no acceptable subprotocol
    │   ├── InvalidResponse         client side: the server's answer broke RFC 6455
    │   │   └── InvalidStatus       client side: the server answered with a status other than 101
    │   └── HandshakeTimeout        the handshake did not complete within open_timeout
    ├── ProtocolError               the peer broke RFC 6455 (carries the close code to send)
    │   ├── InvalidPayloadData      1007: text that is not UTF-8, close reason that is not UTF-8
    │   └── PayloadTooBig           1009: a message larger than max_size
    ├── ConnectionClosed            the connection is closed (carries the close frames rcvd/sent)
    │   ├── ConnectionClosedOK      both sides closed with 1000 or 1001
    │   └── ConnectionClosedError   any other ending, including no close frame at all
    ├── InsufficientState           4010: the hub lost its place in a subscription's streams
    ├── UsageError                  the caller misused the API (we are at fault, not the peer)
    │   └── ConcurrencyError        two tasks called recv() at once, or similar
    ├── ClientError                 the client SDK (hub_client) could not do what was asked
    │   ├── RequestTimeout          no reply within the request's timeout
    │   ├── Disconnected            not connected (and not waiting), or the connection dropped
    │   │                           before the reply came: the request may or may not have run
    │   └── SubscriptionNotice      raised by a subscription's iterator, which goes on after it
    │       ├── NotRecovered        publications were missed that could not be replayed
    │       └── Undeliverable       a publication that the connection's encoding cannot carry
    └── RequestError                a hub request cannot be served (carries the wire error code)
        ├── BadRequest              bad_request: not a valid request (syntax, types, limits)
        ├── UnknownOp               unknown_op: a request whose op the hub does not know
        ├── InvalidTopic            invalid_topic: a topic or pattern that breaks the contract
        ├── NotSubscribed           not_subscribed: unsub of a pattern the client does not hold
        ├── Unauthorized            unauthorized: credentials missing, invalid or expired
        ├── Forbidden               forbidden: the credentials do not allow this request
        ├── TooLarge                too_large: a request over a size limit
        ├── RateLimited             rate_limited: requests too fast
        ├── Unavailable             unavailable: the hub cannot serve it now (or not yet)
        └── InternalError           internal: a bug on the hub's side

Errors caused by the peer carry the code that answers them (``ProtocolError`` a close code,
``HandshakeError`` an HTTP status, ``RequestError`` an error code of the wire protocol), so the
layer that catches one never has to map it again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.protocol.frames import Close

__all__ = [
    "BadRequest",
    "ClientError",
    "ConcurrencyError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Disconnected",
    "Forbidden",
    "HandshakeError",
    "HandshakeTimeout",
    "HubError",
    "InsufficientState",
    "InternalError",
    "InvalidOrigin",
    "InvalidPayloadData",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidStatus",
    "InvalidTopic",
    "InvalidVersion",
    "NegotiationError",
    "NotRecovered",
    "NotSubscribed",
    "PayloadTooBig",
    "ProtocolError",
    "RateLimited",
    "RequestError",
    "RequestTimeout",
    "SubscriptionNotice",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Undeliverable",
    "UnknownOp",
    "UsageError",
    "error_for_code",
]


class HubError(Exception):
    """Base class of every exception hub raises."""


# --- opening handshake (RFC 6455 section 4) -------------------------------------------------------


class HandshakeError(HubError):
    """The opening handshake failed; ``status`` is the HTTP status that answers it."""

    status: int = 400


class InvalidRequest(HandshakeError):
    """The client's request is not a valid WebSocket upgrade (HTTP 400)."""

    status = 400


class InvalidOrigin(HandshakeError):
    """The request's Origin is not allowed (HTTP 403)."""

    status = 403


class InvalidVersion(HandshakeError):
    """Sec-WebSocket-Version is not 13 (HTTP 426 with ``Sec-WebSocket-Version: 13``)."""

    status = 426


class NegotiationError(HandshakeError):
    """Client and server share no subprotocol, or the server picked one the client did not offer."""

    status = 400


class InvalidResponse(HandshakeError):
    """Client side: the server's handshake response is not valid."""

    status = 502


class InvalidStatus(InvalidResponse):
    """Client side: the server answered with ``status`` instead of 101 Switching Protocols."""

    def __init__(self, status: int, reason: str = "", body: bytes = b"") -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {status} {reason}".rstrip())
        self.status = status
        self.reason = reason
        self.body = body


class HandshakeTimeout(HandshakeError, TimeoutError):
    """The opening handshake did not complete within ``open_timeout``."""

    status = 408


# --- framing and closing (RFC 6455 sections 5 and 7) ----------------------------------------------


class ProtocolError(HubError):
    """The peer broke RFC 6455; ``code`` is the close code the connection is failed with."""

    code: int = 1002

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidPayloadData(ProtocolError):
    """A text message or close reason is not valid UTF-8 (RFC 6455 section 8.1: close with 1007)."""

    code = 1007


class PayloadTooBig(ProtocolError):
    """A message exceeds ``max_size`` (RFC 6455 section 7.4.1: close with 1009)."""

    code = 1009


class ConnectionClosed(HubError):
    """The connection is closed; ``rcvd`` and ``sent`` are the close frames exchanged, if any.

    ``code`` and ``reason`` are the ones the peer sent (1006 and "" when no close frame arrived), as
    RFC 6455 section 7.1.5 defines "the WebSocket Connection Close Code".
    """

    def __init__(self, rcvd: Close | None, sent: Close | None, rcvd_then_sent: bool | None = None):
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent
        super().__init__(self._describe())

    @property
    def code(self) -> int:
        return 1006 if self.rcvd is None else self.rcvd.code

    @property
    def reason(self) -> str:
        return "" if self.rcvd is None else self.rcvd.reason

    def _describe(self) -> str:
        if self.rcvd is None and self.sent is None:
            return "no close frame received or sent"
        if self.rcvd is None:
            return f"sent {self.sent}; no close frame received"
        if self.sent is None:
            return f"received {self.rcvd}; no close frame sent"
        if self.rcvd_then_sent:
            return f"received {self.rcvd}; then sent {self.sent}"
        return f"sent {self.sent}; then received {self.rcvd}"

    @staticmethod
    def for_frames(
        rcvd: Close | None, sent: Close | None, rcvd_then_sent: bool | None = None
    ) -> ConnectionClosed:
        """Build the OK or Error subclass that matches how the connection ended."""
        ok = (
            rcvd is not None
            and sent is not None
            and rcvd.code in (1000, 1001)
            and sent.code in (1000, 1001)
        )
        cls = ConnectionClosedOK if ok else ConnectionClosedError
        return cls(rcvd, sent, rcvd_then_sent)


class ConnectionClosedOK(ConnectionClosed):
    """Both sides sent a close frame with 1000 (normal) or 1001 (going away)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended with an error code, or without a complete closing handshake."""


# --- subscriptions --------------------------------------------------------------------------------


class InsufficientState(HubError):
    """The hub may have missed publications for a subscription (a backend outage) and could not
    fill the gap: the subscription ends, and its owner subscribes again, recovering from the last
    position it saw. Sessions are closed with ``close_code`` (PROTOCOL.md, close codes)."""

    close_code = 4010


# --- API misuse -----------------------------------------------------------------------------------


class UsageError(HubError):
    """The caller used the API wrongly; fix the calling code."""


class ConcurrencyError(UsageError, RuntimeError):
    """Two coroutines did at once what only one may do (e.g. ``recv()``)."""


# --- the client SDK ----------------------------------------------------------------------------


class ClientError(HubError):
    """The client SDK could not carry out a request or keep a promise."""


class RequestTimeout(ClientError, TimeoutError):
    """No reply came within the request's timeout; the request may still have run."""


class Disconnected(ClientError):
    """The client is not connected, or lost the connection before the reply came (then the
    request may or may not have run: retry only what is safe to repeat)."""


class SubscriptionNotice(ClientError):
    """What a subscription's iterator raises in place of a message it cannot give; iterating
    again goes on after it. ``topic`` is the concrete topic or pattern concerned."""

    def __init__(self, message: str, topic: str) -> None:
        super().__init__(message)
        self.topic = topic


class NotRecovered(SubscriptionNotice):
    """After a reconnect, the hub could not replay what a subscription missed
    (``recovered: false``). The subscription goes on with live messages."""


class Undeliverable(SubscriptionNotice):
    """A publication that the connection's encoding cannot carry (binary data on JSON, an
    integer beyond 64 bits on msgpack): the subscription goes on after it."""


# --- hub requests (the wire protocol, PROTOCOL.md) ------------------------------------------------


class RequestError(HubError):
    """A request cannot be served; ``code`` is the wire protocol's error code for the reply."""

    code: str = "bad_request"


class BadRequest(RequestError):
    """Not a valid request: undecodable, not a map, wrong field types, or over a limit."""

    code = "bad_request"


class UnknownOp(RequestError):
    """A request whose ``op`` the hub does not know."""

    code = "unknown_op"


class InvalidTopic(RequestError):
    """A topic or subscription pattern that breaks the contract's rules."""

    code = "invalid_topic"


class NotSubscribed(RequestError):
    """``unsub`` of a pattern the connection does not hold."""

    code = "not_subscribed"


class Unauthorized(RequestError):
    """Credentials are missing, invalid or expired."""

    code = "unauthorized"


class Forbidden(RequestError):
    """The credentials do not allow this request."""

    code = "forbidden"


class RateLimited(RequestError):
    """The client sends requests faster than the hub allows."""

    code = "rate_limited"


class TooLarge(RequestError):
    """A request over a size limit."""

    code = "too_large"


class Unavailable(RequestError):
    """The hub cannot serve the request now (backend down) or does not offer it yet."""

    code = "unavailable"


class InternalError(RequestError):
    """The hub failed while serving the request; the details are in its log."""

    code = "internal"


def error_for_code(code: str, message: str) -> RequestError:
    """The exception for an ``error`` reply's ``code`` (a RequestError for a code this version
    does not know, with that code)."""
    for cls in RequestError.__subclasses__():
        if cls.code == code:
            return cls(message)
    error = RequestError(message)
    error.code = code
    return error
