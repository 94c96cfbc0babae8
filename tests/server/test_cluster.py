"""Several ``hub-server`` nodes sharing one real ``redis-server`` (issue 5's multi-node tests).

Nodes are real processes (conftest.py) started with ``--backend <redis URL>`` and a key prefix
of the test's own, so that tests on the shared Redis never see each other's topics. Fault tests
use a private redis-server that they stop and restart. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.server.conftest import HubProcess, StartHub
from tests.server.peers import TEST_BOUND, WAIT, Collector, OpenPeer, Peer, assert_msg, http_get

#: Fast reconnects for the fault tests (the defaults are 2 s for both).
FAULT_FLAGS = ("--redis-timeout", "0.5", "--redis-backoff-cap", "0.2")


async def start_nodes(
    start_hub: StartHub, url: str, prefix: str, count: int, *flags: str
) -> list[HubProcess]:
    return list(
        await asyncio.gather(
            *(
                start_hub("--backend", url, "--redis-prefix", prefix, "--node-id", f"n{i}", *flags)
                for i in range(count)
            )
        )
    )


async def health(node: HubProcess) -> tuple[int, dict[str, Any]]:
    status, _, body = await http_get(node.port, "/healthz")
    return status, json.loads(body)


async def wait_health(node: HubProcess, status: int, within: float = WAIT) -> dict[str, Any]:
    """Poll /healthz until it answers ``status`` (the node's view of Redis is not observable
    any other way from outside the process)."""
    async with asyncio.timeout(within):
        while True:
            got, body = await health(node)
            if got == status:
                return body
            await asyncio.sleep(0.05)


async def publish_many(peer: Peer, topic: str, values: range) -> list[dict[str, Any]]:
    """Send every pub at once (ids), then read every reply: concurrent with other publishers."""
    for value in values:
        await peer.send({"op": "pub", "id": value + 1, "topic": topic, "data": value})
    return [await peer.recv() for _ in values]


async def test_a_publication_crosses_nodes_with_one_offset_sequence(
    start_hub: StartHub, redis_url: str, redis_prefix: str, codec: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_url, redis_prefix, 2)
        on_b = await open_peer(b, codec)
        assert on_b.welcome["node"] == "n1"
        subscribed = await on_b.ok("sub", topic="room")
        assert subscribed["offset"] == 0
        publisher = await open_peer(a, codec)
        first = await publisher.ok("pub", topic="room", data={"n": 1})
        second = await publisher.ok("pub", topic="room", data=[2])
        assert (first["offset"], second["offset"]) == (1, 2)
        assert first["epoch"] == second["epoch"] == subscribed["epoch"]
        for expected, data in ((first, {"n": 1}), (second, [2])):
            frame = await on_b.recv()
            assert_msg(
                frame,
                topic="room",
                sub="room",
                data=data,
                offset=expected["offset"],
                epoch=expected["epoch"],
            )
        status, body = await health(a)
        assert status == 200 and body["backend"] == "redis" and body["backend_state"] == "up"


async def test_wildcards_across_nodes_are_narrowed_on_each_node(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer, collect: Any
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_url, redis_prefix, 2)
        single, tail = await open_peer(a), await open_peer(b)
        await single.ok("sub", topic="chat.*")
        await tail.ok("sub", topic="chat.>")
        singles: Collector = collect(single)
        tails: Collector = collect(tail)
        publisher = await open_peer(b)
        for topic in ("chat.a", "chat.a.b", "chats.a", "chat", "chat.b"):
            await publisher.ok("pub", topic=topic, data=topic)
        assert [f["topic"] for f in await singles.wait_for(2)] == ["chat.a", "chat.b"]
        assert [f["topic"] for f in await tails.wait_for(3)] == ["chat.a", "chat.a.b", "chat.b"]
        # A sentinel proves that nothing else was on its way to the single-token subscriber.
        await publisher.ok("pub", topic="chat.z", data="end")
        assert [f["topic"] for f in await singles.wait_for(3)][2] == "chat.z"
        assert all(f["sub"] == "chat.*" for f in singles.frames)
        assert all(f["sub"] == "chat.>" for f in tails.frames)


async def test_every_node_delivers_the_same_order_under_concurrent_publishers(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer, collect: Any
) -> None:
    per_publisher = 150
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes(start_hub, redis_url, redis_prefix, 3)
        subscribers = []
        for node in nodes:
            for pattern in ("race", ">"):
                peer = await open_peer(node)
                await peer.ok("sub", topic=pattern)
                subscribers.append(collect(peer))
        publishers = [await open_peer(nodes[0]), await open_peer(nodes[1])]
        replies = await asyncio.gather(
            publish_many(publishers[0], "race", range(per_publisher)),
            publish_many(publishers[1], "race", range(per_publisher, 2 * per_publisher)),
        )
        offsets = sorted(r["offset"] for batch in replies for r in batch)
        assert offsets == list(range(1, 2 * per_publisher + 1))
        sequences = []
        for collector in subscribers:
            frames = await collector.wait_for(2 * per_publisher, within=10)
            assert [f["offset"] for f in frames] == offsets, "gap, duplicate or disorder"
            sequences.append([f["data"] for f in frames])
        assert all(sequence == sequences[0] for sequence in sequences)
        assert sorted(sequences[0]) == list(range(2 * per_publisher))


async def test_a_killed_node_does_not_stop_the_others(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_url, redis_prefix, 2)
        doomed = await open_peer(a)
        await doomed.ok("sub", topic="room")
        survivor = await open_peer(b)
        await survivor.ok("sub", topic="room")
        a.signal(signal.SIGKILL)
        _, closed = await doomed.closed()
        assert closed.rcvd is None  # killed: no close frame
        publisher = await open_peer(b)
        published = await publisher.ok("pub", topic="room", data="after")
        frame = await survivor.recv()
        assert frame["data"] == "after" and frame["offset"] == published["offset"] == 1
        newcomer = await open_peer(b)
        assert (await newcomer.ok("sub", topic="room"))["offset"] == 1


@pytest.mark.slow
async def test_redis_restarted_during_traffic(
    start_hub: StartHub, redis_server: RedisServer, open_peer: OpenPeer, collect: Any
) -> None:
    """Publishers get ``unavailable`` fast while Redis is down, /healthz says 503, the nodes
    come back by themselves, and subscribers either got every message or are closed with 4010
    (here always 4010: Redis lost its data, so every epoch changed)."""
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_server.url, "fault", 2, *FAULT_FLAGS)
        concrete, wildcard = await open_peer(b), await open_peer(b)
        await concrete.ok("sub", topic="room")
        await wildcard.ok("sub", topic="w.*")
        concretes: Collector = collect(concrete)
        wildcards: Collector = collect(wildcard)
        publisher = await open_peer(a)
        await publisher.ok("sub", topic="held")
        before = [
            await publisher.ok("pub", topic=t, data=i) for i, t in enumerate(["room", "w.x"] * 3)
        ]
        await concretes.wait_for(3)
        await wildcards.wait_for(3)

        redis_server.stop()
        await wait_health(a, 503)
        loop = asyncio.get_running_loop()
        started = loop.time()
        refused = await publisher.error("pub", topic="room", data="while down")
        assert refused["code"] == "unavailable"
        assert loop.time() - started < 1.0, "a publish while Redis is down must fail fast"
        refused_sub = await publisher.error("sub", topic="elsewhere")
        assert refused_sub["code"] == "unavailable"
        # A refused sub leaves no subscription behind, and takes none away.
        assert (await publisher.error("unsub", topic="elsewhere"))["code"] == "not_subscribed"
        assert (await publisher.error("sub", topic="held"))["code"] == "unavailable"
        await publisher.ok("unsub", topic="held")
        body = await wait_health(b, 503)
        assert body["status"] == "unavailable" and body["backend_state"] == "down"

        redis_server.start()
        for node in (a, b):
            assert (await wait_health(node, 200, within=10))["backend_state"] == "up"
        for collector in (concretes, wildcards):
            closed = await collector.wait_closed()
            assert closed.rcvd is not None and closed.rcvd.code == 4010, closed
            # What arrived before the close is gapless, in order, and nothing is duplicated.
            assert [f["offset"] for f in collector.frames] == [1, 2, 3]

        after = await publisher.ok("pub", topic="room", data="after")
        assert after["offset"] == 1 and after["epoch"] != before[0]["epoch"]
        newcomer = await open_peer(b)
        assert (await newcomer.ok("sub", topic="room"))["epoch"] == after["epoch"]


async def test_start_fails_clearly_when_redis_is_unreachable(redis_server: RedisServer) -> None:
    url = redis_server.url.replace("redis://", "redis://:s3cret@")
    redis_server.stop()
    process = HubProcess(("--backend", url, *FAULT_FLAGS))
    try:
        assert await asyncio.to_thread(process.wait, WAIT) == 1
        assert process.find_line("cannot start") is not None, process.describe()
        assert "s3cret" not in process.log, process.log
    finally:
        process.stop()
