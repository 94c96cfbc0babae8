"""History benchmark: what history and recovery cost, as a ratio against history off, in one run.

The script starts two redis-servers (on free loopback ports, without persistence, in temporary
folders) and four ``hub-server`` nodes, all with fanout.py's default hub command, so that only
the backend and the history settings differ:

- ``memory-off`` and ``memory-on``: ``--backend memory://`` with ``--history-size 0`` and with
  ``--history-size 1000``;
- ``redis-off`` and ``redis-on``: the same two on the Redis backend, each node on a
  redis-server of its own, so that Redis's CPU time and memory can be told apart.

Every node runs with ``--recovery-limit 1000``. Three phases, each loading one node at a time:

- **memory** (first, on the fresh nodes): after a warm-up, the client publishes ``--messages``
  (100) messages on each of ``--topics`` (1,000) fresh topics, for each payload size, and reads
  each hub's VmRSS (/proc) and each redis-server's ``used_memory`` (``INFO memory``) before and
  after. A ``history`` request on one topic per size checks that history holds the messages
  (history on) or nothing (history off).
- **throughput**: per node, one publisher connection and ``--subscribers`` (4) subscribers on one
  topic. The publisher sends ``pub`` frames with an ``id`` and keeps ``--window`` (64) of them
  unanswered: it publishes again for every ``ok``. The nodes without and with history of one
  backend take turns in ABBA slices (fanout.py's saturation, with cluster.py's per-process CPU
  per slice). Reported: publications per second, the ratio history on / off, and the hub's and
  redis-server's CPU time per publication.
- **recovery**: a subscriber subscribes to a topic, notes its position (``epoch``, ``offset``)
  and disconnects; ``--missed`` (1,000) messages are published; a new connection subscribes with
  ``recover``. Timed: from writing that ``sub`` until the last replayed ``msg`` arrived (median of
  ``--recovery-runs``). Each run checks ``recovered: true``, the position in the ``ok``, that the
  replay is exactly the missed offsets in order with their payloads, and that the next live
  publication follows it with no gap or duplicate. On the nodes without history it checks that
  the same ``sub`` answers ``recovered: false`` and replays nothing.

The load client is fanout.py's (a raw asyncio ``Protocol``, standard library only). Run
``python benchmarks/history.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from cluster import (
    DEFAULT_REDIS_CMD,
    HUB_TROUBLE,
    NODE_CMD_OPTION,
    REDIS_SERVER,
    REDIS_SERVER_OPTION,
    REDIS_WARNING,
    ClusterPool,
    Node,
    Window,
    log_summary,
    stop_and_read,
    sum_windows,
)
from echo import (
    CLIENT_BOUND_CPU,
    CLIENT_CPU_NOTE,
    HOST,
    JSON_OPTION,
    OP_TEXT,
    SETTLE,
    SLICE_IQR_NOTE,
    STARTUP_TIMEOUT_OPTION,
    BenchmarkError,
    ProtocolError,
    Server,
    alternate,
    client_frame,
    csv_of,
    environment,
    exit_on_sigterm,
    exit_status,
    format_client_load,
    format_number,
    format_size,
    format_table,
    log,
    median_or_none,
    quartile_range,
    rounds,
    slice_count,
)
from fanout import (
    MIN_SIZE,
    SEED_OPTION,
    SIZES_OPTION,
    TOPIC,
    TS_DIGITS,
    Endpoint,
    Options,
    Publisher,
    Run,
    close_pools,
    cpu_seconds,
    fill_template,
    final_check,
    json_object,
    make_filler,
    per_million,
    source_version,
)
from memory import settled_status

MEMORY, REDIS = "memory", "redis"
BACKENDS = (MEMORY, REDIS)
OFF, ON = "off", "on"
STATES = (OFF, ON)
PHASES = ("memory", "throughput", "recovery")
PREFIX = "benchhistory"
# Every pub carries this id: the hub answers each with an ok, in order.
PUB_ID = 1
# How often a wait checks its condition, seconds.
POLL = 0.001
# The memory phase's warm-up, per node and payload size: topics and messages per topic.
WARMUP_TOPICS, WARMUP_MESSAGES = 20, 50


def node_name(backend: str, state: str) -> str:
    return f"{backend}-{state}"


def redis_name(state: str) -> str:
    return f"{REDIS_SERVER}-{state}"


def pub_frame(topic: str, data: bytes, key: bytes) -> bytes:
    """A ``pub`` with ``id`` PUB_ID; ``data`` is a JSON string's ASCII content."""
    text = b'{"op":"pub","id":%d,"topic":"%s","data":"%s"}' % (PUB_ID, topic.encode(), data)
    return client_frame(OP_TEXT, text, key)


def mask_key(rng: random.Random) -> bytes:
    """A masking key without zero bytes."""
    return bytes(rng.randrange(1, 256) for _ in range(4))


def to_ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def numbered(index: int, filler: bytes) -> bytes:
    """The ``data`` of publication ``index``: its number (TS_DIGITS digits), then ``filler``."""
    return b"%0*d" % (TS_DIGITS, index) + filler


# --- connections ----------------------------------------------------------------------------


class AckPublisher(Publisher):
    """A publisher whose ``pub`` frames carry an id: it counts the ``ok`` replies.

    With ``last`` set, every ``ok`` must carry the next offset of one topic (``last + 1``) and
    the same ``epoch``; with ``offsets`` set (a list), every ``ok``'s offset is appended to it.
    ``on_ack`` is called once per read that brought ``ok`` replies."""

    def __init__(self, port: int, key: bytes) -> None:
        super().__init__(port, key)
        self.sent = 0
        self.acked = 0
        self.epoch: str | None = None
        self.last: int | None = None
        self.offsets: list[int] | None = None
        self.on_ack: Callable[[], None] | None = None

    def pub(self, topic: str, data: bytes) -> bytes:
        """A ``pub`` frame of this connection."""
        return pub_frame(topic, data, self._key)

    def send(self, frames: bytes, count: int) -> None:
        self.write(frames)
        self.sent += count

    def _feed(self, data: bytes) -> None:
        before = self.acked
        super()._feed(data)
        if self.acked != before and self.on_ack is not None and self.error is None:
            self.on_ack()

    def _reply(self, message: dict[str, Any], now: int) -> bool:
        if message.get("op") != "ok" or message.get("id") != PUB_ID:
            return super()._reply(message, now)
        offset, epoch = message.get("offset"), message.get("epoch")
        if not isinstance(offset, int) or not isinstance(epoch, str):
            raise ProtocolError(f"pub ok without offset and epoch: {message}")
        if self.last is not None:
            if offset != self.last + 1 or epoch != self.epoch:
                raise ProtocolError(
                    f"pub ok for {epoch}:{offset}, expected {self.epoch}:{self.last + 1}"
                )
            self.last = offset
        if self.offsets is not None:
            self.offsets.append(offset)
        self.epoch = epoch
        self.acked += 1
        if self.acked > self.sent:
            raise ProtocolError("more pub oks than pubs")
        return False


