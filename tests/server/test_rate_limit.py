"""The publish rate limit of a connection: rate_limited replies, then 4029 for persistent abuse."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.server.conftest import StartHub
from tests.server.peers import TEST_BOUND, OpenPeer


async def test_publishes_over_the_rate_are_refused_then_the_abuser_is_closed(
    start_hub: StartHub, open_peer: OpenPeer, collect: Any
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await start_hub(
            "--publish-rate", "1", "--publish-burst", "5", "--rate-limit-strikes", "3"
        )
        bystander = await open_peer(node)
        await bystander.ok("sub", topic="rl")
        abuser = await open_peer(node)
        for i in range(1, 11):
            await abuser.send({"op": "pub", "id": i, "topic": "rl", "data": i})
        frames, closed = await abuser.closed()
        replies = [f for f in frames if f["op"] in ("ok", "error")]
        assert [f["op"] for f in replies[:5]] == ["ok"] * 5  # the burst
        refused = replies[5:]
        assert refused and all(f["code"] == "rate_limited" for f in refused), refused
        assert len(refused) == 3  # closed at the third strike; nothing is served after it
        assert closed.rcvd is not None and closed.rcvd.code == 4029
        # Everybody else goes on: the bystander got the five accepted publications, and the
        # node still serves it.
        received = [await bystander.recv() for _ in range(5)]
        assert [m["data"] for m in received] == [1, 2, 3, 4, 5]
        await bystander.ok("history", topic="rl")
