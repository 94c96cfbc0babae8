"""The examples of docs/client.md run as written, against a live ``hub-server``.

A fenced block preceded by the line ``<!-- runnable -->`` is an example to run: ``python``
blocks with this interpreter, ``sh`` blocks with bash (``hub`` on PATH and ``HUB_URL`` set).
The hub's address in the examples, ``ws://127.0.0.1:8765``, is replaced by the test hub's.
The ``hub`` fixture (tests/client/conftest.py) is the module's daemon, with presence on
``chat.>`` as the guide's "Presence" section says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.conftest import HubProcess, hub_environment, running_hub

DOC = Path(__file__).parents[2] / "docs" / "client.md"

#: The address the examples use.
EXAMPLE_URL = "ws://127.0.0.1:8765"

#: Upper bound for one example.
WAIT = 20.0

MARK = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Example:
    line: int
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"line{self.line}-{self.language}"


def examples(text: str) -> list[Example]:
    """The blocks marked runnable: the marker, then (after blank lines) the fence."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n")
        if before.endswith(MARK):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Example(line, match.group(1), match.group(2)))
    return found


EXAMPLES = examples(DOC.read_text())


@pytest.fixture(scope="module")
def shared_hub() -> Iterator[HubProcess]:
    """The module's daemon (the ``hub`` fixture uses it): the defaults, and presence on the
    topics of the guide's presence examples."""
    with running_hub("--presence-topics", '["chat.>"]') as process:
        yield process


def test_the_guide_has_runnable_examples() -> None:
    languages = [example.language for example in EXAMPLES]
    assert languages.count("python") >= 10
    assert "sh" in languages
    # Every marker is followed by a block (a typo would silently skip an example).
    assert DOC.read_text().count(MARK) == len(EXAMPLES)
    for example in EXAMPLES:
        assert example.language in ("python", "sh"), example


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_example(example: Example, hub: HubProcess, tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{hub.port}"
    bin_dir = str(Path(sys.executable).parent)
    env = hub_environment({"HUB_URL": url, "PATH": bin_dir + os.pathsep + os.environ["PATH"]})
    if example.language == "python":
        script = tmp_path / "example.py"
        script.write_text(example.code.replace(EXAMPLE_URL, url))
        command = [sys.executable, "-W", "error", str(script)]
    else:
        script = tmp_path / "example.sh"
        script.write_text("set -eu\n" + example.code.replace(EXAMPLE_URL, url))
        command = ["bash", str(script)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, (
        f"docs/client.md line {example.line}:\n{result.stdout}\n{result.stderr}"
    )
    assert result.stdout, "the example prints what it shows"
    assert "Traceback" not in result.stderr
