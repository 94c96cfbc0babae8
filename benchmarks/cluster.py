"""Cluster benchmark: cross-node fan-out through Redis against the in-memory backend on one node.

This script starts its own redis-server (on a free loopback port, without persistence, in a
temporary folder), two ``hub-server`` nodes on the Redis backend (``A`` and ``B``, the same key
prefix) and one ``hub-server`` on the memory backend, all with the flags of fanout.py's default
hub command, so that only the backend differs. Two cases, loaded in turns in the same run:

- **memory**: ``--subscribers`` (1,000) on the memory node, the publisher on it too;
- **redis**: half of the subscribers on node A, half on node B, the publisher on A. The
  designated subscriber, whose receipts pace the window of outstanding publications, is on B:
  a publication counts as done only once it has crossed Redis to the far node.

The load client and the measurements are fanout.py's (saturation with a window, paced
latency, ABBA slices, checks of every offset); :class:`ClusterPool` adapts its ``Pool`` to
subscribers spread over several nodes and records each process's CPU time per slice (the hub
nodes and, separately, redis-server). After the cases, it counts the commands Redis processes
around ``--rtt-publishes`` publications (``INFO commandstats``): the Redis round trips per
publish.

Run ``python benchmarks/cluster.py --help`` for the options; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from echo import (
    CLIENT_BOUND_CPU,
    CLIENT_CPU_NOTE,
    HOST,
    JSON_OPTION,
    SETTLE,
    SLICE_IQR_NOTE,
    STARTUP_TIMEOUT_OPTION,
    BenchmarkError,
    Server,
    environment,
    exit_on_sigterm,
    exit_status,
    format_client_load,
    format_number,
    format_table,
    log,
    median_or_none,
    rounds,
    slice_count,
    sum_or_none,
)
from fanout import (
    DEFAULT_HUB_CMD,
    RATE_OPTION,
    SEED_OPTION,
    SIZES_OPTION,
    CaseResult,
    Endpoint,
    Options,
    Pool,
    Run,
    Subscriber,
    check_load_args,
    close_pools,
    cpu_seconds,
    fill_template,
    final_check,
    format_latency,
    per_million,
    raise_file_limit,
    run_case,
    source_version,
    user_cpu_seconds,
)

from hub.broker.redis_scripts import HISTORY, POSITIONS, PUBLISH

MEMORY = "memory"
REDIS = "redis"
REDIS_SERVER = "redis-server"
NODE_A, NODE_B = "A", "B"
PREFIX = "benchcluster"
#: --hub-cmd, shared with history.py: every node runs it, and the backend is appended.
NODE_CMD_OPTION: dict[str, Any] = {
    "default": DEFAULT_HUB_CMD,
    "help": f"command for every hub-server, without the backend (default: {DEFAULT_HUB_CMD!r})",
}
#: --redis-server, shared with history.py.
REDIS_SERVER_OPTION: dict[str, Any] = {
    "default": shutil.which("redis-server"),
    "help": "the redis-server binary to start (default: redis-server from PATH:"
    f" {shutil.which('redis-server')})",
}
DEFAULT_REDIS_CMD = (
    "{redis} --port {port} --bind {host} --save '' --appendonly no --dir {dir} --daemonize no"
)
# The round-trip count publishes this many at a time, then waits for every delivery.
RTT_CHUNK = 25
# The commands that the hub's Lua scripts run inside EVALSHA: Redis counts them as commands,
# but they are no round trips.
SCRIPT_COMMANDS = frozenset(
    name.lower() for name in re.findall(r"redis\.call\('(\w+)'", PUBLISH + POSITIONS + HISTORY)
)
# Log lines of a hub node worth reporting (its format: "time LEVEL logger: message").
HUB_TROUBLE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")
# redis-server's log lines worth reporting (its " # " level also has start and stop lines).
REDIS_WARNING = re.compile(r"(?i)\b(warning|error|fail\w*)\b")


# --- the adapter ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    server: Server
    subscribers: int


@dataclass(frozen=True)
class Window:
    """One timed slice, beyond fanout's Run: each process's CPU seconds, each node's deliveries."""

    cpu: dict[str, float | None]
    delivered: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"cpu_s": self.cpu, "deliveries": self.delivered}


