#!/usr/bin/env python3
"""Reference echo server built on the ``websockets`` library.

Only used to validate the Autobahn harness (run.py) while hub's own server is
not available; it takes the same command-line options as
``python -m hub.protocol``.
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


async def amain(args: argparse.Namespace) -> None:
    async with serve(echo, args.host, args.port, max_size=args.max_size) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-size", type=int, default=2**25)
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
