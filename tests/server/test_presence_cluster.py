"""Presence across several ``hub-server`` nodes sharing one real ``redis-server``.

The contract (hub/broker/presence.py, hub/broker/redis_presence.py): a connection is present
on a concrete topic while it holds a ``sub`` to it and the topic matches ``--presence-topics``;
``sub`` with ``join_leave`` gets ``join`` / ``leave`` events, and ``presence`` lists the
clients. Every node lists the same clients and sends the same events; a node killed with
SIGKILL stops its heartbeat, and its clients leave ``presence_ttl`` + 1 s (the sweep's tick)
after it at most, each leave sent once by whichever node swept it. A leaving client with a
user stays listed for ``presence_grace`` seconds, and a client of the same user that joins in
the meantime, on any node, replaces it: no leave, and its join names the old client.

Nodes are real processes (conftest.py) on the session's Redis with a key prefix of the test's
own (as in test_cluster.py); the FLUSHALL test uses a private redis-server. Observers hold the
wildcard ``room.>`` with ``join_leave``, so that they are not present themselves; ``presence``
is asked on other connections, since a Collector reads everything its observer receives. An
observer's events applied to the fresh lists taken when everything was quiet must give the
next fresh lists. Every wait is bounded.

Only test_a_node_that_starts_a_subscription_still_delivers_every_event starts a node's first
subscription to a topic while events of that topic are on their way; the other tests wait for
each such subscription's join (``sub_seen``), so that they test what they are about.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.asyncio

from tests.redis_server import RedisServer
from tests.server.conftest import HubProcess, StartHub
from tests.server.peers import CODECS, JSON, TEST_BOUND, WAIT, Collector, OpenPeer, Peer, same
from tests.server.presence_support import AUTH, bearer, entry
from tests.server.test_cluster import FAULT_FLAGS, start_nodes

Collect = Callable[[Peer], Collector]

#: Every topic under ``room.`` has presence; ``other.*`` has none.
PRESENCE = ("--presence-topics", json.dumps(["room.>"]))
#: The pattern every observer holds with join_leave (a wildcard: its holder is not present).
WATCHED = "room.>"
#: The sweep's fixed tick (RedisPresence's default; there is no setting for it).
TICK = 1.0
#: The ttl of the kill tests (a heartbeat every TTL / 3 s), and the slack of their bounds for
#: a loaded machine (scheduling, the pub/sub hop, the test's own loop).
TTL = 1.0
MARGIN = 1.0
#: How long to listen for an event that must NOT come: a sweep of every node and then some.
QUIET = TICK + 0.25

#: (topic, client id) -> the member's fields as ``presence`` lists them.
State = dict[tuple[str, str], dict[str, Any]]


async def observe(
    open_peer: OpenPeer, collect: Collect, node: HubProcess, codec: str = JSON, **options: Any
) -> Collector:
    """A connection to ``node`` that watches every ``room.`` topic's joins and leaves."""
    peer = await open_peer(node, codec, **options)
    await peer.ok("sub", topic=WATCHED, join_leave=True)
    return collect(peer)


async def listed(peer: Peer, *topics: str) -> State:
    """The fresh ``presence`` lists of ``topics``, through ``peer``; no client twice."""
    state: State = {}
    for topic in topics:
        reply = await peer.ok("presence", topic=topic)
        assert sorted(reply) == ["clients", "id", "op"], reply
        for member in reply["clients"]:
            assert sorted(member) in (["client", "user"], ["client", "info", "user"]), member
            key = (topic, member["client"])
            assert key not in state, f"{key} listed twice: {reply}"
            state[key] = member
    return state


def expected_state(entries: Iterable[tuple[str, dict[str, Any]]]) -> State:
    return {(topic, member["client"]): member for topic, member in entries}


def check_event(
    frame: dict[str, Any],
    op: str,
    topic: str,
    member: dict[str, Any],
    replaces: str | None = None,
) -> None:
    expected = {"op": op, "topic": topic, "sub": WATCHED, **member}
    if replaces is not None:
        expected["replaces"] = replaces
    assert same(frame, expected), f"expected {expected}, got {frame}"