def sum_windows(windows: Sequence[Window]) -> Window:
    cpu: dict[str, float | None] = {}
    delivered: dict[str, int] = {}
    for window in windows:
        for name, value in window.cpu.items():
            before = cpu.get(name, 0.0)
            cpu[name] = None if value is None or before is None else before + value
        for name, count in window.delivered.items():
            delivered[name] = delivered.get(name, 0) + count
    return Window(cpu, delivered)


class ClusterPool(Pool):
    """fanout's Pool with its subscribers spread over ``nodes``: the publisher on the first
    node, the designated subscriber (the first) on the last. Its server CPU is the sum over the
    nodes; each slice also records every node's and every ``watched`` process's own CPU."""

    def __init__(
        self,
        label: str,
        nodes: Sequence[Node],
        watched: dict[str, Server],
        opts: Options,
        rng: random.Random,
    ) -> None:
        # Pool makes subscribers on one server: let it make one, then replace them.
        super().__init__(nodes[0].server, replace(opts, subscribers=1), rng)
        self.opts = opts
        self.label = label
        self.nodes = list(nodes)
        self.watched = dict(watched)
        self.groups: dict[str, list[Subscriber]] = {}
        self.ports: list[tuple[Endpoint, int]] = [(self.publisher, nodes[0].server.port)]
        for index, node in enumerate(nodes):
            far = index == len(nodes) - 1
            group = [
                Subscriber(
                    node.server.port,
                    bytes(rng.randrange(1, 256) for _ in range(4)),
                    self,
                    far and i == 0,
                )
                for i in range(node.subscribers)
            ]
            self.groups[node.name] = group
            self.ports += [(subscriber, node.server.port) for subscriber in group]
        self.subscribers = [s for group in self.groups.values() for s in group]
        self.designated = self.groups[nodes[-1].name][0]
        self.publisher_node = nodes[0].name
        self.designated_node = nodes[-1].name
        self._marks: list[Window] = []
        self.saturated_windows: list[Window] = []
        self.paced_windows: list[Window] = []

    @property
    def name(self) -> str:
        return self.label

    def servers(self) -> list[Server]:
        return [node.server for node in self.nodes] + list(self.watched.values())

    async def open(self) -> None:
        """Connect and subscribe every subscriber to its own node (fanout's, per node)."""
        await self.connect()
        epochs = {subscriber.epoch for subscriber in self.subscribers}
        if len(epochs) != 1:
            raise BenchmarkError(f"{self.name}: the nodes' subscribers got epochs {epochs}")
        offsets = {subscriber.base_offset for subscriber in self.subscribers}
        if len(offsets) != 1:
            raise BenchmarkError(f"{self.name}: the nodes' subscribers got offsets {offsets}")

    def check(self) -> None:
        self.check_alive()
        super().check()

    def _server_cpu(self) -> tuple[float | None, float | None]:
        """The nodes' CPU time (fanout calls this at the start and the end of a timed window);
        also keeps a mark of every process's CPU and every node's deliveries."""
        cpu = {node.name: cpu_seconds(node.server.process.pid) for node in self.nodes}
        cpu.update({name: cpu_seconds(s.process.pid) for name, s in self.watched.items()})
        delivered = {name: sum(s.received for s in group) for name, group in self.groups.items()}
        self._marks = [*self._marks[-1:], Window(cpu, delivered)]
        hub = [cpu[node.name] for node in self.nodes]
        user = [user_cpu_seconds(node.server.process.pid) for node in self.nodes]
        return sum_or_none(hub), sum_or_none(user)

    def _window(self) -> Window:
        before, after = self._marks
        cpu: dict[str, float | None] = {}
        for name, value in after.cpu.items():
            old = before.cpu[name]
            cpu[name] = None if value is None or old is None else value - old
        delivered = {name: n - before.delivered[name] for name, n in after.delivered.items()}
        return Window(cpu, delivered)

    async def measure_saturated(self, seconds: float) -> Run:
        run = await super().measure_saturated(seconds)
        self.saturated_windows.append(self._window())
        return run

    async def measure_paced(self, seconds: float) -> Run:
        run = await super().measure_paced(seconds)
        self.paced_windows.append(self._window())
        return run

    def take_windows(self) -> tuple[list[Window], list[Window]]:
        saturated, paced = self.saturated_windows, self.paced_windows
        self.saturated_windows, self.paced_windows = [], []
        return saturated, paced

    async def publish_count(self, count: int) -> float:
        """Publish ``count`` publications, ``RTT_CHUNK`` at a time, each chunk drained."""
        started = time.perf_counter()
        done = 0
        while done < count:
            chunk = min(RTT_CHUNK, count - done)
            self.publish(chunk, time.perf_counter_ns())
            done += chunk
            await self.drain()
        return time.perf_counter() - started


