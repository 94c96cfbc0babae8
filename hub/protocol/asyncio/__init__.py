"""The asyncio layer of hub.protocol: the only part of it that does I/O."""

from __future__ import annotations

from hub.protocol.asyncio.client import WebSocketClientProtocol, connect, unix_connect
from hub.protocol.asyncio.connection import Data, WebSocketCommonProtocol
from hub.protocol.asyncio.server import (
    WebSocketServer,
    WebSocketServerProtocol,
    serve,
    unix_serve,
)

__all__ = [
    "Data",
    "WebSocketClientProtocol",
    "WebSocketCommonProtocol",
    "WebSocketServer",
    "WebSocketServerProtocol",
    "connect",
    "serve",
    "unix_connect",
    "unix_serve",
]
