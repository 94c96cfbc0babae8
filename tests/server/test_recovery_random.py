"""Randomized end-to-end test of recovery across a Redis cluster (issue 6; docs/protocol.md).

Publishers publish at a steady rate on several topics through three ``hub-server`` nodes that
share the test's Redis. Subscribers (concrete topics, and ``rnd.*``) are disconnected at random
moments in three ways, then reconnect to another node and re-subscribe with ``recover``:

- ``clean``: a normal close handshake;
- ``abort``: half a WebSocket frame written to the hub, then the TCP connection dropped (a reset,
  or a FIN in the middle of the frame);
- ``slow``: the subscriber stops reading; a burst of large publications on a topic only it
  subscribes to fills the buffers until the hub closes it with 4008 (slow consumer); it then
  reads what was on its way, and the close.

The hub may also close a subscriber that reads normally (4008 in the middle of a large replay,
4010): it then recovers like the others. At the end, every subscriber has, for every topic,
exactly the published sequence from its first position on (no gap, no duplicate, in order)
whenever all its recoveries answered ``recovered: true``; and with history far larger than the
run, every recovery must answer true.

The seed is printed; ``HUB_TEST_SEED=<seed>`` replays the same random choices (the timing of a
real cluster still varies from run to run).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import random
import re
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from hub.exceptions import ConnectionClosed
from tests.server.conftest import HubProcess, StartHub
from tests.server.peers import CODECS, JSON, WAIT, OpenPeer, Peer
from tests.server.test_cluster import start_nodes

SEED_ENV = "HUB_TEST_SEED"

NODES = 3
TOPICS = ("rnd.a", "rnd.b", "rnd.c")
#: A topic first published in the middle of the run: wildcard subscribers that are away then
#: get it through the hub's index of topics (``since``), not through their position map.
LATE_TOPIC = "rnd.late"
WILDCARD = "rnd.*"
#: Each subscriber's patterns, held on one connection.
SUBSCRIBERS: tuple[tuple[str, ...], ...] = (
    ("rnd.a",),
    ("rnd.b", "rnd.c"),
    (WILDCARD,),
    (WILDCARD, "rnd.a"),
    (LATE_TOPIC,),
)
MODES = ("clean", "abort", "slow")

PUBLISHERS = 3
RATE = 100.0  # publications per second and publisher: 300/s in all
DURATION = 4.0  # seconds of publishing

#: How long a subscriber's connection lives before its random disconnect, in seconds.
LIFETIME = (0.1, 0.6)

#: The burst that makes a subscriber that stopped reading overflow: loopback's socket buffers
#: hold a few MiB, the hub's outbox then 50 frames.
FILLER = "x" * 32 * 1024
HUB_FLAGS = (
    "--history-size",
    "10000",
    "--recovery-limit",
    "10000",
    "--outbox-messages",
    "50",
)

#: Bounds: a slow consumer's overflow, the catch-up after the last publication, the whole test.
OVERFLOW_BOUND = 10.0
CATCH_UP_BOUND = 10.0
TEST_BOUND = 45.0


def is_wildcard(pattern: str) -> bool:
    return "*" in pattern or ">" in pattern


async def first_of(*waits: Coroutine[Any, Any, Any], within: float | None = None) -> None:
    """Wait until one of ``waits`` is done (or ``within`` seconds passed); cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def partial_frame(rng: random.Random) -> bytes:
    """The first bytes of a masked text frame from a client, never all of them."""
    length = rng.choice([100, 300])
    size = (
        bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + struct.pack("!H", length)
    )
    frame = b"\x81" + size + rng.randbytes(4 + length)  # FIN + text, length, mask, payload
    return frame[: rng.randrange(1, len(frame))]


# --- publishers -----------------------------------------------------------------------------------