# --- results --------------------------------------------------------------------------------


@dataclass
class ClusterCase:
    """All repetitions of one payload size: fanout's CaseResult, plus per-process windows."""

    size: int
    subscribers: int
    base: CaseResult = field(init=False)
    saturated: dict[str, list[Window]] = field(default_factory=lambda: {MEMORY: [], REDIS: []})
    paced: dict[str, list[Window]] = field(default_factory=lambda: {MEMORY: [], REDIS: []})

    def __post_init__(self) -> None:
        def per_case() -> dict[str, Any]:
            return {MEMORY: [], REDIS: []}

        self.base = CaseResult(
            self.size,
            self.subscribers,
            saturated=per_case(),
            paced=per_case(),
            latency=per_case(),
            saturated_latency=per_case(),
        )

    @property
    def label(self) -> str:
        return self.base.label

    def add(self, name: str, saturated: Sequence[Window], paced: Sequence[Window]) -> None:
        """One repetition's windows (the base already has its runs)."""
        self.saturated[name].append(sum_windows(saturated))
        self.paced[name].append(sum_windows(paced))

    def rate(self, name: str) -> float:
        return self.base.rate(name)

    def ratio(self) -> float:
        return self.base.ratio(REDIS, MEMORY)

    def slice_spread(self) -> tuple[float, float]:
        return self.base.slice_spread(REDIS, MEMORY)

    def node_us(self, name: str, node: str, paced: bool = False) -> float | None:
        """A node's CPU per delivery to its own subscribers, microseconds (median)."""
        windows = (self.paced if paced else self.saturated)[name]
        return median_or_none([per_million(w.cpu[node], w.delivered[node]) for w in windows])

    def hub_us(self, name: str, paced: bool = False) -> float | None:
        """All hub nodes' CPU per delivery (fanout's server CPU, summed over the nodes)."""
        return self.base.cpu_us(name, paced)

    def redis_us(self, paced: bool = False, per: str = "delivery") -> float | None:
        """redis-server's CPU per delivery or per publication, microseconds (median)."""
        windows = (self.paced if paced else self.saturated)[REDIS]
        runs = self.base.runs(REDIS, paced)
        values = [
            per_million(
                w.cpu[REDIS_SERVER], run.deliveries if per == "delivery" else run.publications
            )
            for w, run in zip(windows, runs, strict=True)
        ]
        return median_or_none(values)

    def capacity(self, node: str) -> float | None:
        """Memory node's CPU per delivery over this Redis node's, paired per repetition: the
        share of a memory node's deliveries per CPU-second this node reaches."""
        ratios: list[float | None] = []
        for mem, red in zip(self.saturated[MEMORY], self.saturated[REDIS], strict=True):
            theirs = per_million(mem.cpu[MEMORY], mem.delivered[MEMORY])
            ours = per_million(red.cpu[node], red.delivered[node])
            ratios.append(None if theirs is None or not ours else theirs / ours)
        return median_or_none(ratios)

    def per_read(self, name: str) -> float | None:
        """Deliveries per subscriber socket read at saturation (median)."""
        runs = self.base.runs(name)
        return median_or_none([run.deliveries / run.reads if run.reads else None for run in runs])

    def latency(self, name: str) -> dict[str, float] | None:
        return self.base.percentiles_ms(name)

    def client_load(self) -> float:
        return self.base.client_load()

    def to_json(self) -> dict[str, Any]:
        cases: dict[str, Any] = {}
        for name in (MEMORY, REDIS):
            cases[name] = {
                "deliveries_per_s": self.rate(name),
                "deliveries_per_s_per_node": self.rate(name) / (2 if name == REDIS else 1),
                "hub_cpu_us_per_delivery": self.hub_us(name),
                "paced_hub_cpu_us_per_delivery": self.hub_us(name, paced=True),
                "hub_user_us_per_delivery": self.base.cpu_us(name, user=True),
                "paced_latency_ms": self.base.percentiles_ms(name),
                "saturated_latency_ms_designated": self.base.percentiles_ms(name, saturated=True),
                "max_client_cpu_share": self.base.client_load(name),
                "deliveries_per_read": self.per_read(name),
                "saturated": [
                    {
                        **Run.total(slices).to_json(),
                        **window.to_json(),
                        "slices": [run.to_json() for run in slices],
                    }
                    for slices, window in zip(
                        self.base.saturated[name], self.saturated[name], strict=True
                    )
                ],
                "paced": [
                    {
                        **Run.total(slices).to_json(),
                        **window.to_json(),
                        "slices": [run.to_json() for run in slices],
                    }
                    for slices, window in zip(self.base.paced[name], self.paced[name], strict=True)
                ],
            }
        for node in (NODE_A, NODE_B):
            cases[REDIS][f"node_{node}_cpu_us_per_own_delivery"] = self.node_us(REDIS, node)
            cases[REDIS][f"node_{node}_capacity_vs_memory"] = self.capacity(node)
        cases[REDIS]["redis_server_cpu_us_per_delivery"] = self.redis_us()
        cases[REDIS]["redis_server_cpu_us_per_publication"] = self.redis_us(per="publication")
        cases[REDIS]["paced_redis_server_cpu_us_per_publication"] = self.redis_us(
            paced=True, per="publication"
        )
        low, high = self.slice_spread()
        return {
            "case": self.label,
            "size": self.size,
            "subscribers": self.subscribers,
            **cases,
            "ratio_redis_over_memory": self.ratio(),
            "ratio_per_node": self.ratio() / 2,
            "slice_ratio_quartiles": [low, high],
        }


