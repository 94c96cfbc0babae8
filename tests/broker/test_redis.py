"""What is specific to the Redis backend, against real redis-server processes.

The shared contract is test_backend_contract.py. Tests that stop, restart, pause or flush Redis
use a private server (``redis_server``); the others share the session's and keep to a key prefix
of their own (``redis_prefix``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from hub.broker.backend import Publication
from hub.broker.redis import RedisBackend, redact_url
from hub.broker.retention import Keep, Retention
from hub.exceptions import InternalError, Unavailable, UsageError
from tests.broker.test_backend_contract import Recorder
from tests.redis_server import RedisServer, StartRedisServer

PASSWORD = "s3cret-Pa55"


class Gaps:
    """An ``on_gap`` that records the patterns it is given."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, patterns: Sequence[str]) -> None:
        self.calls.append(list(patterns))

    def patterns(self) -> set[str]:
        return {p for call in self.calls for p in call}


Make = Callable[..., tuple[RedisBackend, Recorder]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """``make(url, **options)``: a RedisBackend (started by the test) and its Recorder; every
    backend is closed afterwards."""
    backends: list[RedisBackend] = []

    def make(url: str, **options: Any) -> tuple[RedisBackend, Recorder]:
        recorder = Recorder()
        backends.append(RedisBackend(recorder, url, **options))
        return backends[-1], recorder

    yield make
    for backend in backends:
        await backend.close()


async def eventually(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Poll a condition that has no event to wait on (the backend's state), with a bound."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (the backend's state changes fire no event)
            await asyncio.sleep(0.01)


async def test_one_round_trip_per_publish(redis_server: RedisServer, make: Make) -> None:
    backend, recorder = make(redis_server.url)
    await backend.start()
    await backend.subscribe("a")
    client = redis_server.client()
    client.config_resetstat()
    count = 50
    for i in range(count):
        await backend.publish("a", str(i).encode())
    stats = client.info("commandstats")
    calls = {
        name.removeprefix("cmdstat_"): values["calls"]
        for name, values in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))  # the test's own
    }
    # The client sent EVALSHA alone (one round trip per publish); the other commands are the
    # script's, once per publish each (no history here: no XADD).
    script = ["time", "hsetnx", "hincrby", "hget", "pexpire", "zadd", "zremrangebyscore"]
    assert calls == dict.fromkeys(["evalsha", *script, "publish"], count)
    await recorder.wait_for(count)


async def test_two_nodes_share_offsets_and_order(
    redis_url: str, redis_prefix: str, make: Make
) -> None:
    one, one_received = make(redis_url, key_prefix=redis_prefix)
    other, other_received = make(redis_url, key_prefix=redis_prefix)
    for backend in (one, other):
        await backend.start()
        await backend.subscribe("room.>")
    published = await asyncio.gather(
        *((one if i % 2 else other).publish(f"room.{i % 3}", str(i).encode()) for i in range(300))
    )
    await one_received.wait_for(300)
    await other_received.wait_for(300)
    # Both nodes see every publication once, in the same order, as publish() returned it.
    assert one_received.publications == other_received.publications
    assert sorted(published, key=repr) == sorted(one_received.publications, key=repr)
    for topic in ("room.0", "room.1", "room.2"):
        offsets = [p.offset for p in one_received.publications if p.topic == topic]
        assert offsets == list(range(1, 101))


async def test_the_epoch_survives_the_hub_and_changes_with_the_data(
    redis_server: RedisServer, make: Make
) -> None:
    first, _ = make(redis_server.url)
    await first.start()
    before = await first.publish("a", b"1")
    await first.close()

    gaps = Gaps()
    second, received = make(redis_server.url, on_gap=gaps)
    await second.start()
    await second.subscribe("a")
    after = await second.publish("a", b"2")
    assert (after.epoch, after.offset) == (before.epoch, 2)
    await received.wait_for(1)

    redis_server.client().flushall()
    flushed = await second.publish("a", b"3")
    assert flushed.offset == 1 and flushed.epoch != before.epoch
    await received.wait_for(2)
    # The node saw the epoch change under its subscribers: they must recover.
    assert gaps.calls == [["a"]]
    assert [(p.epoch, p.offset) for p in received.publications] == [
        (before.epoch, 2),
        (flushed.epoch, 1),
    ]


