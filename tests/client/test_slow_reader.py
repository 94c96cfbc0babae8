"""A subscription whose application stops reading (subscription.py: "When the application does
not read"): the buffer holds ``max_messages``, the client stops reading the socket, nothing is
lost; when the hub gives up on the client (4008) the client reconnects and recovers."""

from __future__ import annotations

import asyncio
import os
import secrets

from hub.exceptions import NotRecovered
from hub_client import ConnectionState, Message, Subscription
from tests.client.conftest import OpenClient
from tests.client.support import WAIT, States, bounded, poll_until
from tests.server.conftest import HubProcess, StartHub
from tests.server.peers import same


async def read_all(subscription: Subscription, count: int, within: float = WAIT) -> list[Message]:
    """``count`` messages; NotRecovered fails the test (it would be a gap)."""
    messages: list[Message] = []
    async with asyncio.timeout(within):
        while len(messages) < count:
            try:
                messages.append(await subscription.get())
            except NotRecovered as exc:
                raise AssertionError(f"a gap after {len(messages)} messages: {exc}") from exc
    return messages


async def test_a_full_buffer_pauses_reading_without_loss(
    hub: HubProcess, open_client: OpenClient, prefix: str
) -> None:
    states = States()
    client = await open_client(hub.uri, max_messages=4, on_state=states)
    publisher = await open_client(hub.uri)
    topic = f"{prefix}.a"
    subscription = await bounded(client.subscribe(topic))
    count = 300
    for n in range(1, count + 1):
        await bounded(publisher.publish(topic, n, wait=n == count))
    # The hub has every publication; the client buffered no more than max_messages of them.
    await poll_until(lambda: subscription.pending() == 4)
    assert subscription.pending() == 4
    messages = await read_all(subscription, count)
    assert [m.offset for m in messages] == list(range(1, count + 1))
    assert [m.data for m in messages] == list(range(1, count + 1))
    assert subscription.pending() == 0
    assert states.seen == [ConnectionState.CONNECTED]  # the hub's queue was never exceeded


async def test_slow_consumer_4008_reconnects_and_recovers(
    start_hub: StartHub, open_client: OpenClient, codec: str, prefix: str
) -> None:
    """The hub's outbound queue for the client is tiny; the application stops reading while
    10 MB are published: the hub closes with 4008. Once the application reads again, it gets
    everything, in order, once: what the hub dropped is replayed from the (memory) history of
    the same hub process."""
    # The outbox holds a replay chunk (100 messages) but far less than what is published.
    node = await start_hub(
        "--outbox-messages", "128", "--history-size", "5000", "--recovery-limit", "5000"
    )
    states = States()
    topic = f"{prefix}.a"
    received_when_cut: list[int] = []  # the last offset received when the connection ended

    def on_state(state: ConnectionState) -> None:
        states(state)
        if state is ConnectionState.RECONNECTING:
            received_when_cut.append(subscription.positions[topic][1])

    # No compression: the bytes on the wire are the bytes published, so the kernel's buffers
    # and the client's own queues cannot absorb them all.
    client = await open_client(node.uri, max_messages=4, on_state=on_state, compression=None)
    publisher = await open_client(node.uri)
    subscription = await bounded(client.subscribe(topic))

    count, size = 1200, 8 * 1024  # 10 MB
    pads: list[object] = [
        secrets.token_hex(size // 2) if codec == "json" else os.urandom(size) for _ in range(count)
    ]
    for n, pad in enumerate(pads, 1):
        await bounded(publisher.publish(topic, {"n": n, "pad": pad}, wait=n == count))
    await asyncio.to_thread(node.wait_for_line, r"closing session \S+ with 4008", WAIT)
    assert states.seen == [ConnectionState.CONNECTED]  # not noticed yet: it is not reading

    messages = await read_all(subscription, count)
    assert [m.offset for m in messages] == list(range(1, count + 1))
    assert all(m.data["n"] == n for n, m in enumerate(messages, 1))
    assert all(same(m.data["pad"], pad) for m, pad in zip(messages, pads, strict=True))
    assert len({m.epoch for m in messages}) == 1
    assert client.close_code == 4008
    assert ConnectionState.RECONNECTING in states.seen
    # The hub dropped what it had queued: the rest came from the replay of the recovery.
    assert received_when_cut[0] < count, received_when_cut
    # Live messages go on after the recovery.
    await bounded(publisher.publish(topic, {"n": count + 1, "pad": ""}))
    (live,) = await read_all(subscription, 1)
    assert live.offset == count + 1
    assert client.state is ConnectionState.CONNECTED
