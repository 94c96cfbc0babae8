"""Presence benchmark: what presence costs, and how fast its events travel.

This script starts its own redis-server (as cluster.py does: a free 127.0.0.1 port, no
persistence, a temporary folder) and ``hub-server`` nodes with fanout.py's default hub command
(``--hub-cmd``: keepalive ping every 60 s; outbox, publish and handshake limits raised so that
they do not throttle the load) plus ``--presence-topics '["room.>"]'``. The Redis nodes share
one key prefix. Four measurements (``--phases``), in this order:

1. **churn**: ``--churners`` clients each subscribe to one of ``--topics`` topics, unsubscribe,
   and again, each request sent when the last ``ok`` arrives. The topics are ``room.<j>``
   (presence ON) or ``calm.<j>`` (OFF), in ABBA slices, on the memory node M and on Redis node
   A. Each topic has a holder subscribed with ``join_leave`` (unless ``--no-join-leave``) that
   counts and checks the events; every holder's ``presence`` list must end with itself alone.
2. **latency**: from writing a ``sub`` on node A to reading its ``join`` on node B (one clock),
   and from ``unsub`` to ``leave``; the same on node M; samples alternate between the two.
3. **heartbeat**: ``--hb-clients`` clients on node H (``--presence-ttl`` ``--hb-ttl``: a
   heartbeat every ttl / 3); Redis's CPU (``INFO cpu``) in windows with them present against
   windows with them unsubscribed, in ABBA order, per heartbeat and entry.
4. **dead**: SIGKILL node C (``--presence-ttl`` ``--dead-ttl``) holding ``--dead-clients``
   present clients; the time until an observer on node B reads the last ``leave``, and the
   count of leaves (exactly one per client).

Clients are fanout.py's raw stdlib endpoints (JSON frames). Run ``python benchmarks/presence.py
--help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cluster
import echo
import redis
from fanout import CONNECT_BATCH, Endpoint, cpu_seconds, fill_template, raise_file_limit

PRESENCE_TOPICS = '["room.>"]'
PREFIX = "benchpresence"
TICK = 1.0  # the hub's presence sweep interval (not a setting)
BATCH = 500  # entries per heartbeat script (hub.broker.redis_presence._BATCH)
PHASES = ("churn", "latency", "heartbeat", "dead")
QUICK = dict(churners=100, duration=1.0, slice=0.25, samples=30, hb_clients=300, hb_window=2.0)
QUICK.update(hb_rounds=1, dead_clients=50, dead_runs=1)
Row = Sequence[str]


def quantiles(values: Sequence[float]) -> str:
    """p50 / p99."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"{cuts[49]:.2f} / {cuts[98]:.2f}"


