"""``python -m hub.protocol``: an echo server, for conformance runs (Autobahn) and benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from hub.protocol.asyncio import WebSocketServerProtocol, serve
from hub.protocol.permessage_deflate import Compression, DeflateConfig


async def echo(websocket: WebSocketServerProtocol) -> None:
    async for message in websocket:
        await websocket.send(message)


async def main(host: str, port: int, max_size: int | None, compression: Compression) -> None:
    async with serve(echo, host, port, max_size=max_size, compression=compression) as server:
        stop = asyncio.get_running_loop().create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
        print(f"echo server listening on ws://{host}:{port}/", flush=True)
        await stop
        server.close()


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m hub.protocol", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-size", type=int, default=2**20, help="0 for no limit")
    parser.add_argument(
        "--compression-min-size",
        type=int,
        default=DeflateConfig().min_size,
        help="messages shorter than this are sent uncompressed",
    )
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="do not negotiate permessage-deflate (RFC 7692)",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    compression = None if args.no_compression else DeflateConfig(min_size=args.compression_min_size)
    asyncio.run(main(args.host, args.port, args.max_size or None, compression))


if __name__ == "__main__":
    run()
