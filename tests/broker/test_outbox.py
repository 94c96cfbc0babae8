"""The bounded outbox: push never blocks, overflow is reported, the writer gets batches."""

from __future__ import annotations

import asyncio

from hub.broker.outbox import Outbox


async def test_batches_in_order() -> None:
    outbox = Outbox()
    assert outbox.push("a") and outbox.push(b"bc")
    assert (len(outbox), outbox.size) == (2, 3)
    assert await outbox.get_batch() == ["a", b"bc"]
    assert (len(outbox), outbox.size) == (0, 0)


async def test_writer_waits_for_frames() -> None:
    outbox = Outbox()
    batch = asyncio.ensure_future(outbox.get_batch())
    await asyncio.sleep(0)
    assert not batch.done()
    outbox.push("x")
    async with asyncio.timeout(1):
        assert await batch == ["x"]


async def test_overflow_by_messages() -> None:
    outbox = Outbox(max_messages=2)
    assert outbox.push("1") and outbox.push("2")
    assert outbox.push("3") is False
    assert outbox.overflowed
    assert outbox.push("4") is False  # stays overflowed: the session closes with 4008
    assert len(outbox) == 2


async def test_overflow_by_bytes() -> None:
    outbox = Outbox(max_bytes=10)
    assert outbox.push(b"12345")
    assert outbox.push(b"123456") is False
    assert outbox.overflowed and outbox.size == 5


async def test_overflow_and_close_release_the_writer() -> None:
    for end in ("overflow", "close"):
        outbox = Outbox(max_messages=0)
        batch = asyncio.ensure_future(outbox.get_batch())
        await asyncio.sleep(0)
        if end == "overflow":
            outbox.push("x")
        else:
            outbox.close()
        async with asyncio.timeout(1):
            assert await batch == []


async def test_drained_waits_for_the_writer_to_take_everything() -> None:
    outbox = Outbox()
    outbox.push("a")
    drained = asyncio.ensure_future(outbox.drained())
    await asyncio.sleep(0)
    assert not drained.done()  # "a" is still queued
    assert await outbox.get_batch() == ["a"]
    assert not drained.done()  # taken, but the writer has not come back for more yet
    writer = asyncio.ensure_future(outbox.get_batch())
    async with asyncio.timeout(1):
        await drained
    outbox.close()
    assert await writer == []


async def test_discard_releases_a_shutdown_waiting_for_frames_no_writer_will_take() -> None:
    outbox = Outbox()
    outbox.push("pushed after the writer stopped")
    waiting = asyncio.ensure_future(outbox.drained())
    await asyncio.sleep(0)
    assert not waiting.done()  # without discard, this waits forever
    outbox.discard()
    async with asyncio.timeout(1):
        await waiting
    assert (len(outbox), outbox.size, outbox.idle) == (0, 0, True)
    assert not outbox.push("after")
    assert await outbox.get_batch() == []
