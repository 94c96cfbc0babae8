"""A bounded run of the protocol fuzzer (conformance/fuzz/fuzz_protocol.py) with each engine.

Each target runs for half a second: no crash may turn up, and it must have run inputs. The
``selftest`` target fails on purpose, to show that a crash is reported, saved and replayed.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

FUZZER = pathlib.Path(__file__).parents[2] / "conformance" / "fuzz" / "fuzz_protocol.py"
SUMMARY = re.compile(
    r"^fuzz (?P<target>\w+): (?P<inputs>\d+) inputs in [\d.]+ s, (?P<crashes>\d+) crashes "
    r"\(engine (?P<engine>\w+)\)$",
    re.MULTILINE,
)
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None
#: "auto" is atheris where it is installed; "hypothesis" is the fallback everywhere.
ENGINES = ["auto", "hypothesis"]


def fuzz(*args: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FUZZER), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def summary(result: subprocess.CompletedProcess[str]) -> re.Match[str]:
    match = SUMMARY.search(result.stdout)
    assert match is not None, result.stdout[-3000:] + result.stderr[-3000:]
    return match


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("target", ["frames", "handshake"])
def test_no_crash(target: str, engine: str, tmp_path: pathlib.Path) -> None:
    result = fuzz(target, "--engine", engine, "--seconds", "0.5", "--crash-dir", tmp_path)
    found = summary(result)
    assert (found["crashes"], result.returncode) == ("0", 0), result.stdout[-5000:]
    assert found["target"] == target
    assert found["engine"] == ("atheris" if engine == "auto" and HAS_ATHERIS else "hypothesis")
    assert int(found["inputs"]) >= 20
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_crash_is_reported_saved_and_replayed(engine: str, tmp_path: pathlib.Path) -> None:
    result = fuzz("selftest", "--engine", engine, "--seconds", "30", "--crash-dir", tmp_path)
    found = summary(result)
    assert (found["crashes"], result.returncode) == ("1", 1), result.stdout[-5000:]
    assert "ZeroDivisionError: selftest" in result.stdout
    [saved] = tmp_path.glob("crash-selftest-*")
    data = saved.read_bytes()
    assert data[0] >= 0x80 and data[-1] & 1  # the input that fails selftest, byte for byte
    assert str(saved) in result.stdout
    replayed = fuzz("selftest", "--replay", saved)
    assert replayed.returncode == 1 and f"replay {saved}: CRASH" in replayed.stdout


@pytest.mark.slow
def test_replay_of_a_harmless_input(tmp_path: pathlib.Path) -> None:
    harmless = tmp_path / "input"
    harmless.write_bytes(b"\x01\x00\x81\x80\x00\x00\x00\x00")  # an empty text message
    for target in ("frames", "handshake", "selftest"):
        replayed = fuzz(target, "--replay", harmless)
        assert replayed.returncode == 0, replayed.stdout
        assert f"replay {harmless}: ok" in replayed.stdout


@pytest.mark.slow
def test_usage_errors_exit_2() -> None:
    assert fuzz("nonsense", "--engine", "hypothesis").returncode == 2
    assert fuzz("frames", "--engine", "hypothesis", "--bogus").returncode == 2
    # libFuzzer options only make sense with atheris.
    result = fuzz("frames", "--engine", "hypothesis", "-runs=10")
    assert result.returncode == 2 and "atheris" in result.stderr
