"""Presence on one ``hub-server`` node (docs/protocol.md, "Presence"): the ``presence`` op, the
``join_leave`` option of ``sub``, and the grace period of leaving users.

Every test talks to a REAL daemon (see conftest.py) over raw WebSocket connections (frames
encoded by hand in tests/server/peers.py); tokens are HS256 JWTs made here with PyJWT. Two
daemons are shared by the module: one without auth (every client is anonymous: no grace
period) and one with auth required and a short grace period; each test keeps to topics under
``chat.<its own prefix>``. Others are started for grace 0 and for the Redis backend.

To prove that an event did *not* go out, the tests use a sentinel: a client of another user
that unsubscribes after the fact; its ``leave`` comes once its grace period is over, after that
of any client that left before it, and frames reach a connection in order. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from tests.server.conftest import HubProcess, StartHub, _record, running_hub
from tests.server.peers import JSON, MSGPACK, TEST_BOUND, WAIT, OpenPeer, Peer, same
from tests.server.presence_support import AUTH, bearer, entry

#: Presence on every topic under chat.
PRESENCE = ("--presence-topics", json.dumps(["chat.>"]))
#: The grace period of the auth hub: short enough to wait for.
GRACE = 0.4
#: The fields of a presence reply, and the fields a join or leave may carry.
REPLY_FIELDS = {"op", "id", "clients"}
EVENT_FIELDS = {"op", "topic", "sub", "client", "user", "info", "replaces"}


# --- daemons --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_anonymous_hub() -> Iterator[HubProcess]:
    """Auth off: every client is anonymous; the default grace period (5 s) applies to none."""
    with running_hub(*PRESENCE) as process:
        yield process


@pytest.fixture(scope="module")
def shared_auth_hub() -> Iterator[HubProcess]:
    with running_hub(*AUTH, *PRESENCE, "--presence-grace", str(GRACE)) as process:
        yield process


def _alive(process: HubProcess, request: pytest.FixtureRequest) -> HubProcess:
    _record(request.node, process)
    if process.proc.poll() is not None:
        pytest.fail(f"the shared hub-server has exited:\n{process.describe()}")
    return process


@pytest.fixture
def anonymous_hub(shared_anonymous_hub: HubProcess, request: pytest.FixtureRequest) -> HubProcess:
    return _alive(shared_anonymous_hub, request)


@pytest.fixture
def auth_hub(shared_auth_hub: HubProcess, request: pytest.FixtureRequest) -> HubProcess:
    return _alive(shared_auth_hub, request)


@pytest.fixture
def room(prefix: str) -> str:
    """A topic with presence, of this test's own."""
    return f"chat.{prefix}.room"


# --- tokens, frames -------------------------------------------------------------------------------


def client_of(peer: Peer) -> str:
    client = peer.welcome["client"]
    assert isinstance(client, str) and client, peer.welcome
    return client


def event(
    op: str,
    topic: str,
    sub: str,
    peer: Peer,
    user: str | None = None,
    info: Any = None,
    replaces: Peer | None = None,
) -> dict[str, Any]:
    """A join or leave frame as the protocol describes it."""
    frame = {"op": op, "topic": topic, "sub": sub, **entry(peer, user, info)}
    if replaces is not None:
        frame["replaces"] = client_of(replaces)
    return frame