async def test_a_topic_and_a_pattern_deliver_once(
    redis_url: str, redis_prefix: str, make: Make
) -> None:
    backend, received = make(redis_url, key_prefix=redis_prefix)
    await backend.start()
    await backend.subscribe("chat.room")
    await backend.subscribe("chat.*")
    client = redis.Redis.from_url(redis_url)
    channel = f"{redis_prefix}:t:chat.room"
    # Redis sends each publication twice: to the channel's and to the glob's subscription.
    assert client.pubsub_numsub(channel) == [(channel.encode(), 1)]
    client.close()
    for i in range(20):
        await backend.publish("chat.room", str(i).encode())
    await backend.publish("chat.end", b"")  # the sentinel: any duplicate came before it
    await received.wait_for(21)
    assert [p.offset for p in received.publications] == [*range(1, 21), 1]


async def test_wildcards_narrow_the_redis_glob(redis_server: RedisServer, make: Make) -> None:
    backend, received = make(redis_server.url)
    await backend.start()
    client = redis_server.client()
    await backend.subscribe("chat.*")
    for topic in ("chat.a.b", "chat.a", "chat.x.y.z", "chatter", "chat.end"):
        await backend.publish(topic, b"")
    await received.wait_for(2)
    assert received.topics() == ["chat.a", "chat.end"]

    await backend.subscribe("chat.>")  # shares the glob {prefix}:t:chat.* with chat.*
    assert client.pubsub_numpat() == 1
    await backend.publish("chat.a.b", b"")
    await received.wait_for(3)
    await backend.unsubscribe("chat.*")
    await backend.publish("chat.a", b"")  # still delivered: chat.> matches it
    await received.wait_for(4)
    assert received.topics()[2:] == ["chat.a.b", "chat.a"]
    assert client.pubsub_numpat() == 1
    await backend.unsubscribe("chat.>")
    await backend.subscribe("news")  # a round trip on the pub/sub connection after PUNSUBSCRIBE
    assert client.pubsub_numpat() == 0


async def test_a_stopped_redis_fails_publish_fast(redis_server: RedisServer, make: Make) -> None:
    backend, _ = make(redis_server.url, backoff_cap=0.2)
    await backend.start()
    await backend.subscribe("a")
    redis_server.stop()
    await eventually(lambda: backend.state == "down")
    assert not backend.healthy
    started = time.monotonic()
    with pytest.raises(Unavailable, match="redis is unavailable"):
        await backend.publish("a", b"")
    with pytest.raises(Unavailable, match="redis is unavailable"):
        await backend.position("a")
    assert time.monotonic() - started < 1
    # Subscribing while down records the interest and returns.
    async with asyncio.timeout(1):
        await backend.subscribe("b")
        await backend.unsubscribe("a")


