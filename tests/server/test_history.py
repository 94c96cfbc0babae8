"""The ``history`` op (docs/protocol.md, "history"), against real hub-server processes.

Every test runs on one memory node and on two Redis nodes: publications are made on the first
node and history is read on the second (recovery_support.py, ``start_nodes``). Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.server.peers import TEST_BOUND, OpenPeer, Peer, same
from tests.server.recovery_support import (
    StartNodes,
    hub_time_ok,
    now_ms,
    offsets,
    payload,
    publish,
    start_nodes_fixture,  # noqa: F401 (the start_nodes fixture)
)

#: The fields of a history reply, and of each of its messages.
REPLY_FIELDS = {"op", "id", "epoch", "offset", "messages"}
ENTRY_FIELDS = {"offset", "data", "time"}


async def history(peer: Peer, topic: str, **fields: Any) -> dict[str, Any]:
    """A history request that must succeed, with exactly the reply fields of the spec."""
    reply = await peer.ok("history", topic=topic, **fields)
    assert reply.keys() == REPLY_FIELDS, f"history reply fields: {reply}"
    assert isinstance(reply["messages"], list), reply
    return reply


def rules(*entries: dict[str, Any]) -> tuple[str, str]:
    return ("--history-rules", json.dumps(list(entries)))


async def test_history_without_since_serves_the_retained_window(
    start_nodes: StartNodes, codec: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "5")
        publisher = await open_peer(nodes.publisher, codec)
        reader = await open_peer(nodes.reader, codec)
        before = now_ms()
        published = await publish(publisher, "h.a", [payload(codec, n) for n in range(1, 9)])
        after = now_ms()
        epoch = published[0]["epoch"]

        reply = await history(reader, "h.a")
        assert (reply["epoch"], reply["offset"]) == (epoch, 8)
        messages = reply["messages"]
        assert offsets(messages) == [4, 5, 6, 7, 8], "the 5 newest, oldest first"
        for message in messages:
            assert message.keys() == ENTRY_FIELDS, f"history entry fields: {message}"
            assert same(message["data"], payload(codec, message["offset"])), message
            assert hub_time_ok(message["time"], before, after), (before, message, after)
        times = [m["time"] for m in messages]
        assert times == sorted(times), f"times decrease: {times}"

        newest = await history(reader, "h.a", reverse=True)
        assert newest["messages"] == messages[::-1]
        assert offsets((await history(reader, "h.a", limit=2))["messages"]) == [4, 5]
        oldest_two = await history(reader, "h.a", limit=2, reverse=False)
        assert offsets(oldest_two["messages"]) == [4, 5]
        newest_two = await history(reader, "h.a", limit=2, reverse=True)
        assert offsets(newest_two["messages"]) == [8, 7]
        assert offsets((await history(reader, "h.a", limit=50))["messages"]) == [4, 5, 6, 7, 8]


async def test_history_since_in_the_window_serves_only_what_follows(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "5")
        publisher, reader = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        published = await publish(publisher, "h.a", [f"v{n}" for n in range(1, 9)])
        epoch = published[0]["epoch"]

        def since(offset: int) -> dict[str, Any]:
            return {"since": {"epoch": epoch, "offset": offset}}

        reply = await history(reader, "h.a", **since(5))
        assert (reply["epoch"], reply["offset"]) == (epoch, 8)
        assert [(m["offset"], m["data"]) for m in reply["messages"]] == [
            (6, "v6"),
            (7, "v7"),
            (8, "v8"),
        ]
        assert offsets((await history(reader, "h.a", **since(5), limit=2))["messages"]) == [6, 7]
        newest = await history(reader, "h.a", **since(5), reverse=True)
        assert offsets(newest["messages"]) == [8, 7, 6]
        newest_two = await history(reader, "h.a", **since(5), reverse=True, limit=2)
        assert offsets(newest_two["messages"]) == [8, 7], "the limit newest after since"
        # The window's edge: since + 1 is the oldest retained publication.
        assert offsets((await history(reader, "h.a", **since(3)))["messages"]) == [4, 5, 6, 7, 8]
        # At the head, nothing follows; nor after a position from the future.
        for offset in (8, 20):
            reply = await history(reader, "h.a", **since(offset))
            assert (reply["offset"], reply["messages"]) == (8, []), reply


async def test_history_since_before_the_window_shows_the_gap(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    """Trimmed by size: the oldest message is not since + 1, so the client sees the gap."""
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "5")
        publisher, reader = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        epoch = (await publish(publisher, "h.a", range(1, 9)))[0]["epoch"]
        for offset in (0, 1, 2):
            reply = await history(reader, "h.a", since={"epoch": epoch, "offset": offset})
            assert (reply["epoch"], reply["offset"]) == (epoch, 8)
            assert offsets(reply["messages"]) == [4, 5, 6, 7, 8]
            assert reply["messages"][0]["offset"] != offset + 1
        reply = await history(reader, "h.a", since={"epoch": epoch, "offset": 1}, limit=2)
        assert offsets(reply["messages"]) == [4, 5]


async def test_history_since_another_epoch_is_as_without_since(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "5")
        publisher, reader = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        epoch = (await publish(publisher, "h.a", range(1, 9)))[0]["epoch"]
        other = {"epoch": epoch + "x", "offset": 6}
        reply = await history(reader, "h.a", since=other)
        assert (reply["epoch"], reply["offset"]) == (epoch, 8), "the topic's own epoch"
        assert offsets(reply["messages"]) == [4, 5, 6, 7, 8]
        assert offsets((await history(reader, "h.a", since=other, limit=2))["messages"]) == [4, 5]
        newest = await history(reader, "h.a", since=other, limit=2, reverse=True)
        assert offsets(newest["messages"]) == [8, 7]


async def test_history_limit_defaults_to_and_is_capped_by_the_recovery_limit(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10", "--recovery-limit", "3")
        publisher, reader = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        epoch = (await publish(publisher, "h.a", range(1, 7)))[0]["epoch"]
        assert offsets((await history(reader, "h.a"))["messages"]) == [1, 2, 3]
        assert offsets((await history(reader, "h.a", reverse=True))["messages"]) == [6, 5, 4]
        assert offsets((await history(reader, "h.a", limit=100))["messages"]) == [1, 2, 3]
        assert offsets((await history(reader, "h.a", limit=2))["messages"]) == [1, 2]
        since = {"epoch": epoch, "offset": 1}
        assert offsets((await history(reader, "h.a", since=since))["messages"]) == [2, 3, 4]


async def test_history_of_a_topic_never_published_is_empty(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes()
        reader = await open_peer(nodes.reader)
        reply = await history(reader, "h.never")
        assert isinstance(reply["epoch"], str) and reply["epoch"]
        assert (reply["offset"], reply["messages"]) == (0, [])
        # The epoch named is the one the first publication gets.
        publisher = await open_peer(nodes.publisher)
        (first,) = await publish(publisher, "h.never", ["first"])
        assert (first["epoch"], first["offset"]) == (reply["epoch"], 1)


async def test_history_off_with_size_zero(start_nodes: StartNodes, open_peer: OpenPeer) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "0")
        publisher, reader = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        epoch = (await publish(publisher, "h.a", range(1, 4)))[0]["epoch"]
        reply = await history(reader, "h.a")
        assert (reply["epoch"], reply["offset"], reply["messages"]) == (epoch, 3, [])
        since = {"epoch": epoch, "offset": 1}
        assert (await history(reader, "h.a", since=since, reverse=True))["messages"] == []


async def test_history_rules_set_the_size_per_pattern_and_the_first_match_wins(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes(
            "--history-size",
            "2",
            *rules(
                {"pattern": "r.keep", "size": 4, "ttl": 300},
                {"pattern": "r.*", "size": 0, "ttl": 300},
                {"pattern": "big.>", "size": 10, "ttl": 300},
            ),
        )
        publisher, reader = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        expected = {
            "r.keep": [3, 4, 5, 6],  # the first rule, though the second matches too
            "r.off": [],  # history off by a rule
            "big.a.b": [1, 2, 3, 4, 5, 6],
            "plain": [5, 6],  # no rule: the default size
        }
        for topic in expected:
            await publish(publisher, topic, range(1, 7))
        for topic, kept in expected.items():
            reply = await history(reader, topic)
            assert reply["offset"] == 6, reply
            assert offsets(reply["messages"]) == kept, f"{topic}: {reply}"


async def test_history_times_are_hub_milliseconds_in_offset_order(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    """Publications from both nodes (on Redis) interleave; time never decreases by offset."""
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "100")
        first, second = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        before = now_ms()
        for round_ in range(5):
            await asyncio.gather(
                publish(first, "h.t", [f"a{round_}.{i}" for i in range(5)]),
                publish(second, "h.t", [f"b{round_}.{i}" for i in range(5)]),
            )
            await asyncio.sleep(0.003)  # let the wall clock move between rounds
        after = now_ms()
        messages = (await history(first, "h.t"))["messages"]
        assert offsets(messages) == list(range(1, 51))
        times = [m["time"] for m in messages]
        assert all(hub_time_ok(t, before, after) for t in times), (before, times, after)
        assert times == sorted(times), f"time decreases along the offsets: {times}"
        assert times[-1] > times[0], "ms resolution: 15 ms of publishing span several values"


async def test_history_of_a_pattern_is_invalid_topic(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes()
        reader = await open_peer(nodes.reader)
        for topic in ("h.*", "h.>", "*.a", ">", "h..a"):
            refused = await reader.error("history", topic=topic)
            assert refused["code"] == "invalid_topic", (topic, refused)
        await history(reader, "h.a")  # the connection stays open


BAD_SINCE: list[object] = [
    "e",
    5,
    [],
    {},
    {"epoch": "e"},
    {"offset": 1},
    {"epoch": 5, "offset": 1},
    {"epoch": "e", "offset": -1},
    {"epoch": "e", "offset": "1"},
    {"epoch": "e", "offset": 1.5},
    {"epoch": "e", "offset": True},
]
BAD_LIMIT: list[object] = [0, -1, "5", 1.5, True, [5]]
BAD_REVERSE: list[object] = ["yes", "true", 1, 0, []]
MALFORMED: list[dict[str, object]] = [
    *({"since": value} for value in BAD_SINCE),
    *({"limit": value} for value in BAD_LIMIT),
    *({"reverse": value} for value in BAD_REVERSE),
]


async def test_history_with_a_malformed_since_limit_or_reverse_is_bad_request(
    start_nodes: StartNodes, codec: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes()
        publisher = await open_peer(nodes.publisher, codec)
        reader = await open_peer(nodes.reader, codec)
        await publish(publisher, "h.a", ["x"])
        for fields in MALFORMED:
            refused = await reader.error("history", topic="h.a", **fields)
            assert refused["code"] == "bad_request", (fields, refused)
            # A valid request between them keeps the bad-frame count from closing us.
            assert offsets((await history(reader, "h.a"))["messages"]) == [1]


@pytest.mark.slow
async def test_history_never_serves_publications_older_than_the_ttl(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10", "--history-ttl", "2")
        publisher, reader = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        epoch = (await publish(publisher, "h.a", ["v1", "v2"]))[0]["epoch"]
        # Wall-clock time between the two pairs (the ttl is about age): 1 s, so that the checks
        # that follow have a second before the second pair ages out too, even on a loaded CI.
        await asyncio.sleep(1.0)
        await publish(publisher, "h.a", ["v3", "v4"])
        seen: list[list[int]] = []
        async with asyncio.timeout(5):
            while not seen or seen[-1] != [3, 4]:
                reply = await history(reader, "h.a")
                assert (reply["epoch"], reply["offset"]) == (epoch, 4), reply
                if not seen or offsets(reply["messages"]) != seen[-1]:
                    seen.append(offsets(reply["messages"]))
                await asyncio.sleep(0.05)  # polling: the expiry has no event to wait for
        assert seen[0] == [1, 2, 3, 4] and seen[-1] == [3, 4], f"history went {seen}"
        assert offsets((await history(reader, "h.a", reverse=True))["messages"]) == [4, 3]
        since = {"epoch": epoch, "offset": 1}
        assert offsets((await history(reader, "h.a", since=since))["messages"]) == [3, 4]
        async with asyncio.timeout(5):
            while (reply := await history(reader, "h.a"))["messages"]:
                assert offsets(reply["messages"]) == [3, 4], reply
                await asyncio.sleep(0.05)
        # The history expired, not the topic: same epoch, same offset.
        assert (reply["epoch"], reply["offset"]) == (epoch, 4)
