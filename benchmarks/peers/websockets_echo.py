"""Echo server built on the ``websockets`` library: the peer for ``benchmarks/echo.py``.

Every message is sent back as it arrived (text as text, binary as binary). Apart from
``compression`` and ``max_size``, which match the options hub's server is started with, the
server keeps the library's defaults (ping interval, queue and write limits, ...), so the
comparison is against an ordinarily configured ``websockets`` deployment. ``--compression``
is ``none`` by default (``compression=None``, as the throughput benchmark wants); ``deflate``
is the library's own default (permessage-deflate with its default settings).

Run: ``python benchmarks/peers/websockets_echo.py --port 8765``. SIGTERM or SIGINT closes it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, serve


async def echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def run(host: str, port: int, max_size: int, compression: str | None) -> None:
    async with serve(echo, host, port, compression=compression, max_size=max_size) as server:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.close)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-size", type=int, default=16 * 1024 * 1024)
    parser.add_argument(
        "--compression",
        choices=["none", "deflate"],
        default="none",
        help="permessage-deflate: none (default) or deflate, the library's default settings",
    )
    args = parser.parse_args()
    compression = None if args.compression == "none" else args.compression
    asyncio.run(run(args.host, args.port, args.max_size, compression))


if __name__ == "__main__":
    main()
