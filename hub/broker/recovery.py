"""What a subscription can recover: the replay that closes its gap, or the news that none can.

A client that comes back names where it stopped: an ``(epoch, offset)`` for a concrete topic;
for a wildcard pattern, the position of every topic it saw plus the backend time of its
subscription (``since``), so that topics first published while it was away are found in the
backend's topic index. :func:`plan_topic` and :func:`plan_pattern` read the history and answer
with a :class:`Plan`. They never return part of a gap as if it were all of it: a replay is
either complete (``recovered``) or empty.

The caller holds the subscription's live publications while it replays (see
:meth:`hub.broker.router.Router.hold`), then releases those after ``Plan.seen``: replay and
live then meet with no gap and no duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.broker.backend import Backend, History, Publication
from hub.broker.topics import matches

__all__ = ["Plan", "plan_pattern", "plan_topic", "replay_after", "replay_since"]


@dataclass
class Plan:
    """``replay`` in the order to deliver (each topic in offset order); ``seen`` maps a topic
    to the ``(epoch, offset)`` the subscriber has after the replay (live messages start
    above it);
    ``epoch``/``offset`` is a concrete topic's position, ``time`` the backend's clock for a
    pattern (the client's next ``since``)."""

    recovered: bool
    replay: list[Publication] = field(default_factory=list)
    seen: dict[str, tuple[str, int]] = field(default_factory=dict)
    epoch: str = ""
    offset: int = 0
    time: int = 0


def replay_after(history: History, epoch: str, offset: int, limit: int) -> list[Publication] | None:
    """The publications after ``offset`` if ``history`` holds all of them and there are at most
    ``limit``; None when the gap cannot be closed."""
    missed = history.offset - offset
    if history.epoch != epoch or missed < 0 or missed > limit:
        return None
    if missed and history.oldest > offset + 1:
        return None  # trimmed by size or age
    replay = history.publications
    if [p.offset for p in replay] != list(range(offset + 1, history.offset + 1)):
        return None
    return replay


def replay_since(history: History, since: int, limit: int) -> list[Publication] | None:
    """A topic's publications at or after time ``since``, if history holds them all."""
    replay = [p for p in history.publications if p.time >= since]
    if len(replay) > limit:
        return None
    # Covered when an older publication was read too (the boundary is inside the history), or
    # when nothing was ever dropped (the history starts at offset 1).
    if len(replay) == len(history.publications) and history.oldest != 1:
        return None
    return replay


async def plan_topic(
    backend: Backend, topic: str, epoch: str | None, offset: int, limit: int
) -> Plan:
    """Recover a concrete topic from ``(epoch, offset)``; no ``epoch``: just its position."""
    if epoch is None:
        position = await backend.position(topic)
        return Plan(False, seen={topic: position}, epoch=position[0], offset=position[1])
    history = await backend.history(topic, after=offset, limit=limit + 1)
    replay = replay_after(history, epoch, offset, limit)
    return Plan(
        replay is not None,
        replay or [],
        {topic: (history.epoch, history.offset)},
        epoch=history.epoch,
        offset=history.offset,
    )


async def plan_pattern(
    backend: Backend,
    pattern: str,
    since: int | None,
    positions: dict[str, tuple[str, int]],
    limit: int,
) -> Plan:
    """Recover a wildcard pattern (``since`` None: nothing to recover, just the time)."""
    now = await backend.time()
    if since is None:
        return Plan(False, time=now)
    if since < now - backend.retention.longest_ttl * 1000:
        # The topic index forgets topics idle for longer: it cannot name every one missed.
        return Plan(False, time=now)
    budget = limit
    replay: list[Publication] = []
    seen: dict[str, tuple[str, int]] = {}
    known = {t: position for t, position in positions.items() if matches(pattern, t)}
    for topic, (epoch, offset) in known.items():
        history = await backend.history(topic, after=offset, limit=budget + 1)
        missed = replay_after(history, epoch, offset, budget)
        if missed is None:
            return Plan(False, time=now)
        replay += missed
        budget -= len(missed)
        seen[topic] = (history.epoch, history.offset)
    for topic in await backend.topics_since(since):
        if topic in known or not matches(pattern, topic):
            continue
        history = await backend.history(topic, limit=budget + 1, newest_first=True)
        missed = replay_since(history, since, budget)
        if missed is None:
            return Plan(False, time=now)
        replay += missed
        budget -= len(missed)
        seen[topic] = (history.epoch, history.offset)
    return Plan(True, replay, seen, time=now)