class Probe(Endpoint):
    """A client that sends requests and keeps their replies (and when each arrived).

    After the ``ok`` of a request sent with ``raw``, every further text frame is kept undecoded
    with its arrival time (``frames``), so that a replay is timed without the client's JSON
    decoding in it; :func:`decode_msgs` checks them afterwards."""

    def __init__(self, port: int, key: bytes) -> None:
        super().__init__(port, key)
        self.replies: dict[int, tuple[dict[str, Any], int]] = {}
        self.frames: list[tuple[int, bytes]] = []
        self._next_id = 0
        self._raw_after: int | None = None
        self._raw = False

    def request(self, message: dict[str, Any], raw: bool = False) -> int:
        """Send ``message`` with a new id; return the id."""
        self._next_id += 1
        if raw:
            self._raw_after = self._next_id
        self.send_text(json.dumps({**message, "id": self._next_id}).encode())
        return self._next_id

    def _message(self, payload: bytes, now: int) -> bool:
        if self._raw:
            self.frames.append((now, payload))
            return True
        return super()._message(payload, now)

    def _reply(self, message: dict[str, Any], now: int) -> bool:
        request = message.get("id")
        if message.get("op") != "ok" or not isinstance(request, int) or request in self.replies:
            return super()._reply(message, now)
        self.replies[request] = (message, now)
        if request == self._raw_after:
            self._raw = True
        return False


async def wait_until(
    condition: Callable[[], bool],
    what: str,
    server: Server,
    endpoints: Sequence[Endpoint],
    limit: float,
    progress: Callable[[], int] | None = None,
) -> None:
    """Wait until ``condition()``; BenchmarkError if an endpoint fails, or after ``limit``
    seconds (without a change of ``progress()``, if given)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    mark = progress() if progress is not None else None
    while not condition():
        failed = [endpoint.error for endpoint in endpoints if endpoint.error]
        if failed:
            server.check_alive()
            raise BenchmarkError(f"{server.name}: {what}: {failed[0]}")
        if progress is not None and progress() != mark:
            mark = progress()
            deadline = loop.time() + limit
        if loop.time() > deadline:
            raise BenchmarkError(f"{server.name}: {what}: not done after {limit:g} s")
        await asyncio.sleep(POLL)


async def open_endpoint(endpoint: Endpoint, server: Server, limit: float) -> None:
    """Connect ``endpoint`` to ``server`` and wait for its welcome."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limit):
            await loop.create_connection(lambda: endpoint, HOST, server.port)
            await endpoint.opened
            if endpoint.error:
                raise ProtocolError(endpoint.error)
            await endpoint.welcomed
    except (OSError, TimeoutError, ProtocolError) as exc:
        server.check_alive()
        raise BenchmarkError(f"{server.name}: cannot connect: {exc!r}") from exc


async def call(
    probe: Probe, server: Server, message: dict[str, Any], limit: float
) -> dict[str, Any]:
    """Send a request and return its ``ok``."""
    request = probe.request(message)
    what = f"the reply to {message['op']}"
    await wait_until(lambda: request in probe.replies, what, server, [probe], limit)
    return probe.replies[request][0]


async def publish_frames(
    publisher: AckPublisher,
    frames: Iterator[bytes],
    window: int,
    server: Server,
    limit: float,
) -> float:
    """Send ``frames``, keeping at most ``window`` unanswered; return once every one has its
    ``ok`` (BenchmarkError after ``limit`` seconds without a reply). Returns the seconds."""
    started = time.perf_counter()
    exhausted = False

    def top_up() -> None:
        nonlocal exhausted
        missing = window - (publisher.sent - publisher.acked)
        if missing <= 0 or exhausted:
            return
        batch = list(itertools.islice(frames, missing))
        if len(batch) < missing:
            exhausted = True
        if batch:
            publisher.send(b"".join(batch), len(batch))

    publisher.on_ack = top_up
    try:
        top_up()
        await wait_until(
            lambda: exhausted and publisher.acked == publisher.sent,
            f"{publisher.sent - publisher.acked} pub oks missing",
            server,
            [publisher],
            limit,
            lambda: publisher.acked,
        )
    finally:
        publisher.on_ack = None
    return time.perf_counter() - started


# --- throughput -----------------------------------------------------------------------------


class HistoryPool(ClusterPool):
    """cluster.py's pool on one node, whose publisher's window counts unanswered ``pub``s (with
    an id) instead of the designated subscriber's receipts. Each ``ok`` must carry the topic's
    next offset. CPU per slice is recorded for the node and, if given, its redis-server."""

    def __init__(
        self,
        label: str,
        server: Server,
        redis_server: Server | None,
        opts: Options,
        rng: random.Random,
    ) -> None:
        watched = {} if redis_server is None else {REDIS_SERVER: redis_server}
        super().__init__(label, [Node(label, server, opts.subscribers)], watched, opts, rng)
        self.acks = AckPublisher(server.port, self._key)
        self.acks.on_ack = self._on_ack
        self.publisher = self.acks
        self.ports[0] = (self.acks, server.port)

    async def open(self) -> None:
        await super().open()
        self.acks.last = self.designated.base_offset
        self.acks.epoch = self.designated.epoch

    def publish(self, count: int, timestamp: int) -> None:
        frame = self.acks.pub(TOPIC, numbered(timestamp, self.filler))
        self.acks.send(frame * count, count)
        self.published += count

    def _top_up(self) -> None:
        missing = self.opts.window - (self.published - self.acks.acked)
        if missing > 0:
            self.publish(missing, time.perf_counter_ns())

    def on_designated_receipt(self) -> None:
        pass  # the oks pace the publisher

    def _on_ack(self) -> None:
        if self._running:
            self._top_up()

    async def drain(self) -> int:
        missing = await super().drain()
        await wait_until(
            lambda: self.acks.acked == self.published,
            f"{self.published - self.acks.acked} pub oks missing",
            self.server,
            [self.acks],
            self.opts.timeout,
        )
        return missing


