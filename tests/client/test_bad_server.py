"""The SDK against a fake hub that misbehaves: garbage frames, silence, every close code.

The fake hub (support.FakeHub) is a real WebSocket server on 127.0.0.1 built on
hub.protocol.serve; it counts the connections it accepts, which is how these tests tell whether
the client reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from typing import Any

import msgpack
import pytest

import hub_client
from hub.exceptions import ClientError, ConnectionClosed, Disconnected, RequestTimeout
from hub_client import ConnectionState
from tests.client.conftest import OpenClient, StartFake
from tests.client.support import FAST, WAIT, FakeConnection, States, bounded, close_client, connect

# --- garbage frames -------------------------------------------------------------------------------

TOPIC = "fake.a"


def good_msg(offset: object, data: object = "good") -> dict[str, Any]:
    return {"op": "msg", "topic": TOPIC, "sub": TOPIC, "data": data, "offset": offset, "epoch": "E"}


#: Maps that are not usable frames; the last four are not the client's to handle (recv() gets them).
BAD_MAPS: list[dict[str, Any]] = [
    {"op": "msg", "sub": TOPIC, "topic": TOPIC},  # no offset, epoch, data
    {"op": "msg", "sub": TOPIC, "data": 1, "offset": 1, "epoch": "E"},  # no topic
    {"op": "msg", "sub": TOPIC, "topic": TOPIC, "data": 1, "offset": 1},  # no epoch
    {"op": "msg", "topic": TOPIC, "data": 1, "offset": 1, "epoch": "E"},  # no sub
    {"op": "ok", "id": 987654},  # a reply to no request
    {"op": "surprise"},
    {"no": "op"},
]
UNHANDLED = BAD_MAPS[-4:]


def garbage(codec: str) -> list[str | bytes]:
    """Frames that the codec cannot decode or that are not maps, then the bad maps."""
    if codec == "json":
        frames: list[str | bytes] = ["not json {", b"\x00binary on json", "[1, 2]", "42", "null"]
        return frames + [json.dumps(m) for m in BAD_MAPS]
    packed = [msgpack.packb(value) for value in ([1, 2], 42, None, "str")]
    return [b"\xc1", b"\x92\x01", "text on msgpack", *packed] + [msgpack.packb(m) for m in BAD_MAPS]


async def test_garbage_frames_are_dropped(
    start_fake: StartFake, open_client: OpenClient, codec: str
) -> None:
    async def handler(connection: FakeConnection) -> None:
        await connection.welcome()
        await connection.serve(count=1)  # the sub
        for frame in garbage(codec):
            await connection.send_raw(frame)
        await connection.send(good_msg(1))
        await connection.serve()

    fake = await start_fake(handler)
    states = States()
    client = await open_client(fake.url, on_state=states)
    subscription = await bounded(client.subscribe(TOPIC))
    message = await bounded(subscription.get())
    assert (message.topic, message.offset, message.data) == (TOPIC, 1, "good")
    assert subscription.pending() == 0
    # The frames that are maps but none of the client's business are left to recv().
    unhandled = [await bounded(client.recv()) for _ in UNHANDLED]
    assert unhandled == UNHANDLED
    # Still the same connection, and it works.
    assert await bounded(client.publish("fake.b", 1)) == 1
    assert client.state is ConnectionState.CONNECTED
    assert states.seen == [ConnectionState.CONNECTED]
    assert fake.accepted == 1


async def test_msg_with_fields_of_the_wrong_type_is_dropped(
    start_fake: StartFake, codec: str
) -> None:
    async def handler(connection: FakeConnection) -> None:
        await connection.welcome()
        await connection.serve(count=1)  # the sub
        await connection.send(good_msg("1", "bad"))
        await connection.send(good_msg(1, "good"))
        await connection.send(good_msg(2, "next"))
        await connection.serve()

    fake = await start_fake(handler)
    # Not open_client: with this bug, close() raises the reader's TypeError at every call.
    client = await connect(fake.url, codec=codec, request_timeout=1)
    try:
        subscription = await bounded(client.subscribe(TOPIC))
        first = await bounded(subscription.get(), within=1)
        assert (first.offset, first.data) == (1, "good"), f"delivered {first}"
        second = await bounded(subscription.get(), within=1)
        assert (second.offset, second.data) == (2, "next")
        assert await bounded(client.publish("fake.b", 1)) == 1
    finally:
        with contextlib.suppress(Exception):
            await close_client(client)


# --- silence: per-request timeouts ----------------------------------------------------------------


async def never_answer(connection: FakeConnection) -> None:
    await connection.welcome()
    with contextlib.suppress(ConnectionClosed):
        while True:
            await connection.recv()  # recorded, never answered


@pytest.mark.slow
async def test_request_timeout(start_fake: StartFake, open_client: OpenClient) -> None:
    fake = await start_fake(never_answer)
    client = await open_client(fake.url, request_timeout=0.3)
    loop = asyncio.get_running_loop()

    started = loop.time()
    with pytest.raises(RequestTimeout) as error:
        await bounded(client.publish(TOPIC, 1, timeout=0.2))
    elapsed = loop.time() - started
    assert 0.15 <= elapsed < 1.0, elapsed
    assert isinstance(error.value, TimeoutError) and isinstance(error.value, ClientError)

    # The client's request_timeout is the default of every request.
    for request in (
        client.history(TOPIC),
        client.presence(TOPIC),
        client.publish(TOPIC, 2),
        client.subscribe(TOPIC),
    ):
        started = loop.time()
        with pytest.raises(RequestTimeout):
            await bounded(request)
        assert 0.25 <= loop.time() - started < 1.5

    # The subscription that timed out was not kept: subscribing again times out again (no
    # "already subscribed"), and a timeout does not end the connection.
    with pytest.raises(RequestTimeout):
        await bounded(client.subscribe(TOPIC, timeout=0.1))
    assert client.state is ConnectionState.CONNECTED
    assert fake.accepted == 1
    await fake.wait_until(lambda: len(fake.requests) == 6)
    ops = [request["op"] for _, request in fake.requests]
    assert ops == ["pub", "history", "presence", "pub", "sub", "sub"]


async def test_no_welcome_times_out(start_fake: StartFake) -> None:
    async def silent(connection: FakeConnection) -> None:
        await connection.ws.wait_closed()

    fake = await start_fake(silent)
    with pytest.raises(TimeoutError):
        await bounded(hub_client.connect(fake.url, request_timeout=0.2, backoff=FAST), within=2)


async def test_first_frame_not_a_welcome(start_fake: StartFake) -> None:
    async def rude(connection: FakeConnection) -> None:
        await connection.send({"op": "ok", "id": 1})
        await connection.ws.wait_closed()

    fake = await start_fake(rude)
    with pytest.raises(Disconnected):
        await bounded(hub_client.connect(fake.url, backoff=FAST))


# --- close codes: reconnect or not ----------------------------------------------------------------


def closing_once(code: int | None) -> Any:
    """A handler: the first connection answers the sub, then closes with ``code`` (None: drops
    TCP without a close frame); later connections behave."""

    async def handler(connection: FakeConnection) -> None:
        await connection.welcome()
        if connection.number > 1:
            await connection.serve()
            return
        await connection.serve(count=1)
        if code is None:
            connection.abort()
        else:
            await connection.ws.close(code, "fake hub says bye")

    return handler


@pytest.mark.parametrize("code", [1000, 1002, 1008, 4001])
async def test_terminal_close_codes_do_not_reconnect(
    start_fake: StartFake, open_client: OpenClient, code: int
) -> None:
    fake = await start_fake(closing_once(code))
    states = States()
    client = await open_client(fake.url, on_state=states, token="a-static-token")
    subscription = await bounded(client.subscribe(TOPIC))
    await states.wait_for(ConnectionState.CLOSED)
    assert states.seen == [ConnectionState.CONNECTED, ConnectionState.CLOSED]
    assert client.close_code == code
    # The iterator ends, requests fail at once, and no connection is attempted (CLOSED is final:
    # the task that would reconnect has returned).
    assert [m async for m in subscription] == []
    with pytest.raises(Disconnected):
        await bounded(client.publish(TOPIC, 1))
    assert fake.accepted == 1
    assert fake.connections[0].authorization == "Bearer a-static-token"


@pytest.mark.parametrize("code", [1001, 1011, 4008, 4010, 4029, None], ids=lambda c: str(c))
async def test_recoverable_close_codes_reconnect(
    start_fake: StartFake, open_client: OpenClient, code: int | None
) -> None:
    fake = await start_fake(closing_once(code))
    states = States()
    client = await open_client(fake.url, on_state=states)
    subscription = await bounded(client.subscribe(TOPIC))
    await states.wait_for(ConnectionState.CONNECTED, count=2)
    assert states.seen == [
        ConnectionState.CONNECTED,
        ConnectionState.RECONNECTING,
        ConnectionState.CONNECTED,
    ]
    assert client.close_code == (1006 if code is None else code)
    # The subscription is made again, recovering from where it was (offset 0 of the epoch).
    second = fake.connections[1]
    await fake.wait_until(lambda: any(r["op"] == "sub" for r in second.requests))
    (resub,) = [r for r in second.requests if r["op"] == "sub"]
    assert resub["topic"] == TOPIC and resub["recover"] == {"epoch": "fake-epoch", "offset": 0}
    # And it works: a publication on the new connection comes through it.
    assert await bounded(client.publish(TOPIC, "after")) == 1
    message = await bounded(subscription.get())
    assert (message.offset, message.data) == (1, "after")
    assert fake.accepted == 2


@pytest.mark.slow
async def test_4029_waits_ten_times_longer(
    start_fake: StartFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The jitter at its ceiling: every delay is exactly the backoff's bound.
    monkeypatch.setattr(random, "uniform", lambda low, high: high)

    def always(code: int) -> Any:
        async def handler(connection: FakeConnection) -> None:
            await connection.welcome()
            await connection.ws.close(code)

        return handler

    durations = {}
    loop = asyncio.get_running_loop()
    for code in (1011, 4029):
        fake = await start_fake(always(code))
        backoff = hub_client.Backoff(base=0.02, cap=0.02)
        client = await bounded(hub_client.connect(fake.url, backoff=backoff))
        started = loop.time()
        await fake.wait_connections(6)
        durations[code] = loop.time() - started
        assert await close_client(client)
    # Five reconnects: 5 x 0.02 s after 1011, 5 x 0.2 s after 4029.
    assert durations[4029] >= 1.0 > 0.5 > durations[1011] >= 0.1, durations


async def test_4001_with_a_token_callable_reconnects_with_a_new_token(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    fake = await start_fake(closing_once(4001))
    tokens = (f"token-{n}" for n in itertools.count(1))
    states = States()
    client = await open_client(fake.url, on_state=states, token=lambda: next(tokens))
    await bounded(client.subscribe(TOPIC))
    await states.wait_for(ConnectionState.CONNECTED, count=2)
    assert client.close_code == 4001
    assert [c.authorization for c in fake.connections] == ["Bearer token-1", "Bearer token-2"]
    assert await bounded(client.publish(TOPIC, 1)) == 1


async def test_async_token_callable(start_fake: StartFake, open_client: OpenClient) -> None:
    fake = await start_fake()

    async def token() -> str:
        await asyncio.sleep(0)
        return "from-a-coroutine"

    client = await open_client(fake.url, token=token)
    assert await bounded(client.publish(TOPIC, 1)) == 1
    assert fake.connections[0].authorization == "Bearer from-a-coroutine"


async def test_reconnect_off(start_fake: StartFake, open_client: OpenClient) -> None:
    fake = await start_fake(closing_once(1011))
    states = States()
    client = await open_client(fake.url, on_state=states, reconnect=False)
    await bounded(client.subscribe(TOPIC))
    await states.wait_for(ConnectionState.CLOSED)
    assert states.seen == [ConnectionState.CONNECTED, ConnectionState.CLOSED]
    assert fake.accepted == 1


# --- requests in flight and while disconnected ----------------------------------------------------


async def test_a_request_in_flight_fails_with_disconnected(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    async def drop_on_pub(connection: FakeConnection) -> None:
        await connection.welcome()
        if connection.number > 1:
            await connection.serve()
            return
        await connection.recv()  # the pub: never answered
        await connection.ws.close(1011)

    fake = await start_fake(drop_on_pub)
    states = States()
    client = await open_client(fake.url, on_state=states)
    with pytest.raises(Disconnected):
        await bounded(client.publish(TOPIC, 1))
    await states.wait_for(ConnectionState.CONNECTED, count=2)
    assert await bounded(client.publish(TOPIC, 2)) == 1


def closed_then_delayed(release: asyncio.Event) -> Any:
    """Connection 1 closes with 1011 at once; connection 2 sends its welcome once ``release``
    is set."""

    async def handler(connection: FakeConnection) -> None:
        if connection.number == 1:
            await connection.welcome()
            await connection.ws.close(1011)
            return
        released = asyncio.ensure_future(release.wait())
        closed = asyncio.ensure_future(connection.ws.wait_closed())
        await asyncio.wait({released, closed}, return_when=asyncio.FIRST_COMPLETED)
        released.cancel()
        closed.cancel()
        if release.is_set() and not connection.ws.closed:
            await connection.welcome()
            await connection.serve()

    return handler


async def test_when_disconnected_fail_and_wait_with_a_fake(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    release = asyncio.Event()
    fake = await start_fake(closed_then_delayed(release))
    states = States()
    failing = await open_client(fake.url, on_state=states, when_disconnected="fail")
    await fake.wait_connections(2)  # reconnecting: the second connection has no welcome yet
    assert failing.state is ConnectionState.RECONNECTING
    with pytest.raises(Disconnected):
        await bounded(failing.publish(TOPIC, 1), within=0.5)
    with pytest.raises(Disconnected):
        await bounded(failing.subscribe(TOPIC), within=0.5)
    release.set()
    await states.wait_for(ConnectionState.CONNECTED, count=2)
    assert await bounded(failing.publish(TOPIC, 2)) == 1


async def test_a_waiting_request_is_bounded_by_its_timeout(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    release = asyncio.Event()
    fake = await start_fake(closed_then_delayed(release))
    client = await open_client(fake.url)
    await fake.wait_connections(2)
    with pytest.raises(RequestTimeout):
        await bounded(client.publish(TOPIC, 1, timeout=0.2), within=1)
    release.set()
    assert await bounded(client.publish(TOPIC, 2)) == 1


async def test_close_fails_the_requests_waiting_for_a_reconnect(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    async def gone(connection: FakeConnection) -> None:
        await connection.welcome()
        connection.hub.stop_listening()  # every reconnect attempt is refused from now on
        await connection.ws.close(1011)

    fake = await start_fake(gone)
    states = States()
    client = await open_client(fake.url, on_state=states)
    await states.wait_for(ConnectionState.RECONNECTING)
    waiting = asyncio.ensure_future(client.publish(TOPIC, 1, timeout=2))
    await asyncio.sleep(0)  # let it start waiting for the connection
    assert await close_client(client, within=1)
    done, _ = await asyncio.wait({waiting}, timeout=1)
    try:
        assert done, "the request still waits 1 s after close() returned"
        with pytest.raises(Disconnected):
            waiting.result()
    finally:
        await asyncio.wait({waiting}, timeout=WAIT)
        if waiting.done() and not waiting.cancelled():
            waiting.exception()  # retrieved: no "never retrieved" noise after a failure


async def test_close_while_reconnecting_is_prompt(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    release = asyncio.Event()
    fake = await start_fake(closed_then_delayed(release))
    client = await open_client(fake.url, request_timeout=2)
    await fake.wait_connections(2)  # the client waits for the second connection's welcome
    loop = asyncio.get_running_loop()
    started = loop.time()
    closed = await close_client(client, within=WAIT)
    elapsed = loop.time() - started
    assert closed and client.state is ConnectionState.CLOSED
    assert elapsed < 1.0, f"close() took {elapsed:.2f} s"


async def test_close_while_the_reconnect_completes(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    release = asyncio.Event()
    fake = await start_fake(closed_then_delayed(release))
    client = await open_client(fake.url)
    second = await fake.wait_connections(2)
    closing = asyncio.ensure_future(client.close())
    await asyncio.sleep(0)  # close() has started (it sets its flag before its first await)
    release.set()  # now the welcome of the second connection goes out
    done, _ = await asyncio.wait({closing}, timeout=2)
    try:
        assert done, f"close() has not returned after 2 s; state {client.state}"
        assert client.state is ConnectionState.CLOSED
        await bounded(second.ws.wait_closed(), within=2)
    finally:
        await fake.close()  # 1001 to the client: its runner ends, and close() with it
        await asyncio.wait({closing}, timeout=WAIT)


async def test_subscribe_while_reconnecting_sends_one_sub(
    start_fake: StartFake, open_client: OpenClient
) -> None:
    release = asyncio.Event()
    fake = await start_fake(closed_then_delayed(release))
    client = await open_client(fake.url)
    second = await fake.wait_connections(2)
    subscribing = asyncio.ensure_future(client.subscribe(TOPIC))
    await asyncio.sleep(0)  # it registers the subscription and waits for the connection
    release.set()
    await bounded(subscribing)
    assert await bounded(client.publish("fake.b", 1)) == 1  # every earlier request was sent
    subs = [request for request in second.requests if request["op"] == "sub"]
    assert len(subs) == 1, f"{len(subs)} subs for one pattern: {subs}"
