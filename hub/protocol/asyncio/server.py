"""The asyncio server: ``serve()`` / ``unix_serve()``, the server object and the per-connection
protocol that runs the opening handshake and then the application's handler.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, cast

from hub.exceptions import ConnectionClosed, HandshakeError, InvalidVersion
from hub.protocol.asyncio.connection import LoggerLike, WebSocketCommonProtocol
from hub.protocol.connection import SERVER, Connection, protocol_logger
from hub.protocol.handshake import SelectSubprotocol, ServerHandshake, http_response, reject
from hub.protocol.http11 import Headers, HeadersLike, HeadParser, Request, Response
from hub.protocol.permessage_deflate import Compression, resolve_compression

__all__ = [
    "HTTPResponse",
    "Handler",
    "WebSocketServer",
    "WebSocketServerProtocol",
    "serve",
    "unix_serve",
]

Handler = Callable[..., Awaitable[Any]]
#: What ``process_request`` returns to answer plain HTTP instead of upgrading.
HTTPResponse = tuple[int, HeadersLike, bytes]
ProcessRequest = Callable[[str, Headers], "HTTPResponse | Awaitable[HTTPResponse | None] | None"]


def _takes_path(handler: Handler) -> bool:
    """Whether to call ``handler(websocket, path)`` (the classic form) or ``handler(websocket)``."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # builtins and some callables have no signature
        return True
    try:
        signature.bind(None, None)
    except TypeError:
        return False
    return True


