"""Presence in the SDK: ``presence()``, ``subscribe(join_leave=True)`` and its events, the sync
facade and the ``hub`` command, against real hub-server processes (fake hubs for what a real
hub does not send: malformed events, events for a subscription the client does not hold).

The module's hub (``hub``) has presence on ``chat.>`` and optional auth: anonymous clients may
do anything, a token names a user and may carry an ``info`` claim. Each test works on topics
under ``chat.<prefix>``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from hub.exceptions import Forbidden, NotRecovered, RequestError, Unavailable, UsageError
from hub_client import (
    Client,
    ConnectionState,
    Message,
    PresenceEvent,
    PresenceMember,
    Subscription,
)
from hub_client.sync import connect as sync_connect
from tests.client.commands import run
from tests.client.conftest import OpenClient, StartFake
from tests.client.support import (
    WAIT,
    FakeConnection,
    States,
    bounded,
    kill,
    poll_until,
    restart,
)
from tests.server.conftest import HubProcess, StartHub, running_hub

pytestmark = pytest.mark.timeout(30)

SECRET = "a-shared-secret-of-at-least-32-bytes!"

#: Presence on chat.>; tokens optional, and anonymous clients may do anything.
FLAGS = (
    "--presence-topics",
    '["chat.>"]',
    "--auth",
    "optional",
    "--auth-keys",
    json.dumps([{"alg": "HS256", "key": SECRET}]),
    "--auth-anonymous",
    json.dumps({"subscribe": [">"], "publish": [">"]}),
)


@pytest.fixture(scope="module")
def shared_hub() -> Iterator[HubProcess]:
    """The module's hub (the ``hub`` fixture of tests/server/conftest.py uses it)."""
    with running_hub(*FLAGS) as process:
        yield process


@pytest.fixture
def topic(prefix: str) -> str:
    """A concrete topic with presence, of this test's own."""
    return f"chat.{prefix}.a"


def token(user: str, info: Any = None, subscribe: list[str] | None = None) -> str:
    claims: dict[str, Any] = {
        "sub": user,
        "exp": time.time() + 600,
        "subscribe": [">"] if subscribe is None else subscribe,
        "publish": [">"],
    }
    if info is not None:
        claims["info"] = info
    return jwt.encode(claims, SECRET, algorithm="HS256")


def me(client: Client) -> str:
    """The client's id on its current connection."""
    name: str = client.welcome["client"]
    return name


async def event(subscription: Subscription) -> PresenceEvent:
    return await bounded(subscription.presence_event())


async def own_join(subscription: Subscription) -> PresenceEvent:
    """The first event of a join_leave subscription to a concrete topic: its own join."""
    joined = await event(subscription)
    assert (joined.kind, joined.client) == ("join", me(subscription.client)), joined
    return joined


# --- presence() -----------------------------------------------------------------------------------


async def test_presence_lists_typed_members(
    hub: HubProcess, open_client: OpenClient, topic: str, prefix: str
) -> None:
    anonymous = await open_client(hub.uri)
    info = {"name": "Ana", "tags": [1, 2], "admin": False}
    ana = await open_client(hub.uri, token=token("ana", info))
    wildcard = await open_client(hub.uri)

    assert await bounded(anonymous.presence(topic)) == []
    await bounded(anonymous.subscribe(topic))
    await bounded(ana.subscribe(topic))
    await bounded(wildcard.subscribe(f"chat.{prefix}.*"))  # a pattern makes nobody present

    members = await bounded(wildcard.presence(topic))
    assert all(type(member) is PresenceMember for member in members)
    assert sorted(members, key=lambda m: m.client) == sorted(
        [PresenceMember(me(anonymous), None, None), PresenceMember(me(ana), "ana", info)],
        key=lambda m: m.client,
    )
    assert await bounded(wildcard.presence(f"chat.{prefix}.other")) == []


