"""hub.protocol: RFC 6455 WebSockets, client and server.

The sans-I/O core (:mod:`~hub.protocol.connection`, :mod:`~hub.protocol.reader`,
:mod:`~hub.protocol.frames`, :mod:`~hub.protocol.handshake`, :mod:`~hub.protocol.http11`) never
does I/O and never imports asyncio; :mod:`hub.protocol.asyncio` runs it on sockets. The names
below are the public API, in the style of the classic ``websockets`` cheat sheet::

    async def handler(websocket, path):
        async for message in websocket:
            await websocket.send(message)

    async with serve(handler, "127.0.0.1", 8765):
        async with connect("ws://127.0.0.1:8765/") as websocket:
            await websocket.send("hello")
            assert await websocket.recv() == "hello"
"""

from __future__ import annotations

from hub.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    HandshakeTimeout,
    InvalidOrigin,
    InvalidPayloadData,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    InvalidVersion,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
)
from hub.protocol.asyncio import (
    Data,
    WebSocketClientProtocol,
    WebSocketCommonProtocol,
    WebSocketServer,
    WebSocketServerProtocol,
    connect,
    serve,
    unix_connect,
    unix_serve,
)
from hub.protocol.connection import State
from hub.protocol.frames import Close
from hub.protocol.http11 import Headers

__all__ = [
    "Close",
    "ConcurrencyError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Data",
    "HandshakeError",
    "HandshakeTimeout",
    "Headers",
    "InvalidOrigin",
    "InvalidPayloadData",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidStatus",
    "InvalidVersion",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "State",
    "WebSocketClientProtocol",
    "WebSocketCommonProtocol",
    "WebSocketServer",
    "WebSocketServerProtocol",
    "connect",
    "serve",
    "unix_connect",
    "unix_serve",
]
