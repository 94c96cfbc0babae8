"""The Redis ACL user that docs/deployment.md gives is enough for everything a node does."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from hub.protocol import connect
from hub.server.app import Hub
from hub.server.settings import Settings
from tests.redis_server import RedisServer

DEPLOYMENT = Path(__file__).parents[2] / "docs" / "deployment.md"
PASSWORD = "a-long-password"


def documented_acl() -> list[str]:
    match = re.search(r"^ACL SETUSER hub on .*$", DEPLOYMENT.read_text(), re.MULTILINE)
    assert match is not None, "docs/deployment.md lost its ACL line"
    return shlex.split(match.group(0))


async def test_the_documented_acl_user_runs_a_node(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server.client() as admin:
        admin.execute_command(*documented_acl())
    url = f"redis://hub:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    # A short ttl: heartbeats and sweeps run during the test, under the same user.
    settings = Settings(backend=url, presence_topics=["room.>"], presence_ttl=0.3)
    async with asyncio.timeout(10), Hub(settings) as hub:
        server = await hub.serve(port=0)
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/") as websocket:
            welcome = json.loads(await websocket.recv())

            async def ask(request: dict[str, Any]) -> dict[str, Any]:
                await websocket.send(json.dumps(request))
                while True:
                    reply: dict[str, Any] = json.loads(await websocket.recv())
                    if reply.get("id") == request["id"]:
                        assert reply["op"] == "ok", reply
                        return reply

            await ask({"op": "sub", "id": 1, "topic": "room.*", "join_leave": True})
            await ask({"op": "sub", "id": 2, "topic": "room.1"})
            await ask({"op": "pub", "id": 3, "topic": "room.1", "data": "hi"})
            history = await ask({"op": "history", "id": 4, "topic": "room.1"})
            assert [m["data"] for m in history["messages"]] == ["hi"]
            presence = await ask({"op": "presence", "id": 5, "topic": "room.1"})
            assert presence["clients"] == [{"client": welcome["client"], "user": None}]
            await ask({"op": "sub", "id": 6, "topic": "room.>", "recover": {"since": 0}})
            await asyncio.sleep(0.5)  # heartbeats and sweeps, which only log when refused
            await ask({"op": "unsub", "id": 7, "topic": "room.1"})
    # A refused command is logged (or fails a request above): nothing may be.
    complaints = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not complaints, complaints
