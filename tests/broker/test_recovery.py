"""The recovery planner over the memory backend: every edge of what can be recovered."""

from __future__ import annotations

import pytest

from hub.broker.backend import Publication
from hub.broker.memory import MemoryBackend
from hub.broker.recovery import plan_pattern, plan_topic
from hub.broker.retention import Keep, Retention

#: Five publications per topic; none for "off.>".
RETENTION = Retention(Keep(5, 60.0), [("off.>", Keep(0, 60.0))])


def ignore(publication: Publication) -> None:
    pass


@pytest.fixture
async def backend() -> MemoryBackend:
    backend = MemoryBackend(ignore, retention=RETENTION)
    await backend.start()
    return backend


async def next_millisecond(backend: MemoryBackend, time: int) -> int:
    """The backend's time once it is past ``time``: publications at or after it are newer
    (times are in ms, so two publications may share one)."""
    while (now := await backend.time()) <= time:
        pass
    return now


async def publish(backend: MemoryBackend, topic: str, count: int) -> list[Publication]:
    return [await backend.publish(topic, str(i).encode()) for i in range(count)]


async def test_no_recover_gives_the_position(backend: MemoryBackend) -> None:
    await publish(backend, "a", 3)
    plan = await plan_topic(backend, "a", None, 0, 100)
    assert (plan.recovered, plan.replay, plan.seen, plan.offset) == (
        False,
        [],
        {"a": (backend.epoch, 3)},
        3,
    )
    assert plan.epoch == backend.epoch


@pytest.mark.parametrize(
    ("offset", "limit", "recovered", "replayed"),
    [
        (8, 100, True, []),  # at the head: nothing missed
        (6, 100, True, [7, 8]),  # inside the window
        (3, 100, True, [4, 5, 6, 7, 8]),  # the oldest retained is exactly the next one
        (2, 100, False, []),  # offset 3 was trimmed (size 5)
        (6, 1, False, []),  # two missed, limit one
        (9, 100, False, []),  # a position from the future
    ],
)
async def test_a_topic_recovers_only_what_history_fully_covers(
    backend: MemoryBackend, offset: int, limit: int, recovered: bool, replayed: list[int]
) -> None:
    await publish(backend, "a", 8)
    plan = await plan_topic(backend, "a", backend.epoch, offset, limit)
    assert plan.recovered is recovered
    assert [p.offset for p in plan.replay] == replayed
    assert plan.seen == {"a": (backend.epoch, 8)} and plan.offset == 8  # live from 9 either way


async def test_another_epoch_or_no_history_is_not_recovered(backend: MemoryBackend) -> None:
    await publish(backend, "a", 2)
    assert not (await plan_topic(backend, "a", "old-epoch", 1, 100)).recovered
    await publish(backend, "off.a", 2)
    assert not (await plan_topic(backend, "off.a", backend.epoch, 1, 100)).recovered
    assert (await plan_topic(backend, "off.a", backend.epoch, 2, 100)).recovered  # none missed


async def test_a_pattern_replays_known_and_new_topics(backend: MemoryBackend) -> None:
    await publish(backend, "p.known", 2)
    [before] = await publish(backend, "p.before", 1)  # before the subscription: not replayed
    since = await next_millisecond(backend, before.time)
    await publish(backend, "p.known", 2)
    new = await publish(backend, "p.new", 2)
    await publish(backend, "q.other", 1)  # not matched
    positions = {"p.known": (backend.epoch, 2), "q.other": (backend.epoch, 0)}
    plan = await plan_pattern(backend, "p.*", since, positions, 100)
    assert plan.recovered and plan.time >= since
    assert [(p.topic, p.offset) for p in plan.replay] == [
        ("p.known", 3),
        ("p.known", 4),
        ("p.new", 1),
        ("p.new", 2),
    ]
    assert plan.replay[2:] == new
    assert plan.seen == {"p.known": (backend.epoch, 4), "p.new": (backend.epoch, 2)}


async def test_a_pattern_is_not_recovered_when_anything_is_missing(
    backend: MemoryBackend,
) -> None:
    since = await backend.time()
    await publish(backend, "p.a", 7)  # a new topic whose first two were trimmed
    plan = await plan_pattern(backend, "p.*", since, {}, 100)
    assert (plan.recovered, plan.replay) == (False, [])
    # Within the window, but over the limit across topics.
    await publish(backend, "r.a", 3)
    await publish(backend, "r.b", 3)
    assert not (await plan_pattern(backend, "r.*", since, {}, 5)).recovered
    assert (await plan_pattern(backend, "r.*", since, {}, 6)).recovered
    # One known topic of another epoch spoils the whole recovery.
    positions = {"r.a": ("old-epoch", 1)}
    assert not (await plan_pattern(backend, "r.*", since, positions, 100)).recovered


async def test_a_new_topic_is_replayed_from_since_when_older_history_is_kept(
    backend: MemoryBackend,
) -> None:
    earlier = await publish(backend, "p.a", 2)
    since = await next_millisecond(backend, earlier[-1].time)
    later = await publish(backend, "p.a", 2)
    plan = await plan_pattern(backend, "p.*", since, {}, 100)
    assert plan.recovered and plan.replay == later


async def test_a_pattern_is_not_recovered_from_before_the_index_reaches(
    backend: MemoryBackend,
) -> None:
    """The topic index forgets topics idle for longer than the longest ttl (60 s here), so a
    ``since`` older than that cannot be answered with recovered true."""
    now = await backend.time()
    assert not (await plan_pattern(backend, "p.*", now - 61_000, {}, 100)).recovered
    assert (await plan_pattern(backend, "p.*", now - 59_000, {}, 100)).recovered
