"""Fan-out benchmark: hub-server against a naive ``websockets`` hub, one topic, many subscribers.

Both servers run as subprocesses on free loopback ports. This process holds, for each server,
``--subscribers`` connections subscribed to one topic plus one publisher connection, and loads
one server at a time, taking turns in short timed slices (ABBA order), so that the noise of a
shared machine falls on both alike. Read the ratio column, not the absolute rates.

Two measurements per payload size:

- **saturation**: the publisher keeps at most ``--window`` publications outstanding, as judged
  by one designated subscriber's receipts, and publishes again for every receipt. Reported:
  deliveries per second (``msg`` frames received across all subscribers per second) and the
  server's CPU time per delivery (``/proc/PID/task/*/schedstat``, nanosecond resolution).
- **paced**: the publisher publishes ``--rate`` publications per second on a fixed schedule;
  every subscriber reads the publication's scheduled time from its ``data`` and reports the
  delivery latency (p50/p99 over all deliveries).

The load client is deliberately minimal and uses the standard library only (it imports neither
hub nor websockets). Subscribers count ``msg`` frames by their header; the designated
subscriber decodes and checks every ``msg`` (fields, offsets in order with no gap, payload).
Before each payload size and once at the end, every subscriber decodes and checks publications
too, including that its offsets show no loss since it subscribed.

Run ``python benchmarks/fanout.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echo import (
    CLIENT_BOUND_CPU,
    CLIENT_CPU_NOTE,
    HOST,
    JSON_OPTION,
    OP_TEXT,
    REPO_ROOT,
    SETTLE,
    SLICE_IQR_NOTE,
    STARTUP_TIMEOUT_OPTION,
    BenchmarkError,
    Connection,
    ProtocolError,
    Server,
    alternate,
    check_connections,
    client_frame,
    close_all,
    csv_of,
    environment,
    exit_on_sigterm,
    exit_status,
    format_client_load,
    format_number,
    format_size,
    format_table,
    json_report,
    log,
    log_warnings,
    median_or_none,
    parse_size,
    quartile_range,
    rounds,
    script_command,
    slice_count,
    slice_ratios,
    started_servers,
    stat_cpu_seconds,
    sum_or_none,
)

HUB = "hub"
NAIVE = "naive"
NAIVE_SCRIPT = Path(__file__).resolve().parent / "peers" / "naive_hub.py"
#: The naive peer has no limits: lift the hub's queue, publish-rate and handshake-rate limits
#: the same way (a thousand subscribers connect from one address).
DEFAULT_HUB_CMD = (
    "{bin}/hub-server --host {host} --port {port} --ping-interval 60"
    " --outbox-messages 100000 --outbox-bytes 100000000"
    " --publish-rate 1000000000 --publish-burst 1000000"
    " --handshake-rate 1000000000 --handshake-burst 1000000"
)
DEFAULT_NAIVE_CMD = script_command(NAIVE_SCRIPT) + " --ping-interval 60"

SUBPROTOCOL = "hub.v1.json"
TOPIC = "bench"
# ``data`` is a string: the publication's timestamp (perf_counter_ns, zero-padded) then filler.
TS_DIGITS = 20
MIN_SIZE = TS_DIGITS
FILLER_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-"
PUB_PREFIX = b'{"op":"pub","topic":"' + TOPIC.encode() + b'","data":"'
PUB_SUFFIX = b'"}'
DATA_KEY = b'"data":"'
# Where to look for the timestamp in a msg frame (hub and the naive hub both put ``data`` early).
TS_SEARCH = 160
MSG_FIELDS = ("op", "topic", "sub", "data", "offset", "epoch")
FIRST_TEXT = 0x80 | OP_TEXT  # an unfragmented text frame, no RSV bits

# Subscribers are connected this many at a time (listen backlogs are about 100).
CONNECT_BATCH = 100
# How often a drain checks whether every delivery arrived, seconds.
POLL = 0.001
# A paced slice is flagged when a publication went out this late (ns) against its schedule.
PACE_SLIP_NS = 5_000_000

FULL, COUNT, TIME = 0, 1, 2  # what a subscriber does with each msg frame


# --- frames ---------------------------------------------------------------------------------


def make_filler(size: int) -> bytes:
    """The ``data`` string after the timestamp: ASCII that JSON does not escape."""
    rng = random.Random(size)
    return bytes(rng.choices(FILLER_ALPHABET, k=size - TS_DIGITS))


def pub_text(timestamp: int, filler: bytes) -> bytes:
    return PUB_PREFIX + b"%020d" % timestamp + filler + PUB_SUFFIX


def timestamp_of(payload: bytes) -> int:
    """The publication time in a ``msg`` frame's ``data`` (fast path for compact JSON)."""
    index = payload.find(DATA_KEY, 0, TS_SEARCH)
    if index >= 0:
        start = index + len(DATA_KEY)
        digits = payload[start : start + TS_DIGITS]
        if digits.isdigit():
            return int(digits)
    data = json.loads(payload)["data"]
    return int(data[:TS_DIGITS])