@dataclass
class Published:
    """Every publication, from the publishers' ``ok`` replies: topic -> offset -> data."""

    data: dict[str, dict[int, Any]] = field(default_factory=lambda: collections.defaultdict(dict))
    epochs: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))

    def record(self, topic: str, reply: dict[str, Any], data: Any) -> None:
        offset = reply["offset"]
        assert offset not in self.data[topic], f"offset {offset} of {topic} given twice: {reply}"
        self.data[topic][offset] = data
        self.epochs[topic].add(reply["epoch"])


async def publish_steadily(
    peer: Peer, index: int, rng: random.Random, published: Published, late_at: float
) -> None:
    """``RATE`` publications per second for ``DURATION`` seconds, each on a random topic."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    count = 0
    while (elapsed := count / RATE) < DURATION:
        await asyncio.sleep(max(0.0, start + elapsed - loop.time()))  # pacing, not synchronisation
        topics = (*TOPICS, LATE_TOPIC) if elapsed >= late_at else TOPICS
        topic = rng.choice(topics)
        data = {"t": topic, "p": index, "n": count}
        reply = await peer.ok("pub", topic=topic, data=data)
        published.record(topic, reply, data)
        count += 1


# --- subscribers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    conn: int  # the subscriber's connection number, from 1
    offset: int
    epoch: str
    data: Any


class Lost(Exception):
    """The connection closed before the reply to a request."""


class Connection:
    """One connection of a subscriber: a reader task that dispatches replies and ``msg``s."""

    def __init__(
        self,
        number: int,
        node: int,
        peer: Peer,
        on_msg: Callable[[Connection, dict[str, Any]], None],
    ) -> None:
        self.number = number
        self.node = node
        self.peer = peer
        self.on_msg = on_msg
        self.pending: dict[int, tuple[asyncio.Future[dict[str, Any]], Callable[..., None]]] = {}
        self.reading = asyncio.Event()
        self.reading.set()
        self.closed: ConnectionClosed | None = None
        self.done = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    @property
    def client(self) -> str:
        client: str = self.peer.welcome["client"]
        return client

    async def _read(self) -> None:
        try:
            while True:
                await self.reading.wait()
                frame = await self.peer.recv(within=None)
                if frame["op"] == "msg":
                    self.on_msg(self, frame)
                elif frame["op"] in ("ok", "error") and frame.get("id") in self.pending:
                    future, on_reply = self.pending.pop(frame["id"])
                    on_reply(frame)  # in the reader, before any frame that follows the reply
                    if not future.done():  # cancelled with its task at the end of the test
                        future.set_result(frame)
                else:
                    raise AssertionError(f"unexpected frame on connection {self.number}: {frame}")
        except ConnectionClosed as exc:
            self.closed = exc
        finally:
            self.done.set()
            for future, _ in self.pending.values():
                if not future.done():
                    future.set_exception(Lost(f"connection {self.number} closed: {self.closed!r}"))
            self.pending.clear()

    def check(self) -> None:
        """Raise what failed in the reader, if anything did."""
        if self.task.done() and not self.task.cancelled():
            self.task.result()

    async def request(
        self, op: str, on_reply: Callable[..., None] = lambda frame: None, **fields: Any
    ) -> dict[str, Any]:
        id_ = self.peer.next_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[id_] = (future, on_reply)
        try:
            await self.peer.send({"op": op, "id": id_, **fields})
        except ConnectionClosed as exc:
            self.pending.pop(id_, None)
            future.cancel()
            raise Lost(f"connection {self.number} closed: {exc!r}") from exc
        async with asyncio.timeout(WAIT):
            reply = await future
        assert reply["op"] == "ok", f"{op} {fields} failed on connection {self.number}: {reply}"
        return reply

    def close_code(self) -> int | None:
        """The code of the close frame received from the hub, if any."""
        if self.closed is None or self.closed.rcvd is None:
            return None
        return self.closed.rcvd.code


class Subscriber:
    """A client that keeps its positions, is disconnected at random, and recovers elsewhere."""

    def __init__(
        self,
        index: int,
        patterns: tuple[str, ...],
        nodes: list[HubProcess],
        open_peer: OpenPeer,
        rng: random.Random,
        first_mode: str,
        stop: asyncio.Event,
    ) -> None:
        self.name = f"s{index}"
        self.patterns = patterns
        self.nodes = nodes
        self.open_peer = open_peer
        self.rng = rng
        self.first_mode = first_mode
        self.stop = stop
        self.filler_topic = f"fill.{self.name}"
        self.filler: Peer | None = None
        #: Concrete pattern -> (epoch, offset): the last received, or the ok's after a false.
        self.positions: dict[str, tuple[str, int]] = {}
        #: Concrete pattern -> the offset of its first ok: the sequence starts after it.
        self.start: dict[str, int] = {}
        #: Wildcard pattern -> the ``time`` of its last ok, and topic -> last received position.
        self.since: dict[str, int] = {}
        #: Wildcard pattern -> (the ok's time, msgs of its replay still to come): the time
        #: becomes the next since only once the whole replay arrived (docs/protocol.md).
        self.next_since: dict[str, tuple[int, int]] = {}
        self.seen: dict[str, dict[str, tuple[str, int]]] = {p: {} for p in patterns}
        self.received: dict[tuple[str, str], list[Received]] = collections.defaultdict(list)
        self.recoveries: dict[str, list[bool]] = {p: [] for p in patterns}
        self.disconnects: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.log: list[str] = []
        #: (pattern, connection number) -> the recover it sent, and the ok it got.
        self.asked: dict[tuple[str, int], dict[str, Any]] = {}
        self.oks: dict[tuple[str, int], dict[str, Any]] = {}
        self.ready = asyncio.Event()
        self.progress = asyncio.Event()
        #: Topic -> last offset, set when the publishers are done.
        self.targets: dict[str, int] = {}
        self.connections = 0
        self.nodes_of: dict[int, int] = {}

    # --- frames -----------------------------------------------------------------------------------

    def _on_msg(self, conn: Connection, frame: dict[str, Any]) -> None:
        sub, topic = frame["sub"], frame["topic"]
        if sub == self.filler_topic:
            return
        assert sub in self.patterns, f"{self.name}: msg for a pattern it never subscribed: {frame}"
        offset, epoch = frame["offset"], frame["epoch"]
        self.received[sub, topic].append(Received(conn.number, offset, epoch, frame["data"]))
        if is_wildcard(sub):
            if sub in self.next_since:
                time, left = self.next_since.pop(sub)
                if left > 1:
                    self.next_since[sub] = (time, left - 1)
                else:
                    self.since[sub] = time
            last = self.seen[sub].get(topic)
            if last is None or last[0] != epoch or offset > last[1]:
                self.seen[sub][topic] = (epoch, offset)
        else:
            last = self.positions[sub]
            if last[0] != epoch or offset > last[1]:
                self.positions[sub] = (epoch, offset)
        self.progress.set()

    def _on_sub_ok(
        self, pattern: str, recovering: bool, conn: Connection, ok: dict[str, Any]
    ) -> None:
        if ok["op"] != "ok":
            return
        self.log.append(f"#{conn.number} n{conn.node} sub {pattern}: {ok}")
        self.oks[pattern, conn.number] = ok
        if is_wildcard(pattern):
            assert isinstance(ok.get("time"), int), f"a wildcard sub's ok without time: {ok}"
            replayed = ok.get("replayed", 0) if recovering else 0
            if replayed:
                self.next_since[pattern] = (ok["time"], replayed)
            else:
                self.since[pattern] = ok["time"]
        else:
            position = (ok["epoch"], ok["offset"])
            if not recovering:
                self.positions[pattern] = position
                self.start[pattern] = ok["offset"]
            elif ok["recovered"] is not True:
                self.positions[pattern] = position  # live from M + 1: the gap is lost
        if recovering:
            assert isinstance(ok.get("recovered"), bool), f"a recovery's ok without recovered: {ok}"
            self.recoveries[pattern].append(ok["recovered"])

    def _recover(self, pattern: str) -> dict[str, Any]:
        if is_wildcard(pattern):
            self.next_since.pop(pattern, None)  # a replay cut short: keep the older since
            topics = {t: {"epoch": e, "offset": o} for t, (e, o) in self.seen[pattern].items()}
            return {"since": self.since[pattern], "topics": topics}
        epoch, offset = self.positions[pattern]
        return {"epoch": epoch, "offset": offset}

    def caught_up(self) -> bool:
        if not self.targets:
            return False
        for pattern in self.patterns:
            if is_wildcard(pattern):
                for topic, last in self.targets.items():
                    if self.seen[pattern].get(topic, ("", 0))[1] < last:
                        return False
            elif self.positions[pattern][1] < self.targets.get(pattern, 0):
                return False
        return True

    # --- connections ------------------------------------------------------------------------------

    async def _open(self, node: HubProcess, mode: str, codec: str) -> Peer:
        if mode != "slow":
            return await self.open_peer(node, codec)
        # A small receive buffer and one queued message: TCP backs up as soon as it stops reading.
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", node.port))
            return await self.open_peer(node, codec, sock=sock, max_queue=1, compression=None)
        except BaseException:
            sock.close()
            raise

    async def _connect(self, node: int, mode: str) -> Connection:
        recovering = self.connections > 0
        self.connections += 1
        codec = self.rng.choice(CODECS)
        peer = await self._open(self.nodes[node], mode, codec)
        conn = Connection(self.connections, node, peer, self._on_msg)
        self.nodes_of[conn.number] = node
        self.log.append(f"#{conn.number} n{node} {mode} {codec} client {conn.client}")
        for pattern in self.patterns:
            fields: dict[str, Any] = {"topic": pattern}
            if recovering:
                fields["recover"] = self._recover(pattern)
                self.asked[pattern, self.connections] = fields["recover"]
                self.log.append(f"#{conn.number} sub {pattern} recover {fields['recover']}")

            def on_reply(ok: dict[str, Any], pattern: str = pattern) -> None:
                self._on_sub_ok(pattern, recovering, conn, ok)

            try:
                await conn.request("sub", on_reply, **fields)
            except Lost:
                return conn  # closed by the hub: the next connection recovers this pattern too
        if mode == "slow":
            try:
                await conn.request("sub", topic=self.filler_topic)
            except Lost:
                return conn
        return conn

    def _closed_by_hub(self, conn: Connection) -> None:
        """The hub closed the connection on its own: allowed for 4008 and 4010 only."""
        conn.check()
        code = conn.close_code()
        self.unexpected.append(f"#{conn.number} closed by the hub: {conn.closed!r}")
        assert code in (4008, 4010), f"{self.name}: connection #{conn.number} lost: {conn.closed!r}"

    async def _disconnect(self, conn: Connection, mode: str) -> None:
        self.disconnects[mode] += 1
        self.log.append(f"#{conn.number} disconnect: {mode}")
        ws = conn.peer.ws
        if mode == "clean":
            async with asyncio.timeout(WAIT):
                await ws.close()
                await conn.done.wait()
            conn.check()
        elif mode == "abort":
            transport = ws.transport
            assert transport is not None
            if self.rng.random() < 0.5:  # a reset rather than a FIN
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.write(partial_frame(self.rng))
            transport.abort()
            async with asyncio.timeout(WAIT):
                await conn.done.wait()
            conn.check()
        else:
            await self._overflow(conn)

    async def _overflow(self, conn: Connection) -> None:
        """Stop reading; publish large messages on the filler topic until the hub logs 4008."""
        conn.reading.clear()
        node = self.nodes[conn.node]
        if self.filler is None:
            self.filler = await self.open_peer(node, JSON, compression=None)
        closing = re.compile(rf"closing session {re.escape(conn.client)} with 4008")
        async with asyncio.timeout(OVERFLOW_BOUND):
            while node.find_line(closing) is None and not conn.done.is_set():
                await self.filler.ok("pub", topic=self.filler_topic, data=FILLER)
        conn.reading.set()  # what was on its way, then the close
        async with asyncio.timeout(OVERFLOW_BOUND):
            await conn.done.wait()
        conn.check()
        assert conn.close_code() == 4008, f"{self.name}: #{conn.number} not 4008: {conn.closed!r}"

    async def _live(self, conn: Connection) -> str:
        """Until the random disconnect moment, the end of the run, or a close by the hub."""
        lifetime = self.rng.uniform(*LIFETIME)
        await first_of(conn.done.wait(), self.stop.wait(), within=lifetime)
        if conn.done.is_set():
            return "closed"
        return "stop" if self.stop.is_set() else "disconnect"

    async def _catch_up(self, conn: Connection) -> bool:
        """After the last publication: until every topic's last offset arrived (True), or the
        connection closed (False)."""
        while not self.caught_up():
            if conn.done.is_set():
                return False
            self.progress.clear()
            await first_of(self.progress.wait(), conn.done.wait())
        return True

    async def run(self) -> None:
        node = self.rng.randrange(len(self.nodes))
        mode = self.first_mode
        while True:
            conn = await self._connect(node, mode)
            self.ready.set()
            ended = await self._live(conn)
            if ended == "stop":
                if await self._catch_up(conn):
                    return
                ended = "closed"
            if ended == "closed":
                self._closed_by_hub(conn)
            else:
                await self._disconnect(conn, mode)
            node = self.rng.choice([n for n in range(len(self.nodes)) if n != node])
            mode = self.rng.choice(MODES)

    # --- verdict ----------------------------------------------------------------------------------

    def problems(self, published: Published) -> list[str]:
        """Everything that differs from the publications, described."""
        found: list[str] = []
        for pattern in self.patterns:
            recovered = all(self.recoveries[pattern])
            topics = sorted(published.data) if is_wildcard(pattern) else [pattern]
            for topic in topics:
                table = published.data.get(topic, {})
                records = self.received.get((pattern, topic), [])
                where = f"{self.name} sub {pattern} topic {topic}"
                for record in records:
                    if record.offset not in table or table[record.offset] != record.data:
                        found.append(
                            f"{where}: offset {record.offset} on #{record.conn} carried "
                            f"{record.data!r}, published {table.get(record.offset)!r}"
                        )
                    if record.epoch not in published.epochs[topic]:
                        found.append(f"{where}: epoch {record.epoch!r} on #{record.conn}")
                per_conn: dict[int, list[int]] = collections.defaultdict(list)
                for record in records:
                    per_conn[record.conn].append(record.offset)
                for number, offsets in per_conn.items():
                    wrong = [(a, b) for a, b in itertools.pairwise(offsets) if b <= a]
                    if wrong:
                        found.append(
                            f"{where}: on #{number} (node n{self.nodes_of[number]}), offsets "
                            f"{offsets[0]}..{offsets[-1]}, (previous, next) not increasing: "
                            f"{wrong}; sub recover {self.asked.get((pattern, number))}, "
                            f"ok {self.oks.get((pattern, number))}"
                        )
                if not recovered:
                    continue
                first = self.start.get(pattern, 0)  # wildcards subscribed before publishing
                expected = list(range(first + 1, len(table) + 1))
                got = [record.offset for record in records]
                if got != expected:
                    found.append(f"{where}: {describe_difference(expected, records)}")
        return found


def describe_difference(expected: list[int], records: list[Received]) -> str:
    got = [record.offset for record in records]
    at = next(
        (i for i, (e, g) in enumerate(zip(expected, got, strict=False)) if e != g),
        min(len(expected), len(got)),
    )
    around = [(r.conn, r.offset) for r in records[max(0, at - 3) : at + 4]]
    return (
        f"received {len(got)} offsets, published {len(expected)} from {expected[:1]}; first "
        f"difference at index {at}: expected {expected[at : at + 4]}, received "
        f"(connection, offset) {around}"
    )


# --- the test -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_random_disconnects_recover_exactly_the_published_sequence(
    start_hub: StartHub, redis_url: str, redis_prefix: str, open_peer: OpenPeer
) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.randrange(2**32))
    print(f"{SEED_ENV}={seed}")
    rng = random.Random(seed)
    async with asyncio.timeout(TEST_BOUND):
        nodes = await start_nodes(start_hub, redis_url, redis_prefix, NODES, *HUB_FLAGS)
        stop = asyncio.Event()
        subscribers = [
            Subscriber(
                i,
                patterns,
                nodes,
                open_peer,
                random.Random(f"{seed}/s{i}"),
                MODES[i % len(MODES)],
                stop,
            )
            for i, patterns in enumerate(SUBSCRIBERS)
        ]
        tasks = [asyncio.create_task(s.run(), name=s.name) for s in subscribers]
        try:
            # Every subscriber holds its subscriptions before the first publication.
            async with asyncio.timeout(WAIT):
                for subscriber, task in zip(subscribers, tasks, strict=True):
                    ready = asyncio.ensure_future(subscriber.ready.wait())
                    await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
                    ready.cancel()
                    if task.done():
                        task.result()
            published = Published()
            publishers = [await open_peer(nodes[i % NODES]) for i in range(PUBLISHERS)]
            late_at = rng.uniform(0.3, 0.6) * DURATION
            await asyncio.gather(
                *(
                    publish_steadily(peer, i, random.Random(f"{seed}/p{i}"), published, late_at)
                    for i, peer in enumerate(publishers)
                )
            )
            targets = {topic: max(table) for topic, table in published.data.items()}
            for subscriber in subscribers:
                subscriber.targets = targets
            stop.set()
            async with asyncio.timeout(CATCH_UP_BOUND):
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    for topic, table in published.data.items():
        assert sorted(table) == list(range(1, len(table) + 1)), f"{topic}: offsets not 1..N"
        assert len(published.epochs[topic]) == 1, f"{topic}: epochs {published.epochs[topic]}"
    assert set(published.data) == {*TOPICS, LATE_TOPIC}

    recoveries = collections.Counter(
        ok for s in subscribers for results in s.recoveries.values() for ok in results
    )
    disconnects: collections.Counter[str] = sum(
        (s.disconnects for s in subscribers), collections.Counter()
    )
    unexpected = [f"{s.name} {line}" for s in subscribers for line in s.unexpected]
    print(
        f"seed {seed}: published {targets}; disconnects {dict(disconnects)}; "
        f"recovered {dict(recoveries)}; closed by the hub: {unexpected}"
    )

    problems = [problem for s in subscribers for problem in s.problems(published)]
    if problems:
        logs = "\n".join(f"{s.name}: " + "\n  ".join(s.log[-40:]) for s in subscribers)
        pytest.fail(f"seed {seed}:\n" + "\n".join(problems) + f"\n\nconnections:\n{logs}")
    # The run must have exercised what it claims to.
    assert all(disconnects[mode] > 0 for mode in MODES), disconnects
    assert recoveries[True] >= 3 * len(SUBSCRIBERS), recoveries
    # History holds the whole run and recovery_limit all of it: every recovery is complete.
    failed = [
        (s.name, pattern, results)
        for s in subscribers
        for pattern, results in s.recoveries.items()
        if not all(results)
    ]
    assert not failed, f"seed {seed}: recovered false with history enough: {failed}"