def replay(state: State, events: Sequence[dict[str, Any]]) -> State:
    """``state`` with ``events`` applied: a join adds a client that was not listed (and drops
    the one it replaces, which was), a leave drops one that was listed with the same fields."""
    state = dict(state)
    for event in events:
        assert event["op"] in ("join", "leave") and event["sub"] == WATCHED, event
        key = (event["topic"], event["client"])
        member: dict[str, Any] = {k: event[k] for k in ("client", "user", "info") if k in event}
        if event["op"] == "join":
            if "replaces" in event:
                replaced = (event["topic"], event["replaces"])
                assert replaced in state, f"{event} replaces a client that is not listed"
                del state[replaced]
            assert key not in state, f"a second join of {key}: {event}"
            state[key] = member
        else:
            assert state.pop(key, None) == member, f"a leave of {key} that is not listed: {event}"
    return state


def once_each(events: Sequence[dict[str, Any]]) -> collections.Counter[tuple[str, str, str]]:
    """How often each (op, topic, client) came; fails on any that came twice."""
    counts = collections.Counter((e["op"], e["topic"], e["client"]) for e in events)
    twice = {key: n for key, n in counts.items() if n > 1}
    assert not twice, f"events more than once: {twice}"
    return counts


async def quiet(collectors: Sequence[Collector], counts: Sequence[int], window: float) -> None:
    """Nothing more arrives on any of ``collectors`` for ``window`` seconds: a bounded window
    in which an event that must not come (a duplicate leave of a second sweep) would come."""
    await asyncio.sleep(window)
    for collector, count in zip(collectors, counts, strict=True):
        assert len(collector.frames) == count, f"unexpected: {collector.frames[count:]}"


async def sub_seen(peer: Peer, topic: str, watchers: Sequence[Collector]) -> None:
    """Subscribe ``peer`` to ``topic`` and wait until every watcher has its join. Tests that
    are not about it start a node's subscription to a topic only when no event is on its way
    (see test_a_node_that_starts_a_subscription_still_delivers_every_event)."""
    counts = [len(watcher.frames) for watcher in watchers]
    await peer.ok("sub", topic=topic)
    for watcher, count in zip(watchers, counts, strict=True):
        event = (await watcher.wait_for(count + 1))[count]
        assert (event["op"], event["topic"], event["client"]) == (
            "join",
            topic,
            peer.welcome["client"],
        ), event


# --- two nodes: one client, then many -------------------------------------------------------------


async def test_a_join_and_leave_cross_nodes_and_both_lists_agree(
    start_hub: StartHub,
    redis_url: str,
    redis_prefix: str,
    codec: str,
    open_peer: OpenPeer,
    collect: Collect,
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_url, redis_prefix, 2, *PRESENCE)
        watcher = await observe(open_peer, collect, b, codec)
        ask_a, ask_b = await open_peer(a, codec), await open_peer(b, codec)
        assert await listed(ask_b, "room.lobby") == {}

        client = await open_peer(a)
        me = entry(client)
        # The ok of the sub first; no frame of presence for a client that did not ask.
        await client.ok("sub", topic="room.lobby")
        (joined,) = await watcher.wait_for(1)
        check_event(joined, "join", "room.lobby", me)
        # The observer has the join: the entry is in Redis, both nodes list it.
        for ask in (ask_b, ask_a):
            assert await listed(ask, "room.lobby") == expected_state([("room.lobby", me)])
        # A topic without presence, and a wildcard: no presence (the next event is the leave).
        assert (await ask_a.error("presence", topic="other.x"))["code"] == "unavailable"
        await client.ok("sub", topic="other.x")
        await client.ok("sub", topic="room.*")

        await client.ok("unsub", topic="room.lobby")
        check_event((await watcher.wait_for(2))[1], "leave", "room.lobby", me)
        for ask in (ask_b, ask_a):
            assert await listed(ask, "room.lobby") == {}

        # Back again on the same connection (anonymous: a new join), then a disconnect.
        await client.ok("sub", topic="room.lobby")
        check_event((await watcher.wait_for(3))[2], "join", "room.lobby", me)
        assert await listed(ask_b, "room.lobby") == expected_state([("room.lobby", me)])
        await client.ws.close()
        check_event((await watcher.wait_for(4))[3], "leave", "room.lobby", me)
        for ask in (ask_b, ask_a):
            assert await listed(ask, "room.lobby") == {}
        assert replay({}, watcher.frames) == {}