async def test_a_restarted_redis_is_reconnected_and_gaps_are_reported(
    redis_server: RedisServer, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.broker.redis")
    gaps = Gaps()
    backend, received = make(redis_server.url, on_gap=gaps, backoff_cap=0.2)
    await backend.start()
    for pattern in ("chat.room", "chat.*", "news"):
        await backend.subscribe(pattern)
    before = await backend.publish("chat.room", b"before")
    await received.wait_for(1)

    redis_server.stop()
    await eventually(lambda: backend.state == "down")
    await backend.subscribe("later")  # recorded while down, subscribed on reconnect
    redis_server.start()  # same port, no data: every epoch changes
    await eventually(lambda: backend.state == "up")

    # chat.room and news had baselines whose epoch changed; chat.* is a wildcard, always told.
    assert gaps.patterns() == {"chat.room", "chat.*", "news"}
    assert len(gaps.calls) == 1
    after = await backend.publish("chat.room", b"after")
    assert after.offset == 1 and after.epoch != before.epoch
    await backend.publish("later", b"")
    await received.wait_for(3)
    assert [(p.topic, p.offset, p.payload) for p in received.publications] == [
        ("chat.room", 1, b"before"),
        ("chat.room", 1, b"after"),
        ("later", 1, b""),
    ]
    assert len(gaps.calls) == 1  # the new epoch's messages are no gap: the baseline was reset
    outages = [r for r in caplog.records if "is unavailable" in r.getMessage()]
    assert [r.levelno for r in outages] == [logging.WARNING]  # once, not once per retry
    assert any("available again" in r.getMessage() for r in caplog.records)


async def test_a_paused_redis_times_out_within_the_command_timeout(
    redis_server: RedisServer, make: Make
) -> None:
    backend, received = make(redis_server.url, command_timeout=0.5, backoff_cap=0.2)
    await backend.start()
    redis_server.pause()
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"no answer within 0\.5 s"):
        await backend.publish("a", b"")
    assert time.monotonic() - started < 0.9

    # A subscription that Redis does not confirm fails as fast, and takes the pub/sub
    # connection down with it: publish then fails at once.
    with pytest.raises(Unavailable, match="no confirmation"):
        await backend.subscribe("a")
    assert backend.state == "down"
    assert "a" not in backend._patterns  # rolled back, as the router rolls back its own
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await backend.publish("a", b"")
    assert time.monotonic() - started < 0.1

    redis_server.resume()
    await eventually(lambda: backend.state == "up")
    await backend.subscribe("a")
    published = await backend.publish("a", b"after")
    await received.wait_for(1)
    assert received.publications == [published]


async def test_a_silent_hung_connection_is_noticed(redis_server: RedisServer, make: Make) -> None:
    backend, _ = make(
        redis_server.url, command_timeout=0.3, health_check_interval=0.2, backoff_cap=0.2
    )
    await backend.start()
    await backend.subscribe("a")
    redis_server.pause()
    # No command is sent: the reader's PING finds out, within interval + timeout.
    await eventually(lambda: backend.state == "down", within=2)
    redis_server.resume()
    await eventually(lambda: backend.state == "up")


async def test_a_unix_socket_url(
    start_redis_server: StartRedisServer, make: Make, tmp_path: Path
) -> None:
    socket = tmp_path / "redis.sock"
    start_redis_server(["--unixsocket", str(socket)])
    backend, received = make(f"unix://{socket}?db=3")
    await backend.start()
    await backend.subscribe("a")
    published = await backend.publish("a", b"x")
    assert await received.wait_for(1) == [published]


def test_redact_url() -> None:
    assert redact_url(f"redis://:{PASSWORD}@db:6379/0") == "redis://:***@db:6379/0"
    assert redact_url(f"rediss://hub:{PASSWORD}@db/1") == "rediss://hub:***@db/1"
    assert redact_url(f"unix://:{PASSWORD}@/run/redis.sock?db=2") == (
        "unix://:***@/run/redis.sock?db=2"
    )
    assert redact_url(f"redis://db/0?password={PASSWORD}&db=1") == (
        "redis://db/0?password=***&db=1"
    )
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://user@db/0") == "redis://user@db/0"
    assert PASSWORD not in redact_url(f"redis://:{PASSWORD}@[::1/0")


