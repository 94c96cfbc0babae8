"""The hub's limits: publishes per connection (rate_limited, then 4029), handshakes per address
and connections per user (HTTP 429)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest

from hub.protocol import InvalidStatus, connect
from tests.server.conftest import StartHub
from tests.server.peers import TEST_BOUND, WAIT, OpenPeer


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


async def test_handshakes_over_the_rate_of_an_address_get_429(
    start_hub: StartHub, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await start_hub("--handshake-rate", "0.5", "--handshake-burst", "3")
        peers = [await open_peer(node) for _ in range(3)]  # the burst
        with pytest.raises(InvalidStatus) as refused:
            await connect(node.uri, open_timeout=WAIT)
        assert refused.value.status == 429
        # Those already connected are served as before.
        for peer in peers:
            await peer.ok("sub", topic="still.here")


async def test_connections_per_user_are_bounded(start_hub: StartHub, open_peer: OpenPeer) -> None:
    secret = "a-shared-secret-of-at-least-32-bytes!"
    keys = json.dumps([{"alg": "HS256", "key": secret}])
    async with asyncio.timeout(TEST_BOUND):
        node = await start_hub(
            "--auth", "required", "--auth-keys", keys, "--max-connections-per-user", "2"
        )

        def token(user: str) -> str:
            claims = {"sub": user, "exp": time.time() + 60, "subscribe": [">"], "publish": [">"]}
            return jwt.encode(claims, secret, algorithm="HS256")

        def as_(user: str) -> dict[str, Any]:
            return {"extra_headers": [("Authorization", f"Bearer {token(user)}")]}

        first = await open_peer(node, **as_("ana"))
        await open_peer(node, **as_("ana"))
        with pytest.raises(InvalidStatus) as refused:
            await connect(node.uri, open_timeout=WAIT, **as_("ana"))
        assert refused.value.status == 429
        await open_peer(node, **as_("bob"))  # another user is not affected
        await first.ws.close()
        await first.ws.wait_closed()
        # The slot is free once the hub has seen the close: retry until it has.
        while True:
            try:
                again = await connect(node.uri, open_timeout=WAIT, **as_("ana"))
                break
            except InvalidStatus as exc:
                assert exc.status == 429
                await asyncio.sleep(0.02)
        await again.close()