class WebSocketServerProtocol(WebSocketCommonProtocol):
    """The server side of one connection. Subclass it (``create_protocol=``) to override hooks:

    - :meth:`process_request` to answer plain HTTP (a health check, say) before the upgrade;
    - :meth:`select_subprotocol` to choose a subprotocol from the client's offer.
    """

    side = SERVER

    def __init__(
        self,
        handler: Handler,
        ws_server: WebSocketServer,
        *,
        origins: Sequence[str | None] | None = None,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        extra_headers: HeadersLike | None = None,
        process_request: ProcessRequest | None = None,
        open_timeout: float | None = 10,
        compression: Compression = "deflate",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.handler = handler
        self.ws_server = ws_server
        self.open_timeout = open_timeout
        self._process_request = process_request
        self._select_subprotocol = select_subprotocol
        self.handshake = ServerHandshake(
            origins=origins,
            subprotocols=list(subprotocols or ()),
            select_subprotocol=self.select_subprotocol,
            extra_headers=extra_headers,
            compression=resolve_compression(compression, server=True),
            logger=self.logger,
        )
        self._head_parser = HeadParser(is_request=True)
        self._request: asyncio.Future[Request] = self.loop.create_future()
        self.handler_task: asyncio.Task[None] | None = None

    # --- hooks ------------------------------------------------------------------------------------

    def process_request(
        self, path: str, request_headers: Headers
    ) -> HTTPResponse | Awaitable[HTTPResponse | None] | None:
        """Return ``(status, headers, body)`` to answer with plain HTTP, or None to upgrade.

        May be a coroutine. The default calls the ``process_request`` option of ``serve()``.
        """
        if self._process_request is not None:
            return self._process_request(path, request_headers)
        return None

    def select_subprotocol(self, offered: Sequence[str], supported: Sequence[str]) -> str | None:
        """Pick a subprotocol; the default prefers the server's order among those offered."""
        if self._select_subprotocol is not None:
            return self._select_subprotocol(offered, supported)
        return next((p for p in supported if p in offered), None)

    # --- connection lifecycle ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.ws_server.register(self):
            # The server is shutting down: refuse politely rather than start a handshake.
            self._write_response(reject(503, "server is shutting down"))
            return
        self.handler_task = self.loop.create_task(self._run())

    def handshake_data_received(self, data: bytes) -> None:
        if self._request.done():
            # RFC 6455 section 4.1: the client waits for our response before sending frames;
            # keep anything early, it is fed to the connection once the handshake is done.
            self._head_parser.rest += data
            return
        try:
            request = self._head_parser.feed(data)
        except HandshakeError as exc:
            self._request.set_exception(exc)
            return
        if request is not None:
            self._request.set_result(cast(Request, request))

    def connection_closed(self) -> None:
        if not self._request.done():
            self._request.cancel()

    async def _run(self) -> None:
        try:
            if not await self._handshake():
                return
            await self._run_handler()
        finally:
            self.ws_server.unregister(self)

    async def _handshake(self) -> bool:
        """Run the opening handshake; True if the connection is now open."""
        try:
            async with asyncio.timeout(self.open_timeout):
                request = await self._request
                self.path = request.path
                self.request_headers = request.headers
                answer = self.process_request(request.path, request.headers)
                if inspect.isawaitable(answer):
                    answer = await answer
            if answer is not None:
                self._write_response(http_response(*answer))
                return False
            response, self.subprotocol, deflate = self.handshake.accept(request)
        except HandshakeError as exc:
            self.logger.info("opening handshake failed (%d): %s", exc.status, exc)
            extra = [("Sec-WebSocket-Version", "13")] if isinstance(exc, InvalidVersion) else None
            self._write_response(
                reject(exc.status, f"Failed to open a WebSocket connection: {exc}.", extra)
            )
            return False
        except TimeoutError:
            self.logger.info("opening handshake timed out after %s s", self.open_timeout)
            self._abort()
            return False
        except asyncio.CancelledError:
            if self.transport is not None and self.transport.is_closing():
                return False  # The client went away during the handshake.
            raise
        except Exception:
            # A hook (process_request, select_subprotocol) failed: our bug, not the client's.
            self.logger.error("opening handshake hook failed", exc_info=True)
            self._write_response(
                reject(500, "Failed to open a WebSocket connection: internal error.")
            )
            return False
        self.response_headers = response.headers
        assert self.transport is not None
        self.transport.write(response.serialize())
        self.connection_opened(
            Connection(SERVER, max_size=self.max_size, logger=self.logger, deflate=deflate),
            self._head_parser.rest,
        )
        return True

    async def _run_handler(self) -> None:
        try:
            if self.ws_server.handler_takes_path:
                await self.handler(self, self.path)
            else:
                await self.handler(self)
        except ConnectionClosed as exc:
            # The peer closed or broke the connection under the handler: not a handler bug.
            self.logger.debug("connection closed during handler: %s", exc)
        except Exception:
            self.logger.error("connection handler failed", exc_info=True)
            if self.open:
                await self.close(1011, "internal error")
        await self.close()

    def _write_response(self, response: Response) -> None:
        assert self.transport is not None
        self.transport.write(response.serialize())
        self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class WebSocketServer:
    """A running server: ``close()`` it, ``await wait_closed()``; ``sockets`` are the listeners.

    Closing stops accepting connections, closes every open connection with 1001 (going away)
    and waits for every handler to return.
    """

    def __init__(self, handler: Handler, logger: LoggerLike | None = None) -> None:
        self.handler_takes_path = _takes_path(handler)
        self.logger = logger or protocol_logger
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[WebSocketServerProtocol] = set()
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.get_running_loop().create_future()

    def wrap(self, server: asyncio.AbstractServer) -> None:
        self.server = server
        for sock in getattr(server, "sockets", ()):
            self.logger.info("server listening on %s", sock.getsockname())

    def register(self, protocol: WebSocketServerProtocol) -> bool:
        if self._closing is not None:
            return False
        self.connections.add(protocol)
        return True

    def unregister(self, protocol: WebSocketServerProtocol) -> None:
        self.connections.discard(protocol)

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(getattr(self.server, "sockets", ()) or ())

    def is_serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

    def close(self) -> None:
        """Start the shutdown; ``await wait_closed()`` to wait for it to finish."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        try:
            if self.server is not None:
                self.server.close()
            connections = list(self.connections)
            await asyncio.gather(
                *(
                    ws.close(1001, "server shutting down")
                    for ws in connections
                    if ws.core is not None
                ),
                return_exceptions=True,
            )
            for ws in connections:
                if ws.core is None and ws.transport is not None:
                    ws.transport.close()  # still in the handshake: nothing to say goodbye with
            tasks = [ws.handler_task for ws in connections if ws.handler_task is not None]
            if tasks:
                await asyncio.wait(tasks)
            if self.server is not None:
                await self.server.wait_closed()
        finally:
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        assert self.server is not None
        await cast(asyncio.Server, self.server).serve_forever()

    async def __aenter__(self) -> WebSocketServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


class serve:
    """Start a WebSocket server: ``server = await serve(handler, host, port)`` or
    ``async with serve(handler, host, port) as server:``.

    ``handler(websocket, path)`` (or ``handler(websocket)``) runs for each connection; the
    connection is closed with 1000 when it returns and 1011 when it raises. Options:

    - ``create_protocol``: a :class:`WebSocketServerProtocol` subclass or factory;
    - handshake: ``origins``, ``subprotocols``, ``select_subprotocol``, ``extra_headers``,
      ``process_request``, ``open_timeout``, ``compression`` ("deflate" by default, a
      :class:`~hub.protocol.permessage_deflate.DeflateConfig`, or None);
    - connection: ``ping_interval``, ``ping_timeout``, ``close_timeout``, ``max_size``,
      ``max_queue``, ``write_limit``, ``logger``;
    - anything else (``sock``, ``ssl``, ``reuse_port``, ...) goes to ``loop.create_server()``.
    """

    _unix = False

    def __init__(
        self,
        handler: Handler,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        create_protocol: Callable[..., WebSocketServerProtocol] | None = None,
        logger: LoggerLike | None = None,
        origins: Sequence[str | None] | None = None,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        extra_headers: HeadersLike | None = None,
        process_request: ProcessRequest | None = None,
        open_timeout: float | None = 10,
        compression: Compression = "deflate",
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float = 10,
        max_size: int | None = 2**20,
        max_queue: int = 32,
        write_limit: int = 2**16,
        **kwargs: Any,
    ) -> None:
        self.handler = handler
        self.ws_server: WebSocketServer | None = None
        self._factory_options: dict[str, Any] = dict(
            logger=logger,
            origins=origins,
            subprotocols=subprotocols,
            select_subprotocol=select_subprotocol,
            extra_headers=extra_headers,
            process_request=process_request,
            open_timeout=open_timeout,
            # Resolved once: a bad value fails here, not at each accepted connection.
            compression=resolve_compression(compression, server=True),
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            max_queue=max_queue,
            write_limit=write_limit,
        )
        self._create_protocol = create_protocol or WebSocketServerProtocol
        self._logger = logger
        self._host, self._port, self._kwargs = host, port, kwargs

    async def _start(self) -> WebSocketServer:
        loop = asyncio.get_running_loop()
        ws_server = WebSocketServer(self.handler, self._logger)
        factory = functools.partial(
            self._create_protocol, self.handler, ws_server, **self._factory_options
        )
        if self._unix:
            server = await loop.create_unix_server(factory, self._host, **self._kwargs)  # type: ignore[arg-type]
        else:
            server = await loop.create_server(factory, self._host, self._port, **self._kwargs)
        ws_server.wrap(server)
        self.ws_server = ws_server
        return ws_server

    def __await__(self) -> Generator[Any, None, WebSocketServer]:
        return self._start().__await__()

    async def __aenter__(self) -> WebSocketServer:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.ws_server is not None
        self.ws_server.close()
        await self.ws_server.wait_closed()


class unix_serve(serve):
    """Like :class:`serve`, on a Unix socket: ``unix_serve(handler, path)``."""

    _unix = True

    def __init__(self, handler: Handler, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(handler, path, None, **kwargs)
