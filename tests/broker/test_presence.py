"""Presence as a unit: :class:`MemoryPresence` and :class:`RedisPresence` (hub.broker.presence).

The contract tests run against both: one node, whose ``on_event`` records the events (for Redis,
they come back through the node's backend, which is subscribed to ``chat.>``: a backend only
delivers events of the patterns it is subscribed to). The Redis tests run against real
redis-server processes (tests/redis_server.py), with a short ttl and sweep tick.

To prove that an event did *not* happen, the tests :func:`settle`: a sentinel client of a user
joins and leaves, and its leave comes after its grace period, which ends after that of every
client that left before it (the memory node's timers fire in order; a Redis sweep removes
expired entries in the order of their expiry, and the sentinel's client id sorts last). The
events before the sentinel's leave are all there will be. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from hub.broker.backend import Publication
from hub.broker.presence import Member, MemoryPresence, Presence, PresenceEvent
from hub.broker.redis import RedisBackend
from hub.broker.redis_presence import RedisPresence
from hub.exceptions import Unavailable, UsageError
from tests.redis_server import RedisServer

#: Presence is on for this pattern; the tests use topics under it.
PATTERNS = ["chat.>"]
TOPIC = "chat.x"
#: Short enough to wait for, long enough that the writer and the reader never race it.
GRACE = 0.3
#: Redis: entries live TTL seconds after the last heartbeat (every TTL / 3); sweeps every TICK.
TTL = 0.6
TICK = 0.1
#: Upper bound of one wait.
WAIT = 5.0
#: Upper bound of one test.
TEST_BOUND = 15.0

#: The sentinel of settle(): its client id sorts after every other (Redis sweeps ties by name).
SENTINEL = Member("zz-sentinel", "zz-user")


def _ignore(publication: Publication) -> None:
    """The backends' on_publication: these tests publish nothing."""


def by_client(members: Iterable[Member]) -> list[Member]:
    return sorted(members, key=lambda member: member.client)


def join(member: Member, replaces: str | None = None, topic: str = TOPIC) -> PresenceEvent:
    return PresenceEvent("join", topic, member, replaces)


def leave(member: Member, topic: str = TOPIC) -> PresenceEvent:
    return PresenceEvent("leave", topic, member)


class Events:
    """A presence's ``on_event``: records the events; tests read them in order, with bounds."""

    def __init__(self) -> None:
        self.events: list[PresenceEvent] = []
        #: How many events the test has read.
        self.read = 0
        self._arrived = asyncio.Event()

    def __call__(self, event: PresenceEvent) -> None:
        self.events.append(event)
        self._arrived.set()

    async def next(self, within: float = WAIT) -> PresenceEvent:
        """The next event not read yet, waiting for it up to ``within`` seconds."""
        async with asyncio.timeout(within):
            while self.read >= len(self.events):
                self._arrived.clear()
                await self._arrived.wait()
        self.read += 1
        return self.events[self.read - 1]

    async def expect(self, *expected: PresenceEvent, within: float = WAIT) -> None:
        """The next events are exactly these, in this order."""
        got = [await self.next(within) for _ in expected]
        assert got == list(expected)

    def unread(self) -> list[PresenceEvent]:
        return self.events[self.read :]


@dataclass
class Node:
    """One node's presence, its events and (Redis) its backend."""

    presence: Presence
    events: Events
    backend: RedisBackend | None = None

    async def members(self, topic: str = TOPIC) -> list[Member]:
        return by_client(await self.presence.members(topic))


async def settle(node: Node, topic: str = TOPIC) -> list[PresenceEvent]:
    """Let every pending leave go out; the events until then (the sentinel's left out).

    The sentinel joins, and leaves once its join is back (a Redis node writes only the latest
    change of a client: a join and a leave both pending would be one leave of nobody)."""
    before: list[PresenceEvent] = []
    node.presence.join(topic, SENTINEL)
    while (event := await node.events.next()) != join(SENTINEL, topic=topic):
        before.append(event)
    node.presence.leave(topic, SENTINEL)
    while (event := await node.events.next(within=node.presence.grace + WAIT)) != leave(
        SENTINEL, topic
    ):
        before.append(event)
    assert all(event.member != SENTINEL for event in before), before
    return before