def by_client(clients: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(clients, key=lambda fields: str(fields["client"]))


def by_sub(frames: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(frames, key=lambda frame: str(frame["sub"]))


async def next_event(peer: Peer, within: float | None = WAIT) -> dict[str, Any]:
    """The peer's next frame, which must be a join or a leave with only the protocol's fields."""
    frame = await peer.recv(within)
    assert frame["op"] in ("join", "leave"), f"expected a join or a leave: {frame}"
    assert frame.keys() <= EVENT_FIELDS, f"join/leave fields: {frame}"
    return frame


async def expect_event(peer: Peer, expected: dict[str, Any], within: float = WAIT) -> None:
    frame = await next_event(peer, within)
    assert same(frame, expected), f"got {frame}, expected {expected}"


async def presence(peer: Peer, topic: str) -> list[dict[str, Any]]:
    """A presence request that must succeed; its clients, sorted. Its reply must be the
    peer's next frame: no event was on its way to the peer before it."""
    reply = await peer.ok("presence", topic=topic)
    assert reply.keys() == REPLY_FIELDS, f"presence reply fields: {reply}"
    clients = reply["clients"]
    assert isinstance(clients, list), reply
    for fields in clients:
        assert isinstance(fields, dict) and {"client", "user"} <= fields.keys(), reply
        assert fields.keys() <= {"client", "user", "info"}, f"presence entry fields: {reply}"
    return by_client(clients)


async def exchange(
    peer: Peer, op: str, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send ``op`` with a fresh id; its reply and the frames that came before it."""
    id_ = peer.next_id()
    await peer.send({"op": op, "id": id_, **fields})
    before = []
    while (frame := await peer.recv()).get("id") != id_ or frame["op"] not in ("ok", "error"):
        before.append(frame)
    return frame, before


async def events_until(
    peer: Peer, last: dict[str, Any], within: float = GRACE + WAIT
) -> list[dict[str, Any]]:
    """The peer's events until ``last`` (a sentinel's leave), which is not included."""
    events = []
    async with asyncio.timeout(within):
        while not same(frame := await next_event(peer, within=None), last):
            events.append(frame)
    return events


def apply(clients: Iterable[dict[str, Any]], events: Iterable[dict[str, Any]]) -> list[Any]:
    """What an observer that started from ``clients`` lists after ``events``: join adds,
    replaces and leave remove."""
    listed = {fields["client"]: fields for fields in clients}
    for frame in events:
        fields: dict[str, Any] = {k: frame[k] for k in ("client", "user", "info") if k in frame}
        if frame["op"] == "join":
            if "replaces" in frame:
                listed.pop(frame["replaces"], None)
            listed[frame["client"]] = fields
        else:
            listed.pop(frame["client"], None)
    return by_client(listed.values())


async def watch(open_peer: OpenPeer, process: HubProcess, topic: str, user: str = "bob") -> Peer:
    """A peer of ``user`` (auth hub) subscribed to ``topic`` with join_leave; its own join read."""
    peer = await open_peer(process, JSON, extra_headers=bearer(user))
    await peer.ok("sub", topic=topic, join_leave=True)
    await expect_event(peer, event("join", topic, topic, peer, user))
    return peer


async def present(
    open_peer: OpenPeer, process: HubProcess, topic: str, user: str, *watchers: Peer, **claims: Any
) -> Peer:
    """A peer of ``user`` subscribed to ``topic`` (no join_leave); each watcher got its join."""
    peer = await open_peer(process, JSON, extra_headers=bearer(user, **claims))
    await peer.ok("sub", topic=topic)
    for watcher in watchers:
        await expect_event(watcher, event("join", topic, topic, peer, user, claims.get("info")))
    return peer


def abort(peer: Peer) -> None:
    """Kill the connection: a TCP reset, no close frame."""
    transport = peer.ws.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --- events and the list --------------------------------------------------------------------------


async def test_subscribers_get_join_and_leave_and_the_list(
    anonymous_hub: HubProcess, open_peer: OpenPeer, room: str, codec: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        observer = await open_peer(anonymous_hub, codec)
        await observer.ok("sub", topic=room, join_leave=True)  # the ok comes first
        await expect_event(observer, event("join", room, room, observer))  # its own join

        member = await open_peer(anonymous_hub, codec)
        await member.ok("sub", topic=room)
        await expect_event(observer, event("join", room, room, member))
        both = by_client([entry(observer), entry(member)])
        assert await presence(observer, room) == both
        # The member did not ask for events: its next frame is the reply.
        assert await presence(member, room) == both

        await member.ok("unsub", topic=room)
        await expect_event(observer, event("leave", room, room, member))
        assert await presence(member, room) == [entry(observer)]

        # Unsubscribing ends the events, its own leave included.
        reply, before = await exchange(observer, "unsub", topic=room)
        assert reply["op"] == "ok", reply
        assert before == [], before
        assert await presence(observer, room) == []
        assert await presence(member, f"{room}.other") == []


async def test_a_wildcard_subscription_gets_events_and_makes_nobody_present(
    anonymous_hub: HubProcess, open_peer: OpenPeer, prefix: str, room: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        wildcard = f"chat.{prefix}.>"
        observer = await open_peer(anonymous_hub)
        await observer.ok("sub", topic=wildcard, join_leave=True)
        assert await presence(observer, room) == [], "no join: a wildcard makes nobody present"

        member = await open_peer(anonymous_hub)
        await member.ok("sub", topic=f"chat.{prefix}.*")
        await member.ok("sub", topic=wildcard)
        assert await presence(observer, room) == []
        await member.ok("sub", topic=room)
        await expect_event(observer, event("join", room, wildcard, member))

        # One event per subscription that asked, each naming its own sub.
        await observer.ok("sub", topic=room, join_leave=True)
        own = [await next_event(observer), await next_event(observer)]
        assert by_sub(own) == by_sub(
            [event("join", room, room, observer), event("join", room, wildcard, observer)]
        )
        assert await presence(observer, room) == by_client([entry(member), entry(observer)])

        await member.ok("unsub", topic=f"chat.{prefix}.*")
        await member.ok("unsub", topic=room)
        left = [await next_event(observer), await next_event(observer)]
        assert by_sub(left) == by_sub(
            [event("leave", room, room, member), event("leave", room, wildcard, member)]
        )
        assert await presence(observer, room) == [entry(observer)]


async def test_a_connection_is_present_once_per_topic(
    anonymous_hub: HubProcess, open_peer: OpenPeer, prefix: str, room: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        observer = await open_peer(anonymous_hub)
        await observer.ok("sub", topic=f"chat.{prefix}.>", join_leave=True)
        member = await open_peer(anonymous_hub)
        await member.ok("sub", topic=room)
        await member.ok("sub", topic=room)
        # Already subscribed: join_leave now applies to the subscription, and no one joins.
        await member.ok("sub", topic=room, join_leave=True)
        await member.ok("sub", topic=f"chat.{prefix}.*")
        await expect_event(observer, event("join", room, f"chat.{prefix}.>", member))
        other = await open_peer(anonymous_hub)
        await other.ok("sub", topic=room)
        # The next event is the other's join: the member joined once.
        await expect_event(observer, event("join", room, f"chat.{prefix}.>", other))
        await expect_event(member, event("join", room, room, other))
        assert await presence(observer, room) == by_client([entry(member), entry(other)])


async def test_bad_join_leave_and_topics_without_presence(
    anonymous_hub: HubProcess, hub: HubProcess, open_peer: OpenPeer, prefix: str, room: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(anonymous_hub)
        for value in ("yes", 1, 0, None, [True], {"on": True}):
            reply = await peer.error("sub", topic=room, join_leave=value)
            assert reply["code"] == "bad_request", f"join_leave={value!r}: {reply}"
        reply = await peer.error("unsub", topic=room)
        assert reply["code"] == "not_subscribed", "a bad sub subscribes nothing"
        for topic in (f"chat.{prefix}.*", f"chat.{prefix}.>", "chat.>"):
            reply = await peer.error("presence", topic=topic)
            assert reply["code"] == "invalid_topic", f"presence of {topic}: {reply}"

        # A topic that presence_topics does not match.
        other = f"other.{prefix}"
        reply = await peer.error("presence", topic=other)
        assert reply["code"] == "unavailable", reply
        await peer.ok("sub", topic=other, join_leave=True)
        assert (await peer.error("presence", topic=other))["code"] == "unavailable", "no join"
        assert (await peer.error("presence", topic="chat"))["code"] == "unavailable"

        # A hub without presence_topics has no presence at all.
        plain = await open_peer(hub)
        reply = await plain.error("presence", topic=room)
        assert reply["code"] == "unavailable", reply
        await plain.ok("sub", topic=room, join_leave=True)
        assert (await plain.error("presence", topic=room))["code"] == "unavailable", "no join"


async def test_a_closed_or_killed_connection_leaves(
    anonymous_hub: HubProcess, open_peer: OpenPeer, room: str, codec: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        observer = await open_peer(anonymous_hub, codec)
        await observer.ok("sub", topic=room, join_leave=True)
        await expect_event(observer, event("join", room, room, observer))

        closing = await open_peer(anonymous_hub, codec)
        await closing.ok("sub", topic=room)
        await expect_event(observer, event("join", room, room, closing))
        await closing.ws.close()
        await expect_event(observer, event("leave", room, room, closing))

        killed = await open_peer(anonymous_hub, codec)
        await killed.ok("sub", topic=room)
        await killed.ok("sub", topic=f"{room}.*")  # a wildcard too: it has nothing to leave
        await expect_event(observer, event("join", room, room, killed))
        abort(killed)
        await expect_event(observer, event("leave", room, room, killed))
        assert await presence(observer, room) == [entry(observer)]


async def test_anonymous_clients_leave_at_once(
    anonymous_hub: HubProcess, open_peer: OpenPeer, room: str
) -> None:
    """The anonymous hub runs with the default grace period, 5 s: anonymous clients have none."""
    async with asyncio.timeout(TEST_BOUND):
        observer = await open_peer(anonymous_hub)
        await observer.ok("sub", topic=room, join_leave=True)
        await expect_event(observer, event("join", room, room, observer))
        for disconnect in (False, True):
            member = await open_peer(anonymous_hub)
            await member.ok("sub", topic=room)
            await expect_event(observer, event("join", room, room, member))
            started = time.monotonic()
            if disconnect:
                await member.ws.close()
            else:
                await member.ok("unsub", topic=room)
            await expect_event(observer, event("leave", room, room, member), within=2.0)
            assert time.monotonic() - started < 2.0
        assert await presence(observer, room) == [entry(observer)]


# --- users, info and the grace period -------------------------------------------------------------


async def test_the_tokens_user_and_info_are_shown(
    auth_hub: HubProcess, open_peer: OpenPeer, room: str, codec: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        info = {"name": "Alice", "tags": ["admin", 7], "away": False, "score": 1.5, "x": None}
        bob = await open_peer(auth_hub, codec, extra_headers=bearer("bob"))
        await bob.ok("sub", topic=room, join_leave=True)
        await expect_event(bob, event("join", room, room, bob, "bob"))  # no info: no field
        alice = await open_peer(auth_hub, codec, extra_headers=bearer("alice", info=info))
        await alice.ok("sub", topic=room, join_leave=True)
        await expect_event(bob, event("join", room, room, alice, "alice", info))
        await expect_event(alice, event("join", room, room, alice, "alice", info))
        expected = by_client([entry(alice, "alice", info), entry(bob, "bob")])
        got = await presence(alice, room)
        assert same(got, expected), f"{got} != {expected}"
        await bob.ok("unsub", topic=room)
        await expect_event(alice, event("leave", room, room, bob, "bob"), within=GRACE + WAIT)


async def test_an_info_msgpack_cannot_hold_is_left_out_for_msgpack_only(
    auth_hub: HubProcess, open_peer: OpenPeer, room: str
) -> None:
    """A 70-bit integer in a token's info: the JSON client sees it, the msgpack client sees
    the member without info, in the list and in the events (never the whole list refused)."""
    async with asyncio.timeout(TEST_BOUND):
        info = {"big": 2**70}
        json_peer = await open_peer(auth_hub, JSON, extra_headers=bearer("bob"))
        msgpack_peer = await open_peer(auth_hub, MSGPACK, extra_headers=bearer("carol"))
        for peer in (json_peer, msgpack_peer):
            await peer.ok("sub", topic=room, join_leave=True)
        alice = await open_peer(auth_hub, JSON, extra_headers=bearer("alice", info=info))
        await alice.ok("sub", topic=room)
        while (joined := await next_event(json_peer))["client"] != client_of(alice):
            pass
        assert joined == event("join", room, room, alice, "alice", info)
        while (joined := await next_event(msgpack_peer))["client"] != client_of(alice):
            pass
        assert joined == event("join", room, room, alice, "alice")
        assert entry(alice, "alice", info) in await presence(json_peer, room)
        assert entry(alice, "alice") in await presence(msgpack_peer, room)


async def test_a_user_stays_listed_for_the_grace_period_then_leaves(
    auth_hub: HubProcess, open_peer: OpenPeer, room: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        bob = await watch(open_peer, auth_hub, room)
        alice = await present(open_peer, auth_hub, room, "alice", bob)
        carol = await present(open_peer, auth_hub, room, "carol", bob)
        everyone = by_client([entry(alice, "alice"), entry(bob, "bob"), entry(carol, "carol")])

        started = time.monotonic()
        await alice.ok("unsub", topic=room)
        await carol.ws.close()  # a disconnect waits for the grace period too
        assert await presence(bob, room) == everyone, "both listed during their grace period"
        leaves = [await next_event(bob, within=GRACE + WAIT) for _ in range(2)]
        elapsed = time.monotonic() - started
        assert elapsed >= GRACE - 0.01, f"left {elapsed:.3f} s after, within the grace period"
        assert leaves == [
            event("leave", room, room, alice, "alice"),
            event("leave", room, room, carol, "carol"),
        ]
        assert await presence(bob, room) == [entry(bob, "bob")]


async def test_a_rejoin_of_the_user_replaces_its_leaving_client(
    auth_hub: HubProcess, open_peer: OpenPeer, room: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        bob = await watch(open_peer, auth_hub, room)
        sentinel = await present(open_peer, auth_hub, room, "zed", bob)
        # Another connection of the same user, after an unsub.
        old = await present(open_peer, auth_hub, room, "alice", bob, info={"tab": 1})
        await old.ok("unsub", topic=room)
        new = await open_peer(auth_hub, JSON, extra_headers=bearer("alice", info={"tab": 2}))
        await new.ok("sub", topic=room)
        await expect_event(bob, event("join", room, room, new, "alice", {"tab": 2}, old))
        # After a disconnect (a page reload).
        await new.ws.close()
        newer = await open_peer(auth_hub, JSON, extra_headers=bearer("alice"))
        await newer.ok("sub", topic=room)
        await expect_event(bob, event("join", room, room, newer, "alice", replaces=new))
        listed = by_client([entry(bob, "bob"), entry(sentinel, "zed"), entry(newer, "alice")])
        assert await presence(bob, room) == listed, "the old clients are gone at once"

        await sentinel.ok("unsub", topic=room)
        sentinel_leave = event("leave", room, room, sentinel, "zed")
        assert await events_until(bob, sentinel_leave) == [], "no leave of a replaced client"
        assert await presence(bob, room) == by_client([entry(bob, "bob"), entry(newer, "alice")])


async def test_the_same_connection_back_within_grace_never_left(
    auth_hub: HubProcess, open_peer: OpenPeer, room: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        bob = await watch(open_peer, auth_hub, room)
        sentinel = await present(open_peer, auth_hub, room, "zed", bob)
        alice = await present(open_peer, auth_hub, room, "alice", bob)
        await alice.ok("unsub", topic=room)
        await alice.ok("sub", topic=room)
        await sentinel.ok("unsub", topic=room)
        sentinel_leave = event("leave", room, room, sentinel, "zed")
        assert await events_until(bob, sentinel_leave) == [], "an unsub and sub sends nothing"
        assert await presence(bob, room) == by_client([entry(alice, "alice"), entry(bob, "bob")])
        # Still present for real: its next unsub leaves after a grace period again.
        await alice.ok("unsub", topic=room)
        await expect_event(bob, event("leave", room, room, alice, "alice"), within=GRACE + WAIT)


async def test_a_connection_back_while_another_of_its_user_is_leaving(
    auth_hub: HubProcess, open_peer: OpenPeer, room: str
) -> None:
    """Two tabs of alice unsubscribe, then the first subscribes again within the grace
    period: it must stay listed, and the events must keep an observer's list right."""
    async with asyncio.timeout(TEST_BOUND):
        bob = await watch(open_peer, auth_hub, room)
        sentinel = await present(open_peer, auth_hub, room, "zed", bob)
        first = await present(open_peer, auth_hub, room, "alice", bob)
        second = await present(open_peer, auth_hub, room, "alice", bob)
        snapshot = await presence(bob, room)
        await first.ok("unsub", topic=room)
        await second.ok("unsub", topic=room)
        await first.ok("sub", topic=room)
        await sentinel.ok("unsub", topic=room)
        events = await events_until(bob, event("leave", room, room, sentinel, "zed"))
        events.append(event("leave", room, room, sentinel, "zed"))
        fresh = await presence(bob, room)
        assert entry(first, "alice") in fresh, f"the first tab is subscribed; events: {events}"
        assert entry(second, "alice") not in fresh, f"the second tab left; events: {events}"
        assert apply(snapshot, events) == fresh, f"events {events} do not lead to {fresh}"


async def test_grace_zero_leaves_at_once(start_hub: StartHub, open_peer: OpenPeer) -> None:
    async with asyncio.timeout(TEST_BOUND):
        process = await start_hub(*AUTH, *PRESENCE, "--presence-grace", "0")
        topic = "chat.room"
        bob = await watch(open_peer, process, topic)
        alice = await present(open_peer, process, topic, "alice", bob)
        await alice.ok("unsub", topic=topic)
        # Well within the default grace period (5 s).
        await expect_event(bob, event("leave", topic, topic, alice, "alice"), within=2.0)
        await alice.ok("sub", topic=topic)
        await expect_event(bob, event("join", topic, topic, alice, "alice"))  # no replaces
        assert await presence(bob, topic) == by_client([entry(alice, "alice"), entry(bob, "bob")])


async def test_presence_follows_the_subscribe_grants(
    auth_hub: HubProcess, open_peer: OpenPeer, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        public, secret = f"chat.{prefix}.public.a", f"chat.{prefix}.secret"
        eve = await open_peer(
            auth_hub, JSON, extra_headers=bearer("eve", subscribe=[f"chat.{prefix}.public.>"])
        )
        assert (await eve.error("presence", topic=secret))["code"] == "forbidden"
        reply = await eve.error("sub", topic=f"chat.{prefix}.>", join_leave=True)
        assert reply["code"] == "forbidden", reply
        await eve.ok("sub", topic=f"chat.{prefix}.public.>", join_leave=True)
        assert await presence(eve, public) == []

        alice = await present(open_peer, auth_hub, secret, "alice")
        await alice.ok("sub", topic=public)
        # The join on the secret topic never reaches eve: the public one is her next frame.
        await expect_event(eve, event("join", public, f"chat.{prefix}.public.>", alice, "alice"))
        assert await presence(eve, public) == [entry(alice, "alice")]
        assert (await eve.error("presence", topic=secret))["code"] == "forbidden"
        assert await presence(alice, secret) == [entry(alice, "alice")]


# --- the invariant --------------------------------------------------------------------------------


async def test_an_observer_that_applies_the_events_keeps_the_list(
    auth_hub: HubProcess, open_peer: OpenPeer, room: str
) -> None:
    """A seeded random walk of connections of three users: subscribing, unsubscribing,
    subscribing again, closing, killed; the observer takes the list midway."""
    async with asyncio.timeout(TEST_BOUND):
        rng = random.Random(20261207)
        bob = await watch(open_peer, auth_hub, room)
        sentinel = await present(open_peer, auth_hub, room, "zed", bob)
        open_peers: dict[str, tuple[Peer, str]] = {}  # client: (peer, user)
        subscribed: set[str] = set()
        snapshot: list[dict[str, Any]] = []
        for step in range(30):
            if step == 8:
                # The events before the reply are in the list; the observer applies the others.
                reply, _ = await exchange(bob, "presence", topic=room)
                assert reply["op"] == "ok", reply
                snapshot = by_client(reply["clients"])
            action = rng.random()
            idle = [client for client in open_peers if client not in subscribed]
            if action < 0.3 or not open_peers:
                user = rng.choice(["alice", "carol", "dave"])
                peer = await open_peer(auth_hub, JSON, extra_headers=bearer(user))
                open_peers[client_of(peer)] = (peer, user)
                await peer.ok("sub", topic=room)
                subscribed.add(client_of(peer))
            elif action < 0.55 and subscribed:
                client = rng.choice(sorted(subscribed))
                await open_peers[client][0].ok("unsub", topic=room)
                subscribed.discard(client)
            elif action < 0.75 and idle:
                client = rng.choice(sorted(idle))
                await open_peers[client][0].ok("sub", topic=room)
                subscribed.add(client)
            else:
                client = rng.choice(sorted(open_peers))
                peer, _ = open_peers.pop(client)
                subscribed.discard(client)
                if rng.random() < 0.5:
                    await peer.ws.close()
                else:
                    abort(peer)
            if rng.random() < 0.12:
                await asyncio.sleep(GRACE * 0.75)  # pacing: some grace periods end midway

        await sentinel.ok("unsub", topic=room)
        last = event("leave", room, room, sentinel, "zed")
        events = [*await events_until(bob, last), last]
        fresh = await presence(bob, room)
        expected = by_client(
            [entry(bob, "bob")]
            + [entry(open_peers[client][0], open_peers[client][1]) for client in subscribed]
        )
        assert fresh == expected, "exactly the subscribed connections"
        assert apply(snapshot, events) == fresh, f"events {events} from {snapshot}"


# --- Redis ----------------------------------------------------------------------------------------


async def test_presence_through_redis_on_one_node(
    start_hub: StartHub, open_peer: OpenPeer, redis_url: str, redis_prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        process = await start_hub(
            *AUTH,
            *PRESENCE,
            "--presence-grace",
            str(GRACE),
            "--presence-ttl",
            "3",
            "--backend",
            redis_url,
            "--redis-prefix",
            redis_prefix,
        )
        topic = "chat.room"
        bob = await watch(open_peer, process, topic)
        old = await present(open_peer, process, topic, "alice", bob, info={"tab": 1})
        assert await presence(bob, topic) == by_client(
            [entry(bob, "bob"), entry(old, "alice", {"tab": 1})]
        )
        await old.ok("unsub", topic=topic)
        assert await presence(bob, topic) == by_client(
            [entry(bob, "bob"), entry(old, "alice", {"tab": 1})]
        ), "listed in its grace period"
        new = await open_peer(process, JSON, extra_headers=bearer("alice"))
        await new.ok("sub", topic=topic)
        await expect_event(bob, event("join", topic, topic, new, "alice", replaces=old))
        assert await presence(bob, topic) == by_client([entry(bob, "bob"), entry(new, "alice")])

        started = time.monotonic()
        await new.ws.close()
        # The sweep (every second) sends the leave once the grace period is over.
        await expect_event(bob, event("leave", topic, topic, new, "alice"), within=GRACE + WAIT)
        assert time.monotonic() - started >= GRACE - 0.01
        assert await presence(bob, topic) == [entry(bob, "bob")]