async def test_presence_errors(hub: HubProcess, open_client: OpenClient, prefix: str) -> None:
    client = await open_client(hub.uri)
    with pytest.raises(Unavailable) as unavailable:
        await bounded(client.presence(f"news.{prefix}"))  # not under chat.>
    assert unavailable.value.code == "unavailable"
    assert isinstance(unavailable.value, RequestError)

    outsider = await open_client(hub.uri, token=token("eve", subscribe=["news.>"]))
    with pytest.raises(Forbidden) as forbidden:
        await bounded(outsider.presence(f"chat.{prefix}.a"))
    assert forbidden.value.code == "forbidden"


# --- join_leave events ----------------------------------------------------------------------------


async def test_join_and_leave_reach_the_subscriptions_that_asked(
    hub: HubProcess, open_client: OpenClient, codec: str, topic: str, prefix: str
) -> None:
    observer = await open_client(hub.uri)
    events = await bounded(observer.subscribe(topic, join_leave=True))
    plain = await bounded(observer.subscribe(f"chat.{prefix}.*"))  # no join_leave
    watcher = await open_client(hub.uri)
    wild = await bounded(watcher.subscribe(f"chat.{prefix}.>", join_leave=True))
    assert (events.join_leave, plain.join_leave, wild.join_leave) == (True, False, True)
    await own_join(events)

    info = {"seat": 3, "name": "Bob"}
    other = await open_client(hub.uri, token=token("bob", info))
    other_id = me(other)
    joining = await bounded(other.subscribe(topic))
    expected = PresenceEvent("join", topic, topic, other_id, "bob", info, None)
    assert await event(events) == expected
    # A wildcard subscription gets the events of the concrete topics it covers (it was made
    # after the observer's join).
    seen = await event(wild)
    assert seen == PresenceEvent("join", topic, f"chat.{prefix}.>", other_id, "bob", info)
    assert seen.member == PresenceMember(other_id, "bob", info)

    # Messages go to the message iterator only; events to the events only.
    await bounded(other.publish(topic, "hello"))
    message = await bounded(events.get())
    assert isinstance(message, Message) and message.data == "hello"
    assert events.pending_presence() == 0

    await bounded(joining.unsubscribe())  # bob's leave waits for the grace period (5 s)
    await other.close()
    anonymous = await open_client(hub.uri)
    passing = await bounded(anonymous.subscribe(topic))
    assert (await event(events)).client == me(anonymous)
    await bounded(passing.unsubscribe())  # anonymous: the leave goes out at once
    left = await event(events)
    assert left == PresenceEvent("leave", topic, topic, me(anonymous), None, None, None)

    # The same frames went to the subscription without join_leave: it holds messages only.
    await bounded(anonymous.publish(topic, "sync"))
    assert [m.data for m in [await bounded(plain.get()), await bounded(plain.get())]] == [
        "hello",
        "sync",
    ]
    assert plain.pending_presence() == 0 and plain.pending() == 0
    with pytest.raises(UsageError):
        await plain.presence_event()
    with pytest.raises(UsageError):
        plain.presence_events()
    with pytest.raises(UsageError):
        plain.on_presence(print)


async def test_a_rejoin_of_the_same_user_names_the_client_it_replaces(
    hub: HubProcess, open_client: OpenClient, topic: str
) -> None:
    observer = await open_client(hub.uri)
    events = await bounded(observer.subscribe(topic, join_leave=True))
    await own_join(events)
    first = await open_client(hub.uri, token=token("carol"))
    first_id = me(first)
    await bounded(first.subscribe(topic))
    assert (await event(events)).client == first_id
    await first.close()  # carol's leave is pending for the grace period (5 s)...
    second = await open_client(hub.uri, token=token("carol"))
    await bounded(second.subscribe(topic))  # ...and this join replaces it: no leave
    replacing = await event(events)
    assert replacing == PresenceEvent("join", topic, topic, me(second), "carol", None, first_id)
    members = await bounded(observer.presence(topic))
    assert {m.client for m in members} == {me(observer), me(second)}


