"""The contract every backend must pass (the Redis backend joins the parametrization later)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from hub.broker.backend import Backend, OnPublication, Publication
from hub.broker.memory import MemoryBackend

BackendFactory = Callable[[OnPublication], Backend]


@pytest.fixture(params=[MemoryBackend], ids=["memory"])
def factory(request: pytest.FixtureRequest) -> BackendFactory:
    factory: BackendFactory = request.param
    return factory


class Recorder:
    def __init__(self) -> None:
        self.publications: list[Publication] = []

    def __call__(self, publication: Publication) -> None:
        self.publications.append(publication)

    def topics(self) -> list[str]:
        return [p.topic for p in self.publications]


@pytest.fixture
async def started(factory: BackendFactory) -> AsyncIterator[tuple[Backend, Recorder]]:
    recorder = Recorder()
    backend = factory(recorder)
    await backend.start()
    yield backend, recorder
    await backend.close()


async def test_offsets_start_at_one_and_count_per_topic(started: tuple[Backend, Recorder]) -> None:
    backend, _ = started
    offsets = [(await backend.publish(t, b"x")).offset for t in ("a", "a", "b", "a", "b")]
    assert offsets == [1, 2, 1, 3, 2]


async def test_epoch_is_stable_within_a_backend(started: tuple[Backend, Recorder]) -> None:
    backend, _ = started
    epochs = {(await backend.publish(t, b"x")).epoch for t in ("a", "b", "a")}
    assert len(epochs) == 1 and epochs != {""}


async def test_only_subscribed_topics_are_delivered(started: tuple[Backend, Recorder]) -> None:
    backend, recorder = started
    await backend.subscribe("chat.*")
    await backend.subscribe("news")
    for topic in ("chat.a", "chat.a.b", "news", "news.x", "other"):
        await backend.publish(topic, topic.encode())
    assert recorder.topics() == ["chat.a", "news"]
    assert [p.payload for p in recorder.publications] == [b"chat.a", b"news"]


async def test_delivered_once_however_many_patterns_match(
    started: tuple[Backend, Recorder],
) -> None:
    backend, recorder = started
    for pattern in ("chat.room", "chat.*", "chat.>", ">"):
        await backend.subscribe(pattern)
    await backend.publish("chat.room", b"x")
    assert recorder.topics() == ["chat.room"]


async def test_unsubscribe_stops_delivery(started: tuple[Backend, Recorder]) -> None:
    backend, recorder = started
    await backend.subscribe("a")
    await backend.publish("a", b"1")
    await backend.unsubscribe("a")
    await backend.unsubscribe("never-subscribed")
    second = await backend.publish("a", b"2")
    assert [p.offset for p in recorder.publications] == [1]
    assert second.offset == 2  # offsets go on without subscribers


async def test_concurrent_publishers_see_gapless_ordered_offsets(
    started: tuple[Backend, Recorder],
) -> None:
    backend, recorder = started
    await backend.subscribe(">")
    results = await asyncio.gather(
        *(backend.publish(f"t{i % 3}", str(i).encode()) for i in range(300))
    )
    for topic in ("t0", "t1", "t2"):
        delivered = [p.offset for p in recorder.publications if p.topic == topic]
        assert delivered == list(range(1, 101))
        returned = sorted(p.offset for p in results if p.topic == topic)
        assert returned == list(range(1, 101))


async def test_position_is_the_last_offset(started: tuple[Backend, Recorder]) -> None:
    backend, _ = started
    _epoch, offset = await backend.position("a")
    assert offset == 0
    published = await backend.publish("a", b"x")
    assert await backend.position("a") == (published.epoch, 1)
    assert (await backend.position("b"))[1] == 0
