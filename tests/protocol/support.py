"""Small helpers shared by the socket tests (importable; conftest.py only holds fixtures)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hub.protocol import (
    WebSocketClientProtocol,
    WebSocketServer,
    WebSocketServerProtocol,
)

__all__ = ["WAIT", "Capture", "Connect", "StartServer", "TLSFiles", "echo", "port_of", "uri_of"]

#: Upper bound for any single wait in these tests: a bug fails fast instead of hanging.
WAIT = 2.0


def port_of(server: WebSocketServer) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


def uri_of(server: WebSocketServer, path: str = "/") -> str:
    return f"ws://127.0.0.1:{port_of(server)}{path}"


async def echo(ws: WebSocketServerProtocol, path: str) -> None:
    """The classic echo handler: send every message back until the client closes."""
    async for message in ws:
        await ws.send(message)


class StartServer(Protocol):
    def __call__(
        self, handler: Callable[..., Awaitable[Any]] = ..., **options: Any
    ) -> Awaitable[WebSocketServer]: ...


class Connect(Protocol):
    def __call__(self, uri: str, **options: Any) -> Awaitable[WebSocketClientProtocol]: ...


class Capture:
    """A handler that hands each server-side connection to the test, then keeps it open.

    ``await capture.next()`` returns the next connection's server side; the handler returns when
    the connection closes or when ``capture.release`` is set.
    """

    def __init__(self) -> None:
        self.connections: asyncio.Queue[WebSocketServerProtocol] = asyncio.Queue()
        self.release = asyncio.Event()

    async def handler(self, ws: WebSocketServerProtocol, path: str) -> None:
        await self.connections.put(ws)
        release = asyncio.ensure_future(self.release.wait())
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            await asyncio.wait({release, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            release.cancel()
            closed.cancel()

    async def next(self) -> WebSocketServerProtocol:
        async with asyncio.timeout(WAIT):
            return await self.connections.get()


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(self.cert)
        return context