async def test_the_iterator_ends_with_the_subscription(
    hub: HubProcess, open_client: OpenClient, topic: str
) -> None:
    client = await open_client(hub.uri)
    subscription = await bounded(client.subscribe(topic, join_leave=True))
    other = await open_client(hub.uri)
    await bounded(other.subscribe(topic))
    await poll_until(lambda: subscription.pending_presence() == 2)
    await bounded(subscription.unsubscribe())
    # What was buffered is still taken, then the iterator ends.
    kinds = [(e.kind, e.client) async for e in subscription.presence_events()]
    assert kinds == [("join", me(client)), ("join", me(other))]
    with pytest.raises(StopAsyncIteration):
        await bounded(subscription.presence_event())

    closing = await bounded(other.subscribe(f"chat.{topic}", join_leave=True))
    waiting = asyncio.ensure_future(closing.presence_event())
    assert (await bounded(waiting)).client == me(other)
    waiting = asyncio.ensure_future(closing.presence_event())
    await other.close()  # wakes a reader that waits for an event
    with pytest.raises(StopAsyncIteration):
        await bounded(waiting)


async def test_a_full_buffer_drops_the_oldest_events(
    hub: HubProcess, open_client: OpenClient, topic: str
) -> None:
    observer = await open_client(hub.uri)
    events = await bounded(observer.subscribe(topic, join_leave=True, max_messages=2))
    others = [await open_client(hub.uri) for _ in range(3)]
    for other in others:
        await bounded(other.subscribe(topic))
    # Four joins (its own and three), two kept: the reader never waited for the application.
    await poll_until(lambda: events.dropped_presence == 2)
    assert [(await event(events)).client for _ in range(2)] == [me(o) for o in others[1:]]
    await bounded(observer.publish(topic, "still reading"))
    assert (await bounded(events.get())).data == "still reading"


async def test_presence_callbacks(hub: HubProcess, open_client: OpenClient, topic: str) -> None:
    client = await open_client(hub.uri)
    seen: list[PresenceEvent] = []
    joined = asyncio.Event()

    def on_presence(presence_event: PresenceEvent) -> None:
        seen.append(presence_event)
        if len(seen) == 4:
            joined.set()
        if presence_event.kind == "leave":
            raise ValueError("a failing callback is logged, and called again")

    with pytest.raises(UsageError):
        client.subscribe(topic, on_presence=on_presence)  # needs join_leave=True
    async with client.subscribe(topic, join_leave=True, on_presence=on_presence) as subscription:
        with pytest.raises(UsageError):
            subscription.on_presence(on_presence)  # one callback per subscription
        other = await open_client(hub.uri)
        async with other.subscribe(topic):
            pass  # joins, then leaves (anonymous: at once)
        again = await open_client(hub.uri)
        await bounded(again.subscribe(topic))
        await bounded(joined.wait())
    assert [(e.kind, e.client) for e in seen] == [
        ("join", me(client)),
        ("join", me(other)),
        ("leave", me(other)),
        ("join", me(again)),
    ]

    # A coroutine function, set after subscribing: what was buffered meanwhile is delivered.
    async_seen: asyncio.Queue[PresenceEvent] = asyncio.Queue()
    watcher = await open_client(hub.uri)
    subscription = await bounded(watcher.subscribe(topic, join_leave=True))
    await poll_until(lambda: subscription.pending_presence() == 1)
    subscription.on_presence(async_seen.put)
    assert (await bounded(async_seen.get())).client == me(watcher)
    late = await open_client(hub.uri)
    await bounded(late.subscribe(topic))
    assert (await bounded(async_seen.get())).client == me(late)


# --- reconnects -----------------------------------------------------------------------------------