async def test_many_clients_on_two_nodes_every_observer_sees_each_change_once(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer, collect: Collect
) -> None:
    topics = ("room.x", "room.y")
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_url, redis_prefix, 2, *PRESENCE)
        # Two observers per node (JSON and msgpack), and a connection per node to ask.
        watchers = [
            await observe(open_peer, collect, node, codec) for node in (a, b) for codec in CODECS
        ]
        asks = [await open_peer(a), await open_peer(b)]

        # Six clients per node, on room.x, room.y or both: each node then holds the topics'
        # channels and the wildcard's glob in Redis, and gets each event through both.
        plan = [("room.x",), ("room.y",), ("room.x", "room.y")] * 2
        clients = [(await open_peer(node), subs) for node in (a, b) for subs in plan]
        # The first two of each node start its subscriptions to the topics, one at a time;
        # then the others subscribe all at once.
        for peer, subs in clients[0:2] + clients[6:8]:
            await sub_seen(peer, subs[0], watchers)

        async def subscribe(peer: Peer, subs: Sequence[str]) -> None:
            for topic in subs:
                await peer.ok("sub", topic=topic)

        await asyncio.gather(*(subscribe(peer, subs) for peer, subs in clients[2:6] + clients[8:]))
        everyone = expected_state((t, entry(peer)) for peer, subs in clients for t in subs)
        snapshot = await settle(watchers, asks, topics, {}, 0, len(everyone))
        assert snapshot == everyone

        # Every other client goes at once: one unsubscribes from its first topic, the next
        # disconnects (and so leaves all of its topics).
        gone: set[tuple[str, str]] = set()

        async def go(index: int, peer: Peer, subs: Sequence[str]) -> None:
            if index % 2 == 0:
                await peer.ok("unsub", topic=subs[0])
                gone.add((subs[0], peer.welcome["client"]))
            else:
                gone.update((t, peer.welcome["client"]) for t in subs)
                await peer.ws.close()

        await asyncio.gather(*(go(i, peer, subs) for i, (peer, subs) in enumerate(clients[::2])))
        count = len(everyone) + len(gone)
        snapshot = await settle(watchers, asks, topics, snapshot, len(everyone), count)
        assert snapshot == {key: m for key, m in everyone.items() if key not in gone}

        # The rest go too (closing a closed connection does nothing).
        await asyncio.gather(*(peer.ws.close() for peer, _ in clients))
        assert await settle(watchers, asks, topics, snapshot, count, 2 * len(everyone)) == {}

        # A last join is the sentinel: every event published before it reached each observer
        # before it, through the same Redis connection; none may be in between.
        sentinel = await open_peer(a)
        await sentinel.ok("sub", topic="room.z")
        for watcher in watchers:
            frames = await watcher.wait_for(2 * len(everyone) + 1)
            check_event(frames[-1], "join", "room.z", entry(sentinel))
            counts = once_each(frames)
            assert sum(1 for op, _, _ in counts if op == "leave") == len(everyone)


async def settle(
    watchers: Sequence[Collector],
    asks: Sequence[Peer],
    topics: Sequence[str],
    snapshot: State,
    before: int,
    count: int,
) -> State:
    """Wait until every watcher has ``count`` events; its events from ``before`` on, applied
    to ``snapshot`` (the lists when the first ``before`` were in), must give every node's
    fresh list, which is returned."""
    replayed = []
    for watcher in watchers:
        frames = await watcher.wait_for(count)
        replayed.append(replay(snapshot, frames[before:]))
    fresh = await listed(asks[0], *topics)
    for ask in asks[1:]:
        assert await listed(ask, *topics) == fresh
    for state in replayed:
        assert state == fresh
    return fresh


# --- a node killed with SIGKILL -------------------------------------------------------------------


async def kill(
    node: HubProcess, doomed: Sequence[Peer], collected: Sequence[Collector] = ()
) -> float:
    """SIGKILL ``node``; its connections end without a close frame. Returns when it was."""
    killed_at = asyncio.get_running_loop().time()
    node.proc.kill()
    for peer in doomed:
        _, closed = await peer.closed()
        assert closed.rcvd is None, closed
    for collector in collected:
        assert (await collector.wait_closed()).rcvd is None
    return killed_at


async def leaves_after_kill(
    watchers: Sequence[Collector], before: int, leaving: State, killed_at: float
) -> float:
    """Every watcher gets a leave of each entry of ``leaving`` (once, nothing else) within
    ttl + tick (+ MARGIN) of the kill; returns the time from the kill to the last leave."""
    loop = asyncio.get_running_loop()
    bound = TTL + TICK + MARGIN
    last = 0.0
    for watcher in watchers:
        within = max(0.0, killed_at + bound - loop.time())
        try:
            frames = await watcher.wait_for(before + len(leaving), within=within)
        except TimeoutError:
            raise AssertionError(
                f"no {len(leaving)} leaves within {bound} s of the kill: {watcher.frames[before:]}"
            ) from None
        last = max(last, loop.time() - killed_at)
        events = frames[before:]
        assert all(e["op"] == "leave" for e in events), events
        assert replay(leaving, events) == {}
        once_each(events)
    return last