# --- Redis commands per publish -------------------------------------------------------------


@dataclass
class RoundTrips:
    publications: int
    seconds: float
    total_commands: int  # total_commands_processed, less our own INFO
    reads: int  # total_reads_processed (socket reads, i.e. round trips), less our own INFO
    calls: dict[str, int]  # per command, less our own INFO
    failed: dict[str, int]  # failed or rejected calls per command

    @property
    def script_calls(self) -> int:
        return sum(n for name, n in self.calls.items() if name in SCRIPT_COMMANDS)

    @property
    def client_commands(self) -> int:
        """Commands that clients sent: everything but what the Lua scripts ran."""
        return sum(n for name, n in self.calls.items() if name not in SCRIPT_COMMANDS)

    def per_publish(self, count: int) -> float:
        return count / self.publications if self.publications else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "publications": self.publications,
            "seconds": self.seconds,
            "commands_processed": self.total_commands,
            "commands_processed_per_publish": self.per_publish(self.total_commands),
            "round_trips_per_publish": self.per_publish(self.reads),
            "client_commands_per_publish": self.per_publish(self.client_commands),
            "per_command_per_publish": {
                name: self.per_publish(n) for name, n in sorted(self.calls.items())
            },
            "commands_run_inside_scripts": sorted(SCRIPT_COMMANDS),
            "failed_or_rejected_calls": self.failed,
        }


def redis_counters(client: redis.Redis) -> tuple[int, int, dict[str, dict[str, int]]]:
    """One ``INFO stats commandstats``: total_commands_processed, total_reads_processed and
    each command's counters."""
    info = client.info("stats", "commandstats")
    commands = {
        key.removeprefix("cmdstat_"): {
            name: int(value[name])
            for name in ("calls", "failed_calls", "rejected_calls")
            if name in value
        }
        for key, value in info.items()
        if key.startswith("cmdstat_") and isinstance(value, dict)
    }
    return int(info["total_commands_processed"]), int(info["total_reads_processed"]), commands