async def test_a_resubscribe_after_a_restart_asks_for_join_leave_again(
    start_hub: StartHub, open_client: OpenClient, topic: str
) -> None:
    node = await start_hub(*FLAGS)
    states = States()
    client = await open_client(node.uri, on_state=states)
    subscription = await bounded(client.subscribe(topic, join_leave=True))
    first = await own_join(subscription)

    await kill(node)
    await states.wait_for(ConnectionState.RECONNECTING)
    await restart(start_hub, node.port, *FLAGS)
    await states.wait_for(ConnectionState.CONNECTED, count=2)
    # The new hub knows nothing of the old connection: the client joins afresh, under its
    # new id, and the events go to the same subscription.
    again = await own_join(subscription)
    assert again.client != first.client
    assert await bounded(client.presence(topic)) == [PresenceMember(again.client)]
    # The message iterator says what the memory backend lost, and holds no event.
    with pytest.raises(NotRecovered):
        await bounded(subscription.get())
    await bounded(client.publish(topic, "after"))
    assert (await bounded(subscription.get())).data == "after"


# --- what a hub should not send -------------------------------------------------------------------


def join_frame(**fields: Any) -> dict[str, Any]:
    frame = {"op": "join", "topic": "chat.a", "sub": "chat.a", "client": "c9", "user": None}
    frame.update(fields)
    return frame


