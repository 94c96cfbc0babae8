"""The ``hub`` command in a subprocess, for the tests of the command-line client: ``run`` it
to the end, or start it ``Running`` (the ``start`` fixture of conftest.py) and read its lines."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from tests.server.conftest import hub_environment

__all__ = ["HUB", "WAIT", "Running", "run"]

#: Upper bound for a command to finish, or a line to appear.
WAIT = 10.0

#: The console script of this environment, else ``python -m hub_client``.
SCRIPT = Path(sys.executable).parent / "hub"
HUB = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "hub_client"]


def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUB, *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=hub_environment(env),
        stdin=subprocess.DEVNULL,
    )


class Running:
    """A ``hub`` subprocess whose stdout and stderr lines are read by threads."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*HUB, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=hub_environment(),
        )
        self.stdout: list[str] = []
        self._stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._stdout_line)),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.put)),
        ]
        for thread in self._threads:
            thread.start()

    def _stdout_line(self, line: str) -> None:
        self.stdout.append(line)
        self._stdout.put(line)

    def next_json(self) -> dict[str, Any]:
        """The next stdout line, as JSON, within WAIT seconds."""
        try:
            line = self._stdout.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no stdout line within {WAIT} s: {self.stderr_lines}") from None
        value: dict[str, Any] = json.loads(line)
        return value

    @staticmethod
    def _read(stream: IO[str], put: Any) -> None:
        with stream:
            for line in stream:
                put(line.rstrip("\n"))

    def wait_for_stderr(self, text: str, count: int = 1) -> None:
        """Wait until ``count`` stderr lines contain ``text``."""
        deadline = time.monotonic() + WAIT
        while sum(text in line for line in self.stderr_lines) < count:
            remaining = deadline - time.monotonic()
            try:
                self.stderr_lines.append(self.stderr.get(timeout=max(remaining, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"no {text!r} on stderr within {WAIT} s: {self.stderr_lines}"
                ) from None

    def wait(self) -> int:
        status = self.proc.wait(WAIT)
        for thread in self._threads:
            thread.join(WAIT)
        while not self.stderr.empty():
            self.stderr_lines.append(self.stderr.get())
        return status

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