def json_object(payload: bytes) -> dict[str, Any]:
    """A text frame's JSON object, or ProtocolError."""
    try:
        message = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON from the server: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"not a JSON object: {payload[:80]!r}")
    return message


def check_sub_ok(ok: dict[str, Any]) -> tuple[int, str]:
    """The topic's offset and epoch from the ``ok`` to a ``sub``, or ProtocolError."""
    offset, epoch = ok.get("offset"), ok.get("epoch")
    if not isinstance(offset, int) or not isinstance(epoch, str):
        raise ProtocolError(f"sub ok without offset and epoch: {ok}")
    return offset, epoch


# --- connections ----------------------------------------------------------------------------


class Endpoint(Connection):
    """One client connection: upgrade with ``hub.v1.json``, then decode every text frame."""

    def __init__(self, port: int, key: bytes) -> None:
        super().__init__(port, key, SUBPROTOCOL)
        self.welcomed: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending = b""  # an incomplete frame from the last read

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.welcomed.done():
            self.welcomed.set_exception(ProtocolError(self.error or "closed before welcome"))

    def send_text(self, text: bytes) -> None:
        self.write(client_frame(OP_TEXT, text, self._key))

    # incoming bytes

    def _feed(self, data: bytes) -> None:
        """Split ``data`` into frames; decode each text frame with :meth:`_message`."""
        if self._pending:
            data = self._pending + data
        end = len(data)
        pos = 0
        try:
            while end - pos >= 2:
                first = data[pos]
                length = data[pos + 1]
                start = pos + 2
                if length >= 126:
                    start, length = self._long_length(data, pos, length)
                    if start > end:
                        break
                stop = start + length
                if stop > end:
                    break
                if first == FIRST_TEXT:
                    self._message(data[start:stop], time.perf_counter_ns())
                else:
                    self._other_frame(first, data[start:stop])
                pos = stop
        except ProtocolError as exc:
            self._fail(str(exc))
            return
        self._pending = data[pos:]

    @staticmethod
    def _long_length(data: bytes, pos: int, length: int) -> tuple[int, int]:
        """(payload start, payload length) of a frame with an extended length, or a masked one."""
        if length == 126:
            start = pos + 4
        elif length == 127:
            start = pos + 10
        else:
            raise ProtocolError("the server masked a frame")
        if start > len(data):
            return start, 0
        return start, int.from_bytes(data[pos + 2 : start], "big")

    def _other_frame(self, first: int, payload: bytes) -> None:
        """A frame that is not an unfragmented text frame: control frames only."""
        if first & 0xF0 != 0x80 or not first & 0x08:
            raise ProtocolError(f"unexpected frame (first byte {first:#04x}): hub.v1.json")
        if len(payload) > 125:
            raise ProtocolError("control frame longer than 125 bytes")
        self._control(first, payload)

    def _message(self, payload: bytes, now: int) -> bool:
        """Decode and act on one text frame; return whether it was a ``msg``."""
        message = json_object(payload)
        op = message.get("op")
        if op == "welcome":
            if self.welcomed.done():
                raise ProtocolError("a second welcome")
            self.welcomed.set_result(message)
            return False
        if not self.welcomed.done():
            raise ProtocolError(f"first frame is not a welcome: {payload[:80]!r}")
        if op == "error":
            raise ProtocolError(f"error frame: {payload[:200]!r}")
        return self._reply(message, now)

    def _reply(self, message: dict[str, Any], now: int) -> bool:
        raise ProtocolError(f"unexpected frame {json.dumps(message)[:200]}")


