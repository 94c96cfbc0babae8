"""Autobahn|Testsuite cases 1-10 against our echo server and our client (conformance/autobahn/).

The bar is 0 FAILED (NON-STRICT and INFORMATIONAL are acceptable outcomes in Autobahn's own
terms). Each run takes ~15 s on 127.0.0.1, so these are marked slow.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

RUNNER = pathlib.Path(__file__).parents[2] / "conformance" / "autobahn" / "run.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["server", "client"])
def test_autobahn_cases_1_to_10(mode: str) -> None:
    result = subprocess.run(
        [sys.executable, str(RUNNER), mode, "--port", "0", "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    summary = re.search(r"^autobahn: (\d+) passed, (\d+) failed", result.stdout, re.MULTILINE)
    assert summary is not None, result.stdout[-3000:] + result.stderr[-3000:]
    passed, failed = int(summary[1]), int(summary[2])
    assert (failed, result.returncode) == (0, 0), result.stdout[-3000:]
    assert passed >= 300  # every case of 1.* to 10.* ran