def apply(members: Iterable[Member], events: Iterable[PresenceEvent]) -> list[Member]:
    """What an observer that started from ``members`` lists after ``events``."""
    listed = {member.client: member for member in members}
    for event in events:
        if event.kind == "join":
            if event.replaces is not None:
                listed.pop(event.replaces, None)
            listed[event.member.client] = event.member
        else:
            listed.pop(event.member.client, None)
    return by_client(listed.values())


# --- nodes ----------------------------------------------------------------------------------------


MakeNodeFn = Callable[..., Awaitable[Node]]


async def close_all(nodes: Sequence[Node]) -> None:
    """Close the nodes, newest first, within a bound (a hung close fails the teardown)."""
    async with asyncio.timeout(2 * WAIT):
        for node in reversed(nodes):
            await node.presence.close()
            if node.backend is not None:
                await node.backend.close()


@pytest.fixture(params=["memory", "redis"])
async def make_node(request: pytest.FixtureRequest) -> AsyncIterator[MakeNodeFn]:
    """``await make_node(grace=...)``: a started node of the parametrized kind; closed after."""
    kind: str = request.param
    url = prefix = ""
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
    nodes: list[Node] = []

    async def make(grace: float = GRACE, patterns: Sequence[str] = PATTERNS) -> Node:
        events = Events()
        if kind == "memory":
            node = Node(MemoryPresence(events, patterns, grace), events)
            nodes.append(node)
        else:
            backend = RedisBackend(_ignore, url, key_prefix=prefix)
            presence = RedisPresence(backend, events, patterns, grace, ttl=TTL, tick=TICK)
            node = Node(presence, events, backend)
            nodes.append(node)
            await backend.start()
            await backend.subscribe("chat.>")
        await node.presence.start()
        return node

    yield make
    await close_all(nodes)


MakeRedisNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def redis_nodes(redis_url: str, redis_prefix: str) -> AsyncIterator[MakeRedisNode]:
    """``await redis_nodes(subscribe=("chat.>",), grace=..., url=...)``: a started Redis node
    (sharing the test's key prefix), whose backend is subscribed to ``subscribe``."""
    nodes: list[Node] = []

    async def make(
        subscribe: Sequence[str] = ("chat.>",),
        grace: float = GRACE,
        url: str = redis_url,
        **options: Any,
    ) -> Node:
        events = Events()
        backend = RedisBackend(_ignore, url, key_prefix=redis_prefix, **options)
        presence = RedisPresence(backend, events, PATTERNS, grace, ttl=TTL, tick=TICK)
        node = Node(presence, events, backend)
        nodes.append(node)
        await backend.start()
        for pattern in subscribe:
            await backend.subscribe(pattern)
        await presence.start()
        return node

    yield make
    await close_all(nodes)


# --- what has presence ----------------------------------------------------------------------------


def _on_event(event: PresenceEvent) -> None:
    raise AssertionError(f"no event expected: {event}")


def test_enabled_follows_the_patterns() -> None:
    presence = MemoryPresence(_on_event, ["chat.>", "room.*"], GRACE)
    assert presence.enabled("chat.x")
    assert presence.enabled("chat.a.b")
    assert presence.enabled("room.1")
    assert not presence.enabled("chat"), "chat.> needs at least one more token"
    assert not presence.enabled("room.1.2"), "room.* is exactly two tokens"
    assert not presence.enabled("other.x")
    assert not presence.enabled("chatx.y")
    nobody = MemoryPresence(_on_event, [], GRACE)
    assert not nobody.enabled("chat.x"), "no patterns: no presence"


def test_member_fields_carry_info_only_when_there_is_one() -> None:
    assert Member("c1").fields() == {"client": "c1", "user": None}
    assert Member("c2", "alice").fields() == {"client": "c2", "user": "alice"}
    info = {"name": "Alice", "tags": [1, "two"]}
    assert Member("c3", "alice", info).fields() == {"client": "c3", "user": "alice", "info": info}


def test_redis_presence_needs_a_positive_ttl_and_tick() -> None:
    backend = RedisBackend(_ignore, "redis://127.0.0.1:1/0")  # never started: no connection
    for ttl, tick in [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (1.0, -0.5)]:
        with pytest.raises(UsageError, match="ttl and tick"):
            RedisPresence(backend, _on_event, PATTERNS, GRACE, ttl=ttl, tick=tick)