class Client(Endpoint):
    """A raw JSON client: requests answered by id, ``join``/``leave`` events kept with their
    arrival time (ns). A churner subscribes and unsubscribes in a loop from its callbacks."""

    def __init__(self, port: int, rng: random.Random, churn: Churn | None = None) -> None:
        super().__init__(port, bytes(rng.randrange(1, 256) for _ in range(4)))
        self.port, self.churn, self.id = port, churn, ""
        self.events: list[tuple[str, str, str, int]] = []  # op, topic, client, ns
        self._arrived: asyncio.Future[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._last_id = 10  # ids 1 and 2 are the churn's sub and unsub
        self.frames: dict[bool, tuple[bytes, bytes]] = {}  # churn: sub and unsub, ON and OFF
        self.present = False  # churn: the mode, ON or OFF
        self.present_cycles = 0

    async def open(self) -> None:
        await self._loop.create_connection(lambda: self, echo.HOST, self.port)
        await self.opened
        self.id = str((await self.welcomed)["client"])

    def request(self, op: str, topic: str, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """Send a request; the future is its ``ok``, with ``at``: when it was read (ns)."""
        self._last_id += 1
        future = self._waiting[self._last_id] = self._loop.create_future()
        message = {"op": op, "id": self._last_id, "topic": topic, **fields}
        self.send_text(json.dumps(message).encode())
        return future

    def set_topics(self, on: str, off: str) -> None:
        for present, topic in ((True, on), (False, off)):
            sub, unsub = (
                echo.client_frame(echo.OP_TEXT, json.dumps(m).encode(), self._key)
                for m in (
                    {"op": "sub", "id": 1, "topic": topic},
                    {"op": "unsub", "id": 2, "topic": topic},
                )
            )
            self.frames[present] = (sub, unsub)

    def _reply(self, message: dict[str, Any], now: int) -> bool:
        op, ident = message.get("op"), message.get("id")
        if op == "ok" and self.churn is not None and ident in (1, 2):
            if ident == 1:
                self.write(self.frames[self.present][1])
            else:
                self.present_cycles += 1 if self.present else 0
                self.churn.cycle_done(self)
        elif op == "ok" and isinstance(ident, int) and ident in self._waiting:
            self._waiting.pop(ident).set_result({**message, "at": now})
        elif op in ("join", "leave"):
            self.events.append((str(op), message["topic"], message["client"], now))
            if self._arrived is not None and not self._arrived.done():
                self._arrived.set_result(None)
        else:
            return super()._reply(message, now)
        return False

    def find(self, op: str, client: str, since: int) -> int | None:
        """The arrival time (ns) of the first ``op`` of ``client`` from event ``since`` on."""
        for kind, _, who, now in self.events[since:]:
            if kind == op and who == client:
                return now
        return None

    def count(self, op: str, topic: str, since: int) -> int:
        return sum(1 for kind, t, _, _ in self.events[since:] if kind == op and t == topic)

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._arrived = self._loop.create_future()
            await self._arrived

    async def wait_event(self, op: str, client: str, since: int) -> int:
        await self.until(lambda: self.find(op, client, since) is not None)
        return self.find(op, client, since) or 0


async def open_all(clients: Sequence[Client], limit: float) -> None:
    async with asyncio.timeout(limit):
        for i in range(0, len(clients), CONNECT_BATCH):
            await asyncio.gather(*(c.open() for c in clients[i : i + CONNECT_BATCH]))


async def answered(futures: Sequence[asyncio.Future[dict[str, Any]]], limit: float) -> list[Any]:
    async with asyncio.timeout(limit):
        return list(await asyncio.gather(*futures))


async def listed(client: Client, topic: str, limit: float) -> set[str]:
    """The clients that a ``presence`` request lists."""
    ok = await answered([client.request("presence", topic)], limit)
    return {c["client"] for c in ok[0]["clients"]}


def cpu_now(pids: Sequence[int]) -> list[float]:
    return [cpu_seconds(pid) or math.nan for pid in pids]


# --- 1. churn ------------------------------------------------------------------------------


@dataclass
class Slice:
    present: bool
    cycles: int
    seconds: float
    client_cpu: float
    cpu: list[float]  # the node's, redis-server's (nan: unknown, or none)


class Churn:
    """The churners and the holders of one node."""

    def __init__(self, server: echo.Server, args: argparse.Namespace, rng: random.Random) -> None:
        self.server, self.topics = server, args.topics
        self.holders = [Client(server.port, rng) for _ in range(args.topics)]
        self.churners = [Client(server.port, rng, self) for _ in range(args.churners)]
        for i, churner in enumerate(self.churners):
            churner.set_topics(f"room.{i % args.topics}", f"calm.{i % args.topics}")
        self.running, self.active, self.cycles = False, 0, 0
        self._idle: asyncio.Future[None] | None = None

    def cycle_done(self, client: Client) -> None:
        self.cycles += 1
        if self.running:
            client.write(client.frames[client.present][0])
        else:
            self.active -= 1
            if self.active == 0 and self._idle is not None:
                self._idle.set_result(None)

    async def run(self, present: bool, seconds: float, pids: list[int], limit: float) -> Slice:
        """Churn for SETTLE seconds untimed, then ``seconds`` timed; stop after whole cycles."""
        self._idle = asyncio.get_running_loop().create_future()
        self.running, self.active = True, len(self.churners)
        for churner in self.churners:
            churner.present = present
            churner.write(churner.frames[present][0])
        await asyncio.sleep(echo.SETTLE)
        cpu, wall, client = cpu_now(pids), time.perf_counter(), time.process_time()
        cycles = self.cycles
        await asyncio.sleep(seconds)
        cpu = [b - a for a, b in zip(cpu, cpu_now(pids), strict=True)]
        wall, client = time.perf_counter() - wall, time.process_time() - client
        cycles, self.running = self.cycles - cycles, False
        async with asyncio.timeout(limit):
            await self._idle
        echo.check_connections(self.server, [*self.holders, *self.churners])
        return Slice(present, cycles, wall, client / wall, [*cpu, math.nan][:2])

    def check(self, name: str, finals: list[set[str]], watched: bool) -> tuple[float, list[str]]:
        """The final lists (the holder alone), and if ``watched`` each holder's events against
        the churners' cycles: (joins per cycle, problems). On memory each cycle must give one
        join and one leave; on Redis a join and leave not yet written when the next change
        comes may both be left out, never one alone."""
        problems = [
            f"{name}: room.{j} still lists {final - {holder.id}}"
            for j, (holder, final) in enumerate(zip(self.holders, finals, strict=True))
            if final != {holder.id}
        ]
        if not watched:
            return math.nan, problems
        counts: list[dict[str, list[int]]] = []
        for j, holder in enumerate(self.holders):
            counts.append({})
            present: set[str] = set()
            for op, topic, client, _ in holder.events:
                counts[j].setdefault(client, [0, 0])[op == "leave"] += 1
                if topic != f"room.{j}":
                    problems.append(f"{name}: a {op} of {topic} on room.{j}'s holder")
                elif (op == "join") == (client in present):
                    problems.append(f"{name}: {client} {op} on {topic} twice in a row")
                (present.add if op == "join" else present.discard)(client)
            if present != finals[j]:
                problems.append(f"{name}: room.{j}: events give {present}, presence {finals[j]}")
        joins = leaves = 0
        for i, churner in enumerate(self.churners):
            join, leave = counts[i % self.topics].get(churner.id, [0, 0])
            joins, leaves, cycles = joins + join, leaves + leave, churner.present_cycles
            if join != leave or join > cycles or (name == "memory" and join != cycles):
                where = f"room.{i % self.topics}"
                problems.append(f"{name}: {churner.id}: {cycles} cycles on {where}, {join} joins")
        cycles = sum(c.present_cycles for c in self.churners)
        echo.log(
            f"{name}: {cycles:,} cycles on presence topics, {joins:,} joins, {leaves:,} leaves"
        )
        return joins / max(cycles, 1), problems


async def churn_phase(bench: Bench) -> list[Row]:
    args, rows = bench.args, []
    for name, node in (("memory", "M"), ("redis", "A")):
        churn = Churn(bench.servers[node], args, bench.rng)
        clients = [*churn.holders, *churn.churners]
        bench.clients += clients
        await open_all(clients, args.timeout)
        subs = [
            (h, f"{kind}.{j}") for j, h in enumerate(churn.holders) for kind in ("room", "calm")
        ]
        watched = not args.no_join_leave
        await answered([h.request("sub", t, join_leave=watched) for h, t in subs], args.timeout)
        pids = [churn.server.process.pid]
        if name == "redis":
            pids.append(bench.servers["redis"].process.pid)
        for present in (True, False):  # untimed warm-up
            await churn.run(present, args.warmup, pids, args.timeout)
        slices: list[Slice] = []
        for i in range(max(1, round(args.duration / args.slice))):
            for present in (True, False) if i % 2 == 0 else (False, True):
                slices.append(await churn.run(present, args.slice, pids, args.timeout))
        # Each holder's list must settle to the holder alone, and its events must agree.
        finals: list[set[str]] = []
        for j, holder in enumerate(churn.holders):
            deadline = time.monotonic() + args.timeout
            while (final := await listed(holder, f"room.{j}", args.timeout)) != {holder.id}:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            finals.append(final)
        await asyncio.sleep(0.5)  # late events, duplicates
        per_cycle, problems = churn.check(name, finals, watched)
        bench.problems += problems
        rows.append(churn_row(name, slices, per_cycle))
        bench.warnings += await echo.close_all(clients, args.timeout)
    return rows


def churn_row(name: str, slices: Sequence[Slice], per_cycle: float) -> Row:
    on, off = [s for s in slices if s.present], [s for s in slices if not s.present]

    def rate(mine: list[Slice]) -> float:
        return sum(s.cycles for s in mine) / sum(s.seconds for s in mine)

    def us(i: int) -> str:
        values = [1e6 * sum(s.cpu[i] for s in m) / sum(s.cycles for s in m) for m in (on, off)]
        return " / ".join("-" if math.isnan(v) else f"{v:.0f}" for v in values)

    pairs = [
        rate([a]) / rate([b]) if a.present else rate([b]) / rate([a])
        for a, b in zip(slices[::2], slices[1::2], strict=True)
    ]
    cuts = statistics.quantiles(pairs, n=4, method="inclusive") if len(pairs) > 1 else pairs * 3
    load = max(s.client_cpu for s in slices)
    row = [name, f"{rate(on):,.0f}", f"{rate(off):,.0f}", f"{rate(on) / rate(off):.2f}"]
    joins = "-" if math.isnan(per_cycle) else f"{per_cycle:.2f}"
    row += [f"{cuts[0]:.2f}-{cuts[2]:.2f}", us(0), us(1), joins]
    return [*row, f"{load:.0%}{'*' if load > 0.9 else ''}"]


# --- 2. latency ----------------------------------------------------------------------------


async def latency_phase(bench: Bench) -> list[Row]:
    """Join and leave latency, memory and redis samples alternating."""
    args, topic = bench.args, "room.lat"
    nodes = {"memory (M)": ("M", "M"), "redis (A -> B)": ("A", "B")}
    pairs = {n: [Client(bench.port(node), bench.rng) for node in ab] for n, ab in nodes.items()}
    clients = [c for pair in pairs.values() for c in pair]
    bench.clients += clients
    await open_all(clients, args.timeout)
    await answered(
        [o.request("sub", topic, join_leave=True) for _, o in pairs.values()], args.timeout
    )
    times: dict[str, tuple[list[float], ...]] = {n: ([], [], []) for n in pairs}
    for i in range(args.samples):
        for name in list(pairs) if i % 2 == 0 else list(pairs)[::-1]:
            joiner, observer = pairs[name]
            async with asyncio.timeout(args.timeout):
                mark, sent = len(observer.events), time.perf_counter_ns()
                ok = joiner.request("sub", topic)
                joined = await observer.wait_event("join", joiner.id, mark)
                ok_at = (await ok)["at"]
                mark, unsent = len(observer.events), time.perf_counter_ns()
                ok = joiner.request("unsub", topic)
                left = await observer.wait_event("leave", joiner.id, mark)
                await ok
            for values, ns in zip(
                times[name], (joined - sent, joined - ok_at, left - unsent), strict=True
            ):
                values.append(ns / 1e6)
            await asyncio.sleep(bench.rng.uniform(0.002, 0.01))
    await asyncio.sleep(0.5)
    for name, (_, observer) in pairs.items():
        expected = 2 * args.samples + 1  # and the observer's own join
        if len(observer.events) != expected:
            bench.problems.append(f"latency {name}: {len(observer.events)} events, not {expected}")
    bench.warnings += await echo.close_all(clients, args.timeout)
    return [[n, str(args.samples), *map(quantiles, t)] for n, t in times.items()]


# --- 3. heartbeat --------------------------------------------------------------------------


def counters(client: redis.Redis, pid: int) -> dict[str, float]:
    """Redis's CPU seconds (INFO cpu), EVALSHA calls and µs (commandstats), the node's CPU."""
    info = client.info("cpu", "commandstats")
    evalsha = info.get("cmdstat_evalsha", {})
    return {
        "seconds": time.perf_counter(),
        "redis": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "calls": float(evalsha.get("calls", 0)),
        "usec": float(evalsha.get("usec", 0)),
        "hub": cpu_seconds(pid) or math.nan,
    }


async def heartbeat_phase(bench: Bench) -> list[Row]:
    """Present and idle windows in ABBA order; heartbeats are counted as the EVALSHAs the
    present windows have more than the idle ones (a heartbeat is one script per BATCH)."""
    args, client, k = bench.args, bench.redis, bench.args.hb_clients
    server = bench.start("H", bench.url, args.hb_ttl)
    clients = [Client(server.port, bench.rng) for _ in range(k)]
    bench.clients += clients
    await open_all(clients, args.timeout)
    topics = [f"room.hb.{i % args.topics}" for i in range(k)]

    async def entries(count: int) -> None:
        deadline = time.monotonic() + args.timeout
        while (n := sum(client.hlen(f"{PREFIX}:pm:{t}") for t in set(topics))) != count:
            if time.monotonic() > deadline:
                bench.problems.append(f"heartbeat: Redis lists {n} entries, not {count}")
                return
            await asyncio.sleep(0.05)

    windows: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    subscribed = False
    for r in range(args.hb_rounds):
        for present in (False, True) if r % 2 == 0 else (True, False):
            if present != subscribed:
                op, subscribed = ("sub" if present else "unsub"), present
                requests = [c.request(op, t) for c, t in zip(clients, topics, strict=True)]
                await answered(requests, args.timeout)
                await entries(k if present else 0)
                await asyncio.sleep(0.5)
            before = counters(client, server.process.pid)
            await asyncio.sleep(args.hb_window)
            after = counters(client, server.process.pid)
            windows[present].append({key: after[key] - before[key] for key in before})
            if present:
                await entries(k)  # none expired, none lost
    bench.warnings += await echo.close_all(clients, args.timeout)

    def rate(present: bool, key: str) -> float:
        return sum(w[key] for w in windows[present]) / sum(w["seconds"] for w in windows[present])

    def extra(key: str, scale: float = 1e6) -> str:
        value = (rate(True, key) - rate(False, key)) * scale
        return f"{value / (beats * k):.2f}" if beats > 0 else "-"

    beats = (rate(True, "calls") - rate(False, "calls")) / math.ceil(k / BATCH)
    idle, busy = (f"{1e3 * rate(present, 'redis'):.1f}" for present in (False, True))
    row = [f"{k:,}", f"{args.hb_ttl:g}", f"{beats:.2f} ({3 / args.hb_ttl:.2f})"]
    return [[*row, f"{idle} / {busy}", extra("redis"), extra("usec", 1), extra("hub")]]


# --- 4. dead node --------------------------------------------------------------------------


async def dead_phase(bench: Bench) -> list[Row]:
    args, m = bench.args, bench.args.dead_clients
    rows: list[Row] = []
    observer = Client(bench.port("B"), bench.rng)
    bench.clients.append(observer)
    await open_all([observer], args.timeout)
    for run in range(1, args.dead_runs + 1):
        topic, name = f"room.dead.{run}", f"C{run}"
        await answered([observer.request("sub", topic, join_leave=True)], args.timeout)
        server = bench.start(name, bench.url, args.dead_ttl)
        clients = [Client(server.port, bench.rng) for _ in range(m)]
        await open_all(clients, args.timeout)
        mark = len(observer.events)
        await answered([c.request("sub", topic) for c in clients], args.timeout)
        async with asyncio.timeout(args.timeout):
            await observer.until(lambda: observer.count("join", topic, mark) >= m)  # noqa: B023
        await asyncio.sleep(bench.rng.uniform(0.1, args.dead_ttl / 3))  # any heartbeat phase
        mark, killed = len(observer.events), time.perf_counter_ns()
        os.killpg(server.process.pid, signal.SIGKILL)
        try:  # too few leaves is a finding, reported below
            async with asyncio.timeout(args.dead_ttl + TICK + args.timeout):
                await observer.until(lambda: observer.count("leave", topic, mark) >= m)  # noqa: B023
        except TimeoutError:
            pass
        await asyncio.sleep(TICK + 0.5)  # a duplicate would come with another node's sweep
        events = observer.events[mark:]
        after = sorted((e[3] - killed) / 1e9 for e in events) or [math.nan]
        if sorted(e[2] for e in events) != sorted(c.id for c in clients) or any(
            e[0] != "leave" or e[1] != topic for e in events
        ):
            bench.problems.append(f"dead {name}: the events after the kill are not one leave each")
        if (still := await listed(observer, topic, args.timeout)) != {observer.id}:
            bench.problems.append(f"dead {name}: presence still lists {still - {observer.id}}")
        await answered([observer.request("unsub", topic)], args.timeout)
        bench.logs[name] = cluster.stop_and_read(bench.servers.pop(name), 5.0)
        leaves = [str(sum(e[0] == "leave" for e in events)), str(len({e[2] for e in events}))]
        expected = f"{args.dead_ttl * 2 / 3:.2f}-{args.dead_ttl + TICK:.2f}"
        rows.append([str(run), str(m), *leaves, f"{after[0]:.2f}", f"{after[-1]:.2f}", expected])
        echo.log(f"dead {name}: {leaves[0]} leaves, {after[0]:.2f} to {after[-1]:.2f} s")
    bench.warnings += await echo.close_all([observer], args.timeout)
    return rows


# --- the run -------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    rng: random.Random
    servers: dict[str, echo.Server] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    clients: list[Client] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    url: str = ""
    redis: redis.Redis = field(init=False)

    def start(self, name: str, backend: str, ttl: float | None = None) -> echo.Server:
        flags = f" --backend {backend} --node-id {name}"
        flags += f" --presence-topics {shlex.quote(PRESENCE_TOPICS)}"
        if backend != "memory://":
            flags += f" --redis-prefix {PREFIX}"
        if ttl is not None:
            flags += f" --presence-ttl {ttl:g}"
        command = fill_template(self.args.hub_cmd) + flags
        server = self.servers[name] = echo.Server.start(
            name, command, self.args.startup_timeout, None
        )
        echo.log(f"{name} on port {server.port}: {shlex.join(server.argv)}")
        return server

    def port(self, name: str) -> int:
        return self.servers[name].port


async def run_all(bench: Bench) -> dict[str, list[Row]]:
    runs = dict(churn=churn_phase, latency=latency_phase, heartbeat=heartbeat_phase)
    runs.update(dead=dead_phase)
    tables: dict[str, list[Row]] = {}
    try:
        for phase in bench.args.phases:
            started = time.perf_counter()
            try:
                tables[phase] = await runs[phase](bench)
            except (TimeoutError, OSError, echo.ProtocolError) as exc:
                for server in bench.servers.values():
                    server.check_alive()
                raise echo.BenchmarkError(f"{phase}: {exc!r}") from exc
            echo.log(f"{phase}: done in {time.perf_counter() - started:.1f} s")
    finally:
        bench.warnings += await echo.close_all(bench.clients, bench.args.timeout)
    return tables


HEADERS = {
    "churn": "backend|ON cycles/s|OFF cycles/s|ON/OFF|pair IQR|node us/cycle ON / OFF"
    "|Redis us/cycle ON / OFF|joins/cycle|client CPU",
    "latency": "backend|samples|sub -> join ms|ok -> join ms|unsub -> leave ms",
    "heartbeat": "entries|ttl s|heartbeats/s (expected)|Redis CPU ms/s idle / present"
    "|Redis us/entry/beat|EVALSHA us/entry/beat|hub us/entry/beat",
    "dead": "run|clients|leaves|distinct|first leave s|last leave s|expected s",
}
NOTES = {
    "churn": """\
cycle: a sub and an unsub, each sent when the last ok arrived ({churners} clients, {topics} topics
  per mode); pair IQR: of the ON/OFF ratios of ABBA pairs of {slice:g} s slices; us/cycle: CPU
  time of the node and of redis-server; joins/cycle: the holders' joins per ON cycle (as many
  leaves; "-": --no-join-leave); client CPU: * above 90 %: the client may have been the limit""",
    "latency": """\
p50 / p99 ms; memory: joiner and observer on node M; redis: the sub on node A, the observer on
  node B. ok -> join: from reading the sub's ok to reading the join""",
    "heartbeat": """\
{hb_clients:,} clients on node H; {hb_rounds} x 2 windows of {hb_window:g} s, present or not,
  ABBA; heartbeats/s: the present windows' extra EVALSHAs / scripts per heartbeat; per entry
  and heartbeat: the extra CPU of Redis (INFO cpu) and of node H, and EVALSHA's extra usec""",
    "dead": """\
{dead_clients} present clients on node C, --presence-ttl {dead_ttl:g}; seconds from the SIGKILL to
  reading each leave on node B; expected: ttl - ttl/3 to ttl + the 1 s sweep tick""",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Presence: the cost of sub/unsub churn (ON vs OFF), join/leave latency,"
        " Redis's cost of heartbeats, and leaves after a node dies.",
        epilog="In --hub-cmd, {python}, {bin}, {host} and {port} are filled in; --backend,"
        " --node-id, --presence-topics (and --redis-prefix, --presence-ttl) are appended.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help=f"a smoke run of seconds: {QUICK}")
    add("--phases", type=lambda v: v.split(","), default=list(PHASES), help=",".join(PHASES))
    add("--churners", type=int, default=500, help="churn: clients per node (500)")
    add("--topics", type=int, default=5, help="churn: topics per mode; heartbeat: topics (5)")
    add("--duration", type=float, default=3.0, help="churn: timed s per mode and node (3)")
    add("--slice", type=float, default=0.5, help="churn: ABBA slice, s (0.5)")
    add("--warmup", type=float, default=0.5, help="churn: untimed s per mode and node (0.5)")
    add("--no-join-leave", action="store_true", help="churn: holders without join_leave")
    add("--samples", type=int, default=200, help="latency: samples per backend (200)")
    add("--hb-clients", type=int, default=2000, help="heartbeat: present clients (2000)")
    add("--hb-ttl", type=float, default=3.0, help="heartbeat: node H's --presence-ttl (3)")
    add("--hb-window", type=float, default=5.0, help="heartbeat: s per window (5)")
    add("--hb-rounds", type=int, default=2, help="heartbeat: idle+present window pairs (2)")
    add("--dead-clients", type=int, default=200, help="dead: present clients on node C (200)")
    add("--dead-ttl", type=float, default=2.0, help="dead: node C's --presence-ttl (2)")
    add("--dead-runs", type=int, default=3, help="dead: nodes killed, one after another (3)")
    add("--seed", type=int, default=1, help="random seed (1)")
    add("--timeout", type=float, default=20.0, help="limit per step and Redis command, s (20)")
    add("--startup-timeout", **echo.STARTUP_TIMEOUT_OPTION)
    add("--redis-server", **cluster.REDIS_SERVER_OPTION)
    add("--hub-cmd", **cluster.NODE_CMD_OPTION)
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if unknown := set(args.phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if min(args.churners, args.topics, args.hb_clients, args.hb_rounds, args.dead_runs) < 1:
        parser.error("--churners, --topics, --hb-clients, --hb-rounds, --dead-runs: at least 1")
    if args.samples < 2 or args.dead_clients < 1:
        parser.error("--samples must be at least 2, --dead-clients at least 1")
    if not args.redis_server:
        parser.error("no redis-server on PATH: name one with --redis-server")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    echo.exit_on_sigterm()
    bench = Bench(args, random.Random(args.seed))
    tables: dict[str, list[Row]] = {}
    failed, version = 0, "?"
    with tempfile.TemporaryDirectory(prefix="presence-bench-") as folder:
        try:
            # Each connection is a descriptor here and one in its node (nodes inherit this).
            raise_file_limit(2 * max(args.churners, args.hb_clients, args.dead_clients) + 512)
            command = cluster.DEFAULT_REDIS_CMD.replace("{redis}", shlex.quote(args.redis_server))
            command = command.replace("{dir}", shlex.quote(folder))
            server = bench.servers["redis"] = echo.Server.start(
                "redis", command, args.startup_timeout, None
            )
            bench.url = f"redis://{echo.HOST}:{server.port}/0"
            bench.redis = redis.Redis(echo.HOST, server.port, socket_timeout=args.timeout)
            version = str(bench.redis.info("server")["redis_version"])
            for name, backend in (("M", "memory://"), ("A", bench.url), ("B", bench.url)):
                bench.start(name, backend)
            tables = asyncio.run(run_all(bench))
        except (echo.BenchmarkError, KeyboardInterrupt) as exc:
            failed = echo.exit_status(exc)
        finally:
            for name in sorted(bench.servers, key=lambda n: n == "redis"):  # the hubs first
                bench.logs[name] = cluster.stop_and_read(bench.servers[name], 15.0)
    for name, text in bench.logs.items():
        count, lines = cluster.log_summary(f"node {name}", text, cluster.HUB_TROUBLE)
        if count and name != "redis":
            bench.warnings.append(f"{name}'s log: {count} warning/error lines\n" + "\n".join(lines))
    for line in bench.warnings:
        echo.log(f"warning: {line}")
    if failed:
        return failed
    print(
        f"presence benchmark: Redis {version}, {os.cpu_count()} CPUs, Python"
        f" {sys.version.split()[0]}{', --quick' if args.quick else ''}"
    )
    for phase, rows in tables.items():
        print()
        print(echo.format_table([HEADERS[phase].split("|"), *rows]))
        print(NOTES[phase].format(**vars(args)))
    print(f"\nchecks: {len(bench.problems)} problems" + "".join(f"\n  {p}" for p in bench.problems))
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
