"""The Redis backend: every node that shares one Redis shares offsets and publications.

Theory of operation
-------------------
**Keys and channels.** Each concrete topic has one hash, ``{prefix}:s:{topic}``, with the fields
``epoch`` and ``offset``, and one channel, ``{prefix}:t:{topic}``. A publish is one round trip:
an EVALSHA of a Lua script that, atomically, sets the epoch if the hash has none (HSETNX of a
random candidate that the caller makes), increments the offset and PUBLISHes
``b"<offset> <epoch> " + payload`` on the channel. So the epoch outlives hub restarts and changes
when Redis loses the hash (FLUSHALL, a restart without persistence): offsets start again at 1
under a new epoch, which tells clients that what they remember no longer applies. ``position``
creates the epoch the same way, so that the first publish keeps the epoch a subscriber was told.
A burst of publishes (``publish_many``) is one pipeline of such EVALSHAs: one round trip, and
Redis runs them in order.

**Subscriptions.** A concrete topic is a SUBSCRIBE of its channel, a pattern a PSUBSCRIBE of the
Redis glob in which each wildcard token becomes ``*``: ``chat.*`` and ``chat.>`` both become
``{prefix}:t:chat.*``, which matches ``chat.a.b`` too, so the node narrows what arrives with a
:class:`~hub.broker.registry.Registry` of the subscribed patterns, as the memory backend does.

**Connections.** Commands go through a pool of connections with a socket timeout, and redis-py
never retries them (a publish retried after a lost reply would be published twice).
Publications arrive on one dedicated pub/sub connection, read by one reader task, which is the
only one to read it. Both speak RESP2. A silent pub/sub connection is checked with a PING every
``health_check_interval`` seconds, so that a half-open connection does not go unnoticed.

**Order, duplicates and gaps.** For every concrete topic that it delivered or that is
subscribed, the reader keeps the last delivered ``(epoch, offset)``, the baseline. A message
with the next offset is delivered. One at or below the baseline is a duplicate (a node that
subscribed ``chat.room`` and ``chat.*`` receives each publication twice, as message and as
pmessage) and is dropped. One past the next offset, or of another epoch, reveals a gap:
``on_gap`` is called with the subscribed patterns that match the topic (the router closes their
subscribers with 4010), then the baseline restarts at that message, which is delivered.
Baselines of topics that no subscribed pattern matches any more are forgotten.

**Outages.** When the pub/sub connection fails, the backend is ``"down"``: publish and position
fail at once with Unavailable, subscribe and unsubscribe only change the local registry. The
reader reconnects with exponential backoff and full jitter, subscribes everything again, then
backfills: for every topic with a baseline it reads the history after the baseline and
delivers what was missed, in order; for wildcard patterns it asks the topic index for the
topics published since the last publication it received (``_clock``, Redis's time) and
replays those it never saw from that time on. Only where history does not cover a gap (the
epoch changed, the history was trimmed or is off) is ``on_gap`` called, for the patterns that
match the topic. A subscription that Redis does not confirm within ``command_timeout`` (a hung
Redis) fails with Unavailable and takes the pub/sub connection down the same way. A failure of
the reader that is not a connection error is logged with its traceback, and the reader starts
over as after an outage (reconnect, resubscribe, report gaps): it never dies silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from hub.broker.backend import Backend, History, OnGap, OnPublication, Publication
from hub.broker.recovery import replay_after, replay_since
from hub.broker.redis_scripts import HISTORY, POSITIONS, PUBLISH
from hub.broker.registry import Registry
from hub.broker.retention import NO_HISTORY, Retention
from hub.broker.tasks import stop
from hub.broker.topics import SINGLE, TAIL, is_pattern, matches
from hub.exceptions import InternalError, RequestError, Unavailable, UsageError

__all__ = ["RedisBackend", "redact_url"]

logger = logging.getLogger("hub.broker.redis")

#: How many topics one positions call or one (P)SUBSCRIBE names at most.
_BATCH = 500

#: What a lost or hung connection raises (asyncio's TimeoutError is an OSError).
_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

#: A Redis subscription: (is it a PSUBSCRIBE, the channel or glob as sent).
_Target = tuple[bool, bytes]
_T = TypeVar("_T")


class _Connection(Protocol):
    """What the backend uses of a redis-py connection (whose ``connect`` has no annotations)."""

    @property
    def is_connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def disconnect(self, nowait: bool = False) -> None: ...

    async def send_command(self, *args: Any, **kwargs: Any) -> None: ...

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any: ...


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: the only form that may be logged."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None and "password" not in parts.query:
            return url  # nothing to hide (and urlunsplit would turn memory:// into memory:)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
        query = parts.query
        if query:
            fields = urllib.parse.parse_qsl(query, keep_blank_values=True)
            query = urllib.parse.urlencode(
                [(k, "***" if k == "password" else v) for k, v in fields], safe="*/"
            )
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<redis URL that cannot be parsed>"


def _password_of(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        password = urllib.parse.unquote(parts.password or "")
        for key, value in urllib.parse.parse_qsl(parts.query):
            if key == "password":
                password = value
    except ValueError:
        return None
    return password or None


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def _confirmation(response: Any) -> _Target | None:
    """The subscription that a pub/sub reply confirms, or None if it confirms none."""
    kind = response[0]
    if kind == b"subscribe" or kind == b"psubscribe":
        return kind == b"psubscribe", response[1]
    return None


def _backoff(base: float, cap: float, attempt: int) -> float:
    """Exponential backoff with full jitter: a uniform delay up to ``min(cap, base * 2**n)``."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 32)))