class Subscriber(Endpoint):
    """A subscriber. In COUNT mode it reads ``msg`` frames by header only; in TIME mode it also
    reads the timestamp; in FULL mode (and always when designated) it decodes and checks each.
    """

    def __init__(self, port: int, key: bytes, pool: Pool, designated: bool) -> None:
        super().__init__(port, key)
        self.pool = pool
        self.designated = designated
        self.mode = FULL
        self.received = 0  # msg frames since subscribing
        self.base_offset = 0  # the topic's offset when the subscription started
        self.epoch: str | None = None
        self._batch = 0  # msg frames counted so far in the current read
        self._subscribed: asyncio.Future[dict[str, Any]] | None = None

    async def subscribe(self) -> None:
        self._subscribed = self._loop.create_future()
        self.send_text(json.dumps({"op": "sub", "topic": TOPIC, "id": 1}).encode())
        self.base_offset, self.epoch = check_sub_ok(await self._subscribed)

    def _reply(self, message: dict[str, Any], now: int) -> bool:
        op = message.get("op")
        if op == "ok" and message.get("id") == 1 and self._subscribed is not None:
            if self._subscribed.done():
                raise ProtocolError("a second ok")
            self._subscribed.set_result(message)
            return False
        if op != "msg":
            return super()._reply(message, now)
        self._check_msg(message, now)
        return True

    def _check_msg(self, message: dict[str, Any], now: int) -> None:
        if self.epoch is None:
            raise ProtocolError("msg before the sub ok")
        missing = [name for name in MSG_FIELDS if name not in message]
        if missing:
            raise ProtocolError(f"msg without {', '.join(missing)}")
        if message["topic"] != TOPIC or message["sub"] != TOPIC:
            raise ProtocolError(f"msg for topic {message['topic']!r}, sub {message['sub']!r}")
        if message["epoch"] != self.epoch:
            raise ProtocolError(f"epoch changed from {self.epoch!r} to {message['epoch']!r}")
        expected = self.base_offset + self.received + self._batch + 1
        if message["offset"] != expected:
            raise ProtocolError(
                f"offset {message['offset']!r}, expected {expected}"
                f" ({self.received + self._batch} msgs received since subscribing)"
            )
        data = message["data"]
        if (
            not isinstance(data, str)
            or not data[:TS_DIGITS].isdigit()
            or data[TS_DIGITS:].encode() != self.pool.filler
        ):
            raise ProtocolError(f"data altered: {str(data)[:60]!r}...")
        latency = now - int(data[:TS_DIGITS])
        if self.designated:
            self.pool.designated_latency.append(latency)
        if self.mode == TIME:
            self.pool.latency.append(latency)

    def _feed(self, data: bytes) -> None:
        """The hot path: count ``msg`` frames without decoding unless the mode asks for it."""
        if self._pending:
            data = self._pending + data
        self.pool.reads += 1
        end = len(data)
        pos = 0
        count = 0
        mode = FULL if self.designated else self.mode
        now = time.perf_counter_ns()
        latency = self.pool.latency
        try:
            while end - pos >= 2:
                first = data[pos]
                length = data[pos + 1]
                start = pos + 2
                if length >= 126:
                    start, length = self._long_length(data, pos, length)
                    if start > end:
                        break
                stop = start + length
                if stop > end:
                    break
                if first == FIRST_TEXT:
                    if mode == COUNT:
                        count += 1
                    elif mode == TIME:
                        latency.append(now - timestamp_of(data[start : start + TS_SEARCH]))
                        count += 1
                    else:
                        self._batch = count
                        count += self._message(data[start:stop], now)
                else:
                    self._other_frame(first, data[start:stop])
                pos = stop
        except (ProtocolError, ValueError, KeyError) as exc:
            self._fail(str(exc))
            return
        self._pending = data[pos:]
        if count:
            self.received += count
            self._batch = 0
            self.pool.delivered += count
            if self.designated:
                self.pool.on_designated_receipt()


class Publisher(Endpoint):
    """The publisher: ``pub`` frames without ``id``, so the server sends nothing back."""


# --- servers --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """CPU time of all threads of ``pid``: schedstat (ns) if the kernel has it, else ticks."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                total += int(file.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return stat_cpu_seconds(pid)


def user_cpu_seconds(pid: int) -> float | None:
    """User-mode CPU time of ``pid`` (clock ticks): the Python side, without the kernel's
    share of socket writes (which on loopback also pays for the receiver's TCP input)."""
    return stat_cpu_seconds(pid, user_only=True)


def fill_template(template: str) -> str:
    """Fill ``{bin}`` (this Python's scripts folder); echo.Server fills the rest."""
    return template.replace("{bin}", shlex.quote(str(Path(sys.executable).parent)))


