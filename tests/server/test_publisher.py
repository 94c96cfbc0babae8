"""The session's publisher: bursts, order of answers, bounded depth, failures of a burst.

A real Router over a MemoryBackend whose ``publish_many`` the test can hold at a gate, so that
what queues behind a burst in flight is deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from hub.broker.backend import Publication
from hub.broker.memory import MemoryBackend
from hub.broker.router import Router
from hub.exceptions import InternalError, RequestError
from hub.server.publisher import Publisher


class GatedBackend(MemoryBackend):
    """Each burst waits for the gate; ``fail`` makes the next burst raise."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.bursts: list[list[str]] = []
        self.fail = False

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]]
    ) -> list[Publication | RequestError]:
        self.bursts.append([payload.decode() for _, payload in items])
        await self.gate.wait()
        if self.fail:
            self.fail = False
            raise RuntimeError("a bug in the backend")
        return await super().publish_many(items)


Answers = list[tuple[int | None, Publication | RequestError]]


@pytest.fixture
async def router() -> Router:
    router = Router(GatedBackend)
    await router.start()
    return router


def publisher_of(router: Router, depth: int) -> tuple[Publisher, Answers]:
    answers: Answers = []
    return Publisher(router, lambda id_, result: answers.append((id_, result)), depth), answers


def backend_of(router: Router) -> GatedBackend:
    assert isinstance(router.backend, GatedBackend)
    return router.backend


async def test_what_queues_behind_a_burst_goes_as_the_next_burst(router: Router) -> None:
    publisher, answers = publisher_of(router, depth=10)
    backend = backend_of(router)
    for i in range(5):
        await publisher.put(i, "t", str(i).encode())
    await asyncio.sleep(0)  # the publisher's task starts its first burst
    for i in range(5, 8):
        await publisher.put(i, "t", str(i).encode())
    backend.gate.set()
    async with asyncio.timeout(1):
        await publisher.drained()
    assert backend.bursts == [["0", "1", "2", "3", "4"], ["5", "6", "7"]]
    assert [id_ for id_, _ in answers] == list(range(8))
    assert [r.offset for _, r in answers if isinstance(r, Publication)] == list(range(1, 9))


async def test_put_waits_while_depth_publishes_are_unanswered(router: Router) -> None:
    publisher, answers = publisher_of(router, depth=2)
    backend = backend_of(router)
    await publisher.put(1, "t", b"1")
    await publisher.put(2, "t", b"2")
    third = asyncio.create_task(publisher.put(3, "t", b"3"))
    for _ in range(5):  # let every ready task run: only the gate can release the put
        await asyncio.sleep(0)
    assert not third.done() and answers == []
    backend.gate.set()
    async with asyncio.timeout(1):
        await third
        await publisher.drained()
    assert [id_ for id_, _ in answers] == [1, 2, 3]


async def test_a_failed_burst_answers_internal_and_the_next_one_works(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    publisher, answers = publisher_of(router, depth=10)
    backend = backend_of(router)
    backend.fail = True
    backend.gate.set()
    await publisher.put(1, "t", b"1")
    await publisher.put(None, "t", b"2")
    async with asyncio.timeout(1):
        await publisher.drained()
    assert [(id_, type(result)) for id_, result in answers] == [
        (1, InternalError),
        (None, InternalError),
    ]
    assert "publishing a burst of 2 failed" in caplog.text
    assert any(record.levelname == "ERROR" for record in caplog.records)
    await publisher.put(3, "t", b"3")
    async with asyncio.timeout(1):
        await publisher.drained()
    assert isinstance(answers[-1][1], Publication) and answers[-1][1].offset == 1