# --- the contract, on one node of each kind -------------------------------------------------------


async def test_joins_are_listed_and_announced_once(make_node: MakeNodeFn) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node()
        anonymous = Member("c-anon")
        alice = Member("c-alice", "alice", {"name": "Alice", "langs": ["fr", "en"], "n": 3})
        node.presence.join(TOPIC, anonymous)
        node.presence.join(TOPIC, alice)
        await node.events.expect(join(anonymous), join(alice))
        assert await node.members() == [alice, anonymous]
        assert await node.members("chat.y") == [], "presence is per topic"

        node.presence.join(TOPIC, alice)  # once per client and topic
        node.presence.join("chat.y", alice)
        await node.events.expect(join(alice, topic="chat.y"))
        assert await settle(node) == []
        assert await node.members() == [alice, anonymous]
        assert await node.members("chat.y") == [alice]


async def test_an_anonymous_client_leaves_at_once(make_node: MakeNodeFn) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node(grace=30.0)
        anonymous, other = Member("c-anon"), Member("c-other")
        node.presence.join(TOPIC, anonymous)
        node.presence.join(TOPIC, other)
        await node.events.expect(join(anonymous), join(other))
        node.presence.leave(TOPIC, anonymous)
        # Well before the 30 s grace period: anonymous clients have none.
        await node.events.expect(leave(anonymous), within=2.0)
        assert await node.members() == [other]
        node.presence.leave(TOPIC, anonymous)  # not present any more: nothing
        node.presence.leave(TOPIC, Member("c-never"))  # never present: nothing
        node.presence.leave(TOPIC, other)
        await node.events.expect(leave(other), within=2.0)
        assert await node.members() == []