class RedisBackend(Backend):
    """Offsets and publications in Redis, so that many nodes serve the same topics.

    ``url`` is what :meth:`redis.asyncio.Redis.from_url` takes (``redis://``, ``rediss://``,
    ``unix://``, with an optional password); it is only ever logged redacted. Publish and
    position give up after ``command_timeout`` seconds (the first connection after
    ``connect_timeout``) with :class:`~hub.exceptions.Unavailable`. After an outage the
    reader reconnects with a backoff from ``backoff_base`` to ``backoff_cap`` seconds.
    ``on_gap`` receives the patterns whose subscribers may have missed publications.
    """

    def __init__(
        self,
        on_publication: OnPublication,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        on_gap: OnGap | None = None,
        key_prefix: str = "hub",
        command_timeout: float = 2.0,
        connect_timeout: float | None = None,
        health_check_interval: float = 5.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
        max_connections: int = 32,
        retention: Retention = NO_HISTORY,
        epoch_ttl: float = 7 * 86400,
    ) -> None:
        super().__init__(on_publication, on_gap=on_gap, retention=retention)
        if command_timeout <= 0 or (connect_timeout is not None and connect_timeout <= 0):
            raise UsageError("command_timeout and connect_timeout must be positive")
        if not 0 < backoff_base <= backoff_cap or health_check_interval <= 0:
            raise UsageError("need 0 < backoff_base <= backoff_cap and health_check_interval > 0")
        if max_connections < 1 or not key_prefix:
            raise UsageError("max_connections must be at least 1 and key_prefix not empty")
        self.url = url
        self.key_prefix = key_prefix
        self.command_timeout = command_timeout
        self.connect_timeout = command_timeout if connect_timeout is None else connect_timeout
        self.health_check_interval = health_check_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_connections = max_connections
        self.redacted_url = redact_url(url)
        self._password = _password_of(url)
        self._key_head = f"{key_prefix}:s:"
        self._stream_head = f"{key_prefix}:h:"
        self._index_key = f"{key_prefix}:index"
        # The epoch must outlive the history, and the index must reach as far back as it.
        self._epoch_ttl_ms = int(max(epoch_ttl, retention.longest_ttl) * 1000)
        self._index_reach_ms = int(retention.longest_ttl * 1000)
        self._channel_head = f"{key_prefix}:t:".encode()
        self._glob_head = f"{_glob_escape(key_prefix)}:t:".encode()

        self._state = "starting"
        self._patterns: Registry[None] = Registry()
        #: Redis subscriptions and the patterns that need them (chat.* and chat.> share one).
        self._targets: dict[_Target, set[str]] = {}
        #: Per concrete topic, the last delivered (epoch, offset).
        self._baselines: dict[str, tuple[str, int]] = {}
        #: Sent on the current pub/sub connection and not confirmed yet; True once confirmed,
        #: False if the connection was lost first.
        self._confirmations: dict[_Target, asyncio.Future[bool]] = {}
        self._client: redis.asyncio.Redis | None = None
        self._pool: redis.asyncio.ConnectionPool | None = None  # makes pub/sub connections
        #: The pub/sub connection; while the state is "up", it is subscribed to every target
        #: and read by the reader.
        self._conn: _Connection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._down_since = 0.0
        #: The time (Redis's clock, ms) of the last publication received, or of the start:
        #: after a reconnect, topics published since then may have been missed.
        self._clock = 0
        #: Receives the presence events (``P ...``) that arrive on a subscribed topic's
        #: channel, with the topic (:mod:`hub.broker.redis_presence`).
        self.on_presence: Callable[[str, bytes], None] | None = None
        self._last_presence = b""

    # --- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def redis(self) -> redis.asyncio.Redis:
        """The client for commands (run them through :meth:`command`), once started."""
        if self._client is None:
            raise UsageError("the redis backend is not started (or already closed)")
        return self._client

    async def start(self) -> None:
        """Connect, load the scripts, subscribe; Unavailable (naming the URL without its
        password) if Redis cannot be reached within ``connect_timeout + command_timeout``."""
        if self._state != "starting":
            raise UsageError(f"the redis backend is {self._state}; start() it only once")
        options: dict[str, Any] = {
            "decode_responses": False,
            "socket_timeout": self.command_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        try:
            commands = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.command_timeout,
                **options,
            )
            self._pool = redis.asyncio.ConnectionPool.from_url(self.url, **options)
        except ValueError as exc:
            raise UsageError(f"invalid redis URL {self.redacted_url}: {self._scrub(exc)}") from None
        # RESP2 whatever the URL says: publications arrive as plain arrays (redis-py turns
        # RESP3 pushes into a string for a debug log, per message), and it works with any Redis.
        for pool in (commands, self._pool):
            pool.connection_kwargs["protocol"] = 2
        self._client = redis.asyncio.Redis.from_pool(commands)
        self._publish_script = self._client.register_script(PUBLISH)
        self._positions_script = self._client.register_script(POSITIONS)
        self._history_script = self._client.register_script(HISTORY)
        try:
            async with asyncio.timeout(self.connect_timeout + self.command_timeout):
                await self._load_scripts()
                self._clock = await self._time()
                self._conn, _, queued = await self._open()
        except (redis.exceptions.RedisError, OSError) as exc:
            await self._release()
            reason = self._describe(exc, self.connect_timeout + self.command_timeout)
            raise Unavailable(f"redis is unavailable at {self.redacted_url}: {reason}") from exc
        self._state = "up"
        self._reader = asyncio.create_task(self._run(self._conn, queued), name="redis reader")
        self._reader.add_done_callback(self._reader_done)

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        reader, self._reader = self._reader, None
        if reader is not None:
            await stop(reader)
        await self._release()

    async def _release(self) -> None:
        self._lose_confirmations()
        await self._drop_conn()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # --- commands -----------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes) -> Publication:
        keys, args = self._publish_arguments(topic, payload)
        reply = await self.command(lambda: self._publish_script(keys=keys, args=args))
        return self._publication(topic, payload, reply)

    def _publish_arguments(self, topic: str, payload: bytes) -> tuple[list[str], list[Any]]:
        keep = self.retention(topic)
        keys = [self._key_head + topic, self._stream_head + topic, self._index_key]
        args = [
            self._channel_head + topic.encode(),
            secrets.token_hex(8),
            payload,
            keep.size,
            int(keep.ttl * 1000),
            self._epoch_ttl_ms,
            self._index_reach_ms,
            topic,
        ]
        return keys, args

    @staticmethod
    def _publication(topic: str, payload: bytes, reply: Any) -> Publication:
        epoch, offset, time_ms = reply
        return Publication(topic, payload, int(offset), epoch.decode(), int(time_ms))

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]]
    ) -> list[Publication | RequestError]:
        """All in one pipeline of EVALSHAs: one round trip, and Redis runs them in order."""
        if len(items) == 1:
            return await super().publish_many(items)
        try:
            replies = await self.command(lambda: self._pipelined_publish(items))
        except RequestError as exc:
            return [exc] * len(items)  # the connection failed: any of them may be published
        results: list[Publication | RequestError] = []
        for (topic, payload), reply in zip(items, replies, strict=True):
            if isinstance(reply, Exception):
                results.append(self._command_error(reply))
            else:
                results.append(self._publication(topic, payload, reply))
        return results

    async def _pipelined_publish(self, items: Sequence[tuple[str, bytes]]) -> list[Any]:
        """The replies to one EVALSHA per item, errors in place. The EVALSHAs that met an
        empty script cache (SCRIPT FLUSH, a restarted Redis) did nothing: once the script is
        loaded, they run again, in order, in a second pipeline."""
        assert self._client is not None
        replies = await self._evalsha_pipeline(items)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self._client.script_load(self._publish_script.script)
            retried = await self._evalsha_pipeline([items[i] for i in missing])
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        return replies

    async def _evalsha_pipeline(self, items: Sequence[tuple[str, bytes]]) -> list[Any]:
        assert self._client is not None
        pipeline = self._client.pipeline(transaction=False)
        for topic, payload in items:
            keys, args = self._publish_arguments(topic, payload)
            pipeline.evalsha(self._publish_script.sha, len(keys), *keys, *args)
        return await pipeline.execute(raise_on_error=False)

    async def position(self, topic: str) -> tuple[str, int]:
        [position] = await self.command(lambda: self._positions([topic]))
        return position

    async def history(
        self, topic: str, *, after: int = 0, limit: int, newest_first: bool = False
    ) -> History:
        return await self.command(lambda: self._read_history(topic, after, limit, newest_first))

    async def _read_history(
        self, topic: str, after: int, limit: int, newest_first: bool = False
    ) -> History:
        keys = [self._key_head + topic, self._stream_head + topic]
        ttl_ms = int(self.retention(topic).ttl * 1000)
        order = "1" if newest_first else "0"
        args: list[str | int] = [
            secrets.token_hex(8),
            self._epoch_ttl_ms,
            ttl_ms,
            after + 1,
            limit,
            order,
        ]
        epoch, offset, oldest, entries = await self._history_script(keys=keys, args=args)
        publications = [self._entry(topic, epoch, entry) for entry in entries]
        if newest_first:
            publications.reverse()
        top = int(offset)
        first = int(oldest.split(b"-")[0]) if oldest else top + 1
        return History(epoch.decode(), top, publications, first)

    @staticmethod
    def _entry(topic: str, epoch: bytes, entry: Any) -> Publication:
        entry_id, fields = entry
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        offset = int(entry_id.split(b"-")[0])
        return Publication(topic, values[b"p"], offset, epoch.decode(), int(values[b"t"]))

    def delivered(self, topic: str) -> tuple[str, int] | None:
        """The topic's baseline (what the reader delivered, or drops as covered already);
        ``("", 0)`` when it has none yet: anything may still arrive."""
        return self._baselines.get(topic, ("", 0))

    async def topics_since(self, time: int) -> list[str]:
        return await self.command(lambda: self._topics_since(time))

    async def _topics_since(self, time: int) -> list[str]:
        assert self._client is not None
        names = await self._client.zrangebyscore(self._index_key, time, "+inf")
        return [cast(bytes, name).decode() for name in names]

    async def time(self) -> int:
        return await self.command(self._time)

    async def _time(self) -> int:
        assert self._client is not None
        seconds, microseconds = await self._client.time()
        return int(seconds) * 1000 + int(microseconds) // 1000

    async def command(self, command: Callable[[], Awaitable[_T]]) -> _T:
        """Run a command while up, within ``command_timeout``; Unavailable or InternalError
        (never a redis-py exception) when it fails."""
        self._check_state()
        try:
            async with asyncio.timeout(self.command_timeout):
                return await command()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._command_error(exc) from exc

    def _check_state(self) -> None:
        if self._state == "up":
            return
        if self._state == "down":
            down = time.monotonic() - self._down_since
            raise Unavailable(f"redis is unavailable: the connection was lost {down:.1f} s ago")
        if self._state == "closed":
            raise UsageError("the redis backend is closed")
        raise UsageError("the redis backend is not started: start() it first")

    async def _positions(self, topics: Sequence[str]) -> list[tuple[str, int]]:
        """Epoch and last offset of each topic, creating the epoch of a topic without one."""
        positions: list[tuple[str, int]] = []
        for start in range(0, len(topics), _BATCH):
            batch = topics[start : start + _BATCH]
            keys = [self._key_head + topic for topic in batch]
            candidates = [secrets.token_hex(8) for _ in batch]
            reply = await self._positions_script(keys=keys, args=[self._epoch_ttl_ms, *candidates])
            positions.extend(
                (reply[i].decode(), int(reply[i + 1])) for i in range(0, len(reply), 2)
            )
        return positions

    async def _load_scripts(self) -> None:
        """Load the scripts, so that even the first publish is one round trip."""
        assert self._client is not None
        for script in (self._publish_script, self._positions_script, self._history_script):
            await self._client.script_load(script.script)

    def _command_error(self, exc: Exception) -> Unavailable | InternalError:
        if isinstance(exc, _CONNECTION_ERRORS):
            return Unavailable(f"redis is unavailable: {self._describe(exc)}")
        if isinstance(exc, redis.exceptions.ReadOnlyError):
            return Unavailable(f"redis is unavailable: it is a read-only replica ({exc})")
        return InternalError(f"redis failed: {self._scrub(exc)}")

    def _describe(self, exc: BaseException, within: float | None = None) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"no answer within {within or self.command_timeout:g} s"
        return self._scrub(exc)

    def _scrub(self, exc: BaseException) -> str:
        """The exception's message, with the password masked should it ever appear."""
        text = str(exc) or type(exc).__name__
        return text.replace(self._password, "***") if self._password else text

    # --- subscriptions ------------------------------------------------------------------------

    def _target(self, pattern: str) -> _Target:
        if is_pattern(pattern):
            tokens = pattern.split(".")
            glob = ".".join("*" if t in (SINGLE, TAIL) else t for t in tokens)
            return True, self._glob_head + glob.encode()
        return False, self._channel_head + pattern.encode()

    async def subscribe(self, pattern: str) -> None:
        if self._state == "closed":
            raise UsageError("the redis backend is closed")
        if pattern in self._patterns:
            return
        concrete = not is_pattern(pattern)
        # A topic that another pattern already delivers keeps its baseline: resetting it would
        # drop publications in flight that the other pattern's subscribers expect.
        covered = concrete and next(self._patterns.match(pattern), None) is not None
        self._patterns.add(pattern, None)
        target = self._target(pattern)
        users = self._targets.setdefault(target, set())
        users.add(pattern)
        conn = self._conn
        if self._state != "up" or conn is None:
            return  # recorded: (re)connecting subscribes every target
        try:
            if await self._confirmed(target, conn) and concrete and not covered:
                await self._set_baseline(pattern)
        except BaseException:
            self._remove(pattern)  # as if never subscribed (the router rolls back too)
            raise

    async def _confirmed(self, target: _Target, conn: _Connection) -> bool:
        """Subscribe ``conn`` to ``target`` unless it is already; False if the connection was
        lost first (the reader subscribes it again), Unavailable if Redis does not answer."""
        waiter = self._confirmations.get(target)
        if waiter is None:
            if len(self._targets[target]) > 1:
                return True  # chat.> shares the glob that chat.* subscribed
            waiter = asyncio.get_running_loop().create_future()
            self._confirmations[target] = waiter
            if not await self._send(conn, "PSUBSCRIBE" if target[0] else "SUBSCRIBE", target[1]):
                return False
        try:
            async with asyncio.timeout(self.command_timeout):
                return await asyncio.shield(waiter)
        except TimeoutError:
            # Redis hangs: give the connection up too, so that no late confirmation can be
            # taken for a later one; the reader reconnects.
            reason = f"no confirmation of SUBSCRIBE within {self.command_timeout:g} s"
            if self._conn is conn:
                self._went_down(redis.exceptions.TimeoutError(reason))
                await conn.disconnect(nowait=True)
            raise Unavailable(f"redis is unavailable: {reason}") from None

    async def _set_baseline(self, topic: str) -> None:
        """Start a newly subscribed topic's baseline at its position, as ``position`` says."""
        try:
            epoch, offset = await self.position(topic)
        except Exception as exc:
            # The first message, or the resynchronisation after a reconnect, sets it.
            logger.debug("redis backend: no baseline for %s yet: %s", topic, self._describe(exc))
            return
        baseline = self._baselines.get(topic)
        if topic in self._patterns and (
            baseline is None or (baseline[0] == epoch and baseline[1] < offset)
        ):
            self._baselines[topic] = (epoch, offset)

    async def unsubscribe(self, pattern: str) -> None:
        target = self._remove(pattern)
        conn = self._conn
        if target is not None and self._state == "up" and conn is not None:
            # No need to wait for the confirmation: the registry already filters the topic out.
            await self._send(conn, "PUNSUBSCRIBE" if target[0] else "UNSUBSCRIBE", target[1])

    def _remove(self, pattern: str) -> _Target | None:
        """Forget a pattern locally; return its Redis subscription if nothing else needs it."""
        if pattern not in self._patterns:
            return None
        self._patterns.remove(pattern, None)
        self._forget_baselines(pattern)
        target = self._target(pattern)
        users = self._targets.get(target, set())
        users.discard(pattern)
        if users:
            return None
        self._targets.pop(target, None)
        self._confirmations.pop(target, None)
        return target

    def _forget_baselines(self, pattern: str) -> None:
        """Drop the baselines that no subscribed pattern needs any more (bounded memory)."""
        if is_pattern(pattern):
            candidates = [topic for topic in self._baselines if matches(pattern, topic)]
        else:
            candidates = [pattern]
        for topic in candidates:
            if next(self._patterns.match(topic), None) is None:
                self._baselines.pop(topic, None)

    async def _send(self, conn: _Connection, *args: bytes | str) -> bool:
        """Send a command on the pub/sub connection; False if it is lost (the reader sees it)."""
        if not conn.is_connected:
            return False
        try:
            async with self._send_lock, asyncio.timeout(self.command_timeout):
                await conn.send_command(*args, check_health=False)
        except _CONNECTION_ERRORS as exc:
            # redis-py dropped the connection: the reader's next read fails and reconnects.
            logger.debug("redis backend: sending %s failed: %s", args[0], self._describe(exc))
            return False
        return True

    def _lose_confirmations(self) -> None:
        for waiter in self._confirmations.values():
            if not waiter.done():
                waiter.set_result(False)
        self._confirmations.clear()

    # --- the reader ---------------------------------------------------------------------------

    async def _run(self, conn: _Connection, queued: list[Any]) -> None:
        """Read the pub/sub connection until close(); after a failure, reconnect and resync."""
        while True:
            try:
                for response in queued:
                    self._dispatch(response)
                await self._read(conn)
            except _CONNECTION_ERRORS as exc:
                self._went_down(exc)
            except Exception as exc:
                logger.exception("redis backend: the pub/sub reader failed; restarting it")
                self._went_down(exc)  # e.g. an ACL refusal: not serving is not "up"
            self._lose_confirmations()
            await conn.disconnect(nowait=True)
            conn, queued = await self._reconnect()

    def _reader_done(self, reader: asyncio.Task[None]) -> None:
        if not reader.cancelled() and reader.exception() is not None:
            self._state = "down"  # nothing reads publications any more: say so loudly
            logger.critical("redis backend: the pub/sub reader died", exc_info=reader.exception())

    async def _read(self, conn: _Connection) -> None:
        pinged = False
        while True:
            timeout = self.command_timeout if pinged else self.health_check_interval
            response = await conn.read_response(timeout=timeout)
            if response is None:  # nothing within the timeout
                if pinged:
                    raise redis.exceptions.TimeoutError(
                        f"no answer to PING within {self.command_timeout:g} s"
                    )
                pinged = True
                await self._send(conn, "PING")
                continue
            pinged = False
            self._dispatch(response)

    def _dispatch(self, response: Any) -> None:
        kind = response[0]
        if kind == b"message":
            self._receive(response[1], response[2])
        elif kind == b"pmessage":
            self._receive(response[2], response[3])
        elif (target := _confirmation(response)) is not None:
            waiter = self._confirmations.pop(target, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(True)
        # Unsubscribe confirmations and PING answers need nothing.

    def _receive(self, channel: bytes, data: bytes) -> None:
        try:
            topic = channel[len(self._channel_head) :].decode()
            if next(self._patterns.match(topic), None) is None:
                return  # not subscribed (any more), or a glob wider than the pattern
            if data[:2] == b"P ":
                self._receive_presence(topic, data)
                return
            offset_text, epoch_bytes, time_text, payload = data.split(b" ", 3)
            offset = int(offset_text)
            epoch = epoch_bytes.decode()
            time_ms = int(time_text)
        except ValueError:
            logger.error("redis backend: dropped a malformed message on %r", channel)
            return
        baseline = self._baselines.get(topic)
        if baseline is not None:
            if baseline[0] == epoch:
                if offset <= baseline[1]:
                    return  # the same publication through another subscription
                if offset != baseline[1] + 1:
                    self._gap([topic], f"offsets {baseline[1] + 1} to {offset - 1} of {topic}")
            else:
                self._gap([topic], f"{topic} changed epoch from {baseline[0]} to {epoch}")
        self._baselines[topic] = (epoch, offset)
        self._clock = time_ms
        self._deliver(Publication(topic, payload, offset, epoch, time_ms))

    def _receive_presence(self, topic: str, data: bytes) -> None:
        """A presence event (``P <id> ...``) arrives once per Redis subscription that matches
        the topic, and the copies of one PUBLISH arrive one after the other: a copy has the
        id of the event just before it."""
        event_id = data.split(b" ", 2)[1]
        if event_id == self._last_presence:
            return
        self._last_presence = event_id
        if self.on_presence is not None:
            try:
                self.on_presence(topic, data)
            except Exception:
                logger.exception("redis backend: on_presence failed for %s", topic)

    def _deliver(self, publication: Publication) -> None:
        try:
            self.on_publication(publication)
        except Exception:
            logger.exception(
                "redis backend: on_publication failed for %s #%d",
                publication.topic,
                publication.offset,
            )

    def _gap(self, topics: Sequence[str], reason: str, extra: Sequence[str] = ()) -> None:
        patterns = dict.fromkeys(p for topic in topics for p, _ in self._patterns.match(topic))
        patterns.update(dict.fromkeys(extra))
        if not patterns:
            return
        logger.warning(
            "redis backend: publications missed (%s); subscribers of %s must recover",
            reason,
            ", ".join(patterns),
        )
        try:
            self.on_gap(list(patterns))
        except Exception:
            logger.exception("redis backend: on_gap failed")

    def _went_down(self, exc: BaseException) -> None:
        if self._state != "up":
            return
        self._state = "down"
        self._down_since = time.monotonic()
        logger.warning(
            "redis at %s is unavailable (%s): publish fails until it is back; reconnecting",
            self.redacted_url,
            self._describe(exc),
        )

    async def _reconnect(self) -> tuple[_Connection, list[Any]]:
        """Connect again with backoff, then resubscribe and report what was missed."""
        attempt = 0
        while True:
            await asyncio.sleep(_backoff(self.backoff_base, self.backoff_cap, attempt))
            attempt += 1
            try:
                async with asyncio.timeout(self.connect_timeout + 2 * self.command_timeout):
                    self._conn, confirmed, queued = await self._open()
                    missed = await self._resync()
                    # Subscribe what was added meanwhile, then be up without yielding.
                    queued += await self._subscribe_all(self._conn, confirmed)
            except Exception as exc:
                # The backend is down already (_run logged why, once): attempts log at DEBUG,
                # with the traceback of what is not a plain connection failure.
                logger.debug(
                    "redis backend: reconnecting failed: %s",
                    self._describe(exc),
                    exc_info=not isinstance(exc, _CONNECTION_ERRORS),
                )
                await self._drop_conn()
                continue
            logger.info(
                "redis at %s is available again after %.1f s",
                self.redacted_url,
                time.monotonic() - self._down_since,
            )
            self._state = "up"
            topics, patterns = missed
            reason = "the pub/sub connection was lost and history did not cover it"
            self._gap(topics, reason, patterns)
            return self._conn, queued

    async def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)

    async def _resync(self) -> tuple[list[str], list[str]]:
        """After a reconnect, deliver from history what the node missed; return the topics
        whose gap history did not cover, and the wildcard patterns that may have missed
        topics nobody can name any more.

        A topic with a baseline is read after its baseline. For wildcard patterns, the topic
        index names the topics published since the last publication the node received; those
        without a baseline are new to the node and replayed from that time on. The index
        forgets topics idle for longer than the longest ttl: an outage longer than that
        leaves every wildcard pattern with a gap.
        """
        await self._load_scripts()  # a restarted Redis lost them
        uncovered: list[str] = []
        for topic in [t for t in self._baselines if next(self._patterns.match(t), None) is None]:
            del self._baselines[topic]
        for topic, (epoch, offset) in list(self._baselines.items()):
            history = await self._read_history(topic, offset, self.retention(topic).size + 1)
            missed = replay_after(history, epoch, offset, self.retention(topic).size)
            self._backfill(topic, history, missed, uncovered)
        subscribed = [p for p in self._patterns.patterns() if not is_pattern(p)]
        fresh = [t for t in subscribed if t not in self._baselines]
        for topic, position in zip(fresh, await self._positions(fresh), strict=True):
            self._baselines[topic] = position
        wildcards = [p for p in self._patterns.patterns() if is_pattern(p)]
        if wildcards and self._clock < await self._time() - self._index_reach_ms:
            return uncovered, wildcards
        if wildcards:
            for topic in await self._topics_since(self._clock):
                if topic in self._baselines or next(self._patterns.match(topic), None) is None:
                    continue
                size = self.retention(topic).size
                history = await self._read_history(topic, 0, size + 1, newest_first=True)
                self._backfill(topic, history, replay_since(history, self._clock, size), uncovered)
        return uncovered, []

    def _backfill(
        self, topic: str, history: History, missed: list[Publication] | None, uncovered: list[str]
    ) -> None:
        """Deliver ``missed`` (None: history did not cover the gap) and move the baseline."""
        self._baselines[topic] = (history.epoch, history.offset)
        if missed is None:
            uncovered.append(topic)
            return
        if missed:
            logger.info("redis backend: backfilled %d publications of %s", len(missed), topic)
        for publication in missed:
            self._deliver(publication)

    async def _open(self) -> tuple[_Connection, set[_Target], list[Any]]:
        """A new pub/sub connection subscribed to every target, the targets it is subscribed
        to, and the messages that arrived while it waited for the confirmations."""
        assert self._pool is not None
        pool = self._pool
        conn = cast(_Connection, pool.connection_class(**pool.connection_kwargs))
        confirmed: set[_Target] = set()
        try:
            await conn.connect()
            queued = await self._subscribe_all(conn, confirmed)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn, confirmed, queued

    async def _subscribe_all(self, conn: _Connection, confirmed: set[_Target]) -> list[Any]:
        """Subscribe ``conn`` to every target not in ``confirmed`` (updated), and unsubscribe it
        from those no longer needed; return the messages read meanwhile."""
        queued: list[Any] = []
        while missing := [target for target in self._targets if target not in confirmed]:
            for glob, command in ((False, "SUBSCRIBE"), (True, "PSUBSCRIBE")):
                names = [name for is_glob, name in missing if is_glob == glob]
                for start in range(0, len(names), _BATCH):
                    await conn.send_command(command, *names[start : start + _BATCH])
            expected = set(missing)
            while expected:
                response = await conn.read_response(timeout=self.command_timeout)
                if response is None:
                    raise redis.exceptions.TimeoutError(
                        f"no confirmation of SUBSCRIBE within {self.command_timeout:g} s"
                    )
                target = _confirmation(response)
                if target is not None:
                    expected.discard(target)
                    confirmed.add(target)
                else:
                    queued.append(response)
        for glob, command in ((False, "UNSUBSCRIBE"), (True, "PUNSUBSCRIBE")):
            stale = [n for is_glob, n in confirmed - self._targets.keys() if is_glob == glob]
            if stale:
                await conn.send_command(command, *stale)
        confirmed.intersection_update(self._targets)
        return queued