async def test_a_killed_nodes_clients_leave_within_the_ttl(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer, collect: Collect
) -> None:
    topics = ("room.k", "room.j")
    flags = (*PRESENCE, "--presence-ttl", str(TTL))
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_url, redis_prefix, 2, *flags)
        watcher = await observe(open_peer, collect, b)
        ask = await open_peer(b)
        doomed = [await open_peer(a) for _ in range(3)]
        survivors = [await open_peer(b) for _ in range(2)]
        for peer, subs in zip(
            doomed + survivors,
            [("room.k",), ("room.k", "room.j"), ("room.j",), ("room.k",), ("room.j",)],
            strict=True,
        ):
            for topic in subs:
                await sub_seen(peer, topic, [watcher])
        everyone = replay({}, watcher.frames)
        assert await listed(ask, *topics) == everyone
        ours = {p.welcome["client"] for p in survivors}
        staying = {key: m for key, m in everyone.items() if key[1] in ours}
        leaving = {key: m for key, m in everyone.items() if key[1] not in ours}
        assert len(leaving) == 4

        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        a.proc.kill()
        # The entries expire ttl after A's last heartbeat (ttl / 3 before the kill at most):
        # until then, B lists the dead node's clients.
        assert await listed(ask, *topics) == everyone
        assert loop.time() - killed_at < TTL * 2 / 3, "too slow to tell"
        for peer in doomed:
            _, closed = await peer.closed()
            assert closed.rcvd is None, closed  # killed: no close frame

        last = await leaves_after_kill([watcher], 6, leaving, killed_at)
        print(f"2 nodes: the last leave came {last:.3f} s after the SIGKILL (ttl {TTL} s)")
        assert await listed(ask, *topics) == staying
        # No second leave from a later sweep; B's heartbeat keeps its clients past the ttl.
        await quiet([watcher], [10], QUIET)
        assert await listed(ask, *topics) == staying


async def test_three_nodes_every_observer_sees_each_leave_of_a_killed_node_once(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer, collect: Collect
) -> None:
    """With users and a long grace period: a dead node's clients never left, so the grace
    period does not apply; they expire with the ttl."""
    topics = ("room.k", "room.j")
    flags = (*PRESENCE, *AUTH, "--presence-ttl", str(TTL), "--presence-grace", "5")
    async with asyncio.timeout(TEST_BOUND):
        a, b, c = await start_nodes(start_hub, redis_url, redis_prefix, 3, *flags)
        # Observers on every node (A's die with it); B and C both sweep, each every second.
        watchers = [
            await observe(open_peer, collect, node, codec, extra_headers=bearer(f"watcher-{i}"))
            for i, (node, codec) in enumerate((n, k) for n in (b, c) for k in CODECS)
        ]
        doomed_watcher = await observe(open_peer, collect, a, extra_headers=bearer("watcher-a"))
        everybody = [*watchers, doomed_watcher]
        asks = [await open_peer(node, extra_headers=bearer("asker")) for node in (b, c)]
        doomed = [await open_peer(a, extra_headers=bearer(f"u{i}", info=i)) for i in range(4)]
        survivor = await open_peer(c, extra_headers=bearer("u0", info="on c"))
        for peer in doomed:
            for topic in topics:
                await sub_seen(peer, topic, everybody)
        await sub_seen(survivor, "room.k", everybody)
        everyone = await settle(everybody, asks, topics, {}, 0, 9)
        staying = expected_state([("room.k", entry(survivor, "u0", "on c"))])
        leaving = {key: m for key, m in everyone.items() if key not in staying}
        assert len(leaving) == 8
        assert leaving[("room.k", doomed[0].welcome["client"])] == entry(doomed[0], "u0", 0)

        killed_at = await kill(a, doomed, [doomed_watcher])
        last = await leaves_after_kill(watchers, 9, leaving, killed_at)
        print(f"3 nodes: the last leave came {last:.3f} s after the SIGKILL (ttl {TTL} s)")
        for ask in asks:
            assert await listed(ask, *topics) == staying
        await quiet(watchers, [17] * len(watchers), QUIET)
        for ask in asks:
            assert await listed(ask, *topics) == staying


