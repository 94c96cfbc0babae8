"""Fixtures for the contract tests of ``hub-server``: a REAL daemon in a subprocess.

Each :class:`HubProcess` is ``hub-server --port 0 <flags>`` on 127.0.0.1. Its combined
stdout/stderr is read by a thread into memory; the port is taken from its ``listening on`` log
line (no free-port race), and the fixture then checks that the port accepts a TCP connection.
Every process is stopped at teardown, SIGTERM first and SIGKILL after :data:`STOP_TIMEOUT`, and
the log of every process a failed test used is attached to its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import IO

import pytest

__all__ = ["HubProcess", "StartHub", "hub_command", "hub_environment", "refused_setting"]

#: Bounds for starting and stopping a daemon.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

#: "hub.server: hub <node> listening on ('127.0.0.1', 43567) (backend memory://)"
LISTENING = re.compile(r"hub\.server: hub \S+ listening on .*?\('127\.0\.0\.1', (\d+)\)")


def hub_command() -> list[str]:
    """The ``hub-server`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "hub-server"
    if script.exists():
        return [str(script)]
    found = shutil.which("hub-server")
    if found is None:
        pytest.fail("the hub-server script is not installed (pip install -e .)")
    return [found]


def hub_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any HUB_* setting, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def refused_setting(args: list[str], env: Mapping[str, str], setting: str) -> str:
    """Run ``hub-server`` with a setting it must refuse: exit status 2, the setting named on
    stderr, no traceback. Returns stdout and stderr, for further checks."""
    result = subprocess.run(
        [*hub_command(), *args],
        env=hub_environment(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    output = f"stdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode == 2, output
    assert re.search(rf"\b{setting}\b", result.stderr), f"{setting} not named: {output}"
    assert "Traceback" not in result.stderr, output
    return output


class HubProcess:
    """A running ``hub-server``; :meth:`stop` ends it, and is safe to call more than once."""

    def __init__(self, flags: tuple[str, ...], env: Mapping[str, str] | None = None) -> None:
        self.flags = flags
        self.args = [*hub_command(), "--host", "127.0.0.1", "--port", "0", *flags]
        self.port = 0
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=hub_environment(env),
            text=True,
            errors="replace",
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.proc.stdout,), name=f"hub-server-{self.proc.pid}"
        )
        self._reader.daemon = True
        self._reader.start()

    # --- the log ----------------------------------------------------------------------------------

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                with self._changed:
                    self._lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self._lines)

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Block until a log line matches ``pattern``; fail with the log on timeout or exit."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    match = regex.search(line)
                    if match is not None:
                        return match
                seen = len(self._lines)
                if self._eof:
                    raise AssertionError(
                        f"hub-server exited with {self.proc.wait()} before logging "
                        f"{regex.pattern!r}:\n{self.describe()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"hub-server did not log {regex.pattern!r} within {timeout} s:\n"
                        f"{self.describe()}"
                    )
                self._changed.wait(remaining)

    def find_line(self, pattern: str | re.Pattern[str]) -> re.Match[str] | None:
        """The first log line so far that matches ``pattern``, without waiting."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        with self._changed:
            lines = list(self._lines)
        for line in lines:
            match = regex.search(line)
            if match is not None:
                return match
        return None

    def describe(self) -> str:
        return f"$ {' '.join(self.args)}\n{self.log or '(no output)'}"

    # --- lifecycle --------------------------------------------------------------------------------

    def wait_ready(self) -> None:
        """Wait for the listening line, then for the port to accept a connection."""
        self.port = int(self.wait_for_line(LISTENING, START_TIMEOUT).group(1))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=START_TIMEOUT):
                pass
        except OSError as exc:
            raise AssertionError(
                f"hub-server logged port {self.port} but refuses connections: {exc}\n"
                f"{self.describe()}"
            ) from exc

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def signal(self, signum: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit status; raises subprocess.TimeoutExpired if still running after timeout."""
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        return status

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with self._changed:
                    self._lines.append(f"[test harness: no exit {STOP_TIMEOUT} s after SIGTERM]")
        status = self.proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        return status


# --- report: the daemon's log of failed tests -----------------------------------------------------

#: The daemons a test uses, for its failure report.
USED = pytest.StashKey[list[HubProcess]]()


def _record(item: pytest.Item, process: HubProcess) -> None:
    item.stash.setdefault(USED, []).append(process)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for process in item.stash.get(USED, []):
            report.sections.append(
                (f"hub-server pid {process.proc.pid} output", process.describe())
            )
    return report


# --- fixtures -------------------------------------------------------------------------------------


def _start(flags: tuple[str, ...], env: Mapping[str, str] | None = None) -> HubProcess:
    process = HubProcess(flags, env)
    try:
        process.wait_ready()
    except BaseException:
        process.stop()
        raise
    return process


@contextlib.contextmanager
def running_hub(*flags: str) -> Iterator[HubProcess]:
    process = _start(flags)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def shared_hub() -> Iterator[HubProcess]:
    """One daemon with the default settings for a whole module; tests use distinct topics."""
    with running_hub() as process:
        yield process


@pytest.fixture
def hub(shared_hub: HubProcess, request: pytest.FixtureRequest) -> HubProcess:
    """The module's default daemon, checked alive, and named in this test's failure report."""
    _record(request.node, shared_hub)
    if shared_hub.proc.poll() is not None:
        pytest.fail(f"the shared hub-server has exited:\n{shared_hub.describe()}")
    return shared_hub


StartHub = Callable[..., Awaitable[HubProcess]]


@pytest.fixture
async def start_hub(request: pytest.FixtureRequest) -> AsyncIterator[StartHub]:
    """``await start_hub("--bad-frame-limit", "3", env={...})``: a daemon for this test alone."""
    processes: list[HubProcess] = []

    async def start(*flags: str, env: Mapping[str, str] | None = None) -> HubProcess:
        process = await asyncio.to_thread(_start, flags, env)
        processes.append(process)
        _record(request.node, process)
        return process

    yield start
    for process in processes:
        await asyncio.to_thread(process.stop)


# The raw peers' fixtures, for every test module of this folder.
from tests.server.peers import codec, collect, open_peer, prefix  # noqa: E402, F401
