"""Every method of the SDK against a real hub-server process, with both codecs.

The module shares one hub-server (``hub``); each test works on topics of its own ``prefix``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import jwt
import pytest

import hub_client
from hub.exceptions import (
    BadRequest,
    Disconnected,
    InvalidTopic,
    NotSubscribed,
    RequestError,
    Unavailable,
    UnknownOp,
    UsageError,
)
from hub.wire.messages import History, Pub
from hub_client import Client, ConnectionState, Message, Subscription
from tests.client.conftest import OpenClient
from tests.client.support import FAST, WAIT, bounded, close_client, payload, poll_until
from tests.server.conftest import HubProcess
from tests.server.peers import same


async def publish_all(client: Client, topic: str, values: list[object]) -> list[int]:
    return [offset for value in values if (offset := await client.publish(topic, value))]


async def take(subscription: Subscription, count: int) -> list[Message]:
    async with asyncio.timeout(WAIT):
        return [await subscription.get() for _ in range(count)]


# --- connect and close ----------------------------------------------------------------------------


def state_of(client: Client) -> ConnectionState:
    """The state now (a call: mypy would keep an earlier assert's narrowing of the attribute)."""
    return client.state


async def test_connect_await_then_close(hub: HubProcess, codec: str) -> None:
    client = await bounded(hub_client.connect(hub.uri, codec=codec, backoff=FAST))
    try:
        assert client.state is ConnectionState.CONNECTED
        assert client.welcome["op"] == "welcome" and client.welcome["version"] == 1
        assert client.subprotocol == f"hub.v1.{codec}"
    finally:
        await bounded(client.close())
    assert state_of(client) is ConnectionState.CLOSED
    with pytest.raises(Disconnected):
        await bounded(client.publish("closed.topic", 1))
    await bounded(client.close())  # a second close is harmless
    assert state_of(client) is ConnectionState.CLOSED


async def test_connect_async_with(hub: HubProcess, codec: str, prefix: str) -> None:
    async with hub_client.connect(hub.uri, codec=codec, backoff=FAST) as client:
        assert client.state is ConnectionState.CONNECTED
        assert await bounded(client.publish(f"{prefix}.a", 1)) == 1
    assert state_of(client) is ConnectionState.CLOSED
    assert client.close_code == 1000  # the hub answered the client's close


async def test_connect_refused_raises() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(OSError):
            await bounded(hub_client.connect(f"ws://127.0.0.1:{port}/", backoff=FAST))


def test_unknown_codec_or_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        hub_client.Client("ws://127.0.0.1:1/", codec="xml")
    with pytest.raises(UsageError):
        hub_client.Client("ws://127.0.0.1:1/", when_disconnected="sometimes")


# --- publish --------------------------------------------------------------------------------------


async def test_publish_returns_the_offset(
    hub: HubProcess, open_client: OpenClient, codec: str, prefix: str
) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    values = [payload(codec, n) for n in range(3)]
    assert await bounded(publish_all(client, topic, values)) == [1, 2, 3]
    assert await bounded(client.publish(f"{prefix}.b", None)) == 1  # offsets are per topic
    page = await bounded(client.history(topic))
    assert [m["offset"] for m in page.messages] == [1, 2, 3]
    assert all(same(m["data"], v) for m, v in zip(page.messages, values, strict=True))


async def test_publish_without_waiting(
    hub: HubProcess, open_client: OpenClient, codec: str, prefix: str
) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    async with client.subscribe(topic) as subscription:
        assert await bounded(client.publish(topic, payload(codec, 1), wait=False)) is None
        assert await bounded(client.publish(topic, payload(codec, 2), wait=False)) is None
        messages = await take(subscription, 2)
    assert [(m.offset, m.topic) for m in messages] == [(1, topic), (2, topic)]
    assert same(messages[1].data, payload(codec, 2))


async def test_publish_errors_carry_the_wire_code(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    with pytest.raises(InvalidTopic) as pattern:
        await bounded(client.publish(f"{prefix}.*", 1))
    assert pattern.value.code == "invalid_topic"
    with pytest.raises(InvalidTopic) as malformed:
        await bounded(client.publish(f"{prefix}..a", 1))
    assert malformed.value.code == "invalid_topic"
    # The failed requests left the connection working.
    assert await bounded(client.publish(f"{prefix}.a", 1)) == 1


async def test_publish_wait_false_errors_come_to_recv(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    await bounded(client.publish(f"{prefix}.*", 1, wait=False))
    error = await bounded(client.recv())
    assert error["op"] == "error" and error["code"] == "invalid_topic" and "id" not in error


# --- subscribe ------------------------------------------------------------------------------------


async def test_subscribe_await_and_iterate(
    hub: HubProcess, open_client: OpenClient, codec: str, prefix: str
) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    subscription = await bounded(client.subscribe(topic))
    assert subscription.pattern == topic and subscription.active
    values = [payload(codec, n) for n in range(5)]
    await bounded(publish_all(client, topic, values))
    received: list[Message] = []
    async with asyncio.timeout(WAIT):
        async for message in subscription:
            received.append(message)
            if len(received) == len(values):
                break
    assert [m.offset for m in received] == [1, 2, 3, 4, 5]
    assert all(same(m.data, v) for m, v in zip(received, values, strict=True))
    assert {(m.topic, m.sub) for m in received} == {(topic, topic)}
    assert len({m.epoch for m in received}) == 1 and isinstance(received[0].epoch, str)
    await bounded(subscription.unsubscribe())


async def test_subscribe_async_with_and_wildcard(
    hub: HubProcess, open_client: OpenClient, codec: str, prefix: str
) -> None:
    client = await open_client(hub.uri)
    async with client.subscribe(f"{prefix}.*") as subscription:
        await bounded(client.publish(f"{prefix}.a", payload(codec, 1)))
        await bounded(client.publish(f"{prefix}.b.c", "not matched"))
        await bounded(client.publish(f"{prefix}.b", payload(codec, 2)))
        messages = await take(subscription, 2)
        assert subscription.pending() == 0
    assert [(m.topic, m.offset, m.sub) for m in messages] == [
        (f"{prefix}.a", 1, f"{prefix}.*"),
        (f"{prefix}.b", 1, f"{prefix}.*"),
    ]
    assert same(messages[1].data, payload(codec, 2))
    assert not subscription.active
    # Leaving the block unsubscribed: the pattern can be subscribed again.
    async with client.subscribe(f"{prefix}.*") as again:
        await bounded(client.publish(f"{prefix}.a", 3))
        (message,) = await take(again, 1)
        assert message.offset == 2


async def test_subscribe_twice_is_a_usage_error(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    async with client.subscribe(f"{prefix}.a"):
        with pytest.raises(UsageError):
            await bounded(client.subscribe(f"{prefix}.a"))


async def test_subscribe_error_carries_the_code_and_leaves_nothing(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    for _ in range(2):  # the failed subscription was not kept: the same error again
        with pytest.raises(InvalidTopic) as error:
            await bounded(client.subscribe(f"{prefix}.a b"))
        assert error.value.code == "invalid_topic"


async def test_get_and_unsubscribe_ends_the_iterator(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    subscription = await bounded(client.subscribe(topic))
    await bounded(publish_all(client, topic, [1, 2, 3]))
    first = await bounded(subscription.get())
    assert first.data == 1
    # Wait until the other two are buffered, then unsubscribe: they are still delivered.
    await poll_until(lambda: subscription.pending() == 2)
    await bounded(subscription.unsubscribe())
    assert not subscription.active
    rest = [message.data async for message in subscription]
    assert rest == [2, 3]
    with pytest.raises(StopAsyncIteration):
        await bounded(subscription.get())
    # A new subscription to the pattern gets the next publication; the ended one does not.
    async with client.subscribe(topic) as again:
        await bounded(client.publish(topic, 4))
        (message,) = await take(again, 1)
        assert message.data == 4
    assert subscription.pending() == 0
    with pytest.raises(NotSubscribed) as error:  # the hub holds no subscription any more
        await bounded(client.request("unsub", topic=topic))
    assert error.value.code == "not_subscribed"


async def test_close_ends_iterators(hub: HubProcess, codec: str, prefix: str) -> None:
    client = await bounded(hub_client.connect(hub.uri, codec=codec, backoff=FAST))
    subscription = await bounded(client.subscribe(f"{prefix}.a"))
    reader = asyncio.ensure_future(bounded(_collect(subscription)))
    await bounded(client.publish(f"{prefix}.a", "last"))
    await poll_until(lambda: subscription.pending() == 0)  # the reader took it
    assert await close_client(client)
    assert await bounded(reader) == ["last"]


async def _collect(subscription: Subscription) -> list[Any]:
    return [message.data async for message in subscription]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_subscribe_with_callback(
    hub: HubProcess, open_client: OpenClient, codec: str, prefix: str, kind: str
) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    received: list[Message] = []
    done = asyncio.Event()

    def sync_callback(message: Message) -> None:
        received.append(message)
        if len(received) == 3:
            done.set()

    async def async_callback(message: Message) -> None:
        await asyncio.sleep(0)
        sync_callback(message)

    callback = sync_callback if kind == "sync" else async_callback
    async with client.subscribe(topic, callback=callback) as subscription:
        values = [payload(codec, n) for n in range(3)]
        await bounded(publish_all(client, topic, values))
        await bounded(done.wait())
        assert [m.offset for m in received] == [1, 2, 3]
        assert all(same(m.data, v) for m, v in zip(received, values, strict=True))
        with pytest.raises(UsageError):
            subscription.on_message(sync_callback)


async def test_a_failing_callback_does_not_stop_delivery(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    received: list[object] = []
    done = asyncio.Event()

    def callback(message: Message) -> None:
        received.append(message.data)
        if message.data == "boom":
            raise RuntimeError("the application's bug")
        done.set()

    async with client.subscribe(topic, callback=callback):
        await bounded(publish_all(client, topic, ["boom", "after"]))
        await bounded(done.wait())
    assert received == ["boom", "after"]


# --- history and presence -------------------------------------------------------------------------


async def test_history(hub: HubProcess, open_client: OpenClient, codec: str, prefix: str) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    empty = await bounded(client.history(topic))
    assert empty.offset == 0 and empty.messages == []
    values = [payload(codec, n) for n in range(5)]
    await bounded(publish_all(client, topic, values))

    page = await bounded(client.history(topic))
    assert page.offset == 5 and isinstance(page.epoch, str) and page.epoch
    assert [m["offset"] for m in page.messages] == [1, 2, 3, 4, 5]
    assert all(same(m["data"], v) for m, v in zip(page.messages, values, strict=True))
    assert all(type(m["time"]) is int for m in page.messages)

    assert [m["offset"] for m in (await bounded(client.history(topic, limit=2))).messages] == [1, 2]
    newest = await bounded(client.history(topic, limit=2, reverse=True))
    assert [m["offset"] for m in newest.messages] == [5, 4]
    since = await bounded(client.history(topic, since=(page.epoch, 3)))
    assert [m["offset"] for m in since.messages] == [4, 5]
    since_newest = await bounded(
        client.history(topic, since=(page.epoch, 1), limit=2, reverse=True)
    )
    assert [m["offset"] for m in since_newest.messages] == [5, 4]
    other_epoch = await bounded(client.history(topic, since=("another-epoch", 3)))
    assert [m["offset"] for m in other_epoch.messages] == [1, 2, 3, 4, 5]


async def test_history_errors(hub: HubProcess, open_client: OpenClient, prefix: str) -> None:
    client = await open_client(hub.uri)
    with pytest.raises(InvalidTopic) as pattern:
        await bounded(client.history(f"{prefix}.*"))
    assert pattern.value.code == "invalid_topic"
    with pytest.raises(BadRequest) as limit:
        await bounded(client.history(f"{prefix}.a", limit=0))
    assert limit.value.code == "bad_request"


async def test_presence_is_unavailable(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    with pytest.raises(Unavailable) as error:
        await bounded(client.presence(f"{prefix}.a"))
    assert error.value.code == "unavailable"
    assert isinstance(error.value, RequestError) and str(error.value)


async def test_unknown_op_raises_its_code(hub: HubProcess, open_client: OpenClient) -> None:
    client = await open_client(hub.uri)
    with pytest.raises(UnknownOp) as error:
        await bounded(client.request("frobnicate", topic="a"))
    assert error.value.code == "unknown_op"


# --- the raw layer --------------------------------------------------------------------------------


async def test_send_and_recv(hub: HubProcess, open_client: OpenClient, prefix: str) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    await bounded(client.publish(topic, "x"))
    await bounded(client.send({"op": "history", "id": 10**9, "topic": topic}))
    reply = await bounded(client.recv())
    assert reply["op"] == "ok" and reply["id"] == 10**9
    assert [m["data"] for m in reply["messages"]] == ["x"]
    # A model of hub.wire.messages goes as it is; so does a request without id.
    await bounded(client.send(History(op="history", id=10**9 + 1, topic=topic, limit=1)))
    reply = await bounded(client.recv())
    assert reply["id"] == 10**9 + 1 and len(reply["messages"]) == 1
    await bounded(client.send({"op": "pub", "id": 10**9 + 2, "topic": f"{prefix}.*", "data": 1}))
    error = await bounded(client.recv())
    assert (error["op"], error["id"], error["code"]) == ("error", 10**9 + 2, "invalid_topic")
    # The client's own requests still get their replies.
    assert await bounded(client.publish(topic, "y")) == 2


async def test_send_with_small_ids_does_not_steal_replies(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    topic = f"{prefix}.a"
    # The application numbers its own raw requests from 1 too, and publishes meanwhile.
    await bounded(client.send({"op": "history", "id": 1, "topic": topic}))
    offset = await bounded(client.publish(f"{prefix}.b", "x"))
    reply = await bounded(client.recv())
    assert reply["id"] == 1 and "messages" in reply, f"recv() got {reply}"
    assert offset == 1


async def test_send_a_model_keeps_fields_set_to_none(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    client = await open_client(hub.uri)
    await bounded(client.send(Pub(op="pub", id=5, topic=f"{prefix}.a", data=None)))
    reply = await bounded(client.recv())
    assert (reply["op"], reply["id"], reply["offset"]) == ("ok", 5, 1)


async def test_extra_headers_go_with_the_token(start_fake: Any) -> None:
    fake = await start_fake()
    client = await hub_client.connect(
        fake.url, token="t0k", extra_headers={"X-Tenant": "acme"}, backoff=FAST
    )
    try:
        headers = (await fake.wait_connections(1)).ws.request_headers
        assert headers.get("X-Tenant") == "acme"
        assert headers.get("Authorization") == "Bearer t0k"
    finally:
        await close_client(client)


async def test_a_publication_the_codec_cannot_carry_is_raised_by_the_iterator(
    hub: HubProcess, prefix: str
) -> None:
    topic = f"{prefix}.bin"
    async with (
        hub_client.connect(hub.uri, codec="json") as reader,
        hub_client.connect(hub.uri, codec="msgpack") as writer,
    ):
        subscription = await reader.subscribe(topic)
        await writer.publish(topic, b"\x00 binary")
        await writer.publish(topic, "text")
        with pytest.raises(hub_client.Undeliverable) as caught:
            await bounded(subscription.get())
        assert caught.value.topic == topic
        after = await bounded(subscription.get())  # the iterator goes on after it
        assert (after.data, after.offset) == ("text", 2)


@pytest.mark.slow
async def test_refresh_extends_the_connection(start_hub: Any) -> None:
    secret = "a-shared-secret-of-at-least-32-bytes!"
    keys = json.dumps([{"alg": "HS256", "key": secret}])
    node = await start_hub("--auth", "required", "--auth-keys", keys)

    def token(ttl: float) -> str:
        claims = {"sub": "ana", "exp": time.time() + ttl, "subscribe": [">"], "publish": [">"]}
        return jwt.encode(claims, secret, algorithm="HS256")

    async with hub_client.connect(node.uri, token=token(1.0), backoff=FAST) as client:
        expires = await bounded(client.refresh(token(60.0)))
        assert expires > time.time() + 30
        await asyncio.sleep(1.2)  # past the first token's exp: wall-clock time is the point
        assert client.state is ConnectionState.CONNECTED
        assert await bounded(client.publish("refreshed", 1)) == 1
        with pytest.raises(hub_client.RequestError) as refused:
            await bounded(client.refresh("not a token"))
        assert refused.value.code == "unauthorized"