async def test_a_node_stopped_with_sigterm_writes_its_leaves_at_once(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer, collect: Collect
) -> None:
    """A graceful stop does not wait for the ttl (15 s by default): the node's sessions end,
    and their leaves are written before it exits."""
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_url, redis_prefix, 2, *PRESENCE)
        watcher = await observe(open_peer, collect, b)
        ask = await open_peer(b)
        leaving = [await open_peer(a) for _ in range(3)]
        for peer in leaving:
            await peer.ok("sub", topic="room.s")
        everyone = replay({}, await watcher.wait_for(3))
        a.signal(signal.SIGTERM)
        for peer in leaving:
            _, closed = await peer.closed()
            assert closed.code == 1001, closed
        assert await asyncio.to_thread(a.wait, WAIT) == 0
        events = (await watcher.wait_for(6))[3:]
        assert all(e["op"] == "leave" for e in events), events
        assert replay(everyone, events) == {}
        assert await listed(ask, "room.s") == {}


# --- grace: a user's client replaced by a new one on another node ---------------------------------

GRACE = 1.5


async def pending_leave(url: str, prefix: str, topic: str, user: str, client: str) -> None:
    """Wait until ``client``'s leave is written as its user's pending leave (the hash that
    hub/broker/redis_scripts.py describes): no event says so, and a rejoin before it would
    be a second client of the user, not a replacement."""
    async with redis.asyncio.Redis.from_url(url) as store, asyncio.timeout(WAIT):
        while True:
            if await store.hget(f"{prefix}:pl:{topic}", user) == client.encode():
                return
            await asyncio.sleep(0.02)


async def test_a_rejoin_of_the_same_user_on_another_node_within_the_grace_replaces_it(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer, collect: Collect
) -> None:
    flags = (*PRESENCE, *AUTH, "--presence-grace", str(GRACE))
    topic = "room.g"
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_url, redis_prefix, 2, *flags)
        watchers = [
            await observe(open_peer, collect, node, codec, extra_headers=bearer("watcher"))
            for node, codec in ((a, JSON), (b, CODECS[1]))
        ]
        asks = [await open_peer(node, extra_headers=bearer("asker")) for node in (a, b)]
        old = await open_peer(a, extra_headers=bearer("u1", info={"name": "One", "tab": 1}))
        gone = await open_peer(a, extra_headers=bearer("u2"))
        back = await open_peer(b, extra_headers=bearer("u3"))
        for peer in (old, gone, back):
            await sub_seen(peer, topic, watchers)
        members = {
            "old": entry(old, "u1", {"name": "One", "tab": 1}),
            "gone": entry(gone, "u2"),
            "back": entry(back, "u3"),
        }
        for watcher in watchers:
            assert replay({}, await watcher.wait_for(3)) == expected_state(
                (topic, m) for m in members.values()
            )

        # u1 and u2 disconnect from A; u3 unsubscribes and subscribes again on B.
        closed_at = loop.time()
        await asyncio.gather(old.ws.close(), gone.ws.close())
        await back.ok("unsub", topic=topic)
        await back.ok("sub", topic=topic)
        for user, peer in (("u1", old), ("u2", gone)):
            await pending_leave(redis_url, redis_prefix, topic, user, peer.welcome["client"])
        # In their grace period they are still listed, on both nodes.
        for ask in asks:
            assert await listed(ask, topic) == expected_state((topic, m) for m in members.values())

        # A new client of u1, on B, within the grace period: it replaces the old one.
        new = await open_peer(b, extra_headers=bearer("u1", info={"name": "One", "tab": 2}))
        await new.ok("sub", topic=topic)
        assert loop.time() - closed_at < GRACE, "too slow to rejoin within the grace period"
        members["new"] = entry(new, "u1", {"name": "One", "tab": 2})
        for watcher in watchers:
            check_event(
                (await watcher.wait_for(4))[3],
                "join",
                topic,
                members["new"],
                replaces=old.welcome["client"],
            )
        for ask in asks:
            assert await listed(ask, topic) == expected_state(
                (topic, members[k]) for k in ("new", "gone", "back")
            )

        # u2 did not come back: its leave comes when the grace period is over (the sweep).
        for watcher in watchers:
            frames = await watcher.wait_for(5, within=GRACE + TICK + MARGIN)
            check_event(frames[4], "leave", topic, members["gone"])
        waited = loop.time() - closed_at
        print(f"grace {GRACE} s: the leave came {waited:.3f} s after the disconnect")
        assert GRACE <= waited <= GRACE + TICK + MARGIN
        # No leave of the replaced client (its grace period ended with u2's), and nothing of
        # u3, which never left.
        await quiet(watchers, [5, 5], QUIET)
        final = expected_state((topic, members[k]) for k in ("new", "back"))
        for ask in asks:
            assert await listed(ask, topic) == final
        for watcher in watchers:
            assert replay({}, watcher.frames) == final


