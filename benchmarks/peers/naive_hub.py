"""A naive pub/sub hub built on the ``websockets`` library: the peer for ``benchmarks/fanout.py``.

It speaks the JSON subset of hub's wire protocol (PROTOCOL.md) that the fan-out benchmark uses:

- a ``welcome`` frame first on every connection;
- ``sub`` (a concrete topic; patterns are not matched) answered by ``ok`` with ``epoch``,
  ``offset`` and ``recovered: false``, and ``unsub`` answered by ``ok``;
- ``pub``, answered by ``ok`` with ``offset`` and ``epoch`` only when it has an ``id``;
- every publication goes to each subscriber of its topic as ``{"op": "msg", "topic", "sub",
  "data", "offset", "epoch"}``, with a per-topic offset counter, in the field order and the
  compact JSON that hub's server sends, so both servers write the same bytes.

State is a dict topic -> set of connections. The ``msg`` is encoded once per publication and
fanned out with ``websockets.broadcast()``, which writes it to every connection at once with no
backpressure and no per-connection queue. Anything else gets an ``error`` frame. Apart from
``compression=None`` and the ping interval (set to match the hub-server command of the
benchmark), the server keeps the library's defaults. ``--compression deflate`` turns on the
library's own default permessage-deflate instead (``benchmarks/memory.py --mode hub`` measures
both); ``none`` stays the default.

Run: ``python benchmarks/peers/naive_hub.py --port 8765``. SIGTERM or SIGINT closes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import NegotiationError
from websockets.typing import Subprotocol

SUBPROTOCOL = Subprotocol("hub.v1.json")
EPOCH = secrets.token_hex(8)
NODE = secrets.token_hex(6)

encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
topics: dict[str, set[ServerConnection]] = {}
offsets: dict[str, int] = {}


def error(code: str, text: str, request_id: object) -> str:
    reply: dict[str, Any] = {"op": "error", "code": code, "message": text}
    if request_id is not None:
        reply["id"] = request_id
    return encode(reply)


def ok(request_id: object, **fields: Any) -> str | None:
    return None if request_id is None else encode({"op": "ok", "id": request_id, **fields})


def handle(connection: ServerConnection, subscribed: set[str], frame: str | bytes) -> str | None:
    """Act on one request; return the reply to send, if any."""
    if not isinstance(frame, str):
        return error("bad_request", "hub.v1.json takes text frames", None)
    try:
        request = json.loads(frame)
    except ValueError:
        return error("bad_request", "invalid JSON", None)
    if not isinstance(request, dict):
        return error("bad_request", "a request is a JSON object", None)
    request_id = request.get("id")
    op = request.get("op")
    topic = request.get("topic")
    if op not in ("sub", "unsub", "pub"):
        return error("unknown_op", f"unknown op {op!r}", request_id)
    if not isinstance(topic, str) or not topic:
        return error("invalid_topic", "topic must be a non-empty string", request_id)
    if op == "pub":
        offset = offsets.get(topic, 0) + 1
        offsets[topic] = offset
        message = {
            "op": "msg",
            "topic": topic,
            "sub": topic,
            "data": request.get("data"),
            "offset": offset,
            "epoch": EPOCH,
        }
        subscribers = topics.get(topic)
        if subscribers:
            broadcast(subscribers, encode(message))
        return ok(request_id, offset=offset, epoch=EPOCH)
    if op == "sub":
        topics.setdefault(topic, set()).add(connection)
        subscribed.add(topic)
        return ok(request_id, recovered=False, epoch=EPOCH, offset=offsets.get(topic, 0))
    if topic not in subscribed:
        return error("not_subscribed", f"not subscribed to {topic!r}", request_id)
    unsubscribe(connection, topic)
    subscribed.discard(topic)
    return ok(request_id)


def unsubscribe(connection: ServerConnection, topic: str) -> None:
    subscribers = topics.get(topic)
    if subscribers is not None:
        subscribers.discard(connection)
        if not subscribers:
            del topics[topic]


async def session(connection: ServerConnection) -> None:
    subscribed: set[str] = set()
    client = secrets.token_hex(8)
    try:
        await connection.send(
            encode({"op": "welcome", "client": client, "node": NODE, "version": 1})
        )
        async for frame in connection:
            reply = handle(connection, subscribed, frame)
            if reply is not None:
                await connection.send(reply)
    finally:
        for topic in subscribed:
            unsubscribe(connection, topic)


def select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """As PROTOCOL.md says: none offered means JSON; only unknown ones are refused (400)."""
    if not offered:
        return None
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    raise NegotiationError(f"unsupported subprotocols {list(offered)}; use {SUBPROTOCOL}")


async def run(
    host: str, port: int, ping_interval: float | None, compression: str | None = None
) -> None:
    async with serve(
        session,
        host,
        port,
        subprotocols=[SUBPROTOCOL],
        select_subprotocol=select_subprotocol,
        compression=compression,
        ping_interval=ping_interval,
    ) as server:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.close)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=20.0,
        help="seconds between keepalive pings; 0 for none (default 20, the library's)",
    )
    parser.add_argument(
        "--compression",
        choices=["none", "deflate"],
        default="none",
        help="permessage-deflate: none (default) or deflate, the library's default settings",
    )
    args = parser.parse_args()
    compression = None if args.compression == "none" else args.compression
    asyncio.run(run(args.host, args.port, args.ping_interval or None, compression))


if __name__ == "__main__":
    main()
