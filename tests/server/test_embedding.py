"""The hub as a library: in-process subscriptions (hub.server.app.LocalSubscription)."""

from __future__ import annotations

import asyncio

import pytest

from hub.exceptions import InsufficientState
from hub.server.app import Hub
from hub.server.settings import Settings


async def test_a_lost_subscription_yields_what_came_before_the_gap_then_raises() -> None:
    async with asyncio.timeout(5), Hub(Settings()) as hub:
        lost = await hub.subscribe("chat.*")
        spared = await hub.subscribe("news")
        await hub.publish("chat.a", 1)
        hub.router.lost(["chat.*"])  # what a backend reports after an outage
        await hub.publish("chat.a", 2)  # after the gap: must not be presented as continuous
        await hub.publish("news", "n")
        assert (await lost.get())["data"] == 1
        for _ in range(2):  # and again: the subscription stays ended
            with pytest.raises(InsufficientState, match="chat"):
                await lost.get()
        assert (await spared.get())["data"] == "n"
        await lost.close()
        await spared.close()


async def test_a_waiting_reader_is_woken_by_the_loss() -> None:
    async with asyncio.timeout(5), Hub(Settings()) as hub:
        subscription = await hub.subscribe("room")
        waiting = asyncio.ensure_future(subscription.get())
        await asyncio.sleep(
            0
        )  # one turn, so that it waits on the empty queue (either way, it ends)
        hub.router.lost(["room"])
        with pytest.raises(InsufficientState):
            await waiting
        await subscription.close()