# --- Redis loses the entries ----------------------------------------------------------------------


async def test_the_heartbeat_writes_the_entries_again_after_a_flushall(
    start_hub: StartHub,
    redis_server: RedisServer,
    open_peer: OpenPeer,
    collect: Collect,
) -> None:
    """FLUSHALL drops every entry silently; each node's next heartbeat (ttl / 3) writes its
    own again, with a join: the events after the flush rebuild the list from nothing."""
    topics = ("room.f", "room.g")
    flags = (*PRESENCE, "--presence-ttl", str(TTL), *FAULT_FLAGS)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TEST_BOUND):
        a, b = await start_nodes(start_hub, redis_server.url, "fault", 2, *flags)
        watchers = [await observe(open_peer, collect, node) for node in (a, b)]
        asks = [await open_peer(a), await open_peer(b)]
        clients = [await open_peer(node) for node in (a, b, b)]
        for peer, topic in zip(clients, ("room.f", "room.f", "room.g"), strict=True):
            await sub_seen(peer, topic, watchers)
        everyone = await settle(watchers, asks, topics, {}, 0, 3)

        with contextlib.closing(redis_server.client()) as store:
            await asyncio.to_thread(store.flushall)
        flushed_at = loop.time()
        for watcher in watchers:
            frames = await watcher.wait_for(6, within=TTL + MARGIN)
            assert all(e["op"] == "join" for e in frames[3:]), frames
        print(f"flushall: the entries were back {loop.time() - flushed_at:.3f} s after it")
        assert await settle(watchers, asks, topics, {}, 3, 6) == everyone
        await quiet(watchers, [6, 6], QUIET)
        for ask in asks:
            assert await listed(ask, *topics) == everyone


async def test_a_node_that_starts_a_subscription_still_delivers_every_event(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer, collect: Collect
) -> None:
    """A node gets each event through every Redis subscription of its that matches the topic
    (the topic's channel, the observers' glob) and must deliver it once, also while its first
    subscriber of the topic is subscribing (SUBSCRIBE sent, not confirmed yet) or its last one
    leaves. Clients on A and B come and go on room.c, so that A and B start and end their
    subscriptions to its channel all the time; C holds the glob alone, and its observer's
    events are the reference: every node's must be the same, in the same order."""
    rounds = 30
    async with asyncio.timeout(TEST_BOUND):
        a, b, c = await start_nodes(start_hub, redis_url, redis_prefix, 3, *PRESENCE)
        watchers = [await observe(open_peer, collect, node) for node in (a, b, c)]
        churners = [await open_peer(node) for node in (a, b) for _ in range(3)]

        async def churn(peer: Peer) -> None:
            for _ in range(rounds):
                await peer.ok("sub", topic="room.c")
                await peer.ok("unsub", topic="room.c")

        await asyncio.gather(*(churn(peer) for peer in churners))
        # A last join on another topic is the sentinel: it comes after every event before it.
        sentinel = await open_peer(a)
        await sentinel.ok("sub", topic="room.end")

        async def until_sentinel(watcher: Collector) -> list[dict[str, Any]]:
            count = 1
            while True:
                frames = await watcher.wait_for(count)
                if frames[-1]["topic"] == "room.end":
                    return frames
                count += 1

        streams = [await until_sentinel(watcher) for watcher in watchers]
        reference = streams[2]
        assert replay({}, reference) == expected_state([("room.end", entry(sentinel))])
        expected = collections.Counter(_brief(e) for e in reference)
        wrong = []
        for node, stream in zip("AB", streams[:2], strict=True):
            if stream != reference:
                got = collections.Counter(_brief(e) for e in stream)
                wrong.append(
                    f"node {node}: {len(stream)} events, C {len(reference)};"
                    f" missing {sorted((expected - got).elements())[:3]},"
                    f" extra {sorted((got - expected).elements())[:3]}"
                )
        assert not wrong, "\n".join(wrong)


def _brief(event: dict[str, Any]) -> str:
    return f"{event['op']} {event['topic']} {event['client']}"
