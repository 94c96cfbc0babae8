"""Presence shared through Redis: every node lists the same clients and sends the same events.

Theory of operation
-------------------
**Entries.** Each present client is one entry in its topic's hash, and one member of a sorted
set of every entry scored by when it expires (the keys are described in
:mod:`hub.broker.redis_scripts`). A node writes its joins and leaves through one writer task,
in the order they happened, as pipelines of Lua scripts that change the keys and PUBLISH the
event atomically. The events go out on the topic's channel, so they reach every node that has
a subscriber of the topic, through the backend's reader, in the order Redis ran them.

**Heartbeats and dead nodes.** Every ``ttl / 3`` seconds the writer extends the expiry of all
of its node's entries. A node that dies (SIGKILL, a lost machine) stops doing so, and its
entries expire ``ttl`` seconds after its last heartbeat at most. Every node sweeps the set
every ``tick`` seconds: the script removes the expired entries and sends their leaves, once,
whichever node ran it. So a dead node's clients leave within ``ttl + tick`` seconds.

**Grace.** A leave with a grace period only moves the entry's expiry to the end of the period
and notes the client as its user's pending leave on the topic; the sweep sends the leave, or
a join of the same user in the meantime removes the entry and names it in ``replaces``.

**Outages.** Joins and leaves wait in the writer while Redis is unreachable (only the latest
change per client and topic), and go out when it is back; the heartbeat writes again any entry
that expired in the meantime, with a join. ``members`` fails with Unavailable.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any, Literal

from hub.broker.presence import Member, OnPresence, Presence, PresenceEvent
from hub.broker.redis import RedisBackend
from hub.broker.redis_scripts import (
    PRESENCE_HEARTBEAT,
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    PRESENCE_SWEEP,
)
from hub.broker.tasks import stop
from hub.exceptions import RequestError, UsageError

__all__ = ["RedisPresence"]

logger = logging.getLogger("hub.broker.presence")

#: Entries per heartbeat script, and expired entries per sweep script.
_BATCH = 500

_Key = tuple[str, str]  # (topic, client)


def _entry(member: Member) -> str:
    return json.dumps(member.fields(), separators=(",", ":"))


class RedisPresence(Presence):
    """Presence in the Redis that ``backend`` uses; ``ttl`` seconds after a node's last
    heartbeat its entries expire, and every ``tick`` seconds expired ones are swept."""

    def __init__(
        self,
        backend: RedisBackend,
        on_event: OnPresence,
        patterns: Sequence[str],
        grace: float,
        *,
        ttl: float = 15.0,
        tick: float = 1.0,
    ) -> None:
        super().__init__(on_event, patterns, grace)
        if ttl <= 0 or tick <= 0:
            raise UsageError("the presence ttl and tick must be positive")
        self.backend = backend
        self.ttl = ttl
        self.tick = tick
        prefix = backend.key_prefix
        self._prefix = prefix
        self._expiry_key = f"{prefix}:presence"
        #: This node's present clients (not those in their grace period): the heartbeat's list.
        #: Each with its entry, encoded once (a heartbeat sends them all).
        self._local: dict[_Key, str] = {}
        #: Changes not written yet, oldest first: only the latest per client and topic.
        self._pending: dict[_Key, tuple[Literal["join", "leave"], Member]] = {}
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failing = False
        self._closing = False
        backend.on_presence = self._receive

    async def start(self) -> None:
        if self._writer is not None:
            raise UsageError("presence is started already")
        client = self.backend.redis
        self._join = client.register_script(PRESENCE_JOIN)
        self._leave = client.register_script(PRESENCE_LEAVE)
        self._sweep_script = client.register_script(PRESENCE_SWEEP)
        self._heartbeat_script = client.register_script(PRESENCE_HEARTBEAT)
        self._writer = asyncio.create_task(self._run(), name="presence writer")

    async def close(self) -> None:
        """Write the pending changes (within the backend's command timeout), then stop."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        # The writer's last round, not a cancellation in the middle of a write: a write cut
        # off before its reply would be written again, and its leaves sent twice.
        self._closing = True
        self._wake.set()
        await asyncio.wait({writer}, timeout=self.backend.command_timeout + self.tick)
        await stop(writer)

    # --- the node's changes -------------------------------------------------------------------

    def join(self, topic: str, member: Member) -> None:
        key = (topic, member.client)
        self._local[key] = _entry(member)
        self._change(key, "join", member)

    def leave(self, topic: str, member: Member) -> None:
        key = (topic, member.client)
        if self._local.pop(key, None) is None:
            return
        if self._pending.get(key, ("leave",))[0] == "join":
            # Never written, so nobody saw it join (or, after a failed write, its entry
            # expires and is swept with a leave).
            del self._pending[key]
            return
        self._change(key, "leave", member)

    def _change(self, key: _Key, kind: Literal["join", "leave"], member: Member) -> None:
        self._pending.pop(key, None)  # the latest change goes last: order is kept
        self._pending[key] = (kind, member)
        self._wake.set()

    async def members(self, topic: str) -> list[Member]:
        client = self.backend.redis
        entries = await self.backend.command(lambda: client.hvals(f"{self._prefix}:pm:{topic}"))
        members = [_member(entry) for entry in entries]
        return [member for member in members if member is not None]

    # --- the writer ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time() + self.ttl / 3
        next_sweep = loop.time()
        while True:
            if not self._closing:
                # A timer rather than asyncio.timeout, which can swallow close()'s
                # cancellation (hub.broker.tasks).
                alarm = loop.call_at(min(next_heartbeat, next_sweep), self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    alarm.cancel()
                self._wake.clear()
            try:
                await self._flush()
                if self._closing:
                    if self._pending:
                        continue  # left while that write was on its way
                    return
                if loop.time() >= next_heartbeat:
                    await self._heartbeat()
                    next_heartbeat = loop.time() + self.ttl / 3
                if loop.time() >= next_sweep:
                    await self._sweep()
                    next_sweep = loop.time() + self.tick
                if self._failing:
                    self._failing = False
                    logger.info("presence: writing to redis again")
            except RequestError as exc:
                if self._closing:
                    lost = len(self._pending)
                    logger.warning("presence: %d changes not written at close: %s", lost, exc)
                    return
                if not self._failing:
                    self._failing = True
                    logger.warning("presence: cannot write to redis (%s); retrying", exc)
                await asyncio.sleep(self.tick)
            except Exception:
                logger.exception("presence: the writer failed; retrying")
                await asyncio.sleep(self.tick)

    async def _flush(self) -> None:
        """Write the pending changes in one pipeline; on failure they stay pending (the
        scripts can run twice: a join or leave already written changes nothing)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        client = self.backend.redis
        channel_head = f"{self._prefix}:t:"
        try:
            async with client.pipeline(transaction=False) as pipeline:
                for (topic, client_id), (kind, member) in batch.items():
                    keys = [
                        f"{self._prefix}:pm:{topic}",
                        f"{self._prefix}:pl:{topic}",
                        self._expiry_key,
                    ]
                    user = member.user or ""
                    channel = channel_head + topic
                    entry, event_id = _entry(member), secrets.token_hex(8)
                    if kind == "join":
                        ttl_ms = int(self.ttl * 1000)
                        args: list[Any] = [topic, client_id, user, entry, ttl_ms, channel]
                        await self._join(keys=keys, args=[*args, event_id], client=pipeline)
                    else:
                        grace_ms = int(self.grace * 1000)
                        args = [topic, client_id, user, grace_ms, channel, entry, event_id]
                        await self._leave(keys=keys, args=args, client=pipeline)
                await self.backend.command(pipeline.execute)
        except BaseException:
            # Newer changes of the same client and topic win over the batch's.
            self._pending = {
                **{k: v for k, v in batch.items() if k not in self._pending},
                **self._pending,
            }
            raise

    async def _heartbeat(self) -> None:
        ttl_ms = int(self.ttl * 1000)
        entries = list(self._local.items())
        for start in range(0, len(entries), _BATCH):
            args: list[Any] = [self._prefix, ttl_ms, secrets.token_hex(8)]
            for (topic, client_id), entry in entries[start : start + _BATCH]:
                args += [topic, client_id, entry]
            call = functools.partial(self._heartbeat_script, keys=[self._expiry_key], args=args)
            await self.backend.command(call)

    async def _sweep(self) -> None:
        script = self._sweep_script
        while True:
            swept = await self.backend.command(
                lambda: script(
                    keys=[self._expiry_key], args=[self._prefix, _BATCH, secrets.token_hex(8)]
                )
            )
            if int(swept) < _BATCH:
                return

    # --- events from the backend's reader -----------------------------------------------------

    def _receive(self, topic: str, data: bytes) -> None:
        """``P <id> <join|leave> <replaced client or -> <entry>``, as the scripts publish
        them (the backend dropped the copies of an event already)."""
        try:
            _, _, kind, replaces, entry = data.split(b" ", 4)
            member = _member(entry)
            if member is None or kind not in (b"join", b"leave"):
                raise ValueError(kind)
        except ValueError:
            logger.error("presence: dropped a malformed event on %s", topic)
            return
        replaced = None if replaces == b"-" else replaces.decode()
        self._emit(PresenceEvent("join" if kind == b"join" else "leave", topic, member, replaced))


def _member(entry: bytes | str) -> Member | None:
    try:
        fields = json.loads(entry)
        client, user = fields["client"], fields.get("user")
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(client, str) or not (user is None or isinstance(user, str)):
        return None
    return Member(client, user, fields.get("info"))
