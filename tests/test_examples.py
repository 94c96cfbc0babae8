"""The documented examples run as written."""

from __future__ import annotations

import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"


def test_embedded_hub_example() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "embedded_hub.py")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "in-process: orders.created {'id': 1, 'total': 9.5} offset 1" in result.stdout
    assert "got orders.shipped {'id': 1}" in result.stdout
    assert "the in-process subscriber got it too: orders.shipped" in result.stdout
