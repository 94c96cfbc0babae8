"""Requests sent without waiting for their replies (docs/protocol.md, "Replies").

The hub publishes a connection's consecutive ``pub``s together (one Redis pipeline per burst),
yet every request must take effect, and be answered, in the order it was sent. Each test runs
on one memory node and on two Redis nodes (publisher on one, subscriber on the other).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.server.conftest import HubProcess, StartHub
from tests.server.peers import TEST_BOUND, Collector, OpenPeer, Peer


@pytest.fixture(params=["memory", "redis"])
async def nodes(
    request: pytest.FixtureRequest, start_hub: StartHub, prefix: str
) -> tuple[HubProcess, HubProcess]:
    """(publisher's node, subscriber's node): one memory node twice, or two Redis nodes."""
    if request.param == "memory":
        node = await start_hub()
        return node, node
    url: str = request.getfixturevalue("redis_url")
    flags = ("--backend", url, "--redis-prefix", prefix)
    first, second = await asyncio.gather(start_hub(*flags), start_hub(*flags))
    return first, second


async def replies(peer: Peer, count: int) -> list[dict[str, Any]]:
    """The next ``count`` ok/error frames; the msgs between them are returned after them."""
    answers: list[dict[str, Any]] = []
    msgs: list[dict[str, Any]] = []
    while len(answers) < count:
        frame = await peer.recv()
        (msgs if frame["op"] == "msg" else answers).append(frame)
    return answers + msgs


async def test_pipelined_requests_take_effect_and_are_answered_in_order(
    nodes: tuple[HubProcess, HubProcess], codec: str, open_peer: OpenPeer, collect: Any
) -> None:
    publisher_node, subscriber_node = nodes
    topic = "pipelined.a"
    async with asyncio.timeout(TEST_BOUND):
        watcher = await open_peer(subscriber_node, codec)
        await watcher.ok("sub", topic=topic)
        watched: Collector = collect(watcher)
        peer = await open_peer(publisher_node, codec)
        requests: list[dict[str, Any]] = [
            *({"op": "pub", "id": i, "topic": topic, "data": i} for i in range(1, 21)),
            {"op": "nope", "id": 21},
            {"op": "pub", "id": 22, "topic": topic, "data": 22},
            {"op": "sub", "id": 23, "topic": topic},  # after pub 22, before pub 24
            {"op": "pub", "id": 24, "topic": topic, "data": 24},
            {"op": "unsub", "id": 25, "topic": topic},
            {"op": "pub", "topic": topic, "data": 26},  # no id: no ok
            {"op": "pub", "id": 27, "topic": topic, "data": 27},
        ]
        for request in requests:
            await peer.send(request)
        frames = await replies(peer, 26)
        answers, msgs = frames[:26], frames[26:]
        assert [f.get("id") for f in answers] == [*range(1, 26), 27]
        assert [f["op"] for f in answers].count("error") == 1
        assert answers[20]["op"] == "error" and answers[20]["code"] == "unknown_op"
        publish_offsets = [f["offset"] for f in answers if f["op"] == "ok" and "epoch" in f]
        assert publish_offsets == [*range(1, 22), 21, 22, 24]
        subscribed = answers[22]
        assert subscribed["recovered"] is False
        # The peer's own subscription began after pub 22 and ended before 26: it may only see
        # pub 24. On Redis, 24 may still be on its way through Redis when the unsub lands.
        same_node = publisher_node is subscriber_node
        if same_node and not msgs:
            msgs.append(await peer.recv())
        own = [(m["offset"], m["data"]) for m in msgs]
        assert (own == [(22, 24)]) if same_node else (own in ([], [(22, 24)]))
        # Everyone else sees every publication once, in publish order.
        received = await watched.wait_for(24)
        assert [m["data"] for m in received] == [*range(1, 21), 22, 24, 26, 27]
        assert [m["offset"] for m in received] == list(range(1, 25))


async def test_publishes_read_before_the_close_are_all_published(
    nodes: tuple[HubProcess, HubProcess], open_peer: OpenPeer, collect: Any
) -> None:
    publisher_node, subscriber_node = nodes
    async with asyncio.timeout(TEST_BOUND):
        watcher = await open_peer(subscriber_node)
        await watcher.ok("sub", topic="closing")
        watched: Collector = collect(watcher)
        peer = await open_peer(publisher_node)
        for i in range(1, 101):
            await peer.send({"op": "pub", "id": i, "topic": "closing", "data": i})
        await peer.ws.close()
        received = await watched.wait_for(100)
        assert [m["data"] for m in received] == list(range(1, 101))
        assert [m["offset"] for m in received] == list(range(1, 101))