async def test_malformed_and_unknown_events_do_not_stop_the_reader(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    unknown = join_frame(sub="chat.b", topic="chat.b")
    malformed = [
        join_frame(client=None),
        join_frame(client=7),
        join_frame(user=["x"]),
        join_frame(topic=None),
        join_frame(replaces=3),
        {"op": "leave", "sub": "chat.a"},
    ]

    async def handler(connection: FakeConnection) -> None:
        await connection.welcome()
        await connection.serve(count=1)  # the sub
        for frame in [*malformed, unknown]:
            await connection.send(frame)
        await connection.send(join_frame(info={"a": 1}, replaces="c1"))
        await connection.send({**join_frame(op="leave"), "extra": "ignored"})
        await connection.serve()

    fake = await start_fake(handler)
    client = await open_client(fake.url)
    subscription = await bounded(client.subscribe("chat.a", join_leave=True))
    assert await event(subscription) == PresenceEvent(
        "join", "chat.a", "chat.a", "c9", None, {"a": 1}, "c1"
    )
    assert await event(subscription) == PresenceEvent("leave", "chat.a", "chat.a", "c9")
    # An event for a subscription the client does not hold is left to recv().
    assert await bounded(client.recv()) == unknown
    assert await bounded(client.publish("fake.b", 1)) == 1
    assert client.state is ConnectionState.CONNECTED and fake.accepted == 1
    assert subscription.pending_presence() == 0 and subscription.pending() == 0


async def test_join_leave_is_sent_on_every_sub(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    fake = await start_fake()
    client = await open_client(fake.url)
    await bounded(client.subscribe("chat.a", join_leave=True))
    await bounded(client.subscribe("chat.b"))
    first = fake.connections[0]
    first.abort()  # the client reconnects and subscribes both again, with recover
    await fake.wait_until(lambda: sum(n == 2 and r["op"] == "sub" for n, r in fake.requests) == 2)
    subs = {(n, r["topic"]): r for n, r in fake.requests if r["op"] == "sub"}
    assert subs[1, "chat.a"]["join_leave"] is True and "join_leave" not in subs[1, "chat.b"]
    assert subs[2, "chat.a"]["join_leave"] is True and "join_leave" not in subs[2, "chat.b"]
    assert "recover" in subs[2, "chat.a"]


# --- the synchronous facade -----------------------------------------------------------------------


def test_sync_presence_and_events(hub: HubProcess, codec: str, topic: str) -> None:
    with (
        sync_connect(hub.uri, codec=codec, request_timeout=WAIT) as client,
        sync_connect(hub.uri, codec=codec, request_timeout=WAIT, token=token("dan", [1])) as dan,
    ):
        subscription = client.subscribe(topic, join_leave=True)
        assert subscription.join_leave
        joined = subscription.presence_event(timeout=WAIT)
        assert (joined.kind, joined.client) == ("join", client.welcome["client"])
        with pytest.raises(TimeoutError):
            subscription.presence_event(timeout=0.05)
        dan_id = dan.welcome["client"]
        with dan.subscribe(topic):
            # The event that the timed-out call was waiting for is not lost.
            assert subscription.presence_event(timeout=WAIT).client == dan_id
            members = client.presence(topic)
            assert sorted(members, key=lambda m: m.user or "") == [
                PresenceMember(client.welcome["client"]),
                PresenceMember(dan_id, "dan", [1]),
            ]
        dan.publish(topic, "between")
        assert subscription.get(timeout=WAIT).data == "between"
        assert subscription.pending_presence() == 0  # dan's leave waits for the grace period
        with pytest.raises(Unavailable):
            client.presence(f"news.{topic}")

        plain = client.subscribe(f"{topic}.plain")
        with pytest.raises(UsageError):
            plain.presence_event(timeout=0.05)
        with pytest.raises(UsageError):
            client.subscribe(f"{topic}.x", on_presence=print)

        received: list[PresenceEvent] = []
        called = threading.Event()

        def on_presence(presence_event: PresenceEvent) -> None:
            received.append(presence_event)
            called.set()

        client.subscribe(f"{topic}.cb", join_leave=True, on_presence=on_presence)
        assert called.wait(WAIT)
        assert received[0].topic == f"{topic}.cb"

        subscription.unsubscribe()
        assert list(subscription.presence_events()) == []


# --- the hub command ------------------------------------------------------------------------------


def test_cli_presence(hub: HubProcess, topic: str) -> None:
    empty = run("presence", topic, "--url", hub.uri)
    assert (empty.returncode, empty.stdout) == (0, ""), empty.stderr
    with (
        sync_connect(hub.uri) as anonymous,
        sync_connect(hub.uri, token=token("eva", {"b": [1, "x"]})) as eva,
    ):
        anonymous.subscribe(topic)
        eva.subscribe(topic)
        expected = [
            {"topic": topic, "client": anonymous.welcome["client"], "user": None, "info": None},
            {
                "topic": topic,
                "client": eva.welcome["client"],
                "user": "eva",
                "info": {"b": [1, "x"]},
            },
        ]
        for codec in ("json", "msgpack"):
            result = run("presence", topic, "--url", hub.uri, "--codec", codec)
            assert result.returncode == 0, result.stderr
            lines = sorted(
                map(json.loads, result.stdout.splitlines()), key=lambda m: m["user"] or ""
            )
            assert lines == expected

    refused = run("presence", f"news.{topic}", "--url", hub.uri)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("hub: error: ") and "(unavailable)" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1


def test_cli_sub_join_leave(hub: HubProcess, codec: str, topic: str, start: Any) -> None:
    sub = start("sub", topic, "--join-leave", "--count", "1", "--url", hub.uri, "--codec", codec)
    own = sub.next_json()  # its own join: it is subscribed
    assert (own["op"], own["topic"], own["sub"], own["user"]) == ("join", topic, topic, None)
    with sync_connect(hub.uri, token=token("fay", {"n": 1})) as fay:
        with fay.subscribe(topic):
            joined = sub.next_json()
        assert joined == {
            "op": "join",
            "topic": topic,
            "sub": topic,
            "client": fay.welcome["client"],
            "user": "fay",
            "info": {"n": 1},
            "replaces": None,
        }
        fay.publish(topic, "counted")  # events do not count: this message ends it
        message = sub.next_json()
    assert set(message) == {"topic", "sub", "offset", "epoch", "data"}
    assert message["data"] == "counted"
    assert sub.proc.wait(WAIT) == 0