async def test_the_password_is_never_logged(
    start_redis_server: StartRedisServer, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = start_redis_server(["--requirepass", PASSWORD])
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    wrong, _ = make(f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0")
    with pytest.raises(Unavailable) as failure:
        await wrong.start()
    assert f"redis://:***@127.0.0.1:{server.port}/0" in str(failure.value)

    backend, _ = make(url, backoff_cap=0.2)
    assert PASSWORD not in repr(vars(backend).get("redacted_url"))
    await backend.start()
    await backend.subscribe("a")
    server.stop()
    await eventually(lambda: backend.state == "down")
    with pytest.raises(Unavailable) as failure:
        await backend.publish("a", b"")
    for text in (str(failure.value), caplog.text):
        assert PASSWORD not in text
    assert f"redis://:***@127.0.0.1:{server.port}/0 is unavailable" in caplog.text


async def test_start_fails_fast_when_nothing_listens(make: Make) -> None:
    backend, _ = make(f"redis://:{PASSWORD}@127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(
        Unavailable, match=r"redis is unavailable at redis://:\*\*\*@127\.0\.0\.1:1/0"
    ):
        await backend.start()
    assert time.monotonic() - started < 1
    assert backend.state == "starting"
    with pytest.raises(UsageError, match="start"):
        await backend.publish("a", b"")


async def test_the_reader_survives_failures(
    redis_url: str, redis_prefix: str, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    gaps = Gaps()
    backend, received = make(redis_url, key_prefix=redis_prefix, on_gap=gaps, backoff_cap=0.2)
    await backend.start()
    await backend.subscribe("a")

    # A callback that raises is logged; the next publication is delivered.
    failing = [True]

    def on_publication(publication: Publication) -> None:
        if failing.pop() if failing else False:
            raise RuntimeError("callback bug")
        received(publication)

    backend.on_publication = on_publication
    await backend.publish("a", b"1")
    await backend.publish("a", b"2")
    await received.wait_for(1)
    assert "on_publication failed for a #1" in caplog.text

    # A malformed message on the topic's channel is dropped.
    client = redis.Redis.from_url(redis_url)
    client.publish(f"{redis_prefix}:t:a", b"garbage")
    client.close()
    await backend.publish("a", b"3")
    await received.wait_for(2)

    # A bug in the reader itself: logged with its traceback, then the reader reconnects and
    # reports what it may have missed.
    dispatch = backend._dispatch

    def broken(response: Any) -> None:
        backend._dispatch = dispatch  # type: ignore[method-assign]
        raise RuntimeError("reader bug")

    backend._dispatch = broken  # type: ignore[method-assign]
    await backend.publish("a", b"4")  # lost in the failure
    await eventually(lambda: gaps.calls != [])
    assert gaps.calls == [["a"]]
    await backend.publish("a", b"5")
    await received.wait_for(3)
    assert [p.payload for p in received.publications] == [b"2", b"3", b"5"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("malformed" in r.getMessage() for r in errors)
    assert any(r.exc_info and "reader bug" in str(r.exc_info[1]) for r in errors)
    assert backend.state == "up"


async def test_baselines_of_unsubscribed_topics_are_forgotten(
    redis_url: str, redis_prefix: str, make: Make
) -> None:
    backend, received = make(redis_url, key_prefix=redis_prefix)
    await backend.start()
    await backend.subscribe("chat.*")
    await backend.subscribe("chat.a")
    for topic in ("chat.a", "chat.b", "chat.c"):
        await backend.publish(topic, b"")
    await received.wait_for(3)
    assert set(backend._baselines) == {"chat.a", "chat.b", "chat.c"}
    await backend.unsubscribe("chat.*")
    assert set(backend._baselines) == {"chat.a"}
    await backend.unsubscribe("chat.a")
    assert backend._baselines == {}


async def test_close_stops_the_reader(redis_url: str, redis_prefix: str, make: Make) -> None:
    backend, _ = make(redis_url, key_prefix=redis_prefix)
    await backend.start()
    await backend.subscribe("a")
    reader = backend._reader
    assert reader is not None
    await backend.close()
    await backend.close()
    assert reader.cancelled() and backend.state == "closed"
    with pytest.raises(UsageError):
        await backend.publish("a", b"")
    with pytest.raises(UsageError):
        await backend.start()


async def test_a_refused_subscription_is_not_reported_as_up(
    redis_server: RedisServer, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL that refuses PSUBSCRIBE (a misconfiguration, not an outage) must not leave the
    node looking healthy while it serves nothing; the traceback is logged once, not per retry."""
    with redis_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "limited", "on", f">{PASSWORD}", "~*", "&hub:t:room", "+@all"
        )
    url = f"redis://limited:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    backend, _ = make(url, backoff_base=0.01, backoff_cap=0.02, command_timeout=0.5)
    await backend.start()
    await backend.subscribe("room")  # allowed
    with contextlib.suppress(Unavailable):  # kept, and retried after each reconnect
        await backend.subscribe("chat.*")
    await eventually(lambda: backend.state == "down")
    assert not backend.healthy
    with pytest.raises(Unavailable):
        await backend.publish("room", b"x")
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert 1 <= len(tracebacks) <= 2, [r.getMessage() for r in tracebacks]


async def test_publish_many_is_one_pipeline_with_errors_in_place(
    redis_server: RedisServer, make: Make
) -> None:
    backend, recorder = make(redis_server.url)
    await backend.start()
    await backend.subscribe(">")
    client = redis_server.client()
    client.set("hub:s:broken", "not a hash")  # HSETNX on it fails with WRONGTYPE
    client.script_flush()  # the first EVALSHAs meet NOSCRIPT and run again once loaded
    items = [("a", b"1"), ("broken", b"2"), ("a", b"3"), ("b", b"4")]
    results = await backend.publish_many(items)
    assert isinstance(results[1], InternalError) and "WRONGTYPE" in str(results[1])
    published = [r for r in results if isinstance(r, Publication)]
    assert [(p.topic, p.payload, p.offset) for p in published] == [
        ("a", b"1", 1),
        ("a", b"3", 2),
        ("b", b"4", 1),
    ]
    assert await recorder.wait_for(3) == published
    # One EVALSHA per publish, and one more for each that met NOSCRIPT: no MULTI, no EVAL.
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()}
    assert calls["evalsha"] == 2 * len(items) and "multi" not in calls and "eval" not in calls


async def test_publish_many_while_down_fails_every_item(
    redis_server: RedisServer, make: Make
) -> None:
    backend, _ = make(redis_server.url, backoff_cap=0.2)
    await backend.start()
    redis_server.stop()
    await eventually(lambda: backend.state == "down")
    results = await backend.publish_many([("a", b"1"), ("b", b"2")])
    assert [type(r) for r in results] == [Unavailable, Unavailable]


async def test_what_an_outage_missed_is_backfilled_from_history(
    redis_server: RedisServer, make: Make
) -> None:
    """The pub/sub connection dies while Redis keeps its data: the node delivers what it
    missed from history, in order, and reports no gap; a topic new to a wildcard too."""
    gaps = Gaps()
    retention = Retention(Keep(100, 60.0))
    backend, received = make(redis_server.url, on_gap=gaps, retention=retention)
    await backend.start()
    await backend.subscribe("a")
    await backend.subscribe("w.*")
    await backend.publish("a", b"1")
    await backend.publish("w.old", b"1")
    await received.wait_for(2)
    client = redis_server.client()

    def publish_now(topic: str, payload: bytes) -> None:
        """Publish with the backend's script from this thread, while the event loop, and so
        the node's reader, cannot run: the node cannot see these live."""
        keys, args = backend._publish_arguments(topic, payload)
        client.evalsha(backend._publish_script.sha, len(keys), *keys, *args)

    client.client_kill_filter(_type="pubsub")
    for topic, payload in [("a", b"2"), ("w.old", b"2"), ("w.new", b"1"), ("a", b"3")]:
        publish_now(topic, payload)
    await received.wait_for(6)  # backfilled on reconnecting
    await eventually(lambda: backend.state == "up")
    await backend.publish("a", b"4")
    await received.wait_for(7)
    by_topic = {
        topic: [(p.offset, p.payload) for p in received.publications if p.topic == topic]
        for topic in ("a", "w.old", "w.new")
    }
    assert by_topic == {
        "a": [(1, b"1"), (2, b"2"), (3, b"3"), (4, b"4")],
        "w.old": [(1, b"1"), (2, b"2")],
        "w.new": [(1, b"1")],
    }
    assert gaps.calls == []