async def count_round_trips(pool: ClusterPool, client: redis.Redis, count: int) -> RoundTrips:
    """The commands Redis processed around ``count`` publications and nothing else.

    The second INFO's counters include the first INFO (a command counts once it is done) and
    its own read (counted before the command runs), so one of each is ours and is taken off.
    Redis reads each client's socket once per batch of commands that arrived together: the
    reads are the round trips, however many commands a pipeline holds."""
    total_before, reads_before, before = redis_counters(client)
    seconds = await pool.publish_count(count)
    total_after, reads_after, after = redis_counters(client)
    calls: dict[str, int] = {}
    failed: dict[str, int] = {}
    for name, counters in after.items():
        old = before.get(name, {})
        delta = counters.get("calls", 0) - old.get("calls", 0)
        if name == "info":
            delta -= 1
        if delta:
            calls[name] = delta
        bad = sum(counters.get(k, 0) - old.get(k, 0) for k in ("failed_calls", "rejected_calls"))
        if bad:
            failed[name] = bad
    commands = total_after - total_before - 1
    return RoundTrips(count, seconds, commands, reads_after - reads_before - 1, calls, failed)


# --- the run --------------------------------------------------------------------------------


@dataclass
class Cluster:
    redis: Server
    memory: Server
    a: Server
    b: Server

    def hubs(self) -> dict[str, Server]:
        return {MEMORY: self.memory, NODE_A: self.a, NODE_B: self.b}


async def run_all(
    cluster: Cluster,
    sizes: Sequence[int],
    opts: Options,
    repeat: int,
    seed: int,
    rtt_publishes: int,
) -> tuple[list[ClusterCase], RoundTrips | None, str | None, list[str]]:
    rng = random.Random(seed)
    half = opts.subscribers // 2
    made = {
        MEMORY: ClusterPool(
            MEMORY, [Node(MEMORY, cluster.memory, opts.subscribers)], {}, opts, rng
        ),
        REDIS: ClusterPool(
            REDIS,
            [
                Node(NODE_A, cluster.a, half),
                Node(NODE_B, cluster.b, opts.subscribers - half),
            ],
            {REDIS_SERVER: cluster.redis},
            opts,
            rng,
        ),
    }
    pools: dict[str, Pool] = dict(made)
    opened: list[Pool] = []
    warnings: list[str] = []
    results = [ClusterCase(size, opts.subscribers) for size in sizes]
    rtt: RoundTrips | None = None
    client = redis.Redis(
        host=HOST,
        port=cluster.redis.port,
        socket_timeout=opts.timeout,
        socket_connect_timeout=opts.timeout,
    )
    try:
        version = str(client.info("server").get("redis_version"))
        for name, pool in made.items():
            started = time.perf_counter()
            opened.append(pool)
            await pool.open()
            spread = ", ".join(f"{len(g)} on node {n}" for n, g in pool.groups.items())
            log(
                f"{name}: {opts.subscribers} subscribers ({spread}) and a publisher connected"
                f" and subscribed in {time.perf_counter() - started:.1f} s"
            )
        for done, result, first in rounds(results, repeat, (MEMORY, REDIS)):
            try:
                summary = await run_case(pools, result.base, opts, first)
            except BenchmarkError as exc:
                raise BenchmarkError(f"{result.label}: {exc}") from exc
            for name, pool in made.items():
                result.add(name, *pool.take_windows())
            memory, clustered = summary[MEMORY][0], summary[REDIS][0]
            load = max(run.client_load for pair in summary.values() for run in pair)
            log(
                f"[{done}/{repeat * len(results)}] {result.label:<12}"
                f" {MEMORY} {memory.rate:>9,.0f}  {REDIS} {clustered.rate:>9,.0f}"
                f" deliveries/s  ratio {clustered.rate / memory.rate:.2f}"
                f"  client CPU {load:.0%}"
            )
        if rtt_publishes:
            rtt = await count_round_trips(made[REDIS], client, rtt_publishes)
            log(
                f"round trips: {rtt.reads} reads, {rtt.client_commands} client commands and"
                f" {rtt.total_commands} commands processed for {rtt.publications} publications"
                f" ({rtt.seconds:.1f} s)"
            )
        await final_check(made.values())
    finally:
        client.close()
        warnings += await close_pools(opened, opts.timeout)
    for result in results:
        warnings += result.base.late_warnings()
    return results, rtt, version, warnings