async def test_a_user_stays_listed_for_the_grace_period_then_leaves(
    make_node: MakeNodeFn,
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node()
        alice = Member("c-alice", "alice", {"name": "Alice"})
        node.presence.join(TOPIC, alice)
        await node.events.expect(join(alice))
        left = time.monotonic()
        node.presence.leave(TOPIC, alice)
        node.presence.leave(TOPIC, alice)  # leaving already: one leave only
        assert await node.members() == [alice], "listed during its grace period"
        await node.events.expect(leave(alice), within=GRACE + 2.0)
        elapsed = time.monotonic() - left
        assert elapsed >= GRACE - 0.02, f"the leave came {elapsed:.3f} s after, before the grace"
        assert await node.members() == []
        assert await settle(node) == [], "one leave"


async def test_grace_zero_leaves_at_once_and_replaces_nothing(make_node: MakeNodeFn) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node(grace=0.0)
        first, second = Member("c-1", "alice"), Member("c-2", "alice")
        node.presence.join(TOPIC, first)
        await node.events.expect(join(first))
        node.presence.leave(TOPIC, first)
        await node.events.expect(leave(first), within=2.0)
        assert await node.members() == []
        node.presence.join(TOPIC, second)
        await node.events.expect(join(second))  # no replaces: nothing was pending
        assert await node.members() == [second]


async def test_a_rejoin_of_the_user_replaces_its_leaving_client(make_node: MakeNodeFn) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node()
        old, new = Member("c-old", "alice", {"v": 1}), Member("c-new", "alice", {"v": 2})
        bob = Member("c-bob", "bob")
        node.presence.join(TOPIC, old)
        node.presence.join(TOPIC, bob)
        await node.events.expect(join(old), join(bob))
        node.presence.leave(TOPIC, old)
        node.presence.join(TOPIC, new)
        await node.events.expect(join(new, replaces=old.client))
        assert await node.members() == [bob, new], "the old client is gone at once"
        assert await settle(node) == [], "no leave for the replaced client"
        assert await node.members() == [bob, new]


async def test_another_users_join_replaces_nothing(make_node: MakeNodeFn) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node()
        alice, bob = Member("c-alice", "alice"), Member("c-bob", "bob")
        node.presence.join(TOPIC, alice)
        await node.events.expect(join(alice))
        node.presence.leave(TOPIC, alice)
        node.presence.join(TOPIC, bob)
        node.presence.join(TOPIC, Member("c-anon"))
        await node.events.expect(join(bob), join(Member("c-anon")))
        # Alice's pending leave belongs to this topic only.
        node.presence.join("chat.y", Member("c-alice-2", "alice"))
        await node.events.expect(join(Member("c-alice-2", "alice"), topic="chat.y"))
        assert await settle(node) == [leave(alice)]


async def test_the_same_client_back_within_grace_never_left(make_node: MakeNodeFn) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node()
        alice = Member("c-alice", "alice")
        node.presence.join(TOPIC, alice)
        await node.events.expect(join(alice))
        node.presence.leave(TOPIC, alice)
        node.presence.join(TOPIC, alice)
        assert await settle(node) == [], "an unsub and sub again within grace sends nothing"
        assert await node.members() == [alice]
        # Its pending leave is really gone: the next leave waits for a grace period again.
        node.presence.leave(TOPIC, alice)
        assert await node.members() == [alice]
        await node.events.expect(leave(alice), within=GRACE + 2.0)
        assert await node.members() == []


async def test_only_the_latest_leaving_client_of_a_user_is_replaced(
    make_node: MakeNodeFn,
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node()
        first, second, third = (Member(f"c-{n}", "alice") for n in (1, 2, 3))
        node.presence.join(TOPIC, first)
        node.presence.join(TOPIC, second)
        await node.events.expect(join(first), join(second))
        node.presence.leave(TOPIC, first)
        node.presence.leave(TOPIC, second)
        node.presence.join(TOPIC, third)
        await node.events.expect(join(third, replaces=second.client))
        assert await node.members() == [first, third], "the first one is still in its grace"
        assert await settle(node) == [leave(first)], "the first one leaves at its own time"
        assert await node.members() == [third]


async def test_a_client_back_while_another_client_of_its_user_is_leaving(
    make_node: MakeNodeFn,
) -> None:
    """Two tabs of alice unsubscribe; the first subscribes again within the grace period.

    Expected: the first is listed as long as it is subscribed (its own pending leave is
    cancelled), and an observer that applies the events keeps the same list as the node."""
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node()
        first, second = Member("c-1", "alice"), Member("c-2", "alice")
        node.presence.join(TOPIC, first)
        node.presence.join(TOPIC, second)
        await node.events.expect(join(first), join(second))
        node.presence.leave(TOPIC, first)
        node.presence.leave(TOPIC, second)
        node.presence.join(TOPIC, first)
        events = await settle(node)
        members = await node.members()
        assert first in members, f"c-1 is subscribed but not listed; events: {events}"
        assert leave(first) not in events, f"a leave of c-1, which is subscribed: {events}"
        assert apply([first, second], events) == members, (
            f"an observer that applied {events} lists {apply([first, second], events)},"
            f" the node {members}"
        )


async def test_an_observer_that_applies_the_events_keeps_the_list(
    make_node: MakeNodeFn,
) -> None:
    """A seeded random walk of clients of three users and anonymous ones: joining, leaving,
    coming back, closing; some steps let grace periods end."""
    async with asyncio.timeout(TEST_BOUND):
        node = await make_node(grace=0.15)
        memory = node.backend is None
        rng = random.Random(20261207)
        users = ["alice", "bob", "carol", None]
        subscribed: dict[str, Member] = {}
        unsubscribed: dict[str, Member] = {}  # alive, may subscribe again
        observer: list[Member] = []
        for step in range(80):
            action = rng.random()
            if action < 0.35 or not (subscribed or unsubscribed):
                member = Member(f"c-{step:03}", rng.choice(users))
                subscribed[member.client] = member
                node.presence.join(TOPIC, member)
            elif action < 0.7 and subscribed:
                member = subscribed.pop(rng.choice(sorted(subscribed)))
                if rng.random() < 0.7:
                    unsubscribed[member.client] = member  # unsub; else a close
                node.presence.leave(TOPIC, member)
            elif unsubscribed:
                member = unsubscribed.pop(rng.choice(sorted(unsubscribed)))
                subscribed[member.client] = member
                node.presence.join(TOPIC, member)
            # Pacing of the workload, not a synchronisation: some steps outlast a grace period.
            await asyncio.sleep(rng.choice([0.0, 0.0, 0.0, 0.01, 0.05]))
            if memory:  # the memory node's events are synchronous: check every step
                observer = apply([], node.events.events)
                assert observer == await node.members(), f"after step {step}"
        events = await settle(node)
        assert node.events.unread() == [] and all(e.member != SENTINEL for e in events)
        observer = apply([], [e for e in node.events.events if e.member != SENTINEL])
        members = await node.members()
        assert observer == members
        assert by_client(subscribed.values()) == members, "exactly the subscribed clients"


async def test_close_cancels_the_pending_leaves_of_a_memory_node() -> None:
    async with asyncio.timeout(TEST_BOUND):
        events = Events()
        presence = MemoryPresence(events, PATTERNS, GRACE)
        await presence.start()
        alice = Member("c-alice", "alice")
        presence.join(TOPIC, alice)
        presence.leave(TOPIC, alice)
        await presence.close()
        await asyncio.sleep(GRACE + 0.2)  # the grace period has to pass for this one
        assert events.events == [join(alice)], "no leave after close"


# --- Redis: several nodes, dead nodes, lost entries -----------------------------------------------


async def test_redis_nodes_share_the_list_and_the_events(redis_nodes: MakeRedisNode) -> None:
    async with asyncio.timeout(TEST_BOUND):
        one = await redis_nodes()
        two = await redis_nodes()
        elsewhere = await redis_nodes(subscribe=["chat.y"])
        alice = Member("c-alice", "alice", {"name": "Alice"})
        anonymous = Member("c-anon")
        one.presence.join(TOPIC, alice)
        two.presence.join(TOPIC, anonymous)
        # Each node gets the events in the order Redis ran the scripts: the same on both.
        got = [[await node.events.next(), await node.events.next()] for node in (one, two)]
        assert sorted(got[0], key=lambda e: e.member.client) == [join(alice), join(anonymous)]
        assert got[0] == got[1], "the same order on every node"
        assert await one.members() == await two.members() == [alice, anonymous]
        assert await elsewhere.members() == [alice, anonymous], "the list is Redis's"

        # Only nodes subscribed to a topic get its events: "elsewhere" gets chat.y's only
        # (events reach a node in the order Redis published them, whatever the channel).
        one.presence.join("chat.y", alice)
        await elsewhere.events.expect(join(alice, topic="chat.y"))
        await one.events.expect(join(alice, topic="chat.y"))
        await two.events.expect(join(alice, topic="chat.y"))

        two.presence.leave(TOPIC, anonymous)
        one.presence.leave(TOPIC, alice)
        await one.events.expect(leave(anonymous))
        await two.events.expect(leave(anonymous))
        assert await one.members() == [alice], "alice is in her grace period"
        await one.events.expect(leave(alice))
        await two.events.expect(leave(alice))
        assert await two.members() == []
        # The chat.x leaves went out before this one, and did not reach "elsewhere".
        one.presence.leave("chat.y", alice)
        await elsewhere.events.expect(leave(alice, topic="chat.y"))


async def test_redis_a_user_moving_to_another_node_replaces_its_old_client(
    redis_nodes: MakeRedisNode,
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        one = await redis_nodes()
        two = await redis_nodes()
        old, new = Member("c-old", "alice"), Member("c-new", "alice", {"tab": 2})
        one.presence.join(TOPIC, old)
        await one.events.expect(join(old))
        await two.events.expect(join(old))
        one.presence.leave(TOPIC, old)
        # The leave must be written before the join on the other node: wait for it in Redis.
        async with asyncio.timeout(WAIT):
            assert two.backend is not None
            redis = two.backend.redis
            pending = f"{two.backend.key_prefix}:pl:{TOPIC}"
            while await redis.hget(pending, "alice") is None:  # noqa: ASYNC110 (no event)
                await asyncio.sleep(0.01)  # a leave in its grace period sends nothing
        two.presence.join(TOPIC, new)
        await one.events.expect(join(new, replaces=old.client))
        await two.events.expect(join(new, replaces=old.client))
        assert await one.members() == [new]
        assert await settle(two) == [], "no leave of the old client"
        await one.events.expect(join(SENTINEL), leave(SENTINEL))  # and nothing before


async def test_redis_a_dead_nodes_clients_are_swept_once(redis_nodes: MakeRedisNode) -> None:
    async with asyncio.timeout(TEST_BOUND):
        sweeper, other_sweeper = await redis_nodes(), await redis_nodes()
        dead = await redis_nodes()
        # Joined first: without its node's heartbeats, it would expire before the dead ones.
        alive = Member("c-alive", "carol")
        sweeper.presence.join(TOPIC, alive)
        gone = [Member("c-gone-1"), Member("c-gone-2", "alice", {"name": "Alice"})]
        for node in (sweeper, other_sweeper, dead):
            await node.events.expect(join(alive))
        for member in gone:
            dead.presence.join(TOPIC, member)
        for node in (sweeper, other_sweeper, dead):
            await node.events.expect(*(join(member) for member in gone))

        # The node stops without its clients leaving (its sessions never got to): no more
        # heartbeats. Closing presence does not leave anyone.
        await dead.presence.close()
        died = time.monotonic()
        assert await sweeper.members() == by_client([alive, *gone]), "listed until they expire"

        # Both sweepers sweep every TICK: each leave goes out once, from one of them.
        for node in (sweeper, other_sweeper):
            got = [await node.events.next(within=TTL + TICK + 2.0) for _ in gone]
            assert sorted(got, key=lambda e: e.member.client) == [leave(m) for m in gone]
        elapsed = time.monotonic() - died
        assert elapsed <= TTL + TICK + 1.0, f"the dead node's clients left after {elapsed:.2f} s"
        assert await sweeper.members() == [alive], "the live node's heartbeats kept its client"

        # Several sweeps of both nodes later (the sentinel's grace is 3 ticks): no other leave.
        assert await settle(sweeper) == []
        await other_sweeper.events.expect(join(SENTINEL), leave(SENTINEL))  # nothing before
        assert await other_sweeper.members() == [alive]
        dead_leaves = [e for e in dead.events.events if e.kind == "leave" and e.member in gone]
        assert len(dead_leaves) == 2, "the dead node's backend got each leave once too"


async def test_redis_the_heartbeat_writes_lost_entries_again(
    redis_server: RedisServer, redis_nodes: MakeRedisNode
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await redis_nodes(url=redis_server.url)
        alice, anonymous = Member("c-alice", "alice", {"n": 1}), Member("c-anon")
        node.presence.join(TOPIC, alice)
        node.presence.join(TOPIC, anonymous)
        await node.events.expect(join(alice), join(anonymous))
        redis_server.client().flushdb()  # Redis lost everything
        assert await node.members() == []
        # The next heartbeat (every TTL / 3) writes them again, and they join again.
        got = [await node.events.next(within=TTL + 2.0) for _ in range(2)]
        assert sorted(got, key=lambda e: e.member.client) == [join(alice), join(anonymous)]
        assert await node.members() == [alice, anonymous]
        assert await settle(node) == [], "once"


async def test_redis_overlapping_subscriptions_get_each_event_once(
    redis_nodes: MakeRedisNode,
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await redis_nodes(subscribe=["chat.x", "chat.*", "*.x", "chat.>", ">"])
        first, second = Member("c-1"), Member("c-2", "bob", [1, 2])
        # A copy of an event would come before the next event (message and pmessage of one
        # PUBLISH arrive together).
        node.presence.join(TOPIC, first)
        await node.events.expect(join(first))
        node.presence.join(TOPIC, second)
        await node.events.expect(join(second))
        node.presence.leave(TOPIC, first)
        await node.events.expect(leave(first))
        assert await settle(node) == []
        third = Member("c-3")
        node.presence.join(TOPIC, third)
        await node.events.expect(join(third))  # no copy of the sentinel's leave before it


async def test_redis_members_are_unavailable_while_redis_is_down(
    redis_server: RedisServer, redis_nodes: MakeRedisNode
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        node = await redis_nodes(url=redis_server.url, command_timeout=1.0)
        alice = Member("c-alice", "alice")
        node.presence.join(TOPIC, alice)
        await node.events.expect(join(alice))
        redis_server.stop()
        with pytest.raises(Unavailable):
            await node.members()
        # A join made while Redis is away is written once it is back (here: a Redis that lost
        # its keys, so the heartbeat writes alice again too).
        bob = Member("c-bob", "bob")
        node.presence.join(TOPIC, bob)
        redis_server.start()
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    if await node.members() == [alice, bob]:
                        break
                except Unavailable:
                    pass
                await asyncio.sleep(0.05)  # the backend's reconnection fires no event
