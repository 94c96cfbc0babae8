"""Embed a hub in your own asyncio application: publish and subscribe in-process, and serve
WebSocket clients from the same event loop. Runs to completion by itself:

    .venv/bin/python examples/embedded_hub.py
"""

from __future__ import annotations

import asyncio
import json

from hub.protocol import connect
from hub.server import Hub, Settings


async def main() -> None:
    async with Hub(Settings(port=0)) as hub:
        # In-process: no network hop.
        updates = await hub.subscribe("orders.*")
        _epoch, offset = await hub.publish("orders.created", {"id": 1, "total": 9.5})
        message = await updates.get()
        print("in-process:", message["topic"], message["data"], "offset", offset)

        # The same hub, served to WebSocket clients on a port of this event loop.
        server = await hub.serve(port=0)
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", subprotocols=["hub.v1.json"]) as client:
            welcome = json.loads(await client.recv())
            await client.send(json.dumps({"op": "sub", "topic": "orders.>", "id": 1}))
            assert json.loads(await client.recv())["op"] == "ok"
            await hub.publish("orders.shipped", {"id": 1})  # from the application...
            received = json.loads(await client.recv())  # ...to the network client
            print("websocket client", welcome["client"], "got", received["topic"], received["data"])
            print("the in-process subscriber got it too:", (await updates.get())["topic"])


if __name__ == "__main__":
    asyncio.run(main())
