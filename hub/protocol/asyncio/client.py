"""The asyncio client: ``connect()`` / ``unix_connect()`` and the client-side protocol."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import urllib.parse
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from hub.exceptions import HandshakeError, HandshakeTimeout, InvalidRequest, InvalidResponse
from hub.protocol.asyncio.connection import LoggerLike, WebSocketCommonProtocol
from hub.protocol.connection import CLIENT, Connection, protocol_logger
from hub.protocol.handshake import ClientHandshake
from hub.protocol.http11 import HeadersLike, HeadParser, Response
from hub.protocol.permessage_deflate import Compression, resolve_compression

__all__ = ["WebSocketClientProtocol", "WebSocketURI", "connect", "parse_uri", "unix_connect"]


@dataclass(frozen=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URI (RFC 6455 section 3)."""

    secure: bool
    host: str
    port: int
    resource: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_uri(uri: str) -> WebSocketURI:
    """Split a WebSocket URI; raise :class:`InvalidRequest` if it is not ws:// or wss://."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("ws", "wss"):
        raise InvalidRequest(f"{uri!r} is not a ws:// or wss:// URI")
    if parts.fragment:  # Section 3: fragment identifiers MUST NOT be used.
        raise InvalidRequest(f"{uri!r} has a fragment")
    if not parts.hostname:
        raise InvalidRequest(f"{uri!r} has no host")
    secure = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebSocketURI(secure, parts.hostname, parts.port or (443 if secure else 80), resource)


class WebSocketClientProtocol(WebSocketCommonProtocol):
    """The client side of a connection, as returned by :func:`connect`."""

    side = CLIENT

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._head_parser = HeadParser(is_request=False)
        self._response: asyncio.Future[Response] = self.loop.create_future()

    async def handshake(self, handshake: ClientHandshake) -> None:
        """Send the upgrade request and check the response; raises HandshakeError on refusal."""
        request = handshake.request()
        self.path = request.path
        self.request_headers = request.headers
        assert self.transport is not None
        self.transport.write(request.serialize())
        response = await self._response
        self.response_headers = response.headers
        self.subprotocol = handshake.check_response(response)
        self.connection_opened(
            Connection(
                CLIENT, max_size=self.max_size, logger=self.logger, deflate=handshake.deflate
            ),
            self._head_parser.rest,
        )

    def handshake_data_received(self, data: bytes) -> None:
        if self._response.done():
            # Frames that follow the 101 before the switch to framing: keep them for it.
            self._head_parser.rest += data
            return
        try:
            response = self._head_parser.feed(data)
        except HandshakeError as exc:
            self._response.set_exception(exc)
            return
        if response is not None:
            self._response.set_result(cast(Response, response))

    def connection_closed(self) -> None:
        if not self._response.done():
            self._response.set_exception(InvalidResponse("connection closed during the handshake"))


class connect:
    """Open a WebSocket connection: ``ws = await connect(uri)`` … ``await ws.close()``, or
    ``async with connect(uri) as ws:``.

    Options: ``create_protocol`` (a :class:`WebSocketClientProtocol` subclass or factory),
    ``subprotocols``, ``extra_headers``, ``origin``, ``user_agent``, ``open_timeout``,
    ``compression`` ("deflate" by default, a
    :class:`~hub.protocol.permessage_deflate.DeflateConfig`, or None), and the
    connection options ``ping_interval``, ``ping_timeout``, ``close_timeout``, ``max_size``,
    ``max_queue``, ``write_limit``, ``logger``. Anything else (``ssl``, ``sock``,
    ``local_addr``, ``host``/``port`` overrides, ...) goes to ``loop.create_connection()``.
    """

    def __init__(
        self,
        uri: str,
        *,
        create_protocol: Callable[..., WebSocketClientProtocol] | None = None,
        subprotocols: Sequence[str] | None = None,
        extra_headers: HeadersLike | None = None,
        origin: str | None = None,
        user_agent: str | None = "hub",
        open_timeout: float | None = 10,
        compression: Compression = "deflate",
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float = 10,
        max_size: int | None = 2**20,
        max_queue: int = 32,
        write_limit: int = 2**16,
        logger: LoggerLike | None = None,
        **kwargs: Any,
    ) -> None:
        self.uri = parse_uri(uri)
        self.open_timeout = open_timeout
        self._handshake = ClientHandshake(
            host=self.uri.host_header,
            resource=self.uri.resource,
            subprotocols=list(subprotocols or ()),
            origin=origin,
            extra_headers=extra_headers,
            user_agent=user_agent,
            compression=resolve_compression(compression, server=False),
        )
        self._create_protocol = create_protocol or WebSocketClientProtocol
        self._protocol_options: dict[str, Any] = dict(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            max_queue=max_queue,
            write_limit=write_limit,
            logger=logger,
        )
        self._kwargs = kwargs
        self.websocket: WebSocketClientProtocol | None = None

    def _create_connection_args(self) -> dict[str, Any]:
        kwargs = dict(self._kwargs)
        if self.uri.secure:
            kwargs.setdefault("ssl", True)
        elif kwargs.get("ssl") is not None:
            raise InvalidRequest("ssl= given for a ws:// URI; use wss://")
        if kwargs.get("ssl") is True:
            kwargs["ssl"] = ssl_module.create_default_context()
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("server_hostname", self.uri.host)
        if kwargs.get("sock") is None:
            kwargs.setdefault("host", self.uri.host)
            kwargs.setdefault("port", self.uri.port)
        return kwargs

    async def _open_transport(self) -> tuple[asyncio.BaseTransport, WebSocketClientProtocol]:
        loop = asyncio.get_running_loop()
        return await loop.create_connection(
            lambda: self._create_protocol(**self._protocol_options),
            **self._create_connection_args(),
        )

    async def _connect(self) -> WebSocketClientProtocol:
        transport: asyncio.Transport | None = None
        try:
            async with asyncio.timeout(self.open_timeout):
                raw_transport, websocket = await self._open_transport()
                transport = cast(asyncio.Transport, raw_transport)
                await websocket.handshake(self._handshake)
        except TimeoutError as exc:
            if transport is not None:
                transport.abort()
            raise HandshakeTimeout(
                f"opening handshake timed out after {self.open_timeout} s"
            ) from exc
        except BaseException as exc:
            if transport is not None:
                transport.abort()
            if isinstance(exc, HandshakeError):
                logger = self._protocol_options["logger"] or protocol_logger
                logger.info("opening handshake failed: %s", exc)
            raise
        self.websocket = websocket
        return websocket

    def __await__(self) -> Generator[Any, None, WebSocketClientProtocol]:
        return self._connect().__await__()

    async def __aenter__(self) -> WebSocketClientProtocol:
        return await self._connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.websocket is not None
        await self.websocket.close()


class unix_connect(connect):
    """Like :class:`connect`, over a Unix socket at ``path``; ``uri`` only fills the request."""

    def __init__(self, path: str, uri: str = "ws://localhost/", **kwargs: Any) -> None:
        super().__init__(uri, **kwargs)
        self._path = path

    async def _open_transport(self) -> tuple[asyncio.BaseTransport, WebSocketClientProtocol]:
        loop = asyncio.get_running_loop()
        kwargs = {
            k: v for k, v in self._create_connection_args().items() if k not in ("host", "port")
        }
        return await loop.create_unix_connection(
            lambda: self._create_protocol(**self._protocol_options), self._path, **kwargs
        )