@dataclass
class ThroughputCase:
    """All repetitions of one backend and payload size: per state, the timed slices of each
    repetition and the sum of their per-process CPU windows."""

    backend: str
    size: int
    subscribers: int
    slices: dict[str, list[list[Run]]] = field(default_factory=lambda: {OFF: [], ON: []})
    windows: dict[str, list[Window]] = field(default_factory=lambda: {OFF: [], ON: []})

    @property
    def label(self) -> str:
        return f"{self.backend} {format_size(self.size)} x{self.subscribers}"

    def runs(self, state: str) -> list[Run]:
        return [Run.total(slices) for slices in self.slices[state]]

    def rate(self, state: str) -> float:
        """Publications per second (median over repetitions)."""
        return statistics.median(run.publications / run.seconds for run in self.runs(state))

    def ratio(self) -> float:
        """History on / off publications per second, paired per repetition (median)."""
        pairs = zip(self.runs(ON), self.runs(OFF), strict=True)
        return statistics.median(
            (on.publications / on.seconds) / (off.publications / off.seconds) for on, off in pairs
        )

    def slice_spread(self) -> tuple[float, float]:
        ratios = [
            (on.publications / on.seconds) / (off.publications / off.seconds)
            for on_slices, off_slices in zip(self.slices[ON], self.slices[OFF], strict=True)
            for on, off in zip(on_slices, off_slices, strict=True)
            if off.publications
        ]
        return quartile_range(ratios)

    def hub_us(self, state: str) -> float | None:
        """The hub's CPU time per publication, microseconds (median)."""
        return median_or_none([per_million(r.server_cpu, r.publications) for r in self.runs(state)])

    def redis_us(self, state: str) -> float | None:
        """redis-server's CPU time per publication, microseconds (median); None for memory."""
        if self.backend != REDIS:
            return None
        pairs = zip(self.windows[state], self.runs(state), strict=True)
        return median_or_none([per_million(w.cpu[REDIS_SERVER], r.publications) for w, r in pairs])

    def client_load(self) -> float:
        return max(run.client_load for state in STATES for run in self.runs(state))

    def to_json(self) -> dict[str, Any]:
        states: dict[str, Any] = {}
        for state in STATES:
            states[state] = {
                "publications_per_s": self.rate(state),
                "hub_cpu_us_per_publication": self.hub_us(state),
                "redis_server_cpu_us_per_publication": self.redis_us(state),
                "max_client_cpu_share": max(run.client_load for run in self.runs(state)),
                "repetitions": [
                    {
                        **Run.total(slices).to_json(),
                        **window.to_json(),
                        "slices": [run.to_json() for run in slices],
                    }
                    for slices, window in zip(self.slices[state], self.windows[state], strict=True)
                ],
            }
        low, high = self.slice_spread()
        return {
            "case": self.label,
            "backend": self.backend,
            "size": self.size,
            "subscribers": self.subscribers,
            "history_off": states[OFF],
            "history_on": states[ON],
            "ratio_on_over_off": self.ratio(),
            "slice_ratio_quartiles": [low, high],
        }


async def run_throughput_case(
    pools: dict[str, HistoryPool], case: ThroughputCase, opts: Options, first: str
) -> dict[str, Run]:
    """Check, warm up, then time both pools in ABBA slices, ``first`` first."""
    filler = make_filler(case.size)
    for pool in pools.values():
        await pool.verify(filler)
    for pool in pools.values():
        await pool.saturate(opts.warmup)
        pool.take_windows()
    count = slice_count(opts.duration, opts.slice)
    seconds = opts.duration / count
    slices = await alternate(pools, first, count, lambda pool: pool.measure_saturated(seconds))
    summary = {}
    for state, pool in pools.items():
        saturated, _ = pool.take_windows()
        case.slices[state].append(slices[state])
        case.windows[state].append(sum_windows(saturated))
        summary[state] = Run.total(slices[state])
    return summary


async def measure_throughput(
    hubs: dict[str, Server],
    redis_servers: dict[str, Server],
    sizes: Sequence[int],
    opts: Options,
    repeat: int,
    rng: random.Random,
) -> list[ThroughputCase]:
    pools: dict[tuple[str, str], HistoryPool] = {}
    opened: list[HistoryPool] = []
    cases = [ThroughputCase(b, size, opts.subscribers) for size in sizes for b in BACKENDS]
    try:
        for backend in BACKENDS:
            for state in STATES:
                name = node_name(backend, state)
                redis_server = redis_servers[state] if backend == REDIS else None
                pool = HistoryPool(name, hubs[name], redis_server, opts, rng)
                opened.append(pool)
                await pool.open()
                pools[backend, state] = pool
        log(f"throughput: {opts.subscribers} subscribers and a publisher on each of 4 nodes")
        for done, case, first in rounds(cases, repeat, STATES):
            pair = {state: pools[case.backend, state] for state in STATES}
            try:
                summary = await run_throughput_case(pair, case, opts, first)
            except BenchmarkError as exc:
                raise BenchmarkError(f"{case.label}: {exc}") from exc
            off, on = summary[OFF], summary[ON]
            off_rate, on_rate = off.publications / off.seconds, on.publications / on.seconds
            log(
                f"[{done}/{repeat * len(cases)}] {case.label:<16} history off {off_rate:>8,.0f}"
                f"  on {on_rate:>8,.0f} pub/s  ratio {on_rate / off_rate:.2f}"
                f"  client CPU {max(off.client_load, on.client_load):.0%}"
            )
        await final_check(opened)
    finally:
        warnings = await close_pools(opened, opts.timeout)
    for warning in warnings:
        log(f"warning: {warning}")
    return cases


# --- memory ---------------------------------------------------------------------------------


