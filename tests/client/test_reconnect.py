"""Reconnects against real hub-server processes killed with SIGKILL and started again on the
same port (docs/protocol.md: recovery).

- memory backend: the new process has a new epoch and no history: the iterator raises
  NotRecovered once, then goes on with live messages;
- Redis backend: the new process (the same node id, or another node: "across nodes") serves the
  same history: the iterator goes on with what was published meanwhile, no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from hub.exceptions import Disconnected, NotRecovered, RequestTimeout
from hub_client import Client, ConnectionState, Message, Subscription
from tests.client.conftest import OpenClient
from tests.client.support import WAIT, States, bounded, close_client, kill, payload, restart
from tests.server.conftest import HubProcess, StartHub
from tests.server.peers import same

CONNECTED, RECONNECTING, CLOSED = (
    ConnectionState.CONNECTED,
    ConnectionState.RECONNECTING,
    ConnectionState.CLOSED,
)


@dataclass
class Case:
    """What a test subscribes to, and the topics it publishes on (two for a wildcard)."""

    pattern: str
    topics: list[str]


@pytest.fixture(params=["concrete", "wildcard"])
def case(request: pytest.FixtureRequest, prefix: str) -> Case:
    if request.param == "concrete":
        return Case(f"{prefix}.a", [f"{prefix}.a"])
    return Case(f"{prefix}.*", [f"{prefix}.a", f"{prefix}.b"])


async def publish_round(client: Client, case: Case, codec: str, n: int) -> list[tuple[str, int]]:
    """One publication per topic of the case; their (topic, offset)."""
    published = []
    for topic in case.topics:
        offset = await bounded(client.publish(topic, payload(codec, n)))
        assert offset is not None
        published.append((topic, offset))
    return published


async def take(subscription: Subscription, count: int) -> list[Message]:
    async with asyncio.timeout(WAIT):
        return [await subscription.get() for _ in range(count)]


def in_topic_order(messages: list[Message]) -> dict[str, list[int]]:
    """Offsets per topic, in the order received."""
    seen: dict[str, list[int]] = {}
    for message in messages:
        seen.setdefault(message.topic, []).append(message.offset)
    return seen


# --- memory backend: not recovered ----------------------------------------------------------------


async def test_memory_restart_raises_not_recovered_once(
    start_hub: StartHub, open_client: OpenClient, codec: str, case: Case
) -> None:
    node = await start_hub()
    states = States()
    client = await open_client(node.uri, on_state=states)
    subscription = await bounded(client.subscribe(case.pattern))
    await publish_round(client, case, codec, 1)
    before = await take(subscription, len(case.topics))
    old_epoch = before[0].epoch

    await kill(node)
    await states.wait_for(RECONNECTING)
    await restart(start_hub, node.port)
    await states.wait_for(CONNECTED, count=2)

    with pytest.raises(NotRecovered) as error:
        await bounded(subscription.get())
    assert error.value.topic == case.pattern
    # Then live messages, on the new process's epoch, from offset 1; NotRecovered only once.
    for n in (2, 3):
        await publish_round(client, case, codec, n)
        live = await take(subscription, len(case.topics))
        assert [(m.topic, m.offset) for m in live] == [(t, n - 1) for t in case.topics]
        assert all(same(m.data, payload(codec, n)) for m in live)
        assert all(m.epoch != old_epoch for m in live)
    assert subscription.pending() == 0
    assert states.seen == [CONNECTED, RECONNECTING, CONNECTED]


async def test_memory_restart_async_for_goes_on_after_not_recovered(
    start_hub: StartHub, open_client: OpenClient, prefix: str
) -> None:
    node = await start_hub()
    states = States()
    client = await open_client(node.uri, on_state=states)
    topic = f"{prefix}.a"
    subscription = await bounded(client.subscribe(topic))
    await bounded(client.publish(topic, "before"))

    received: list[object] = []
    gaps: list[NotRecovered] = []
    gap = asyncio.Event()

    async def consume() -> None:
        while True:  # the pattern the docs give: iterate again after NotRecovered
            try:
                async for message in subscription:
                    received.append(message.data)
                    if message.data == "after":
                        return
            except NotRecovered as exc:
                gaps.append(exc)
                gap.set()

    consumer = asyncio.ensure_future(bounded(consume()))
    await kill(node)
    await states.wait_for(RECONNECTING)
    await restart(start_hub, node.port)
    await states.wait_for(CONNECTED, count=2)
    # NotRecovered comes with the resubscription's ok: a publication after it is live, and
    # the consumer must get it.
    await bounded(gap.wait())
    await bounded(client.publish(topic, "after"))
    await bounded(consumer)
    assert received == ["before", "after"]
    assert len(gaps) == 1 and gaps[0].topic == topic


# --- Redis backend: recovered ---------------------------------------------------------------------


@pytest.fixture
def redis_flags(redis_url: str, redis_prefix: str) -> tuple[str, ...]:
    return ("--backend", redis_url, "--redis-prefix", redis_prefix, "--history-size", "1000")


@pytest.mark.parametrize("successor", ["same-node", "other-node"])
async def test_redis_restart_recovers_without_gap_or_duplicate(
    start_hub: StartHub,
    open_client: OpenClient,
    redis_flags: tuple[str, ...],
    codec: str,
    case: Case,
    successor: str,
) -> None:
    """The client's node is killed; publications go on through another node; a new process
    (the same node id, or another node: "reconnect across nodes") takes the port over."""
    node, other = await asyncio.gather(
        start_hub(*redis_flags, "--node-id", "a"), start_hub(*redis_flags, "--node-id", "p")
    )
    states = States()
    client = await open_client(node.uri, on_state=states)
    publisher = await open_client(other.uri)
    subscription = await bounded(client.subscribe(case.pattern))
    await publish_round(publisher, case, codec, 1)
    received = await take(subscription, len(case.topics))

    await kill(node)
    await states.wait_for(RECONNECTING)
    for n in range(2, 6):  # missed while the client is away
        await publish_round(publisher, case, codec, n)
    node_id = "a" if successor == "same-node" else "b"
    await restart(start_hub, node.port, *redis_flags, "--node-id", node_id)
    await states.wait_for(CONNECTED, count=2)
    received += await take(subscription, 4 * len(case.topics))
    await publish_round(publisher, case, codec, 6)  # live, after the replay
    received += await take(subscription, len(case.topics))

    assert in_topic_order(received) == {topic: [1, 2, 3, 4, 5, 6] for topic in case.topics}
    by_topic: dict[str, list[object]] = {}
    for message in received:
        by_topic.setdefault(message.topic, []).append(message.data)
    for data in by_topic.values():
        assert all(same(d, payload(codec, n)) for n, d in enumerate(data, 1))
    # Each topic keeps its epoch: it lives in Redis, not in the process.
    assert len({(m.topic, m.epoch) for m in received}) == len(case.topics)
    assert subscription.pending() == 0
    assert states.seen == [CONNECTED, RECONNECTING, CONNECTED]


@pytest.mark.slow
async def test_no_gap_or_duplicate_across_several_reconnects(
    start_hub: StartHub, open_client: OpenClient, redis_flags: tuple[str, ...], prefix: str
) -> None:
    """A publisher publishes all along on another node while the subscriber's node is killed
    and started again three times; the iterator sees every publication once, in order."""
    node, other = await asyncio.gather(
        start_hub(*redis_flags, "--node-id", "a"), start_hub(*redis_flags, "--node-id", "p")
    )
    states = States()
    client = await open_client(node.uri, on_state=states)
    publisher = await open_client(other.uri)
    topic = f"{prefix}.a"
    subscription = await bounded(client.subscribe(topic))

    published: list[int] = []
    stop = asyncio.Event()

    async def publish_continuously() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            offset = await publisher.publish(topic, n)
            assert offset == n
            published.append(n)
            await asyncio.sleep(0.002)  # pacing, not synchronisation: a few hundred a second

    received: list[int] = []
    progress = asyncio.Event()

    async def consume() -> None:
        try:
            async for message in subscription:  # NotRecovered would end it with an error
                assert message.offset == message.data, message
                received.append(message.offset)
                progress.set()
        finally:
            progress.set()

    async def received_past(count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(received) <= count:
                if consumer.done():
                    consumer.result()  # raises what ended it
                    raise AssertionError("the iterator ended")
                progress.clear()
                await progress.wait()

    publishing = asyncio.ensure_future(publish_continuously())
    consumer = asyncio.ensure_future(consume())
    try:
        for restarts in range(1, 4):
            await received_past(len(published))  # live delivery goes on before each kill
            await kill(node)
            await states.wait_for(RECONNECTING, count=restarts)
            node = await restart(start_hub, node.port, *redis_flags, "--node-id", "a")
            await states.wait_for(CONNECTED, count=restarts + 1)
        await received_past(len(published))
        stop.set()
        await bounded(publishing)
        final = await bounded(publisher.publish(topic, len(published) + 1))
        published.append(len(published) + 1)
        assert final == len(published)
        await received_past(len(published) - 1)
    finally:
        stop.set()
        consumer.cancel()
        await asyncio.wait({publishing, consumer}, timeout=WAIT)
    assert received == published == list(range(1, len(published) + 1))
    assert len(published) > 50  # publications did happen across the reconnects
    assert states.seen == [CONNECTED] + [RECONNECTING, CONNECTED] * 3


# --- connection state -----------------------------------------------------------------------------


async def test_states_callback_and_iterator(
    start_hub: StartHub, open_client: OpenClient, codec: str
) -> None:
    node = await start_hub()
    states = States()
    client = await open_client(node.uri, on_state=states)
    assert client.state is CONNECTED

    async def follow() -> list[ConnectionState]:
        return [state async for state in client.states()]

    follower = asyncio.ensure_future(bounded(follow()))
    await kill(node)  # the follower task starts while this waits for the process to end
    await states.wait_for(RECONNECTING)
    assert client.state is RECONNECTING
    await restart(start_hub, node.port)
    await states.wait_for(CONNECTED, count=2)
    assert client.state is CONNECTED
    assert await close_client(client)
    assert await bounded(follower) == [RECONNECTING, CONNECTED, CLOSED]
    assert states.seen == [CONNECTED, RECONNECTING, CONNECTED, CLOSED]
    # After CLOSED, a new iterator ends at once.
    assert [state async for state in client.states()] == []


async def test_states_iterator_sees_changes_from_the_call(
    start_hub: StartHub, open_client: OpenClient
) -> None:
    node = await start_hub()
    states = States()
    client = await open_client(node.uri, on_state=states)
    changes = client.states()  # from now on
    await kill(node)
    await states.wait_for(RECONNECTING)
    await restart(start_hub, node.port)
    await states.wait_for(CONNECTED, count=2)
    try:
        first = await bounded(anext(changes), within=1)
    except TimeoutError:
        pytest.fail("states() yielded nothing: the changes after the call were lost")
    assert first is RECONNECTING


# --- requests while disconnected ------------------------------------------------------------------


async def disconnected(
    start_hub: StartHub, open_client: OpenClient, **options: object
) -> tuple[HubProcess, Client, States]:
    """A client whose hub was killed: RECONNECTING, nothing listening on its port."""
    node = await start_hub()
    states = States()
    client = await open_client(node.uri, on_state=states, **options)
    await kill(node)
    await states.wait_for(RECONNECTING)
    return node, client, states


async def test_when_disconnected_fail(
    start_hub: StartHub, open_client: OpenClient, prefix: str
) -> None:
    node, client, states = await disconnected(start_hub, open_client, when_disconnected="fail")
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: client.publish(f"{prefix}.a", 1),
        lambda: client.history(f"{prefix}.a"),
        lambda: client.subscribe(f"{prefix}.a"),
        lambda: client.send({"op": "pub", "topic": f"{prefix}.a", "data": 1}),
    ]
    loop = asyncio.get_running_loop()
    for attempt in attempts:
        started = loop.time()
        with pytest.raises(Disconnected):
            await bounded(attempt())
        assert loop.time() - started < 0.1  # at once, not after a timeout
    await restart(start_hub, node.port)
    await states.wait_for(CONNECTED, count=2)
    assert await bounded(client.publish(f"{prefix}.a", 1)) == 1


async def test_when_disconnected_wait(
    start_hub: StartHub, open_client: OpenClient, prefix: str
) -> None:
    node, client, states = await disconnected(start_hub, open_client)
    with pytest.raises(RequestTimeout):  # bounded by the request's timeout
        await bounded(client.publish(f"{prefix}.a", 0, timeout=0.1))
    waiting = asyncio.ensure_future(client.publish(f"{prefix}.a", 1, timeout=WAIT))
    subscribing = asyncio.ensure_future(client.subscribe(f"{prefix}.a", timeout=WAIT))
    await asyncio.sleep(0.05)  # they wait (no event says so); they must not have failed
    assert not waiting.done() and not subscribing.done()
    await restart(start_hub, node.port)
    assert await bounded(waiting) == 1
    subscription = await bounded(subscribing)
    assert await bounded(client.publish(f"{prefix}.a", 2)) == 2
    message = await bounded(subscription.get())
    assert (message.offset, message.data) == (2, 2)
    assert states.seen == [CONNECTED, RECONNECTING, CONNECTED]


async def test_closing_a_disconnected_client(start_hub: StartHub, open_client: OpenClient) -> None:
    _, client, states = await disconnected(start_hub, open_client)
    assert await close_client(client, within=1)
    assert states.seen == [CONNECTED, RECONNECTING, CLOSED]
