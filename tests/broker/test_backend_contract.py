"""The contract every backend must pass, run against each of them.

The Redis backend delivers through its pub/sub reader, after ``publish`` returns, so the tests
wait for deliveries with :meth:`Recorder.wait_for`; to prove that something was *not* delivered,
they publish a sentinel after it and wait for the sentinel (delivery is in publish order).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

import pytest

from hub.broker.backend import Backend, OnPublication, Publication
from hub.broker.memory import MemoryBackend
from hub.broker.redis import RedisBackend
from hub.broker.retention import Keep, Retention

BackendFactory = Callable[[OnPublication], Backend]


#: Five publications of history for every topic but those under "short." (two, for 0.3 s) and
#: "off." (none).
RETENTION = Retention(Keep(5, 60.0), [("short.>", Keep(2, 0.3)), ("off.>", Keep(0, 60.0))])


@pytest.fixture(params=["memory", "redis"])
def factory(request: pytest.FixtureRequest) -> BackendFactory:
    if request.param == "memory":
        return functools.partial(MemoryBackend, retention=RETENTION)
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    return functools.partial(RedisBackend, url=url, key_prefix=prefix, retention=RETENTION)


class Recorder:
    """The backend's ``on_publication``: records deliveries and lets a test wait for them."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self._arrived = asyncio.Event()

    def __call__(self, publication: Publication) -> None:
        self.publications.append(publication)
        self._arrived.set()

    def topics(self) -> list[str]:
        return [p.topic for p in self.publications]

    async def wait_for(self, count: int, *, within: float = 5.0) -> list[Publication]:
        """Wait until ``count`` publications were delivered (more may follow); return them all."""
        async with asyncio.timeout(within):
            while len(self.publications) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.publications


@pytest.fixture
async def started(factory: BackendFactory) -> AsyncIterator[tuple[Backend, Recorder]]:
    recorder = Recorder()
    backend = factory(recorder)
    assert backend.state == "starting" and not backend.healthy
    await backend.start()
    assert backend.state == "up" and backend.healthy
    yield backend, recorder
    await backend.close()
    assert backend.state == "closed"


async def test_offsets_start_at_one_and_count_per_topic(started: tuple[Backend, Recorder]) -> None:
    backend, _ = started
    offsets = [(await backend.publish(t, b"x")).offset for t in ("a", "a", "b", "a", "b")]
    assert offsets == [1, 2, 1, 3, 2]


async def test_epoch_is_stable_per_topic(started: tuple[Backend, Recorder]) -> None:
    backend, _ = started
    publications = [await backend.publish(t, b"x") for t in ("a", "b", "a", "b", "a")]
    for topic in ("a", "b"):
        epochs = {p.epoch for p in publications if p.topic == topic}
        assert len(epochs) == 1 and epochs != {""}


async def test_only_subscribed_topics_are_delivered(started: tuple[Backend, Recorder]) -> None:
    backend, recorder = started
    await backend.subscribe("chat.*")
    await backend.subscribe("news")
    for topic in ("chat.a", "chat.a.b", "news", "news.x", "other", "chat.end"):
        await backend.publish(topic, topic.encode())
    await recorder.wait_for(3)  # chat.end, the sentinel, comes after all the others
    assert recorder.topics() == ["chat.a", "news", "chat.end"]
    assert [p.payload for p in recorder.publications] == [b"chat.a", b"news", b"chat.end"]


async def test_delivered_once_however_many_patterns_match(
    started: tuple[Backend, Recorder],
) -> None:
    backend, recorder = started
    for pattern in ("chat.room", "chat.*", "chat.>", ">"):
        await backend.subscribe(pattern)
    await backend.publish("chat.room", b"x")
    await backend.publish("chat.room", b"sentinel")  # any duplicate of #1 would come before it
    await recorder.wait_for(2)
    assert [(p.topic, p.offset) for p in recorder.publications] == [
        ("chat.room", 1),
        ("chat.room", 2),
    ]


async def test_unsubscribe_stops_delivery(started: tuple[Backend, Recorder]) -> None:
    backend, recorder = started
    await backend.subscribe("a")
    await backend.subscribe("sentinel")
    await backend.publish("a", b"1")
    await recorder.wait_for(1)
    await backend.unsubscribe("a")
    await backend.unsubscribe("never-subscribed")
    second = await backend.publish("a", b"2")
    await backend.publish("sentinel", b"")
    await recorder.wait_for(2)
    assert [(p.topic, p.offset) for p in recorder.publications] == [("a", 1), ("sentinel", 1)]
    assert second.offset == 2  # offsets go on without subscribers


async def test_subscribe_again_after_unsubscribe(started: tuple[Backend, Recorder]) -> None:
    backend, recorder = started
    await backend.subscribe("a")
    await backend.unsubscribe("a")
    await backend.publish("a", b"1")
    await backend.subscribe("a")
    await backend.publish("a", b"2")
    await recorder.wait_for(1)
    assert [p.offset for p in recorder.publications] == [2]