@dataclass
class MemoryCase:
    """One payload size: what ``topics`` x ``messages`` publications added to each hub's RSS
    (KiB) and each redis-server's used_memory (bytes), and how long publishing them took."""

    size: int
    topics: int
    messages: int
    rss_kib: dict[str, int] = field(default_factory=dict)
    anon_kib: dict[str, int] = field(default_factory=dict)
    redis_bytes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    history: dict[str, int] = field(default_factory=dict)  # messages a history request returned

    @property
    def label(self) -> str:
        return f"{format_size(self.size)}, {self.topics:,} x {self.messages:,}"

    @property
    def count(self) -> int:
        return self.topics * self.messages

    def hub_per_message(self, backend: str) -> float:
        """Bytes of hub RSS per publication that history on added over history off."""
        on, off = self.rss_kib[node_name(backend, ON)], self.rss_kib[node_name(backend, OFF)]
        return (on - off) * 1024 / self.count

    def redis_per_message(self) -> float | None:
        if not self.redis_bytes:
            return None
        return (self.redis_bytes[ON] - self.redis_bytes[OFF]) / self.count

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.label,
            "size": self.size,
            "topics": self.topics,
            "messages_per_topic": self.messages,
            "hub_vmrss_delta_kib": self.rss_kib,
            "hub_rssanon_delta_kib": self.anon_kib,
            "redis_used_memory_delta_bytes": self.redis_bytes,
            "publish_seconds": self.seconds,
            "publications_per_s": {name: self.count / s for name, s in self.seconds.items()},
            "history_request_messages": self.history,
            "memory_hub_bytes_per_message_on_minus_off": self.hub_per_message(MEMORY),
            "redis_hub_bytes_per_message_on_minus_off": self.hub_per_message(REDIS),
            "redis_bytes_per_message_on_minus_off": self.redis_per_message(),
        }


@dataclass(frozen=True)
class Reading:
    rss: dict[str, dict[str, int]]  # node -> /proc status fields (KiB)
    redis: dict[str, int]  # state -> used_memory (bytes)


async def read_memory(
    hubs: dict[str, Server], clients: dict[str, redis.Redis], settle: float
) -> Reading:
    for server in hubs.values():
        server.check_alive()
    await asyncio.sleep(settle)
    rss = {name: await settled_status(server.process.pid, 0) for name, server in hubs.items()}
    used = {state: int(client.info("memory")["used_memory"]) for state, client in clients.items()}
    return Reading(rss, used)


def topic_frames(
    publisher: AckPublisher, prefix: str, topics: int, messages: int, size: int
) -> Iterator[bytes]:
    """``messages`` publications on each topic ``prefix.<t>``, topic after topic, numbered."""
    filler = make_filler(size)
    for t in range(topics):
        topic = f"{prefix}.{t}"
        for m in range(messages):
            yield publisher.pub(topic, numbered(t * messages + m, filler))


async def check_history(
    probe: Probe, server: Server, topic: str, messages: int, expected: bytes | None, limit: float
) -> int:
    """The newest publication in ``topic``'s history must be number ``messages`` with data
    ``expected``; or, with ``expected`` None (history off), there must be none. Returns how
    many messages a plain history request gave."""
    newest = await call(
        probe, server, {"op": "history", "topic": topic, "limit": 1, "reverse": True}, limit
    )
    plain = await call(probe, server, {"op": "history", "topic": topic}, limit)
    got = newest.get("messages")
    if not isinstance(got, list) or not isinstance(plain.get("messages"), list):
        raise BenchmarkError(f"{server.name}: history ok without messages: {newest}")
    if newest.get("offset") != messages:
        raise BenchmarkError(f"{server.name}: {topic} at offset {newest.get('offset')}")
    if expected is None:
        if got or plain["messages"]:
            raise BenchmarkError(f"{server.name}: history off, yet history has messages")
        return 0
    if len(got) != 1 or got[0].get("offset") != messages or got[0].get("data") != expected.decode():
        raise BenchmarkError(f"{server.name}: history of {topic}: {str(got)[:200]}")
    return len(plain["messages"])


async def measure_memory(
    hubs: dict[str, Server],
    clients: dict[str, redis.Redis],
    sizes: Sequence[int],
    topics: int,
    messages: int,
    opts: Options,
    settle: float,
    rng: random.Random,
) -> list[MemoryCase]:
    publishers: dict[str, AckPublisher] = {}
    probes: dict[str, Probe] = {}
    results = [MemoryCase(size, topics, messages) for size in sizes]
    try:
        for name, server in hubs.items():
            publishers[name] = AckPublisher(server.port, mask_key(rng))
            probes[name] = Probe(server.port, mask_key(rng))
            await open_endpoint(publishers[name], server, opts.timeout)
            await open_endpoint(probes[name], server, opts.timeout)
        for name, server in hubs.items():
            for size in sizes:
                frames = topic_frames(
                    publishers[name], f"warmup.{size}", WARMUP_TOPICS, WARMUP_MESSAGES, size
                )
                await publish_frames(publishers[name], frames, opts.window, server, opts.timeout)
        before = await read_memory(hubs, clients, settle)
        for result in results:
            for name, server in hubs.items():
                publisher = publishers[name]
                publisher.offsets = []
                frames = topic_frames(
                    publisher, f"mem.{result.size}", topics, messages, result.size
                )
                result.seconds[name] = await publish_frames(
                    publisher, frames, opts.window, server, opts.timeout
                )
                if publisher.offsets != list(range(1, messages + 1)) * topics:
                    raise BenchmarkError(f"{name}: the pub oks' offsets are not 1..{messages}")
                publisher.offsets = None
            after = await read_memory(hubs, clients, settle)
            for name in hubs:
                for target, field_name in ((result.rss_kib, "VmRSS"), (result.anon_kib, "RssAnon")):
                    target[name] = after.rss[name].get(field_name, 0) - before.rss[name].get(
                        field_name, 0
                    )
            for state in clients:
                result.redis_bytes[state] = after.redis[state] - before.redis[state]
            before = after
            last = numbered(topics * messages - 1, make_filler(result.size))
            for name, server in hubs.items():
                expected = last if name.endswith(ON) else None
                result.history[name] = await check_history(
                    probes[name],
                    server,
                    f"mem.{result.size}.{topics - 1}",
                    messages,
                    expected,
                    opts.timeout,
                )
            on, off = result.rss_kib[node_name(MEMORY, ON)], result.rss_kib[node_name(MEMORY, OFF)]
            log(
                f"memory {result.label}: memory hub RSS +{off / 1024:.1f} MiB (off),"
                f" +{on / 1024:.1f} MiB (on); redis used_memory"
                + "".join(f" +{result.redis_bytes[s] / 2**20:.1f} MiB ({s})" for s in clients)
            )
    finally:
        endpoints: list[Endpoint] = [*publishers.values(), *probes.values()]
        await asyncio.gather(*(endpoint.close(opts.timeout) for endpoint in endpoints))
    return results


