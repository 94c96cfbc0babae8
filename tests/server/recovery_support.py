"""Helpers shared by test_history.py and test_recovery.py (docs/protocol.md, issue 6).

- the ``start_nodes`` fixture: ``await start_nodes("--history-size", "5")`` starts one memory
  node, or two Redis nodes sharing the test's own key prefix; publications are made on
  ``nodes.publisher`` and history is read and recovery asked on ``nodes.reader`` (the other
  Redis node, so that it is the backend's history that answers, not one node's memory);
- :func:`publish`: pipelined ``pub``s and their checked ``ok`` replies;
- :func:`expect_live_next`: a sentinel publication that must be a subscriber's very next frame,
  which proves that nothing (no replay, no stale ``msg``) was on its way before it;
- :func:`hub_time_ok`: a ``time`` field is an integer of milliseconds on the hub's wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.server.conftest import HubProcess, StartHub
from tests.server.peers import JSON, WAIT, Collector, Peer, assert_msg

__all__ = [
    "Nodes",
    "StartNodes",
    "expect_live_next",
    "hub_time_ok",
    "now_ms",
    "offsets",
    "payload",
    "position",
    "publish",
    "start_nodes_fixture",
    "wait_until",
]

#: Slack between the test's clock and the hub's (same machine; only catches seconds-vs-ms,
#: a monotonic clock, or a time taken at the wrong moment by far).
CLOCK_SLACK_MS = 1000


@dataclass(frozen=True, slots=True)
class Nodes:
    """Where to publish, and where to read history and recover (the same memory node twice)."""

    publisher: HubProcess
    reader: HubProcess
    backend: str


StartNodes = Callable[..., Awaitable[Nodes]]


@pytest.fixture(name="start_nodes", params=["memory", "redis"])
async def start_nodes_fixture(request: pytest.FixtureRequest, start_hub: StartHub) -> StartNodes:
    """``await start_nodes(*flags)``: one memory node, or two Redis nodes (same flags)."""
    backend: str = request.param
    redis_flags: tuple[str, ...] = ()
    if backend == "redis":
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")
        redis_flags = ("--backend", url, "--redis-prefix", prefix)

    async def start(*flags: str) -> Nodes:
        if backend == "memory":
            node = await start_hub(*flags)
            return Nodes(node, node, backend)
        first, second = await asyncio.gather(
            start_hub(*redis_flags, "--node-id", "n0", *flags),
            start_hub(*redis_flags, "--node-id", "n1", *flags),
        )
        return Nodes(first, second, backend)

    return start


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hub_time_ok(value: object, before: int, after: int) -> bool:
    """An integer (not a bool, not a float) of ms since the Unix epoch, taken in the window."""
    return type(value) is int and before - CLOCK_SLACK_MS <= value <= after + CLOCK_SLACK_MS


def payload(codec: str, n: int) -> object:
    """The data of publication ``n``: a value that the codec must carry exactly."""
    if codec == JSON:
        return {"n": n, "text": f"é{n}", "list": [n, None, True, 1.5]}
    return {"n": n, "bin": bytes([n]) * 3, "big": 2**40 + n, "list": [n, None, False]}


def position(reply: dict[str, Any]) -> dict[str, Any]:
    """The ``{epoch, offset}`` of a pub's ok, a concrete sub's ok, or a msg."""
    return {"epoch": reply["epoch"], "offset": reply["offset"]}


def offsets(frames: Iterable[dict[str, Any]]) -> list[int]:
    return [frame["offset"] for frame in frames]


async def publish(peer: Peer, topic: str, values: Iterable[object]) -> list[dict[str, Any]]:
    """Send a ``pub`` per value without waiting, then read their replies: all ``ok``, in order.

    The peer must hold no subscription (its next frames are the replies)."""
    ids = []
    for value in values:
        ids.append(peer.next_id())
        await peer.send({"op": "pub", "id": ids[-1], "topic": topic, "data": value})
    replies = [await peer.recv() for _ in ids]
    assert [(r["op"], r.get("id")) for r in replies] == [("ok", i) for i in ids], replies
    return replies


async def expect_live_next(
    subscriber: Peer, publisher: Peer, topic: str, sub: str, data: object = "sentinel"
) -> dict[str, Any]:
    """Publish ``data`` on ``topic``: it must be the subscriber's very next frame."""
    (published,) = await publish(publisher, topic, [data])
    frame = await subscriber.recv()
    assert_msg(
        frame,
        topic=topic,
        sub=sub,
        data=data,
        offset=published["offset"],
        epoch=published["epoch"],
    )
    return published


async def wait_until(
    collector: Collector,
    predicate: Callable[[list[dict[str, Any]]], bool],
    within: float = WAIT,
) -> list[dict[str, Any]]:
    """Wait until ``predicate(collector.frames)`` holds; the frames then."""
    async with asyncio.timeout(within):
        while not predicate(collector.frames):
            await collector.wait_for(len(collector.frames) + 1, within=within)
    return collector.frames