def source_version() -> str | None:
    """``git describe`` of the working tree the servers run from (``-dirty``: uncommitted)."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def raise_file_limit(needed: int, hint: str = "") -> None:
    """Raise the soft RLIMIT_NOFILE (the servers inherit it) to ``needed``, if allowed; else
    BenchmarkError, ending with ``hint``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchmarkError(f"need {needed} file descriptors, the hard limit is {hard}{hint}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    log(f"raised RLIMIT_NOFILE from {soft} to {needed}")


# --- measurement ----------------------------------------------------------------------------


def per_million(numerator: float | None, denominator: int) -> float | None:
    """Microseconds per unit: CPU seconds over a count, or None."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator * 1e6


@dataclass(frozen=True)
class Run:
    """What one server did in one or more timed slices."""

    deliveries: int
    publications: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    backlog: int  # deliveries still missing when publishing stopped (summed over slices)
    reads: int  # the subscribers' reads (data_received calls) in the timed window
    late_ns: int = 0  # paced runs: the latest a publication went out against its schedule
    server_user: float | None = None  # the user-mode part of server_cpu

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    @property
    def client_load(self) -> float:
        return self.client_cpu / self.seconds

    @property
    def cpu_per_delivery_us(self) -> float | None:
        return per_million(self.server_cpu, self.deliveries)

    @property
    def user_per_delivery_us(self) -> float | None:
        return per_million(self.server_user, self.deliveries)

    @staticmethod
    def total(runs: Sequence[Run]) -> Run:
        return Run(
            sum(run.deliveries for run in runs),
            sum(run.publications for run in runs),
            sum(run.seconds for run in runs),
            sum(run.client_cpu for run in runs),
            sum_or_none(run.server_cpu for run in runs),
            sum(run.backlog for run in runs),
            sum(run.reads for run in runs),
            max((run.late_ns for run in runs), default=0),
            sum_or_none(run.server_user for run in runs),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "publications": self.publications,
            "seconds": self.seconds,
            "deliveries_per_s": self.rate,
            "server_cpu_s": self.server_cpu,
            "server_cpu_us_per_delivery": self.cpu_per_delivery_us,
            "server_user_us_per_delivery": self.user_per_delivery_us,
            "client_cpu_s": self.client_cpu,
            "backlog_at_stop": self.backlog,
            "deliveries_per_read": self.deliveries / self.reads if self.reads else None,
            "max_publish_late_ms": self.late_ns / 1e6,
        }


@dataclass
class Options:
    subscribers: int
    window: int
    rate: float
    duration: float
    slice: float
    warmup: float
    timeout: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        return cls(
            args.subscribers,
            args.window,
            args.rate,
            args.duration,
            args.slice,
            args.warmup,
            args.timeout,
        )


class Pool:
    """One server's subscribers and publisher, loaded only while measuring or warming up."""

    def __init__(self, server: Server, opts: Options, rng: random.Random) -> None:
        self.server = server
        self.opts = opts
        self._loop = asyncio.get_running_loop()
        self._key = bytes(rng.randrange(1, 256) for _ in range(4))  # no zero bytes
        self.subscribers = [
            Subscriber(server.port, bytes(rng.randrange(1, 256) for _ in range(4)), self, i == 0)
            for i in range(opts.subscribers)
        ]
        self.designated = self.subscribers[0]
        self.publisher = Publisher(server.port, self._key)
        # Every connection with the port it connects to, the publisher first.
        self.ports: list[tuple[Endpoint, int]] = [
            (endpoint, server.port) for endpoint in (self.publisher, *self.subscribers)
        ]
        self.filler = b""
        self.published = 0
        self.delivered = 0  # msg frames received by all subscribers
        self.reads = 0  # data_received calls of all subscribers
        self.latency: list[int] = []  # ns, every delivery of a paced slice
        self.designated_latency: list[int] = []  # ns, every delivery to the designated one
        self._running = False

    @property
    def name(self) -> str:
        return self.server.name

    def servers(self) -> list[Server]:
        return [self.server]

    async def connect(self) -> None:
        """Connect every endpoint in ``ports``, CONNECT_BATCH at a time: each waits for its
        welcome, and the subscribers subscribe."""

        async def connect(endpoint: Endpoint, port: int) -> None:
            await self._loop.create_connection(lambda: endpoint, HOST, port)
            await endpoint.opened
            if endpoint.error:
                raise ProtocolError(endpoint.error)
            await endpoint.welcomed
            if isinstance(endpoint, Subscriber):
                await endpoint.subscribe()

        try:
            async with asyncio.timeout(self.opts.timeout):
                for i in range(0, len(self.ports), CONNECT_BATCH):
                    batch = self.ports[i : i + CONNECT_BATCH]
                    await asyncio.gather(*(connect(endpoint, port) for endpoint, port in batch))
        except (OSError, TimeoutError, ProtocolError) as exc:
            self.check_alive()
            self.check()
            n = len(self.subscribers)
            raise BenchmarkError(f"{self.name}: cannot open and subscribe {n}: {exc!r}") from exc
        self.check()

    async def open(self) -> None:
        await self.connect()
        epochs = {subscriber.epoch for subscriber in self.subscribers}
        if len(epochs) != 1:
            raise BenchmarkError(f"{self.name}: subscribers got different epochs: {epochs}")

    def check_alive(self) -> None:
        for server in self.servers():
            server.check_alive()

    def check(self) -> None:
        check_connections(self.server, [self.publisher, *self.subscribers], self.name)

    def set_mode(self, mode: int) -> None:
        for subscriber in self.subscribers:
            subscriber.mode = mode

    # publishing

    def publish(self, count: int, timestamp: int) -> None:
        frame = client_frame(OP_TEXT, pub_text(timestamp, self.filler), self._key)
        self.publisher.write(frame * count)
        self.published += count

    def _top_up(self) -> None:
        missing = self.opts.window - (self.published - self.designated.received)
        if missing > 0:
            self.publish(missing, time.perf_counter_ns())

    def on_designated_receipt(self) -> None:
        if self._running:
            self._top_up()

    async def drain(self) -> int:
        """Wait until every subscriber has every publication; return the deliveries that were
        missing when called."""
        expected = self.published * len(self.subscribers)
        missing = expected - self.delivered
        deadline = self._loop.time() + self.opts.timeout
        while self.delivered < expected:
            self.check()
            if self._loop.time() > deadline:
                behind = sum(s.received < self.published for s in self.subscribers)
                raise BenchmarkError(
                    f"{self.name}: {expected - self.delivered} deliveries missing "
                    f"{self.opts.timeout:g} s after publishing stopped ({behind} subscribers "
                    "behind)"
                )
            await asyncio.sleep(POLL)
        if self.delivered > expected:
            raise BenchmarkError(f"{self.name}: {self.delivered - expected} deliveries too many")
        self.check()
        return missing

    async def verify(self, filler: bytes) -> None:
        """Every subscriber decodes and checks two publications (payload, order, no loss)."""
        self.filler = filler
        self.set_mode(FULL)
        for _ in range(2):
            self.publish(1, time.perf_counter_ns())
            await self.drain()
        self.set_mode(COUNT)

    # load

    async def saturate(self, seconds: float) -> None:
        """Untimed load."""
        self._running = True
        self._top_up()
        await asyncio.sleep(seconds)
        self._running = False
        await self.drain()

    async def measure_saturated(self, seconds: float) -> Run:
        """Publish as fast as the designated subscriber's receipts allow; count for ``seconds``."""
        self._running = True
        self._top_up()
        await asyncio.sleep(SETTLE)
        delivered, published, reads = self.delivered, self.published, self.reads
        wall, cpu, server = time.perf_counter(), time.process_time(), self._server_cpu()
        await asyncio.sleep(seconds)
        delivered, published = self.delivered - delivered, self.published - published
        reads = self.reads - reads
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        used, user = self._server_cpu_since(server)
        self._running = False
        backlog = await self.drain()
        return Run(delivered, published, wall, cpu, used, backlog, reads, server_user=user)

    async def measure_paced(self, seconds: float) -> Run:
        """Publish ``rate`` per second on a fixed schedule; every subscriber records latency.

        The timestamp in each publication is the time it is written to the socket. How late
        that is against the schedule (the event loop's timer granularity, about 1 ms, or a busy
        client) is recorded in ``late_ns`` and not counted as latency.
        """
        self.set_mode(TIME)
        interval = 1e9 / self.opts.rate
        count = max(1, round(seconds * self.opts.rate))
        delivered, reads = self.delivered, self.reads
        wall, cpu, server = time.perf_counter(), time.process_time(), self._server_cpu()
        start = time.perf_counter_ns()
        late = 0
        sent = 0
        while sent < count:
            now = time.perf_counter_ns()
            due = min(count, int((now - start) / interval) + 1)
            if due > sent:
                late = max(late, now - int(start + sent * interval))
                for _ in range(sent, due):
                    self.publish(1, time.perf_counter_ns())
                sent = due
            await asyncio.sleep(max(0.0, (start + sent * interval - time.perf_counter_ns()) / 1e9))
        await self.drain()
        delivered, reads = self.delivered - delivered, self.reads - reads
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        used, user = self._server_cpu_since(server)
        self.set_mode(COUNT)
        return Run(delivered, count, wall, cpu, used, 0, reads, late, user)

    def _server_cpu(self) -> tuple[float | None, float | None]:
        """The server's CPU time so far: all of it, and its user-mode part."""
        pid = self.server.process.pid
        return cpu_seconds(pid), user_cpu_seconds(pid)

    def _server_cpu_since(
        self, before: tuple[float | None, float | None]
    ) -> tuple[float | None, float | None]:
        after = self._server_cpu()
        return (
            None if before[0] is None or after[0] is None else after[0] - before[0],
            None if before[1] is None or after[1] is None else after[1] - before[1],
        )

    async def close(self, grace: float) -> list[str]:
        return await close_all([self.publisher, *self.subscribers], grace)


@dataclass
class CaseResult:
    """All repetitions of one payload size: per server, the slices of each repetition."""

    size: int
    subscribers: int
    saturated: dict[str, list[list[Run]]] = field(default_factory=lambda: {HUB: [], NAIVE: []})
    paced: dict[str, list[list[Run]]] = field(default_factory=lambda: {HUB: [], NAIVE: []})
    latency: dict[str, list[int]] = field(default_factory=lambda: {HUB: [], NAIVE: []})
    saturated_latency: dict[str, list[int]] = field(default_factory=lambda: {HUB: [], NAIVE: []})

    @property
    def label(self) -> str:
        return f"{format_size(self.size)} x{self.subscribers}"

    def runs(self, name: str, paced: bool = False) -> list[Run]:
        return [Run.total(slices) for slices in (self.paced if paced else self.saturated)[name]]

    def rate(self, name: str) -> float:
        return statistics.median(run.rate for run in self.runs(name))

    def cpu_us(self, name: str, paced: bool = False, *, user: bool = False) -> float | None:
        return median_or_none(
            [
                run.user_per_delivery_us if user else run.cpu_per_delivery_us
                for run in self.runs(name, paced)
            ]
        )

    def ratio(self, ours: str = HUB, theirs: str = NAIVE) -> float:
        """Median over repetitions of ours / theirs deliveries per second at saturation."""
        pairs = zip(self.runs(ours), self.runs(theirs), strict=True)
        return statistics.median(our.rate / their.rate for our, their in pairs)

    def slice_spread(self, ours: str = HUB, theirs: str = NAIVE) -> tuple[float, float]:
        """The interquartile range of the back-to-back saturated slices' ratios."""
        return quartile_range(slice_ratios(self.saturated[ours], self.saturated[theirs]))

    def percentiles_ms(self, name: str, saturated: bool = False) -> dict[str, float] | None:
        samples = sorted((self.saturated_latency if saturated else self.latency)[name])
        if not samples:
            return None
        n = len(samples)
        return {
            f"p{q:g}": samples[min(n - 1, max(0, round(q / 100 * n) - 1))] / 1e6
            for q in (50, 90, 99, 99.9)
        } | {"max": samples[-1] / 1e6, "samples": n}

    def client_load(self, name: str | None = None) -> float:
        """The load client's highest share of one core over a repetition's saturated slices."""
        names = self.saturated if name is None else (name,)
        return max(run.client_load for name in names for run in self.runs(name))

    def late_warnings(self) -> list[str]:
        """A warning for each server on which a paced publication went out too late."""
        warnings = []
        for name, repetitions in self.paced.items():
            late = max(run.late_ns for slices in repetitions for run in slices)
            if late > PACE_SLIP_NS:
                warnings.append(
                    f"{self.label} paced on {name}: a publication went out {late / 1e6:.1f} ms"
                    " late (the client was busy); lower --rate"
                )
        return warnings

    def to_json(self) -> dict[str, Any]:
        servers = {}
        for name in (HUB, NAIVE):
            servers[name] = {
                "deliveries_per_s": self.rate(name),
                "server_cpu_us_per_delivery": self.cpu_us(name),
                "paced_server_cpu_us_per_delivery": self.cpu_us(name, paced=True),
                "server_user_us_per_delivery": self.cpu_us(name, user=True),
                "paced_latency_ms": self.percentiles_ms(name),
                "saturated_latency_ms_designated": self.percentiles_ms(name, saturated=True),
                "saturated": [
                    {**Run.total(slices).to_json(), "slices": [run.to_json() for run in slices]}
                    for slices in self.saturated[name]
                ],
                "paced": [
                    {**Run.total(slices).to_json(), "slices": [run.to_json() for run in slices]}
                    for slices in self.paced[name]
                ],
            }
        low, high = self.slice_spread()
        return {
            "case": self.label,
            "size": self.size,
            "subscribers": self.subscribers,
            **servers,
            "ratio": self.ratio(),
            "slice_ratio_quartiles": [low, high],
            "max_client_cpu_share": self.client_load(),
        }


async def run_case(
    pools: dict[str, Pool], result: CaseResult, opts: Options, first: str
) -> dict[str, tuple[Run, Run]]:
    filler = make_filler(result.size)
    for pool in pools.values():
        await pool.verify(filler)
    for pool in pools.values():
        await pool.saturate(opts.warmup)
    count = slice_count(opts.duration, opts.slice)
    seconds = opts.duration / count
    for pool in pools.values():
        pool.designated_latency = []
    saturated = await alternate(pools, first, count, lambda pool: pool.measure_saturated(seconds))
    for name, pool in pools.items():
        result.saturated[name].append(saturated[name])
        result.saturated_latency[name].extend(pool.designated_latency)
        pool.latency = []
    paced = await alternate(pools, first, count, lambda pool: pool.measure_paced(seconds))
    summary = {}
    for name, pool in pools.items():
        result.paced[name].append(paced[name])
        result.latency[name].extend(pool.latency)
        pool.latency = []
        summary[name] = (Run.total(saturated[name]), Run.total(paced[name]))
    return summary


async def final_check(pools: Iterable[Pool]) -> None:
    """Every subscriber decodes and checks publications: offsets show nothing was lost."""
    for pool in pools:
        await pool.verify(pool.filler)
    log("final check passed: every subscriber got every publication, in order")


async def close_pools(pools: Iterable[Pool], grace: float) -> list[str]:
    """Close every connection of every pool; the warnings from closing them."""
    warnings: list[str] = []
    for pool in pools:
        notes = await pool.close(grace)
        warnings.extend(f"{pool.name}: {note}" for note in notes)
    return warnings


async def run_all(
    servers: dict[str, Server], sizes: Sequence[int], opts: Options, repeat: int, seed: int
) -> tuple[list[CaseResult], list[str]]:
    rng = random.Random(seed)
    pools: dict[str, Pool] = {}
    warnings: list[str] = []
    results = [CaseResult(size, opts.subscribers) for size in sizes]
    try:
        for name, server in servers.items():
            started = time.perf_counter()
            pools[name] = pool = Pool(server, opts, rng)
            await pool.open()
            log(
                f"{name}: {opts.subscribers} subscribers and a publisher connected and subscribed"
                f" in {time.perf_counter() - started:.1f} s"
            )
        for done, result, first in rounds(results, repeat, (HUB, NAIVE)):
            try:
                summary = await run_case(pools, result, opts, first)
            except BenchmarkError as exc:
                raise BenchmarkError(f"{result.label}: {exc}") from exc
            hub, naive = summary[HUB][0], summary[NAIVE][0]
            load = max(run.client_load for pair in summary.values() for run in pair)
            log(
                f"[{done}/{repeat * len(results)}] {result.label:<12}"
                f" {HUB} {hub.rate:>9,.0f}  {NAIVE} {naive.rate:>9,.0f} deliveries/s"
                f"  ratio {hub.rate / naive.rate:.2f}  client CPU {load:.0%}"
            )
        await final_check(pools.values())
    finally:
        warnings += await close_pools(pools.values(), opts.timeout)
    for result in results:
        warnings += result.late_warnings()
    return results, warnings


# --- command line ---------------------------------------------------------------------------

# Options that mean the same here and in cluster.py: parser.add_argument(name, **OPTION).
SIZES_OPTION: dict[str, Any] = {
    "type": csv_of(parse_size),
    "default": [64, 1024],
    "help": f"payload sizes (the data string), at least {MIN_SIZE}; default 64,1KiB",
}
RATE_OPTION: dict[str, Any] = {
    "type": float,
    "default": 20.0,
    "help": "paced: publications per second (default 20)",
}
SEED_OPTION: dict[str, Any] = {"type": int, "default": 6455, "help": "seed for the mask keys"}


def check_load_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error for payload sizes or times that cannot be measured."""
    if any(size < MIN_SIZE or size > 2**20 for size in args.sizes):
        parser.error(f"--sizes must be within {MIN_SIZE}..{2**20}")
    if args.duration <= 0 or args.slice <= 0 or args.warmup < 0 or args.rate <= 0:
        parser.error("--duration, --slice and --rate must be positive, --warmup not negative")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fan-out to many subscribers: hub-server against a naive websockets hub.",
        epilog="In commands, {python}, {bin} (its scripts folder), {host} and {port} are filled"
        " in when a server starts.",
    )
    parser.add_argument(
        "--subscribers", type=int, default=1000, help="subscriber connections (default 1000)"
    )
    parser.add_argument("--sizes", **SIZES_OPTION)
    parser.add_argument(
        "--window",
        type=int,
        default=8,
        help="saturation: publications outstanding at the designated subscriber (default 8)",
    )
    parser.add_argument("--rate", **RATE_OPTION)
    parser.add_argument(
        "--duration",
        type=float,
        default=2.0,
        help="timed seconds per server, case and measurement (default 2)",
    )
    parser.add_argument(
        "--slice",
        type=float,
        default=0.25,
        help="the servers take turns every this many timed seconds (default 0.25)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="untimed seconds of saturation on each server before each case (default 0.5)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions of every case; medians are reported (default 3)",
    )
    parser.add_argument("--seed", **SEED_OPTION)
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="limit for connecting, draining and closing, seconds (default 20)",
    )
    parser.add_argument("--startup-timeout", **STARTUP_TIMEOUT_OPTION)
    parser.add_argument(
        "--hub-cmd",
        default=DEFAULT_HUB_CMD,
        help=f"command for hub-server (default: {DEFAULT_HUB_CMD!r})",
    )
    parser.add_argument(
        "--naive-cmd",
        default=DEFAULT_NAIVE_CMD,
        help="command for the naive hub (default: benchmarks/peers/naive_hub.py ...)",
    )
    parser.add_argument("--json", **JSON_OPTION)
    args = parser.parse_args(argv)
    for name in ("subscribers", "window", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    check_load_args(parser, args)
    return args


def render_table(results: Sequence[CaseResult]) -> str:
    header = (
        "case",
        f"{HUB} deliv/s",
        f"{NAIVE} deliv/s",
        "ratio",
        "slice IQR",
        f"{HUB} us CPU/deliv",
        f"{NAIVE} us CPU/deliv",
        "user part",
        f"{HUB} p50/p99 ms",
        f"{NAIVE} p50/p99 ms",
        "paced us CPU/deliv",
        "client CPU",
    )
    rows = [header]
    for result in results:
        low, high = result.slice_spread()
        rows.append(
            (
                result.label,
                f"{result.rate(HUB):,.0f}",
                f"{result.rate(NAIVE):,.0f}",
                f"{result.ratio():.2f}",
                f"{low:.2f}-{high:.2f}",
                format_number(result.cpu_us(HUB)),
                format_number(result.cpu_us(NAIVE)),
                " / ".join(format_number(result.cpu_us(n, user=True)) for n in (HUB, NAIVE)),
                format_latency(result.percentiles_ms(HUB)),
                format_latency(result.percentiles_ms(NAIVE)),
                " / ".join(format_number(result.cpu_us(n, paced=True)) for n in (HUB, NAIVE)),
                format_client_load(result.client_load()),
            )
        )
    return format_table(rows)


def format_latency(percentiles: dict[str, float] | None) -> str:
    """The p50 / p99 cell of a latency column, milliseconds."""
    if percentiles is None:
        return "n/a"
    return f"{percentiles['p50']:.2f} / {percentiles['p99']:.2f}"


def table_notes(opts: Options) -> str:
    return f"""\
deliv/s: msg frames received across all subscribers per second at saturation (window {opts.window})
ratio: {HUB} / {NAIVE} deliveries per second, > 1 when {HUB} is faster (median over repetitions)
{SLICE_IQR_NOTE}
us CPU/deliv: server process CPU time (all threads) per delivery at saturation, microseconds
user part: {HUB} / {NAIVE} user-mode share of it (the rest is the kernel's socket writes)
p50/p99 ms: delivery latency at {opts.rate:g} publications/s ({opts.rate * opts.subscribers:,.0f} \
deliveries/s), all subscribers
paced us CPU/deliv: {HUB} / {NAIVE} server CPU time per delivery in that paced run
{CLIENT_CPU_NOTE}"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options.from_args(args)
    slices = slice_count(opts.duration, opts.slice)
    per_case = 2 * (2 * opts.duration + opts.warmup + slices * 2 * (SETTLE + 0.03) + 0.2)
    runs = len(args.sizes) * args.repeat
    connect = 2 * opts.subscribers / 500
    log(f"{runs} cases to run, about {runs * per_case + connect + 2:.0f} s")

    exit_on_sigterm()
    commands = {HUB: fill_template(args.hub_cmd), NAIVE: fill_template(args.naive_cmd)}
    try:
        # Each connection is a descriptor here and one in its server (servers inherit this).
        raise_file_limit(2 * (opts.subscribers + 1) + 256)
        with started_servers(commands, args.startup_timeout) as servers:
            results, warnings = asyncio.run(
                run_all(servers, args.sizes, opts, args.repeat, args.seed)
            )
            server_logs = {name: server.log_tail() for name, server in servers.items()}
    except (BenchmarkError, KeyboardInterrupt) as exc:
        return exit_status(exc)

    warnings += log_warnings(server_logs)
    for result in results:
        for name in (HUB, NAIVE):
            if result.client_load(name) > CLIENT_BOUND_CPU:
                warnings.append(
                    f"{result.label} on {name}: the load client may have been the limit"
                )
    if args.json:
        config = {
            "subscribers": opts.subscribers,
            "window": opts.window,
            "paced_rate_per_s": opts.rate,
            "duration_s": opts.duration,
            "slice_s": opts.duration / slices,
            "settle_s": SETTLE,
            "warmup_s": opts.warmup,
            "repeat": args.repeat,
            "seed": args.seed,
        }
        env = {**environment(), "source": source_version()}
        cases_json = [result.to_json() for result in results]
        print(json_report(env, config, servers, server_logs, cases_json, warnings))
    else:
        env = environment()
        print(
            f"fan-out benchmark: {opts.subscribers} subscribers on one topic, window"
            f" {opts.window}, paced {opts.rate:g} pub/s, {opts.duration:g} s per server and"
            f" measurement in {slices} slices, repeat {args.repeat}; Python {env['python']},"
            f" {env['cpus']} CPUs, websockets {env['websockets']}, source {source_version()}"
        )
        print(render_table(results))
        print(table_notes(opts))
        for warning in warnings:
            print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