# --- recovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """One recovery: its times (ms from writing the ``sub``), CPU seconds and offsets."""

    to_ok_ms: float
    to_last_ms: float
    hub_cpu: float | None
    redis_cpu: float | None
    offset: int  # the position the subscriber had
    end: int  # the position in the ok

    def to_json(self) -> dict[str, Any]:
        return {
            "sub_to_ok_ms": self.to_ok_ms,
            "sub_to_last_msg_ms": self.to_last_ms,
            "hub_cpu_ms": to_ms(self.hub_cpu),
            "redis_server_cpu_ms": to_ms(self.redis_cpu),
            "recovered_from_offset": self.offset,
            "ok_offset": self.end,
        }


@dataclass
class RecoveryCase:
    backend: str
    size: int
    missed: int
    runs: list[Recovery] = field(default_factory=list)
    warmup: Recovery | None = None

    @property
    def label(self) -> str:
        return f"{self.backend} {format_size(self.size)}"

    def median(self, value: Callable[[Recovery], float | None]) -> float | None:
        return median_or_none([value(run) for run in self.runs])

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.label,
            "backend": self.backend,
            "size": self.size,
            "missed": self.missed,
            "sub_to_last_msg_ms_median": self.median(lambda r: r.to_last_ms),
            "sub_to_ok_ms_median": self.median(lambda r: r.to_ok_ms),
            "hub_cpu_ms_median": self.median(lambda r: to_ms(r.hub_cpu)),
            "redis_server_cpu_ms_median": self.median(lambda r: to_ms(r.redis_cpu)),
            "runs": [run.to_json() for run in self.runs],
            "warmup_run": None if self.warmup is None else self.warmup.to_json(),
        }


def decode_msgs(
    frames: Sequence[tuple[int, bytes]], topic: str, epoch: str, first: int, filler: bytes
) -> None:
    """The frames must be the ``msg``s of ``topic`` with offsets ``first``, ``first + 1``, ...,
    in ``epoch``, publication number ``offset - first`` each (its data), or ProtocolError."""
    for i, (_, payload) in enumerate(frames):
        message = json_object(payload)
        if message.get("op") != "msg":
            raise ProtocolError(f"frame {i} of the replay is not a msg: {payload[:200]!r}")
        offset = first + i
        if (message.get("topic"), message.get("sub")) != (topic, topic):
            raise ProtocolError(
                f"msg {i}: topic {message.get('topic')!r}, sub {message.get('sub')!r}"
            )
        if (message.get("epoch"), message.get("offset")) != (epoch, offset):
            raise ProtocolError(
                f"msg {i}: at {message.get('epoch')}:{message.get('offset')}, expected"
                f" {epoch}:{offset}"
            )
        data = message.get("data")
        if not isinstance(data, str) or data.encode() != numbered(i, filler):
            raise ProtocolError(f"msg {i} (offset {offset}): data {str(data)[:40]!r}...")


async def recover_once(
    server: Server,
    redis_server: Server | None,
    publisher: AckPublisher,
    topic: str,
    size: int,
    missed: int,
    history: bool,
    opts: Options,
    rng: random.Random,
) -> Recovery:
    """Subscribe, leave, miss ``missed`` publications, come back with ``recover``: timed from
    writing the ``sub`` until the last replayed ``msg`` arrived; then one live publication."""
    filler = make_filler(size)
    limit = opts.timeout

    first = Probe(server.port, mask_key(rng))
    try:
        await open_endpoint(first, server, limit)
        ok = await call(first, server, {"op": "sub", "topic": topic}, limit)
    finally:
        await first.close(limit)
    epoch, offset = ok.get("epoch"), ok.get("offset")
    if not isinstance(epoch, str) or not isinstance(offset, int):
        raise BenchmarkError(f"{server.name}: sub ok without epoch and offset: {ok}")

    publisher.offsets = []
    frames = (publisher.pub(topic, numbered(i, filler)) for i in range(missed))
    await publish_frames(publisher, frames, opts.window, server, limit)
    if (
        publisher.offsets != list(range(offset + 1, offset + missed + 1))
        or publisher.epoch != epoch
    ):
        raise BenchmarkError(f"{server.name}: the pub oks were not {offset + 1}..{offset + missed}")
    publisher.offsets = None

    second = Probe(server.port, mask_key(rng))
    try:
        await open_endpoint(second, server, limit)
        replay = missed if history else 0
        hub_cpu = cpu_seconds(server.process.pid)
        redis_cpu = None if redis_server is None else cpu_seconds(redis_server.process.pid)
        started = time.perf_counter_ns()
        request = second.request(
            {"op": "sub", "topic": topic, "recover": {"epoch": epoch, "offset": offset}}, raw=True
        )
        await wait_until(
            lambda: request in second.replies and len(second.frames) >= replay,
            f"recovery of {replay} msgs ({len(second.frames)} so far)",
            server,
            [second],
            limit,
            lambda: len(second.frames),
        )
        hub_cpu = sub_or_none(cpu_seconds(server.process.pid), hub_cpu)
        if redis_server is not None:
            redis_cpu = sub_or_none(cpu_seconds(redis_server.process.pid), redis_cpu)
        ok, ok_at = second.replies[request]
        last_at = second.frames[replay - 1][0] if replay else ok_at
        end = offset + missed
        if (
            ok.get("recovered") is not history
            or ok.get("epoch") != epoch
            or ok.get("offset") != end
        ):
            raise BenchmarkError(
                f"{server.name}: recover from {epoch}:{offset} after {missed} publications"
                f" answered {ok} (expected recovered {str(history).lower()}, offset {end})"
            )
        # One live publication: it must come right after the replay, as offset end + 1.
        await publish_frames(
            publisher, iter([publisher.pub(topic, numbered(replay, filler))]), 1, server, limit
        )
        await wait_until(
            lambda: len(second.frames) >= replay + 1, "the live msg", server, [second], limit
        )
        await asyncio.sleep(0.01)  # anything extra would arrive now
        try:
            decode_msgs(second.frames, topic, epoch, end - replay + 1, filler)
        except ProtocolError as exc:
            raise BenchmarkError(f"{server.name}: recovery of {topic}: {exc}") from exc
        if len(second.frames) != replay + 1:
            raise BenchmarkError(f"{server.name}: {len(second.frames) - replay - 1} msgs too many")
    finally:
        await second.close(limit)
    return Recovery(
        (ok_at - started) / 1e6, (last_at - started) / 1e6, hub_cpu, redis_cpu, offset, end
    )


