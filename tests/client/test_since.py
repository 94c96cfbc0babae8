"""A wildcard subscription's next ``since`` moves to an ok's time only after its replay."""

from __future__ import annotations

from typing import Any, cast

from hub_client import Client, Message, Subscription


def subscription() -> Subscription:
    return Subscription(cast(Client, None), "w.*", 100)  # no client needed for this part


def msg(offset: int) -> Message:
    return Message("w.a", None, offset, "e", "w.*")


def arrive(sub: Subscription, message: Message) -> Any:
    sub.arrived()
    return sub.accept(message)


async def test_since_moves_once_the_whole_replay_arrived() -> None:
    sub = subscription()
    sub.advance_time(100, 0)  # the first ok: nothing to replay
    assert sub.time == 100
    sub.advance_time(200, 2)  # a recovery whose replay holds two msgs
    arrive(sub, msg(1))
    assert sub.time == 100  # cut off now, the next recovery must ask from 100 again
    arrive(sub, msg(2))
    assert sub.time == 200
    arrive(sub, msg(3))  # live ones change nothing
    assert sub.time == 200


async def test_a_new_ok_forgets_a_replay_cut_short() -> None:
    sub = subscription()
    sub.advance_time(100, 0)
    sub.advance_time(200, 5)
    arrive(sub, msg(1))
    sub.advance_time(300, 1)  # reconnected: this recovery's replay counts, not the old one
    arrive(sub, msg(2))
    assert sub.time == 300