async def test_concurrent_publishers_see_gapless_ordered_offsets(
    started: tuple[Backend, Recorder],
) -> None:
    backend, recorder = started
    await backend.subscribe(">")
    results = await asyncio.gather(
        *(backend.publish(f"t{i % 3}", str(i).encode()) for i in range(300))
    )
    await recorder.wait_for(300)
    assert len(recorder.publications) == 300
    for topic in ("t0", "t1", "t2"):
        delivered = [p.offset for p in recorder.publications if p.topic == topic]
        assert delivered == list(range(1, 101))
        returned = sorted(p.offset for p in results if p.topic == topic)
        assert returned == list(range(1, 101))
    # Each delivery is the publication that publish() returned, payload and all.
    assert sorted(results, key=repr) == sorted(recorder.publications, key=repr)


async def test_position_is_the_last_offset(started: tuple[Backend, Recorder]) -> None:
    backend, _ = started
    epoch, offset = await backend.position("a")
    assert offset == 0
    published = await backend.publish("a", b"x")
    # The first publish keeps the epoch that position() announced for an unpublished topic.
    assert published.epoch == epoch
    assert await backend.position("a") == (published.epoch, 1)
    assert (await backend.position("b"))[1] == 0


async def test_a_subscriber_continues_from_position(started: tuple[Backend, Recorder]) -> None:
    backend, recorder = started
    await backend.publish("a", b"before")
    await backend.subscribe("a")
    epoch, offset = await backend.position("a")
    await backend.publish("a", b"after")
    await recorder.wait_for(1)
    assert [(p.epoch, p.offset, p.payload) for p in recorder.publications] == [
        (epoch, offset + 1, b"after")
    ]


async def test_publish_many_publishes_in_order(started: tuple[Backend, Recorder]) -> None:
    backend, recorder = started
    await backend.subscribe(">")
    await backend.publish("a", b"first")
    items = [(f"t{i % 2}" if i else "a", str(i).encode()) for i in range(101)]
    results = await backend.publish_many(items)
    published = [result for result in results if isinstance(result, Publication)]
    assert published == results
    assert [(p.topic, p.payload) for p in published] == items
    assert [p.offset for p in published if p.topic == "a"] == [2]
    assert [p.offset for p in published if p.topic == "t1"] == list(range(1, 51))
    await recorder.wait_for(102)
    assert recorder.publications[1:] == results
    assert await backend.publish_many([]) == []


# --- history ----------------------------------------------------------------------------------


async def test_history_keeps_the_last_publications(started: tuple[Backend, Recorder]) -> None:
    backend, _ = started
    empty = await backend.history("h", limit=10)
    assert (empty.offset, empty.publications, empty.oldest) == (0, [], 1)
    published = [await backend.publish("h", str(i).encode()) for i in range(1, 9)]
    assert all(p.time > 0 for p in published)
    assert [p.time for p in published] == sorted(p.time for p in published)
    everything = await backend.history("h", limit=10)
    assert (everything.epoch, everything.offset, everything.oldest) == (empty.epoch, 8, 4)
    assert everything.publications == published[3:]  # size 5, payloads and times included
    assert (await backend.history("h", after=5, limit=10)).publications == published[5:]
    assert (await backend.history("h", after=1, limit=2)).publications == published[3:5]
    newest = await backend.history("h", limit=2, newest_first=True)
    assert newest.publications == published[6:]  # the newest two, oldest first
    assert (await backend.history("h", after=8, limit=10)).publications == []


async def test_history_by_rule_and_age(started: tuple[Backend, Recorder]) -> None:
    backend, _ = started
    await backend.publish("off.x", b"1")
    off = await backend.history("off.x", limit=10)
    assert (off.offset, off.publications, off.oldest) == (1, [], 2)
    short = [await backend.publish("short.x", str(i).encode()) for i in range(3)]
    assert (await backend.history("short.x", limit=10)).publications == short[1:]
    await asyncio.sleep(0.35)  # let the 0.3 s ttl pass: wall-clock time is the point here
    aged = await backend.history("short.x", limit=10)
    assert (aged.offset, aged.publications, aged.oldest) == (3, [], 4)


async def test_the_index_lists_topics_by_their_last_publication(
    started: tuple[Backend, Recorder],
) -> None:
    backend, _ = started
    await backend.publish("old", b"")
    before = await backend.time()
    later = await backend.publish("new", b"")
    assert later.time >= before
    assert "new" in await backend.topics_since(before)
    assert "old" not in await backend.topics_since(later.time + 1)
    await backend.publish("old", b"")
    assert {"old", "new"} <= set(await backend.topics_since(before))