def sub_or_none(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


async def measure_recovery(
    hubs: dict[str, Server],
    redis_servers: dict[str, Server],
    sizes: Sequence[int],
    missed: int,
    runs: int,
    opts: Options,
    rng: random.Random,
) -> tuple[list[RecoveryCase], dict[str, Any]]:
    publishers: dict[str, AckPublisher] = {}
    cases = [RecoveryCase(backend, size, missed) for size in sizes for backend in BACKENDS]
    control: dict[str, Any] = {}
    try:
        for name, server in hubs.items():
            publishers[name] = AckPublisher(server.port, mask_key(rng))
            await open_endpoint(publishers[name], server, opts.timeout)
        # History off: the same recovery answers recovered false and replays nothing.
        for backend in BACKENDS:
            name = node_name(backend, OFF)
            redis_server = redis_servers[OFF] if backend == REDIS else None
            run = await recover_once(
                hubs[name],
                redis_server,
                publishers[name],
                "recover.control",
                sizes[0],
                missed,
                False,
                opts,
                rng,
            )
            control[backend] = {"recovered": False, "replayed": 0, **run.to_json()}
        log(f"recovery with history off: recovered false, nothing replayed ({', '.join(BACKENDS)})")
        for index in range(runs + 1):
            for case in cases:
                name = node_name(case.backend, ON)
                redis_server = redis_servers[ON] if case.backend == REDIS else None
                run = await recover_once(
                    hubs[name],
                    redis_server,
                    publishers[name],
                    f"recover.{case.size}",
                    case.size,
                    missed,
                    True,
                    opts,
                    rng,
                )
                if index == 0:
                    case.warmup = run
                else:
                    case.runs.append(run)
        for case in cases:
            log(
                f"recovery {case.label}: {missed} msgs in"
                f" {format_number(case.median(lambda r: r.to_last_ms))} ms (median of {runs})"
            )
    finally:
        await asyncio.gather(*(p.close(opts.timeout) for p in publishers.values()))
    return cases, control


# --- the run --------------------------------------------------------------------------------


@dataclass
class Results:
    memory: list[MemoryCase] = field(default_factory=list)
    throughput: list[ThroughputCase] = field(default_factory=list)
    recovery: list[RecoveryCase] = field(default_factory=list)
    control: dict[str, Any] = field(default_factory=dict)
    redis_version: str | None = None


async def run_all(
    hubs: dict[str, Server],
    redis_servers: dict[str, Server],
    args: argparse.Namespace,
    opts: Options,
) -> Results:
    rng = random.Random(args.seed)
    results = Results()
    clients = {
        state: redis.Redis(
            host=HOST,
            port=server.port,
            socket_timeout=opts.timeout,
            socket_connect_timeout=opts.timeout,
        )
        for state, server in redis_servers.items()
    }
    try:
        results.redis_version = str(clients[ON].info("server").get("redis_version"))
        if "memory" in args.phases:
            results.memory = await measure_memory(
                hubs, clients, args.sizes, args.topics, args.messages, opts, args.settle, rng
            )
        if "throughput" in args.phases:
            results.throughput = await measure_throughput(
                hubs, redis_servers, args.sizes, opts, args.repeat, rng
            )
        if "recovery" in args.phases:
            results.recovery, results.control = await measure_recovery(
                hubs, redis_servers, args.sizes, args.missed, args.recovery_runs, opts, rng
            )
    except redis.RedisError as exc:
        raise BenchmarkError(f"Redis: {exc!r}") from exc
    finally:
        for client in clients.values():
            client.close()
    return results


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The cost of history: publish throughput, memory and Redis with history on"
        " against history off, in the same run, on the memory and the Redis backend; and the"
        " time to recover missed messages.",
        epilog="In --hub-cmd, {python}, {bin} (its scripts folder), {host} and {port} are filled"
        " in; --backend, --node-id, --history-size and --recovery-limit (and --redis-prefix) are"
        f" appended. Everything runs on {HOST}.",
    )
    parser.add_argument("--sizes", **SIZES_OPTION)
    parser.add_argument(
        "--phases",
        type=csv_of(phase_name),
        default=list(PHASES),
        help="what to measure: memory,throughput,recovery (default all three, in this order)",
    )
    parser.add_argument(
        "--history-size",
        type=int,
        default=1000,
        help="--history-size of the nodes with history (default 1000; the others have 0)",
    )
    parser.add_argument(
        "--recovery-limit",
        type=int,
        default=1000,
        help="--recovery-limit of every node (default 1000)",
    )
    parser.add_argument(
        "--subscribers",
        type=int,
        default=4,
        help="throughput: subscribers of the published topic per node (default 4)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=64,
        help="pubs sent and not yet answered with an ok (default 64, the hub's"
        " --max-pending-publishes)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=2.0,
        help="throughput: timed seconds per node and case (default 2)",
    )
    parser.add_argument(
        "--slice",
        type=float,
        default=0.25,
        help="throughput: history off and on take turns every this many seconds (default 0.25)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="throughput: untimed seconds of load per node before each case (default 0.5)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="throughput: repetitions of every case; medians are reported (default 3)",
    )
    parser.add_argument(
        "--topics", type=int, default=1000, help="memory: topics per payload size (default 1000)"
    )
    parser.add_argument(
        "--messages", type=int, default=100, help="memory: messages per topic (default 100)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="memory: quiet seconds before each reading (default 0.5)",
    )
    parser.add_argument(
        "--missed",
        type=int,
        default=1000,
        help="recovery: publications missed while away (default 1000)",
    )
    parser.add_argument(
        "--recovery-runs",
        type=int,
        default=7,
        help="recovery: timed recoveries per backend and size, after one untimed (default 7)",
    )
    parser.add_argument("--seed", **SEED_OPTION)
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="limit for connecting, each wait for a reply or a message, closing and Redis"
        " commands, seconds (default 20)",
    )
    parser.add_argument("--startup-timeout", **STARTUP_TIMEOUT_OPTION)
    parser.add_argument("--redis-server", **REDIS_SERVER_OPTION)
    parser.add_argument("--hub-cmd", **NODE_CMD_OPTION)
    parser.add_argument("--json", **JSON_OPTION)
    args = parser.parse_args(argv)
    for name in ("subscribers", "window", "repeat", "topics", "messages", "missed"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.history_size < 1 or args.recovery_limit < 1 or args.recovery_runs < 1:
        parser.error("--history-size, --recovery-limit and --recovery-runs must be at least 1")
    if args.missed > min(args.history_size, args.recovery_limit):
        parser.error("--missed must be at most --history-size and --recovery-limit")
    if any(size < MIN_SIZE or size > 2**20 for size in args.sizes):
        parser.error(f"--sizes must be within {MIN_SIZE}..{2**20}")
    if args.duration <= 0 or args.slice <= 0 or args.warmup < 0 or args.settle < 0:
        parser.error("--duration and --slice must be positive, --warmup and --settle not negative")
    if not args.redis_server:
        parser.error("no redis-server on PATH: name one with --redis-server")
    args.sizes = sorted(set(args.sizes))
    return args


def phase_name(text: str) -> str:
    text = text.strip()
    if text not in PHASES:
        raise ValueError(f"a phase is one of {', '.join(PHASES)}, not {text!r}")
    return text


def render_throughput(cases: Sequence[ThroughputCase]) -> str:
    rows: list[Sequence[str]] = [
        (
            "case",
            "off pub/s",
            "on pub/s",
            "ratio on/off",
            "slice IQR",
            "hub us CPU/pub off / on",
            "Redis us CPU/pub off / on",
            "client CPU",
        )
    ]
    for case in cases:
        low, high = case.slice_spread()
        rows.append(
            (
                case.label,
                f"{case.rate(OFF):,.0f}",
                f"{case.rate(ON):,.0f}",
                f"{case.ratio():.2f}",
                f"{low:.2f}-{high:.2f}",
                " / ".join(format_number(case.hub_us(state), 1) for state in STATES),
                " / ".join(format_number(case.redis_us(state), 1) for state in STATES)
                if case.backend == REDIS
                else "-",
                format_client_load(case.client_load()),
            )
        )
    return format_table(rows)


def throughput_notes(opts: Options, history_size: int) -> str:
    return f"""\
pub/s: publications answered per second by a node with --history-size 0 (off) and
  {history_size} (on); one publisher keeps {opts.window} pubs unanswered; x{opts.subscribers}: \
subscribers of the topic
ratio on/off: on pub/s / off pub/s, paired per repetition (median); below 1 is history's cost
{SLICE_IQR_NOTE}
hub us CPU/pub: the node's CPU time (all threads) per publication, microseconds
Redis us CPU/pub: the node's own redis-server's CPU time per publication (not in the hub column)
{CLIENT_CPU_NOTE}"""


def render_memory(cases: Sequence[MemoryCase]) -> str:
    rows: list[Sequence[str]] = [
        (
            "case",
            "memory hub RSS off / on",
            "hub B/msg",
            "Redis used_memory off / on",
            "Redis B/msg",
            "redis hub RSS off / on",
            "pub/s memory off / on",
            "pub/s redis off / on",
        )
    ]

    def mib(value: float) -> str:
        return f"{value / 2**20:+.1f} MiB"

    for case in cases:
        rss = {name: kib * 1024 for name, kib in case.rss_kib.items()}
        redis_per = case.redis_per_message()
        rows.append(
            (
                case.label,
                " / ".join(mib(rss[node_name(MEMORY, s)]) for s in STATES),
                f"{case.hub_per_message(MEMORY):,.0f}",
                " / ".join(mib(case.redis_bytes[s]) for s in STATES),
                "n/a" if redis_per is None else f"{redis_per:,.0f}",
                " / ".join(mib(rss[node_name(REDIS, s)]) for s in STATES),
                " / ".join(
                    f"{case.count / case.seconds[node_name(MEMORY, s)]:,.0f}" for s in STATES
                ),
                " / ".join(
                    f"{case.count / case.seconds[node_name(REDIS, s)]:,.0f}" for s in STATES
                ),
            )
        )
    return format_table(rows)


MEMORY_NOTES = """\
case: payload size, topics x messages per topic published (each size on fresh topics, smallest
  first; a row is the growth since the previous reading)
memory hub RSS off / on: growth of the memory-backend node's VmRSS without and with history
hub B/msg, Redis B/msg: (on - off) / messages: what history costs per message, in the memory
  node's RSS or in Redis's used_memory
Redis used_memory off / on: growth of INFO memory used_memory of the redis-server of the Redis
  node without and with history
redis hub RSS off / on: growth of the Redis-backend nodes' VmRSS (history lives in Redis)
pub/s: publications per second while publishing them (pipelined, untimed otherwise)"""


def render_recovery(cases: Sequence[RecoveryCase], missed: int) -> str:
    rows: list[Sequence[str]] = [
        (
            "case",
            f"ms to {missed:,}th msg",
            "min-max ms",
            "ms to ok",
            "replayed msg/s",
            "hub CPU ms",
            "Redis CPU ms",
        )
    ]
    for case in cases:
        to_last = case.median(lambda r: r.to_last_ms)
        times = [run.to_last_ms for run in case.runs]
        rows.append(
            (
                case.label,
                format_number(to_last, 1),
                f"{min(times):.1f}-{max(times):.1f}",
                format_number(case.median(lambda r: r.to_ok_ms), 1),
                "n/a" if not to_last else f"{missed / to_last * 1e3:,.0f}",
                format_number(case.median(lambda r: to_ms(r.hub_cpu)), 1),
                format_number(case.median(lambda r: to_ms(r.redis_cpu)), 1)
                if case.backend == REDIS
                else "-",
            )
        )
    return format_table(rows)


def recovery_notes(missed: int, runs: int) -> str:
    return f"""\
ms to {missed:,}th msg: from writing the sub with recover (after missing {missed:,} publications)
  until the last replayed msg was read, median of {runs} runs (after one untimed); every run got
  recovered: true, exactly the missed offsets in order with their payloads, then the next live one
ms to ok: from writing the sub until its ok was read (the ok comes before the replay)
replayed msg/s: {missed:,} / the median time
hub CPU ms, Redis CPU ms: the node's and its redis-server's CPU time around one recovery (median)"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        args.subscribers,
        args.window,
        1.0,  # fanout's paced rate: not used here
        args.duration,
        args.slice,
        args.warmup,
        args.timeout,
    )
    slices = slice_count(opts.duration, opts.slice)
    estimate = 3.0
    if "throughput" in args.phases:
        per_case = 2 * (opts.duration + opts.warmup + slices * (SETTLE + 0.03) + 0.2)
        estimate += 2 * len(args.sizes) * args.repeat * per_case
    if "memory" in args.phases:
        estimate += len(args.sizes) * (4 * args.topics * args.messages / 15_000 + args.settle + 1)
    if "recovery" in args.phases:
        estimate += 2 * len(args.sizes) * (args.recovery_runs + 1) * (args.missed / 8_000 + 0.1)
    log(f"about {estimate:.0f} s")

    exit_on_sigterm()
    source = source_version()  # what the nodes run: read before they start
    started: dict[str, Server] = {}
    logs: dict[str, str] = {}
    argvs: dict[str, list[str]] = {}
    warnings: list[str] = []
    notes: list[str] = []
    results = Results()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="history-bench-") as folder:
        try:
            redis_servers: dict[str, Server] = {}
            for state in STATES:
                folder_of = f"{folder}/{state}"
                redis_cmd = DEFAULT_REDIS_CMD.replace(
                    "{redis}", shlex.quote(args.redis_server)
                ).replace("{dir}", shlex.quote(folder_of))
                os.mkdir(folder_of)
                started[redis_name(state)] = redis_servers[state] = Server.start(
                    redis_name(state), redis_cmd, args.startup_timeout, None
                )
            hub_cmd = fill_template(args.hub_cmd)
            hubs: dict[str, Server] = {}
            for backend in BACKENDS:
                for state in STATES:
                    name = node_name(backend, state)
                    if backend == MEMORY:
                        flags = " --backend memory://"
                    else:
                        url = f"redis://{HOST}:{redis_servers[state].port}/0"
                        flags = f" --backend {url} --redis-prefix {PREFIX}"
                    size = args.history_size if state == ON else 0
                    flags += (
                        f" --node-id {name} --history-size {size}"
                        f" --recovery-limit {args.recovery_limit}"
                    )
                    started[name] = hubs[name] = Server.start(
                        name, hub_cmd + flags, args.startup_timeout, None
                    )
            for name, server in started.items():
                argvs[name] = server.argv
                log(f"{name} on port {server.port}: {shlex.join(server.argv)}")
            results = asyncio.run(run_all(hubs, redis_servers, args, opts))
        except (BenchmarkError, KeyboardInterrupt) as exc:
            failed = exit_status(exc)
        finally:
            # The hubs first (their logs include the shutdown), then Redis.
            for name in sorted(started, key=lambda name: name.startswith(REDIS_SERVER)):
                logs[name] = stop_and_read(started[name], 15.0)

    for name, text in logs.items():
        if name.startswith(REDIS_SERVER):
            _, lines = log_summary(name, text, REDIS_WARNING)
            notes.extend(f"log {line.strip()[:200]}" for line in lines)
        else:
            count, lines = log_summary(f"node {name}", text, HUB_TROUBLE)
            if count:
                warnings.append(
                    f"{name}'s log has {count} warning/error lines; the first ones:\n"
                    + "\n".join(lines)
                )
    if failed:
        for warning in warnings:
            log(f"warning: {warning}")
        return failed
    for case in results.throughput:
        if case.client_load() > CLIENT_BOUND_CPU:
            warnings.append(f"{case.label}: the load client may have been the limit")

    config = {
        "phases": args.phases,
        "sizes": args.sizes,
        "history_size_on": args.history_size,
        "recovery_limit": args.recovery_limit,
        "subscribers": opts.subscribers,
        "window": opts.window,
        "duration_s": opts.duration,
        "slice_s": opts.duration / slices,
        "settle_s": SETTLE,
        "warmup_s": opts.warmup,
        "repeat": args.repeat,
        "topics": args.topics,
        "messages_per_topic": args.messages,
        "memory_settle_s": args.settle,
        "missed": args.missed,
        "recovery_runs": args.recovery_runs,
        "seed": args.seed,
    }
    if args.json:
        report = {
            "environment": {
                **environment(),
                "source": source,
                "redis_version": results.redis_version,
            },
            "config": config,
            "servers": {name: {"argv": argvs.get(name), "log": logs[name]} for name in logs},
            "throughput": [case.to_json() for case in results.throughput],
            "memory": [case.to_json() for case in results.memory],
            "recovery": [case.to_json() for case in results.recovery],
            "recovery_with_history_off": results.control,
            "warnings": warnings,
            "notes": notes,
        }
        print(json.dumps(report, indent=2))
        return 0

    env = environment()
    print(
        f"history benchmark: history off (--history-size 0) against on (--history-size"
        f" {args.history_size}), --recovery-limit {args.recovery_limit}, on memory:// and on"
        f" Redis (a redis-server per node); Python {env['python']}, {env['cpus']} CPUs, Redis"
        f" {results.redis_version}, source {source}"
    )
    if results.throughput:
        print()
        print(
            f"Publish throughput: window {opts.window}, {opts.duration:g} s per node and case in"
            f" {slices} slices, repeat {args.repeat}"
        )
        print(render_throughput(results.throughput))
        print(throughput_notes(opts, args.history_size))
    if results.memory:
        print()
        print(f"Memory: {args.topics:,} topics x {args.messages:,} messages per payload size")
        print(render_memory(results.memory))
        print(MEMORY_NOTES)
    if results.recovery:
        print()
        print(f"Recovery of {args.missed:,} missed messages ({args.recovery_runs} runs per case)")
        print(render_recovery(results.recovery, args.missed))
        print(recovery_notes(args.missed, args.recovery_runs))
        print(
            "history off (--history-size 0): the same sub answered recovered: false and replayed"
            f" nothing, on {' and '.join(results.control)}"
        )
    for warning in warnings:
        print(f"warning: {warning}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
