"""``sub`` with ``recover`` (docs/protocol.md, "Recovery").

Against real hub-server processes. Most tests run on one memory node and on two Redis nodes,
with the publisher on the first node and the recovering client on the second
(recovery_support.py, ``start_nodes``). "Nothing was replayed" is shown by a sentinel
publication that must be the client's very next frame. The fault tests use a private
redis-server that they stop, restart, or cut the pub/sub connection of. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.server.conftest import HubProcess, StartHub
from tests.server.peers import (
    JSON,
    TEST_BOUND,
    WAIT,
    Collector,
    OpenPeer,
    Peer,
    assert_msg,
    http_get,
)
from tests.server.recovery_support import (
    StartNodes,
    expect_live_next,
    hub_time_ok,
    now_ms,
    offsets,
    payload,
    position,
    publish,
    start_nodes_fixture,  # noqa: F401 (the start_nodes fixture)
    wait_until,
)

#: Fast reconnects for the fault tests (the defaults are 2 s for both).
FAULT_FLAGS = ("--redis-timeout", "0.5", "--redis-backoff-cap", "0.2")

#: The implementation bug that test_a_sub_on_a_node_whose_pubsub_lags_gets_nothing_twice shows.

#: The fields of the ok of a wildcard sub, with or without recover.
WILDCARD_OK = {"op", "id", "recovered", "time"}
#: ...and with recover: how many msgs of the subscription that follow the ok are the replay.
RECOVERING_OK = {*WILDCARD_OK, "replayed"}


# --- helpers --------------------------------------------------------------------------------------


async def recover(peer: Peer, topic: str, recover: object) -> dict[str, Any]:
    """A ``sub`` with ``recover``: its ok must be the very next frame (reply first)."""
    return await peer.ok("sub", topic=topic, recover=recover)


def assert_concrete_ok(reply: dict[str, Any], epoch: str, offset: int, recovered: bool) -> None:
    got = (reply.get("epoch"), reply.get("offset"), reply.get("recovered"))
    assert got == (epoch, offset, recovered), f"expected {(epoch, offset, recovered)}: {reply}"


async def next_msgs(peer: Peer, count: int) -> list[dict[str, Any]]:
    frames = [await peer.recv() for _ in range(count)]
    assert all(frame["op"] == "msg" for frame in frames), frames
    return frames


def tagged(codec: str, topic: str, n: int) -> object:
    """Data that names its topic and number; on msgpack with a binary part."""
    return [topic, n] if codec == JSON else [topic, n, topic.encode()]


def last_positions(frames: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last position received of every topic, as a wildcard client keeps them."""
    positions: dict[str, dict[str, Any]] = {}
    for frame in frames:
        if frame["op"] == "msg":
            positions[frame["topic"]] = position(frame)
    return positions


def sequence(frames: list[dict[str, Any]], count: int = 30) -> str:
    """Frames in short, for failure messages: ``ok(M=55, recovered)`` and msg offsets."""
    shown = []
    for frame in frames[:count]:
        if frame["op"] == "msg":
            shown.append(str(frame["offset"]))
        else:
            extra = [f"M={frame['offset']}"] if "offset" in frame else []
            extra += ["recovered"] if frame.get("recovered") else []
            shown.append(f"{frame['op']}({', '.join(extra)})")
    return " ".join(shown) + (" ..." if len(frames) > count else "")


def rules(*entries: dict[str, Any]) -> tuple[str, str]:
    return ("--history-rules", json.dumps(list(entries)))


async def history_offsets(peer: Peer, topic: str) -> list[int]:
    reply = await peer.ok("history", topic=topic)
    return offsets(reply["messages"])


async def wait_history(peer: Peer, topic: str, expected: list[int], within: float = 3) -> None:
    """Poll ``history`` until it holds exactly ``expected`` (age expiry has no event)."""
    async with asyncio.timeout(within):
        while True:
            if await history_offsets(peer, topic) == expected:
                return
            await asyncio.sleep(0.05)


class Stream:
    """Publishes on ``topics`` (a list it rereads every round) in pipelined bursts, in a task,
    until stopped; remembers every offset's data, each topic's last offset and epoch."""

    def __init__(self, peer: Peer, topics: list[str], burst: int = 5) -> None:
        self.peer = peer
        self.topics = topics
        self.burst = burst
        self.count = 0
        self.last: dict[str, int] = {}
        self.epochs: dict[str, str] = {}
        self.data: dict[str, dict[int, object]] = {}
        self._progress = asyncio.Event()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while not self._stopping:
                for topic in list(self.topics):
                    values = [f"{topic}#{self.count + i}" for i in range(self.burst)]
                    replies = await publish(self.peer, topic, values)
                    for value, reply in zip(values, replies, strict=True):
                        self.data.setdefault(topic, {})[reply["offset"]] = value
                    self.last[topic] = replies[-1]["offset"]
                    self.epochs[topic] = replies[-1]["epoch"]
                    self.count += self.burst
                    self._progress.set()
        finally:
            self._progress.set()

    async def advance(self, count: int, within: float = WAIT) -> None:
        """Wait until ``count`` more publications are acknowledged."""
        target = self.count + count
        async with asyncio.timeout(within):
            while self.count < target:
                if self._task.done():
                    self._task.result()  # its failure
                    raise AssertionError("the stream stopped")
                self._progress.clear()
                await self._progress.wait()

    async def stop(self) -> dict[str, int]:
        """Stop after the burst in flight; each topic's last offset."""
        self._stopping = True
        async with asyncio.timeout(WAIT):
            await self._task
        return dict(self.last)