def stop_and_read(server: Server, grace: float) -> str:
    """SIGTERM the server's process group, wait up to ``grace`` (then kill), return its whole
    log (shutdown included) and remove it."""
    if server.process.poll() is None:
        try:
            os.killpg(server.process.pid, signal.SIGTERM)
            server.process.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    text = server.log_text()
    server.stop()  # kills what is left, removes the log
    return text


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Cross-node fan-out through Redis (publisher on node A, subscribers spread"
        " over nodes A and B) against the memory backend on one node, in the same run; and the"
        " Redis commands per publish.",
        epilog="In --hub-cmd, {python}, {bin} (its scripts folder), {host} and {port} are filled"
        " in; --backend, --node-id (and --redis-prefix) are appended. Everything runs on"
        f" {HOST}.",
    )
    parser.add_argument(
        "--subscribers",
        type=int,
        default=1000,
        help="subscribers per case (default 1000): all on the memory node; half on node A and"
        " half on node B",
    )
    parser.add_argument("--sizes", **SIZES_OPTION)
    parser.add_argument(
        "--window",
        type=int,
        default=8,
        help="saturation: publications outstanding at the designated subscriber, which in the"
        " redis case is on node B (default 8)",
    )
    parser.add_argument("--rate", **RATE_OPTION)
    parser.add_argument(
        "--duration",
        type=float,
        default=2.0,
        help="timed seconds per case, size and measurement (default 2)",
    )
    parser.add_argument(
        "--slice",
        type=float,
        default=0.25,
        help="the cases take turns every this many timed seconds (default 0.25)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="untimed seconds of saturation per case before each size (default 0.5)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions of every size; medians are reported (default 3)",
    )
    parser.add_argument(
        "--rtt-publishes",
        type=int,
        default=1000,
        help="publications (on node A, nothing else running) around which Redis's"
        " INFO commandstats is read to count commands per publish; 0 skips it (default 1000)",
    )
    parser.add_argument("--seed", **SEED_OPTION)
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="limit for connecting, draining, closing and Redis commands, seconds (default 20)",
    )
    parser.add_argument("--startup-timeout", **STARTUP_TIMEOUT_OPTION)
    parser.add_argument("--redis-server", **REDIS_SERVER_OPTION)
    parser.add_argument("--hub-cmd", **NODE_CMD_OPTION)
    parser.add_argument("--json", **JSON_OPTION)
    args = parser.parse_args(argv)
    for name in ("window", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.subscribers < 2:
        parser.error("--subscribers must be at least 2 (one per Redis node)")
    if args.rtt_publishes < 0:
        parser.error("--rtt-publishes must not be negative")
    check_load_args(parser, args)
    if not args.redis_server:
        parser.error("no redis-server on PATH: name one with --redis-server")
    return args


def render_tables(results: Sequence[ClusterCase]) -> tuple[str, str]:
    """The throughput table and the cost table."""
    throughput: list[Sequence[str]] = [
        (
            "case",
            "memory deliv/s",
            "redis deliv/s",
            "ratio",
            "slice IQR",
            "redis/node",
            "deliv/read",
            "memory p50/p99 ms",
            "redis p50/p99 ms",
            "client CPU",
        )
    ]
    cost: list[Sequence[str]] = [
        (
            "case",
            "memory us CPU/deliv",
            "redis A+B us CPU/deliv",
            "A / B us/own deliv",
            "A / B capacity",
            "Redis us CPU/deliv",
            "Redis us CPU/pub",
            "paced us CPU/deliv",
        )
    ]

    for result in results:
        low, high = result.slice_spread()
        throughput.append(
            (
                result.label,
                f"{result.rate(MEMORY):,.0f}",
                f"{result.rate(REDIS):,.0f}",
                f"{result.ratio():.2f}",
                f"{low:.2f}-{high:.2f}",
                f"{result.rate(REDIS) / 2:,.0f} ({result.ratio() / 2:.2f})",
                " / ".join(format_number(result.per_read(name), 1) for name in (MEMORY, REDIS)),
                format_latency(result.latency(MEMORY)),
                format_latency(result.latency(REDIS)),
                format_client_load(result.client_load()),
            )
        )
        cost.append(
            (
                result.label,
                format_number(result.hub_us(MEMORY)),
                format_number(result.hub_us(REDIS)),
                " / ".join(format_number(result.node_us(REDIS, node)) for node in (NODE_A, NODE_B)),
                " / ".join(format_number(result.capacity(node)) for node in (NODE_A, NODE_B)),
                format_number(result.redis_us()),
                format_number(result.redis_us(per="publication"), 1),
                " / ".join(
                    format_number(result.hub_us(name, paced=True)) for name in (MEMORY, REDIS)
                ),
            )
        )
    return format_table(throughput), format_table(cost)


def throughput_notes(opts: Options) -> str:
    return f"""\
deliv/s: msg frames received across all subscribers per second at saturation (window {opts.window}:
  in the redis case the designated subscriber is on node B, so a publication counts only once it
  has crossed Redis)
ratio: redis / memory deliveries per second, paired per repetition (median)
{SLICE_IQR_NOTE}
redis/node: redis deliveries per second / 2 nodes (and that / memory): the per-node throughput
  view. Here all hub nodes share the cores with each other and the client, so this is about half
  the ratio whatever Redis costs; judge the per-node cost by the CPU table
deliv/read: memory / redis msg frames per subscriber socket read at saturation: how many
  publications a node's writers coalesced into one write (1.0: each went out on its own)
p50/p99 ms: delivery latency at {opts.rate:g} publications/s ({opts.rate * opts.subscribers:,.0f} \
deliveries/s), all subscribers
{CLIENT_CPU_NOTE}"""


COST_NOTES = """\
memory us CPU/deliv: the memory node's CPU time (all threads) per delivery at saturation
redis A+B us CPU/deliv: both Redis nodes' CPU time per delivery (the sum over the nodes)
A / B us/own deliv: each node's CPU time per delivery to its own subscribers (A also publishes)
A / B capacity: memory us CPU/deliv / that node's: the share of a memory node's deliveries per
  CPU-second the node reaches, i.e. its throughput were it alone on a core; the goal (Redis costs
  less than 30 % per node) is a capacity of at least 0.70
Redis us CPU/deliv, /pub: redis-server's own CPU time per delivery and per publication (not in
  the hub columns)
paced us CPU/deliv: memory / redis A+B hub CPU per delivery in the paced run (one publication at
  a time, so nothing can be coalesced in either case)"""


def render_round_trips(rtt: RoundTrips) -> str:
    lines = [
        f"Redis commands around {rtt.publications} publications on node A (no other traffic,"
        f" {rtt.seconds:.1f} s, {RTT_CHUNK} sent at a time): {rtt.per_publish(rtt.reads):.3f}"
        " round trips (socket reads by Redis) per publish;"
        f" {rtt.per_publish(rtt.client_commands):.3f} commands sent by clients and"
        f" {rtt.per_publish(rtt.total_commands):.3f} processed per publish, counting those"
        " the Lua script runs"
    ]
    for name, calls in sorted(rtt.calls.items(), key=lambda item: -item[1]):
        where = "inside EVALSHA's script" if name in SCRIPT_COMMANDS else "sent by a client"
        lines.append(f"  {name:<16} {rtt.per_publish(calls):8.3f} per publish  ({where})")
    for name, bad in rtt.failed.items():
        lines.append(f"  {name}: {bad} failed or rejected calls")
    return "\n".join(lines)


def log_summary(name: str, text: str, pattern: re.Pattern[str]) -> tuple[int, list[str]]:
    lines = [line for line in text.splitlines() if pattern.search(line)]
    return len(lines), [f"{name}: {line}" for line in lines[:10]]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options.from_args(args)
    slices = slice_count(opts.duration, opts.slice)
    per_case = 2 * (2 * opts.duration + opts.warmup + slices * 2 * (SETTLE + 0.04) + 0.2)
    runs = len(args.sizes) * args.repeat
    extra = 2 * opts.subscribers / 300 + args.rtt_publishes * opts.subscribers / 60_000 + 5
    log(f"{runs} cases to run, about {runs * per_case + extra:.0f} s")

    exit_on_sigterm()
    started: dict[str, Server] = {}
    logs: dict[str, str] = {}
    argvs: dict[str, list[str]] = {}
    warnings: list[str] = []
    notes: list[str] = []
    results: list[ClusterCase] = []
    rtt: RoundTrips | None = None
    version: str | None = None
    failed = 0
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as folder:
        try:
            # Each connection is a descriptor here and one in its server (servers inherit this).
            raise_file_limit(2 * (2 * opts.subscribers + 2) + 256)
            redis_cmd = DEFAULT_REDIS_CMD.replace(
                "{redis}", shlex.quote(args.redis_server)
            ).replace("{dir}", shlex.quote(folder))
            started[REDIS_SERVER] = redis_server = Server.start(
                REDIS_SERVER, redis_cmd, args.startup_timeout, None
            )
            url = f"redis://{HOST}:{redis_server.port}/0"
            hub_cmd = fill_template(args.hub_cmd)
            backends = {
                MEMORY: f" --backend memory:// --node-id {MEMORY}",
                NODE_A: f" --backend {url} --redis-prefix {PREFIX} --node-id {NODE_A}",
                NODE_B: f" --backend {url} --redis-prefix {PREFIX} --node-id {NODE_B}",
            }
            for name, flags in backends.items():
                started[name] = Server.start(name, hub_cmd + flags, args.startup_timeout, None)
            for name, server in started.items():
                argvs[name] = server.argv
                log(f"{name} on port {server.port}: {shlex.join(server.argv)}")
            cluster = Cluster(redis_server, started[MEMORY], started[NODE_A], started[NODE_B])
            results, rtt, version, warnings = asyncio.run(
                run_all(cluster, args.sizes, opts, args.repeat, args.seed, args.rtt_publishes)
            )
        except (BenchmarkError, KeyboardInterrupt) as exc:
            failed = exit_status(exc)
        finally:
            # The hubs first (their logs include the shutdown), then Redis.
            for name in (MEMORY, NODE_A, NODE_B, REDIS_SERVER):
                if name in started:
                    logs[name] = stop_and_read(started[name], 15.0)

    for name, text in logs.items():
        if name == REDIS_SERVER:
            count, lines = log_summary(name, text, REDIS_WARNING)
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
    for result in results:
        if result.client_load() > CLIENT_BOUND_CPU:
            warnings.append(f"{result.label}: the load client may have been the limit")
    if rtt is not None and rtt.failed:
        warnings.append(f"Redis reports failed or rejected calls: {rtt.failed}")

    if args.json:
        report = {
            "environment": {
                **environment(),
                "source": source_version(),
                "redis_version": version,
            },
            "config": {
                "subscribers": opts.subscribers,
                "subscribers_per_redis_node": {
                    NODE_A: opts.subscribers // 2,
                    NODE_B: opts.subscribers - opts.subscribers // 2,
                },
                "publisher_node": NODE_A,
                "designated_subscriber_node": NODE_B,
                "window": opts.window,
                "paced_rate_per_s": opts.rate,
                "duration_s": opts.duration,
                "slice_s": opts.duration / slices,
                "settle_s": SETTLE,
                "warmup_s": opts.warmup,
                "repeat": args.repeat,
                "rtt_publishes": args.rtt_publishes,
                "seed": args.seed,
            },
            "servers": {name: {"argv": argvs.get(name), "log": logs[name]} for name in logs},
            "cases": [result.to_json() for result in results],
            "round_trips": None if rtt is None else rtt.to_json(),
            "warnings": warnings,
            "notes": notes,
        }
        print(json.dumps(report, indent=2))
    else:
        env = environment()
        print(
            f"cluster benchmark: {opts.subscribers} subscribers on one topic; memory: all on one"
            f" node; redis: {opts.subscribers // 2} on node A (the publisher's) and"
            f" {opts.subscribers - opts.subscribers // 2} on node B (the designated subscriber's,"
            f" which paces the window); window {opts.window}, paced {opts.rate:g} pub/s,"
            f" {opts.duration:g} s per case and measurement in {slices} slices, repeat"
            f" {args.repeat}; Python {env['python']}, {env['cpus']} CPUs, Redis {version},"
            f" source {source_version()}"
        )
        throughput, cost = render_tables(results)
        print(throughput)
        print(throughput_notes(opts))
        print()
        print(cost)
        print(COST_NOTES)
        print()
        if rtt is not None:
            print(render_round_trips(rtt))
        for warning in warnings:
            print(f"warning: {warning}")
        for note in notes:
            print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
