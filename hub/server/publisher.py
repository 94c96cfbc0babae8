"""A session's publishes in flight: sent in bursts, answered in order.

Awaiting each publish before reading the next frame would cost a connection one backend round
trip per publication (a Redis node would then receive one publication per read). Instead the
session's reader hands each publish to :meth:`Publisher.put` and reads on; one task sends what
has accumulated meanwhile as one burst (one Redis pipeline) and answers every publish in the
order it arrived. At most ``depth`` publishes are queued or in flight: past that, ``put`` waits,
so the reader stops reading and TCP pushes back on the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hub.broker.backend import Publication
from hub.broker.router import Router
from hub.exceptions import InternalError, RequestError

__all__ = ["Publisher"]

logger = logging.getLogger("hub.server")

#: ``answer(request id, result)``: the session turns the result into its ok or error reply.
Answer = Callable[[int | None, Publication | RequestError], None]


class Publisher:
    """Create one per session; ``put`` publishes, ``drained`` waits until all are answered."""

    def __init__(self, router: Router, answer: Answer, depth: int) -> None:
        self._router = router
        self._answer = answer
        self._depth = depth
        self._queued: list[tuple[int | None, str, bytes]] = []
        self._in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()  # set when a burst was answered
        self._idle = asyncio.Event()  # set when nothing is queued or in flight
        self._idle.set()

    async def put(self, id_: int | None, topic: str, payload: bytes) -> None:
        """Queue a publish (``payload`` from :func:`~hub.broker.router.encode_payload`); waits
        only while ``depth`` publishes are already queued or in flight."""
        while len(self._queued) + self._in_flight >= self._depth:
            self._room.clear()
            await self._room.wait()
        self._queued.append((id_, topic, payload))
        if self._task is None:
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def drained(self) -> None:
        """Return once every publish put so far has been answered."""
        await self._idle.wait()

    def cancel(self) -> None:
        """Stop at once (the server is shutting down); unanswered publishes stay unanswered."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            while self._queued:
                burst, self._queued = self._queued, []
                self._in_flight = len(burst)
                try:
                    results = await self._router.publish_many([item[1:] for item in burst])
                except Exception:
                    logger.exception("publishing a burst of %d failed", len(burst))
                    results = [InternalError("internal error")] * len(burst)
                for (id_, _, _), result in zip(burst, results, strict=True):
                    self._answer(id_, result)
                self._in_flight = 0
                self._room.set()
        finally:
            self._task = None
            self._in_flight = 0
            self._idle.set()
            self._room.set()