async def health(node: HubProcess) -> int:
    status, _, _ = await http_get(node.port, "/healthz")
    return status


async def wait_health(node: HubProcess, status: int, within: float = WAIT) -> None:
    """Poll /healthz until it answers ``status`` (a node's view of Redis has no other sign)."""
    async with asyncio.timeout(within):
        while True:
            if await health(node) == status:
                return
            await asyncio.sleep(0.05)


async def start_fault_nodes(
    start_hub: StartHub, server: RedisServer, *flags: str
) -> tuple[HubProcess, HubProcess]:
    first, second = await asyncio.gather(
        *(
            start_hub(
                "--backend", server.url, "--redis-prefix", "rec", "--node-id", f"n{i}", *flags
            )
            for i in range(2)
        )
    )
    return first, second


def redis_connection_ports(pid: int, redis_port: int) -> set[int]:
    """The local ports of the TCP connections that process ``pid`` holds to ``redis_port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == redis_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def kill_pubsub_connections(server: RedisServer, pid: int) -> int:
    """CLIENT KILL the pub/sub connections of one hub process (its data stays in Redis)."""
    ports = redis_connection_ports(pid, server.port)
    client = server.client()
    killed = 0
    try:
        for entry in client.client_list(_type="pubsub"):
            if int(entry["addr"].rsplit(":", 1)[1]) in ports:
                killed += int(client.client_kill_filter(_id=entry["id"]))
    finally:
        client.close()
    return killed


# --- concrete topics ------------------------------------------------------------------------------


async def test_recover_at_the_head_is_recovered_with_nothing_to_replay(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10")
        publisher, client = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        epoch = (await publish(publisher, "c.a", ["v1", "v2", "v3"]))[0]["epoch"]
        reply = await recover(client, "c.a", {"epoch": epoch, "offset": 3})
        assert_concrete_ok(reply, epoch, 3, True)
        sentinel = await expect_live_next(client, publisher, "c.a", "c.a")
        assert sentinel["offset"] == 4


async def test_recover_inside_the_window_replays_exactly_what_was_missed_then_live(
    start_nodes: StartNodes, codec: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10")
        publisher = await open_peer(nodes.publisher, codec)
        published = await publish(publisher, "c.a", [payload(codec, n) for n in range(1, 7)])
        epoch = published[0]["epoch"]
        clients = []
        for since in (2, 0):  # 0: a client that saw nothing yet; every publication is retained
            client = await open_peer(nodes.reader, codec)
            reply = await recover(client, "c.a", {"epoch": epoch, "offset": since})
            assert_concrete_ok(reply, epoch, 6, True)
            for frame, n in zip(
                await next_msgs(client, 6 - since), range(since + 1, 7), strict=True
            ):
                assert_msg(
                    frame, topic="c.a", sub="c.a", data=payload(codec, n), offset=n, epoch=epoch
                )
            clients.append(client)
        # Live continues at M + 1 = 7, right after the replay: no gap, no duplicate.
        (live,) = await publish(publisher, "c.a", ["live"])
        assert live["offset"] == 7
        for client in clients:
            assert_msg(
                await client.recv(), topic="c.a", sub="c.a", data="live", offset=7, epoch=epoch
            )


async def test_recover_at_the_edge_of_the_window_and_before_it(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    """Size 3 after 8 publications holds 6..8: from 5 is covered; from 4 or 0 is not."""
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "3")
        publisher = await open_peer(nodes.publisher)
        epoch = (await publish(publisher, "c.a", [f"v{n}" for n in range(1, 9)]))[0]["epoch"]
        covered = await open_peer(nodes.reader)
        assert_concrete_ok(
            await recover(covered, "c.a", {"epoch": epoch, "offset": 5}), epoch, 8, True
        )
        assert [(f["offset"], f["data"]) for f in await next_msgs(covered, 3)] == [
            (6, "v6"),
            (7, "v7"),
            (8, "v8"),
        ]
        too_old = []
        for since in (4, 0):
            client = await open_peer(nodes.reader)
            reply = await recover(client, "c.a", {"epoch": epoch, "offset": since})
            assert_concrete_ok(reply, epoch, 8, False)
            too_old.append(client)
        # Nothing was replayed to the clients that were not covered; all go on live from 9.
        (sentinel,) = await publish(publisher, "c.a", ["sentinel"])
        for client in [covered, *too_old]:
            assert_msg(
                await client.recv(), topic="c.a", sub="c.a", data="sentinel", offset=9, epoch=epoch
            )
        assert sentinel["offset"] == 9


async def test_recover_from_another_epoch_is_not_recovered(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10")
        publisher = await open_peer(nodes.publisher)
        epoch = (await publish(publisher, "c.a", ["v1", "v2", "v3"]))[0]["epoch"]
        others = [{"epoch": epoch + "x", "offset": 1}, {"epoch": "x" + epoch, "offset": 3}]
        for head, since in enumerate(others, start=3):
            client = await open_peer(nodes.reader)
            assert_concrete_ok(await recover(client, "c.a", since), epoch, head, False)
            sentinel = await expect_live_next(client, publisher, "c.a", "c.a")
            assert sentinel["offset"] == head + 1


async def test_recover_from_a_position_ahead_of_the_topic_is_not_recovered(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10")
        publisher, client = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        epoch = (await publish(publisher, "c.a", ["v1", "v2", "v3"]))[0]["epoch"]
        reply = await recover(client, "c.a", {"epoch": epoch, "offset": 5})
        assert_concrete_ok(reply, epoch, 3, False)
        assert (await expect_live_next(client, publisher, "c.a", "c.a"))["offset"] == 4


async def test_recover_beyond_the_recovery_limit_is_not_recovered(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10", "--recovery-limit", "3")
        publisher = await open_peer(nodes.publisher)
        epoch = (await publish(publisher, "c.a", [f"v{n}" for n in range(1, 7)]))[0]["epoch"]
        at_limit, over = await open_peer(nodes.reader), await open_peer(nodes.reader)
        # M - N == 3 == the limit: recovered.
        assert_concrete_ok(
            await recover(at_limit, "c.a", {"epoch": epoch, "offset": 3}), epoch, 6, True
        )
        assert offsets(await next_msgs(at_limit, 3)) == [4, 5, 6]
        # M - N == 4: not, though history holds all of it; nothing is replayed.
        assert_concrete_ok(
            await recover(over, "c.a", {"epoch": epoch, "offset": 2}), epoch, 6, False
        )
        (sentinel,) = await publish(publisher, "c.a", ["sentinel"])
        for client in (at_limit, over):
            assert_msg(
                await client.recv(), topic="c.a", sub="c.a", data="sentinel", offset=7, epoch=epoch
            )
        assert sentinel["offset"] == 7


@pytest.mark.parametrize(
    "flags",
    [
        ("--history-size", "0", *rules({"pattern": "on.>", "size": 5, "ttl": 300})),
        ("--history-size", "5", *rules({"pattern": "off.>", "size": 0, "ttl": 300})),
    ],
    ids=["size-0", "rule-size-0"],
)
async def test_recover_with_history_off_is_not_recovered(
    start_nodes: StartNodes, open_peer: OpenPeer, flags: tuple[str, ...]
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes(*flags)
        publisher = await open_peer(nodes.publisher)
        off = (await publish(publisher, "off.a", ["v1", "v2", "v3"]))[0]["epoch"]
        on = (await publish(publisher, "on.a", ["v1", "v2", "v3"]))[0]["epoch"]
        client = await open_peer(nodes.reader)
        assert_concrete_ok(
            await recover(client, "off.a", {"epoch": off, "offset": 1}), off, 3, False
        )
        assert (await expect_live_next(client, publisher, "off.a", "off.a"))["offset"] == 4
        # The control: a topic with history, on the same node, is recovered.
        assert_concrete_ok(await recover(client, "on.a", {"epoch": on, "offset": 1}), on, 3, True)
        assert [(f["offset"], f["data"]) for f in await next_msgs(client, 2)] == [
            (2, "v2"),
            (3, "v3"),
        ]


async def test_subs_racing_with_publications_start_exactly_after_their_position(
    start_nodes: StartNodes, open_peer: OpenPeer, collect: Any
) -> None:
    """A publisher publishes continuously while clients subscribe, with ``recover`` (the ok,
    then exactly N+1.., replay and live contiguous) or without (live from ok.offset + 1)."""
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "1000")
        publisher = await open_peer(nodes.publisher)
        stream = Stream(publisher, ["race"])
        await stream.advance(20)
        joiners: list[tuple[int | None, int, Collector]] = []
        for i in range(8):
            await stream.advance(25)
            client = await open_peer(nodes.reader)
            sub: dict[str, Any] = {"op": "sub", "id": client.next_id(), "topic": "race"}
            since = None
            if i % 2 == 0:  # recover from 10 behind the last acknowledged publication
                since = stream.last["race"] - 10
                sub["recover"] = {"epoch": stream.epochs["race"], "offset": since}
            await client.send(sub)
            joiners.append((since, sub["id"], collect(client)))
        await stream.advance(25)
        last = (await stream.stop())["race"]
        # One more, after the stream: a duplicate or a late frame would come before it.
        (end,) = await publish(publisher, "race", ["end"])
        last += 1
        assert end["offset"] == last
        for since, id_, collector in joiners:
            frames = await wait_until(
                collector, lambda fs: any(f.get("offset") == last for f in fs if f["op"] == "msg")
            )
            oks = [i for i, f in enumerate(frames) if f["op"] != "msg"]
            assert len(oks) == 1 and frames[oks[0]]["op"] == "ok", frames[: oks[0] + 1]
            reply = frames[oks[0]]
            assert reply["id"] == id_ and reply["epoch"] == stream.epochs["race"], reply
            msgs = [f for f in frames if f["op"] == "msg"]
            if since is None:
                first = reply["offset"] + 1
            else:
                assert oks[0] == 0, f"the ok must come before the replay: {frames[:3]}"
                assert reply["recovered"] is True and reply["offset"] >= since + 10, reply
                first = since + 1
            assert offsets(msgs) == list(range(first, last + 1)), (
                f"sub {'with recover from ' + str(since) if since is not None else 'without'}"
                f" recover: {sequence(frames)}"
            )
            for frame in msgs[:-1]:
                assert frame["data"] == stream.data["race"][frame["offset"]], frame
            assert all(f["topic"] == f["sub"] == "race" for f in msgs)


@pytest.mark.slow
async def test_recover_across_publications_older_than_the_ttl_is_not_recovered(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10", "--history-ttl", "2")
        publisher, reader = await open_peer(nodes.publisher), await open_peer(nodes.reader)
        epoch = (await publish(publisher, "c.a", ["v1", "v2"]))[0]["epoch"]
        # Wall-clock time between the two pairs (the ttl is about age): 1 s, so that the checks
        # that follow have a second before the second pair ages out too, even on a loaded CI.
        await asyncio.sleep(1.0)
        await publish(publisher, "c.a", ["v3", "v4"])
        await wait_history(reader, "c.a", [3, 4], within=5)  # 1 and 2 aged out, 3 and 4 not
        fresh, stale = await open_peer(nodes.reader), await open_peer(nodes.reader)
        assert_concrete_ok(
            await recover(fresh, "c.a", {"epoch": epoch, "offset": 2}), epoch, 4, True
        )
        assert [(f["offset"], f["data"]) for f in await next_msgs(fresh, 2)] == [
            (3, "v3"),
            (4, "v4"),
        ]
        assert_concrete_ok(
            await recover(stale, "c.a", {"epoch": epoch, "offset": 1}), epoch, 4, False
        )
        (sentinel,) = await publish(publisher, "c.a", ["sentinel"])
        for client in (fresh, stale):
            assert_msg(
                await client.recv(), topic="c.a", sub="c.a", data="sentinel", offset=5, epoch=epoch
            )
        assert sentinel["offset"] == 5


# --- wildcard patterns ----------------------------------------------------------------------------


async def test_a_wildcard_sub_ok_carries_the_hub_time(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes()
        client = await open_peer(nodes.reader)
        before = now_ms()
        reply = await client.ok("sub", topic="w.*")
        after = now_ms()
        assert reply.keys() == WILDCARD_OK, f"wildcard sub ok fields: {reply}"
        assert reply["recovered"] is False
        assert hub_time_ok(reply["time"], before, after), (before, reply, after)
        publisher = await open_peer(nodes.publisher)
        published = await expect_live_next(client, publisher, "w.a", "w.*", "x")
        (entry,) = (await publisher.ok("history", topic="w.a"))["messages"]
        assert entry["time"] >= reply["time"], "one clock: a later publication is not older"
        # The ok of a recovering wildcard sub carries the time too.
        returning = await open_peer(nodes.reader)
        again = await recover(returning, "w.>", {"since": reply["time"], "topics": {}})
        assert again.keys() == RECOVERING_OK, f"wildcard sub ok fields: {again}"
        assert again["replayed"] == 1  # the msgs of w.> that follow the ok and are the replay
        assert again["time"] >= entry["time"] and hub_time_ok(again["time"], before, now_ms())
        assert again["recovered"] is True  # w.a's one publication is replayed
        assert_msg(
            await returning.recv(),
            topic="w.a",
            sub="w.>",
            data="x",
            offset=1,
            epoch=published["epoch"],
        )


async def test_wildcard_recovery_replays_known_topics_and_topics_new_while_away(
    start_nodes: StartNodes, codec: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10")
        publisher = await open_peer(nodes.publisher, codec)
        epochs: dict[str, str] = {}

        async def pub(topic: str, *numbers: int) -> None:
            replies = await publish(publisher, topic, [tagged(codec, topic, n) for n in numbers])
            assert offsets(replies) == list(numbers)
            epochs[topic] = replies[0]["epoch"]

        # Published before the subscription: chat.old never again, chat.d again while away.
        await pub("chat.old", 1)
        await pub("chat.d", 1)
        await asyncio.sleep(0.005)  # wall-clock time: the subscription's time comes later
        client = await open_peer(nodes.reader, codec)
        since = (await client.ok("sub", topic="chat.*"))["time"]
        (old_entry,) = (await publisher.ok("history", topic="chat.d"))["messages"]
        assert old_entry["time"] < since, "precondition: chat.d 1 is older than the sub"
        await pub("chat.a", 1, 2)
        await pub("chat.b", 1)
        seen = await next_msgs(client, 3)
        topics = last_positions(sorted(seen, key=lambda f: (f["topic"], f["offset"])))
        assert topics == {
            "chat.a": {"epoch": epochs["chat.a"], "offset": 2},
            "chat.b": {"epoch": epochs["chat.b"], "offset": 1},
        }
        await client.ws.close()

        # While away: more on known topics, a new topic, and topics the pattern does not match.
        await pub("chat.a", 3, 4)
        await pub("chat.b", 2)
        await pub("chat.c", 1, 2)
        await pub("chat.d", 2)
        await pub("chat.a.x", 1)
        await pub("other.z", 1)

        returning = await open_peer(nodes.reader, codec)
        before = now_ms()
        reply = await recover(returning, "chat.*", {"since": since, "topics": topics})
        assert reply.keys() == RECOVERING_OK, f"wildcard sub ok fields: {reply}"
        assert reply["replayed"] == 6
        assert reply["recovered"] is True, reply
        assert hub_time_ok(reply["time"], before, now_ms()) and reply["time"] >= since
        replay = await next_msgs(returning, 6)
        expected = {"chat.a": [3, 4], "chat.b": [2], "chat.c": [1, 2], "chat.d": [2]}
        runs = [topic for topic, _ in itertools.groupby(f["topic"] for f in replay)]
        assert sorted(runs) == sorted(expected), f"topic after topic: {offsets_by_topic(replay)}"
        assert offsets_by_topic(replay) == expected
        for frame in replay:
            topic = frame["topic"]
            assert_msg(
                frame,
                topic=topic,
                sub="chat.*",
                data=tagged(codec, topic, frame["offset"]),
                offset=frame["offset"],
                epoch=epochs[topic],
            )
        # Nothing else was replayed (chat.old, chat.a.x, other.z, a duplicate): live is next.
        await expect_live_next(returning, publisher, "chat.b", "chat.*", tagged(codec, "chat.b", 3))


def offsets_by_topic(frames: list[dict[str, Any]]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for frame in frames:
        grouped.setdefault(frame["topic"], []).append(frame["offset"])
    return grouped


async def test_wildcard_recovery_ignores_positions_the_pattern_does_not_match(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10")
        client = await open_peer(nodes.reader)
        since = (await client.ok("sub", topic="i.*"))["time"]
        await client.ws.close()
        publisher = await open_peer(nodes.publisher)
        (published,) = await publish(publisher, "i.a", ["v1"])
        # Positions that could never be covered, were they not ignored.
        bogus = {"epoch": "bogus", "offset": 7}
        unmatched = {"other.x": bogus, "i.a.deep": bogus, "i": bogus}
        returning = await open_peer(nodes.reader)
        reply = await recover(returning, "i.*", {"since": since, "topics": unmatched})
        assert reply["recovered"] is True, reply
        assert_msg(
            await returning.recv(),
            topic="i.a",
            sub="i.*",
            data="v1",
            offset=1,
            epoch=published["epoch"],
        )
        await expect_live_next(returning, publisher, "i.a", "i.*", "v2")
        # A matched position at the head, among ignored ones: covered, nothing to replay.
        at_head = {**unmatched, "i.a": {"epoch": published["epoch"], "offset": 2}}
        third = await open_peer(nodes.reader)
        assert (await recover(third, "i.*", {"since": since, "topics": at_head}))["recovered"]
        assert (await expect_live_next(third, publisher, "i.a", "i.*", "v3"))["offset"] == 3


async def test_wildcard_recovery_over_the_recovery_limit_is_not_recovered(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10", "--recovery-limit", "3")
        client = await open_peer(nodes.reader)
        since = (await client.ok("sub", topic="l.*"))["time"]
        publisher = await open_peer(nodes.publisher)
        await publish(publisher, "l.a", ["a1"])
        topics = last_positions(await next_msgs(client, 1))
        await client.ws.close()
        await publish(publisher, "l.a", ["a2", "a3"])
        await publish(publisher, "l.b", ["b1"])  # new while away
        recover_ = {"since": since, "topics": topics}
        # 2 + 1 == 3 == the limit, over two topics: recovered.
        at_limit = await open_peer(nodes.reader)
        assert (await recover(at_limit, "l.*", recover_))["recovered"] is True
        replay = await next_msgs(at_limit, 3)
        assert offsets_by_topic(replay) == {"l.a": [2, 3], "l.b": [1]}
        await expect_live_next(at_limit, publisher, "l.b", "l.*", "b2")
        # One more publication: 2 + 2 == 4 > 3, nothing is replayed.
        over = await open_peer(nodes.reader)
        assert (await recover(over, "l.*", recover_))["recovered"] is False
        await expect_live_next(over, publisher, "l.a", "l.*", "a4")


async def test_wildcard_recovery_with_one_epoch_changed_is_not_recovered(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "10")
        client = await open_peer(nodes.reader)
        since = (await client.ok("sub", topic="e.*"))["time"]
        publisher = await open_peer(nodes.publisher)
        await publish(publisher, "e.a", ["a1"])
        await publish(publisher, "e.b", ["b1"])
        topics = last_positions(await next_msgs(client, 2))
        await client.ws.close()
        await publish(publisher, "e.a", ["a2"])
        await publish(publisher, "e.b", ["b2"])
        changed = {**topics, "e.b": {"epoch": topics["e.b"]["epoch"] + "x", "offset": 1}}
        returning = await open_peer(nodes.reader)
        reply = await recover(returning, "e.*", {"since": since, "topics": changed})
        assert reply.keys() == RECOVERING_OK and reply["recovered"] is False, reply
        assert reply["replayed"] == 0
        # Not even e.a's publication, which history covers, is replayed.
        await expect_live_next(returning, publisher, "e.a", "e.*", "a3")
        # The control: the true positions are covered.
        control = await open_peer(nodes.reader)
        assert (await recover(control, "e.*", {"since": since, "topics": topics}))["recovered"]
        assert offsets_by_topic(await next_msgs(control, 3)) in (
            {"e.a": [2, 3], "e.b": [2]},
            {"e.b": [2], "e.a": [2, 3]},
        )


async def test_wildcard_recovery_beyond_the_history_window_is_not_recovered(
    start_nodes: StartNodes, open_peer: OpenPeer
) -> None:
    """Size 3: a known topic whose position was trimmed, and a topic new while away with
    more publications since ``since`` than history holds."""
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "3")
        publisher = await open_peer(nodes.publisher)
        client = await open_peer(nodes.reader)
        since = (await client.ok("sub", topic="g.*"))["time"]
        await publish(publisher, "g.a", ["a1"])
        known = last_positions(await next_msgs(client, 1))
        await client.ws.close()
        await publish(publisher, "g.a", ["a2", "a3", "a4", "a5"])  # holds 3..5, 2 is gone
        returning = await open_peer(nodes.reader)
        reply = await recover(returning, "g.*", {"since": since, "topics": known})
        assert reply["recovered"] is False, reply
        await expect_live_next(returning, publisher, "g.a", "g.*", "a6")

        newer = await open_peer(nodes.reader)
        since = (await newer.ok("sub", topic="n.*"))["time"]
        await newer.ws.close()
        (first, *_) = await publish(publisher, "n.a", ["n1", "n2", "n3", "n4"])  # holds 2..4
        trimmed = await open_peer(nodes.reader)
        reply = await recover(trimmed, "n.*", {"since": since, "topics": {}})
        assert reply["recovered"] is False, reply
        await expect_live_next(trimmed, publisher, "n.a", "n.*", "n5")
        # The control: from n.a's offset 2, history (3..5) covers it.
        control = await open_peer(nodes.reader)
        covered = {"n.a": {"epoch": first["epoch"], "offset": 2}}
        assert (await recover(control, "n.*", {"since": since, "topics": covered}))["recovered"]
        assert offsets(await next_msgs(control, 3)) == [3, 4, 5]


async def test_wildcard_recovery_racing_with_publications_has_no_gap_and_no_duplicate(
    start_nodes: StartNodes, open_peer: OpenPeer, collect: Any
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes("--history-size", "1000")
        client = await open_peer(nodes.reader)
        since = (await client.ok("sub", topic="rw.*"))["time"]
        seen: Collector = collect(client)
        stream = Stream(await open_peer(nodes.publisher), ["rw.a", "rw.b"])
        await stream.advance(40)
        await wait_until(seen, lambda frames: len(frames) >= 10)
        await client.ws.close()
        await seen.wait_closed()
        topics = last_positions(seen.frames)
        for topic, live in offsets_by_topic(seen.frames).items():
            assert live == list(range(1, len(live) + 1)), f"live {topic}: {live}"
        stream.topics.append("rw.c")  # a topic first published while away
        await stream.advance(30)
        returning = await open_peer(nodes.reader)
        id_ = returning.next_id()
        recover_ = {"since": since, "topics": topics}
        await returning.send({"op": "sub", "id": id_, "topic": "rw.*", "recover": recover_})
        got: Collector = collect(returning)
        await stream.advance(60)
        last = await stream.stop()
        frames = await wait_until(
            got,
            lambda fs: all(
                any(f.get("topic") == t and f.get("offset") == n for f in fs)
                for t, n in last.items()
            ),
        )
        assert frames[0]["op"] == "ok" and frames[0]["id"] == id_, frames[:3]
        assert frames[0]["recovered"] is True, frames[0]
        msgs = frames[1:]
        assert all(f["op"] == "msg" and f["sub"] == "rw.*" for f in msgs), msgs
        got_offsets = offsets_by_topic(msgs)
        for topic, n in last.items():
            start = topics[topic]["offset"] + 1 if topic in topics else 1
            assert got_offsets[topic] == list(range(start, n + 1)), f"{topic}: gap or duplicate"
        assert all(f["data"] == stream.data[f["topic"]][f["offset"]] for f in msgs)
        assert all(f["epoch"] == stream.epochs[f["topic"]] for f in msgs)


def malformed_recovers(epoch: str, since: int) -> list[tuple[str, object]]:
    position = {"epoch": epoch, "offset": 0}
    return [
        ("m.*", position),  # a position on a wildcard pattern
        ("m.>", position),
        ("m.a", {"since": since, "topics": {}}),  # since/topics on a concrete topic
        ("m.a", {"since": since}),
        ("m.*", {"since": "5", "topics": {}}),  # a non-integer since
        ("m.*", {"since": float(since), "topics": {}}),
        ("m.*", {"since": True, "topics": {}}),
        ("m.*", {"since": since, "topics": []}),  # topics is not a map
        ("m.*", {"since": since, "topics": "m.a"}),
        ("m.*", {"since": since, "topics": {"m.a": {"epoch": epoch}}}),  # a malformed position
        ("m.*", {"since": since, "topics": {"m.a": {"epoch": epoch, "offset": -1}}}),
        ("m.*", {"since": since, "topics": {"m.a": 3}}),
        ("m.*", "x"),
    ]


async def test_a_malformed_recover_is_bad_request_and_subscribes_nothing(
    start_nodes: StartNodes, codec: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes()
        probe = await open_peer(nodes.reader, codec)
        since = (await probe.ok("sub", topic="m.>"))["time"]
        epoch = (await probe.ok("sub", topic="m.a"))["epoch"]
        for pattern, malformed in malformed_recovers(epoch, since):
            client = await open_peer(nodes.reader, codec)
            refused = await client.error("sub", topic=pattern, recover=malformed)
            assert refused["code"] == "bad_request", (pattern, malformed, refused)
            left = await client.error("unsub", topic=pattern)
            assert left["code"] == "not_subscribed", f"{pattern} {malformed} subscribed: {left}"


# --- Redis faults ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_redis_restarted_without_its_data_changes_epochs_and_recovers_nothing(
    start_hub: StartHub, redis_server: RedisServer, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_fault_nodes(
            start_hub, redis_server, *FAULT_FLAGS, "--history-size", "10"
        )
        publisher, reader = await open_peer(a), await open_peer(b)
        watcher = await open_peer(b)
        since = (await watcher.ok("sub", topic="rs.*"))["time"]
        await watcher.ws.close()
        old = (await publish(publisher, "rs.a", ["v1", "v2", "v3"]))[0]["epoch"]
        assert await history_offsets(reader, "rs.a") == [1, 2, 3]

        redis_server.stop()
        await asyncio.gather(wait_health(a, 503), wait_health(b, 503))
        refused = await reader.error("history", topic="rs.a")
        assert refused["code"] == "unavailable", refused
        redis_server.start()
        await asyncio.gather(wait_health(a, 200, within=10), wait_health(b, 200, within=10))

        client = await open_peer(b)
        reply = await recover(client, "rs.a", {"epoch": old, "offset": 3})
        assert reply["epoch"] != old, f"Redis lost the topic: a new epoch: {reply}"
        assert_concrete_ok(reply, reply["epoch"], 0, False)
        new = reply["epoch"]
        after = await reader.ok("history", topic="rs.a", since={"epoch": old, "offset": 1})
        assert (after["epoch"], after["offset"], after["messages"]) == (new, 0, [])
        pattern = await open_peer(b)
        known = {"rs.a": {"epoch": old, "offset": 3}}
        again = await recover(pattern, "rs.*", {"since": since, "topics": known})
        assert again["recovered"] is False, again
        (first,) = await publish(publisher, "rs.a", ["after"])
        assert (first["epoch"], first["offset"]) == (new, 1)
        for peer, sub in ((client, "rs.a"), (pattern, "rs.*")):
            assert_msg(await peer.recv(), topic="rs.a", sub=sub, data="after", offset=1, epoch=new)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="finds sockets through /proc")
async def test_a_lost_pubsub_connection_is_backfilled_from_history(
    start_hub: StartHub, redis_server: RedisServer, open_peer: OpenPeer, collect: Any
) -> None:
    """Redis keeps its data; one node's pub/sub connection is cut while the other node
    publishes: its subscribers, concrete and wildcard, get everything in order, no 4010."""
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_fault_nodes(start_hub, redis_server, *FAULT_FLAGS)
        concrete, wildcard = await open_peer(b), await open_peer(b)
        await concrete.ok("sub", topic="bf.a")
        await wildcard.ok("sub", topic="bf.*")
        concretes: Collector = collect(concrete)
        wildcards: Collector = collect(wildcard)
        publisher = await open_peer(a)
        await publish(publisher, "bf.a", ["a1", "a2", "a3"])
        await concretes.wait_for(3)
        await wildcards.wait_for(3)

        assert kill_pubsub_connections(redis_server, b.proc.pid) >= 1
        await publish(publisher, "bf.a", [f"a{n}" for n in range(4, 11)])
        await publish(publisher, "bf.new", ["n1", "n2"])  # a topic b never saw
        await wait_health(b, 200, within=10)
        (end,) = await publish(publisher, "bf.a", ["a11"])
        assert end["offset"] == 11
        got = await concretes.wait_for(11, within=10)
        assert [(f["offset"], f["data"]) for f in got] == [(n, f"a{n}") for n in range(1, 12)]
        everything = await wildcards.wait_for(13, within=10)
        assert offsets_by_topic(everything) == {"bf.a": list(range(1, 12)), "bf.new": [1, 2]}
        assert everything[-1]["offset"] == 11, "the backfill comes before new publications"
        assert concretes.closed is None and wildcards.closed is None


# --- Redis: a node whose pub/sub reader lags behind Redis -----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sub", "recover", "wildcard"])
async def test_a_sub_on_a_node_whose_pubsub_lags_gets_nothing_twice(
    start_hub: StartHub,
    redis_url: str,
    redis_prefix: str,
    open_peer: OpenPeer,
    collect: Any,
    kind: str,
) -> None:
    """Redis only. Node b is stopped (SIGSTOP) while node a publishes a burst, and a client
    sends b a ``sub`` meanwhile: when b runs again, its pub/sub reader has a backlog of
    publications that Redis already counted. The position (or history) b reads for the sub is
    ahead of what b delivered, and those late publications must not reach the new
    subscription again: after the ok, only the replay, then offsets above it."""
    async with asyncio.timeout(TEST_BOUND):
        flags = ("--backend", redis_url, "--redis-prefix", redis_prefix, "--history-size", "1000")
        a, b = await asyncio.gather(start_hub(*flags), start_hub(*flags))
        pattern = "lag.*" if kind == "wildcard" else "lag.a"
        holder = await open_peer(b)  # b delivers lag.a already: its reader will lag on it
        since = (await holder.ok("sub", topic=pattern)).get("time")
        held: Collector = collect(holder)
        publisher = await open_peer(a)
        (first,) = await publish(publisher, "lag.a", ["x1"])
        await held.wait_for(1)
        client = await open_peer(b)
        b.signal(signal.SIGSTOP)
        try:
            burst = await publish(publisher, "lag.a", [f"x{n}" + "." * 5000 for n in range(2, 402)])
            # Recover from a few before the burst's end: a short replay, read at once.
            known = {"epoch": first["epoch"], "offset": burst[-1]["offset"] - 3}
            request: dict[str, Any] = {"op": "sub", "id": 1, "topic": pattern}
            if kind == "recover":
                request["recover"] = known
            elif kind == "wildcard":
                request["recover"] = {"since": since, "topics": {"lag.a": known}}
            await client.send(request)
        finally:
            b.signal(signal.SIGCONT)
        got: Collector = collect(client)
        await wait_until(got, lambda frames: bool(frames))
        (end,) = await publish(publisher, "lag.a", ["end"])
        frames = await wait_until(
            got, lambda fs: any(f.get("offset") == end["offset"] for f in fs if f["op"] == "msg")
        )
        reply, msgs = frames[0], frames[1:]
        assert reply["op"] == "ok" and reply["id"] == 1, frames[:2]
        if kind == "sub":
            start = reply["offset"] + 1
        else:
            assert reply["recovered"] is True, reply
            start = known["offset"] + 1
        assert offsets(msgs) == list(range(start, end["offset"] + 1)), sequence(frames)


async def test_a_long_replay_goes_at_the_pace_of_a_client_that_reads(
    start_hub: StartHub, open_peer: OpenPeer
) -> None:
    """A replay far longer than the outbox (50 messages here) must not close a client that
    reads as fast as it can with 4008: the replay waits for the outbox to drain."""
    async with asyncio.timeout(TEST_BOUND):
        node = await start_hub("--outbox-messages", "50", "--history-size", "1000")
        publisher = await open_peer(node)
        for start in range(1, 301, 30):  # 30 replies at a time fit the publisher's outbox
            replies = await publish(publisher, "long", range(start, start + 30))
        client = await open_peer(node)
        recover = {"epoch": replies[0]["epoch"], "offset": 0}
        ok = await client.ok("sub", topic="long", recover=recover)
        assert ok["recovered"] is True and ok["offset"] == 300
        replayed = [await client.recv() for _ in range(300)]
        assert offsets(replayed) == list(range(1, 301))
        await expect_live_next(client, publisher, "long", "long")
