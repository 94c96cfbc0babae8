#!/usr/bin/env python3
"""Run the Autobahn|Testsuite WebSocket conformance cases against hub.

Modes:
  server  the fuzzing client attacks our echo server (started by this script);
  client  the fuzzing server is started and client.py drives our client into it.

Runner: the original ``wstest`` (Autobahn|Testsuite, Python 2.7 only) is used
when it is on PATH or given with --wstest; otherwise ``kosoku`` (a Python 3
runner of the same Autobahn case files, from PyPI) is installed into
conformance/autobahn/.venv on first use.

Both runners write an Autobahn-format ``index.json``; this script reads it,
prints the count per behavior and the FAILED cases, and exits 1 if any case
FAILED (2 on a harness error: timeout, no report, server did not start ...).

Everything listens on / connects to 127.0.0.1 only, and every step is bounded
by a timeout.  Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TOOL_VENV = HERE / ".venv"
KOSOKU_REQUIREMENT = "kosoku==0.1.0"
HOST = "127.0.0.1"

# --compression-min-size 0: kosoku 0.1.0's Python 3 port of cases 12.*/13.* hashes an empty
# message that arrives *uncompressed* on a deflate connection as a str and errors out
# ("Strings must be encoded before hashing") before judging anything. RFC 7692 lets a sender
# leave any message uncompressed, so hub's default (no compression under 32 bytes) is valid;
# compressing every message here keeps the runner's bug out of the verdicts.
DEFAULT_SERVER_CMD = (
    "{python} -m hub.protocol --host 127.0.0.1 --port {port} --max-size 33554432"
    " --compression-min-size 0"
)
COMPRESSION_CASES = ["12.*", "13.*"]
BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
CLOSE_ACCEPTED = {"OK", "INFORMATIONAL"}
REPORT_SUFFIXES = (".json", ".html")


class HarnessError(Exception):
    """Something other than a conformance failure went wrong."""


def log(msg: str) -> None:
    print(f"[autobahn] {msg}", flush=True)


# ----------------------------------------------------------------- helpers


def project_python() -> str:
    venv_python = REPO / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in case_id.split("."))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(
                f"process exited with code {proc.returncode} before listening on {HOST}:{port}"
            )
        if port_in_use(port):
            return
        time.sleep(0.1)
    raise HarnessError(f"nothing listening on {HOST}:{port} after {timeout:.0f}s")


def start(
    cmd: list[str], logfile: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, output appended to ``logfile``."""
    with open(logfile, "ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """Stop a process group started by start(): SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def clean_outdir(outdir: Path) -> None:
    """Remove previous report files (only those) so no stale result is read."""
    outdir.mkdir(parents=True, exist_ok=True)
    for entry in outdir.iterdir():
        if entry.is_file() and (
            entry.name.startswith("index.")
            or ("_case_" in entry.name and entry.suffix in REPORT_SUFFIXES)
            or entry.suffix == ".log"
        ):
            entry.unlink()


# ----------------------------------------------------------------- runners


def wstest_works(path: str) -> bool:
    try:
        res = subprocess.run(
            [path, "--help"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def kosoku_path(install: bool = True) -> str:
    # The project's test extra installs kosoku next to the project's Python; use that first.
    bundled = Path(project_python()).parent / "kosoku"
    if bundled.exists():
        return str(bundled)
    exe = TOOL_VENV / "bin" / "kosoku"
    py = TOOL_VENV / "bin" / "python"
    wanted = KOSOKU_REQUIREMENT.split("==")[1]
    if exe.exists():
        res = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('kosoku'))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if res.returncode == 0 and res.stdout.strip() == wanted:
            return str(exe)
    if not install:
        raise HarnessError(f"kosoku not installed in {TOOL_VENV}")
    log(f"installing {KOSOKU_REQUIREMENT} into {TOOL_VENV.relative_to(REPO)}")
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOL_VENV)], check=True, timeout=300)
    subprocess.run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", KOSOKU_REQUIREMENT],
        check=True,
        timeout=600,
    )
    if not exe.exists():
        raise HarnessError("kosoku installation did not produce an executable")
    return str(exe)


def choose_runner(args: argparse.Namespace) -> tuple[str, str]:
    if args.runner in ("auto", "wstest"):
        candidate = args.wstest or shutil.which("wstest")
        if candidate and wstest_works(candidate):
            return "wstest", candidate
        if args.runner == "wstest":
            raise HarnessError(
                "no working wstest found (it needs Python 2.7: install "
                "autobahntestsuite into a Python 2.7 environment and pass --wstest PATH)"
            )
    return "kosoku", kosoku_path()


def wstest_spec(args: argparse.Namespace, mode: str, port: int, outdir: Path) -> Path:
    template = HERE / ("fuzzingclient.json" if mode == "server" else "fuzzingserver.json")
    spec = json.loads(template.read_text())
    url = f"ws://{HOST}:{port}"
    if mode == "server":
        spec["servers"] = [{"agent": args.agent, "url": url}]
    else:
        spec["url"] = url
    spec["outdir"] = str(outdir)
    spec["cases"] = args.selected_cases
    spec["exclude-cases"] = args.excluded_cases
    path = outdir / f"{template.stem}.spec.json"
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def runner_cmd(
    args: argparse.Namespace, runner: tuple[str, str], mode: str, port: int, outdir: Path
) -> list[str]:
    kind, exe = runner
    if kind == "wstest":
        fuzz_mode = "fuzzingclient" if mode == "server" else "fuzzingserver"
        cmd = [exe, "-m", fuzz_mode, "-s", str(wstest_spec(args, mode, port, outdir))]
        if mode == "client":
            cmd += ["--webport", "0"]  # no embedded web UI
        return cmd
    if mode == "server":
        cmd = [exe, "-m", "fuzzingclient", f"ws://{HOST}:{port}", "-p", str(args.parallelism)]
    else:
        cmd = [exe, "-m", "fuzzingserver", f"{HOST}:{port}"]
    for case in args.selected_cases:
        cmd += ["-i", case]
    for case in args.excluded_cases:
        cmd += ["-x", case]
    return [*cmd, "-o", str(outdir)]


# ------------------------------------------------------------------- modes


def run_server_mode(
    args: argparse.Namespace, runner: tuple[str, str], port: int, outdir: Path
) -> None:
    server_cmd = shlex.split(args.server_cmd.format(python=project_python(), port=port))
    server_log = outdir / "server-under-test.log"
    runner_log = outdir / "runner.log"
    server = runner_proc = None
    try:
        log(f"starting server under test: {shlex.join(server_cmd)}")
        server = start(server_cmd, server_log)
        wait_for_port(port, args.startup_timeout, server)
        cmd = runner_cmd(args, runner, "server", port, outdir)
        log(
            f"running {runner[0]} fuzzingclient -> ws://{HOST}:{port} "
            f"(timeout {args.timeout:.0f}s, log {runner_log.relative_to(REPO)})"
        )
        runner_proc = start(cmd, runner_log)
        try:
            runner_proc.wait(args.timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(
                f"{runner[0]} did not finish within {args.timeout:.0f}s; "
                f"log tail:\n{tail(runner_log)}"
            ) from None
        if server.poll() is not None:
            log(
                f"WARNING: server under test exited early (code {server.returncode}); "
                f"log tail:\n{tail(server_log)}"
            )
    finally:
        stop(runner_proc)
        stop(server)
    if not (outdir / "index.json").exists():
        raise HarnessError(f"{runner[0]} wrote no index.json; log tail:\n{tail(runner_log)}")


def run_client_mode(
    args: argparse.Namespace, runner: tuple[str, str], port: int, outdir: Path
) -> None:
    runner_log = outdir / "runner.log"
    client_log = outdir / "client-under-test.log"
    index = outdir / "index.json"
    runner_proc = client = None
    deadline = time.monotonic() + args.timeout
    try:
        cmd = runner_cmd(args, runner, "client", port, outdir)
        log(
            f"starting {runner[0]} fuzzingserver on ws://{HOST}:{port} "
            f"(log {runner_log.relative_to(REPO)})"
        )
        runner_proc = start(cmd, runner_log)
        wait_for_port(port, args.startup_timeout, runner_proc)
        client_cmd = [
            project_python(),
            str(HERE / "client.py"),
            "--url",
            f"ws://{HOST}:{port}",
            "--agent",
            args.agent,
            "--connect",
            args.connect,
            "--case-timeout",
            str(args.case_timeout),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        log(
            f"running client under test: {shlex.join(client_cmd)} "
            f"(timeout {args.timeout:.0f}s, log {client_log.relative_to(REPO)})"
        )
        client = start(client_cmd, client_log, env=env)
        try:
            client.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise HarnessError(
                f"client did not finish within {args.timeout:.0f}s; log tail:\n{tail(client_log)}"
            ) from None
        print(
            "\n".join(
                line for line in tail(client_log, 40).splitlines() if not line.startswith("$ ")
            ),
            flush=True,
        )
        if client.returncode != 0:
            log(f"WARNING: client exited with code {client.returncode}")
        # kosoku exits once the reports are written; wstest keeps serving, so
        # for it wait until index.json shows up.
        report_deadline = time.monotonic() + 60
        while time.monotonic() < report_deadline:
            if runner_proc.poll() is not None or (runner[0] == "wstest" and index.exists()):
                break
            time.sleep(0.2)
    finally:
        stop(client)
        stop(runner_proc)
    if not index.exists():
        raise HarnessError(
            f"{runner[0]} wrote no index.json; runner log tail:\n"
            f"{tail(runner_log)}\nclient log tail:\n{tail(client_log)}"
        )


# ----------------------------------------------------------------- summary


def summarize(index_path: Path, fail_on_close: bool) -> int:
    data: dict[str, dict[str, Any]] = json.loads(index_path.read_text())
    if not data:
        raise HarnessError(f"{index_path} holds no results")
    total_passed = total_failed = total_skipped = 0
    for agent, cases in sorted(data.items()):
        counts = Counter(c.get("behavior", "?") for c in cases.values())
        failed = {cid for cid, c in cases.items() if c.get("behavior") not in PASSING}
        bad_close = sorted(
            (
                (cid, c.get("behaviorClose"))
                for cid, c in cases.items()
                if c.get("behaviorClose") not in CLOSE_ACCEPTED
            ),
            key=lambda item: case_key(item[0]),
        )
        if fail_on_close:
            failed |= {cid for cid, _ in bad_close}
        skipped = {cid for cid, c in cases.items() if c.get("behavior") == "UNIMPLEMENTED"} - failed
        print(
            f"\nAutobahn results for agent {agent!r} ({len(cases)} cases, "
            f"report {index_path.parent / 'index.html'}):"
        )
        for behavior in BEHAVIORS + sorted(set(counts) - set(BEHAVIORS)):
            print(f"  {behavior:<14} {counts.get(behavior, 0):>5}")
        if bad_close:
            shown = ", ".join(f"{cid} ({verdict})" for cid, verdict in bad_close)
            print(f"  close verdicts other than OK/INFORMATIONAL: {shown}")
        if failed:
            ordered = sorted(failed, key=case_key)
            print(f"  FAILED cases ({len(ordered)}): {', '.join(ordered)}")
        else:
            print("  FAILED cases: none")
        total_failed += len(failed)
        total_skipped += len(skipped)
        total_passed += len(cases) - len(failed) - len(skipped)
    # One plain summary line (UNIMPLEMENTED = optional feature not offered).
    print(
        f"autobahn: {total_passed} passed, {total_failed} failed, {total_skipped} skipped",
        flush=True,
    )
    return 1 if total_failed else 0


# -------------------------------------------------------------------- main


def split_cases(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run Autobahn|Testsuite WebSocket conformance cases against hub.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "mode",
        choices=["server", "client"],
        help="test our server (fuzzingclient) or our client (fuzzingserver)",
    )
    parser.add_argument(
        "--cases",
        action="append",
        metavar="GLOBS",
        help="case ids or globs, comma-separated or repeated, e.g. "
        "'1.*,9.1.1' (default: the 'cases' of fuzzingclient.json / "
        "fuzzingserver.json, i.e. 1.* to 10.*)",
    )
    parser.add_argument(
        "--exclude", action="append", metavar="GLOBS", help="case ids or globs to leave out"
    )
    parser.add_argument(
        "--with-compression",
        action="store_true",
        help="also run the permessage-deflate cases 12.* and 13.*",
    )
    parser.add_argument(
        "--port", type=int, default=9001, help="port on 127.0.0.1 (0: pick a free one)"
    )
    parser.add_argument(
        "--server-cmd",
        default=DEFAULT_SERVER_CMD,
        help="server-under-test command (server mode); {python} is the "
        "project venv's python, {port} the port",
    )
    parser.add_argument(
        "--connect",
        default="hub.protocol:connect",
        help="client factory MODULE:ATTR used by client.py (client mode)",
    )
    parser.add_argument("--agent", default="hub", help="agent name in the reports")
    parser.add_argument(
        "--runner",
        choices=["auto", "kosoku", "wstest"],
        default="auto",
        help="auto: wstest if a working one is found, else kosoku",
    )
    parser.add_argument("--wstest", metavar="PATH", help="path of a wstest executable")
    parser.add_argument(
        "--parallelism",
        type=int,
        default=1,
        help="cases run concurrently (kosoku, server mode only)",
    )
    parser.add_argument(
        "--outdir",
        type=Path,
        help="report directory (default: conformance/autobahn/reports/servers or .../clients)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds allowed for the whole fuzzing run"
    )
    parser.add_argument(
        "--case-timeout", type=float, default=60, help="seconds allowed for one case in client.py"
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=20,
        help="seconds to wait for a listener to come up",
    )
    parser.add_argument(
        "--fail-on-close",
        action="store_true",
        help="also count close verdicts FAILED / WRONG CODE / UNCLEAN "
        "/ FAILED BY CLIENT as failures",
    )
    parser.add_argument(
        "--install-only", action="store_true", help="only locate/install the runner and exit"
    )
    parser.add_argument(
        "--summarize", type=Path, metavar="INDEX_JSON", help="only summarize an existing index.json"
    )
    args = parser.parse_args()

    if args.cases:
        args.selected_cases = split_cases(args.cases)
    else:
        template = HERE / ("fuzzingclient.json" if args.mode == "server" else "fuzzingserver.json")
        args.selected_cases = list(json.loads(template.read_text())["cases"])
    if args.with_compression:
        args.selected_cases += [c for c in COMPRESSION_CASES if c not in args.selected_cases]
    args.excluded_cases = split_cases(args.exclude)
    if args.outdir is None:
        args.outdir = HERE / "reports" / ("servers" if args.mode == "server" else "clients")
    args.outdir = args.outdir.resolve()
    return args


def main() -> int:
    args = parse_args()
    try:
        if args.summarize:
            return summarize(args.summarize, args.fail_on_close)
        runner = choose_runner(args)
        log(f"runner: {runner[0]} ({runner[1]})")
        if args.install_only:
            return 0
        port = args.port or free_port()
        if port_in_use(port):
            raise HarnessError(f"port {port} on {HOST} is already in use (try --port 0)")
        clean_outdir(args.outdir)
        log(
            f"cases: {' '.join(args.selected_cases)}"
            + (f" (excluding {' '.join(args.excluded_cases)})" if args.excluded_cases else "")
        )
        started = time.monotonic()
        if args.mode == "server":
            run_server_mode(args, runner, port, args.outdir)
        else:
            run_client_mode(args, runner, port, args.outdir)
        log(f"fuzzing run took {time.monotonic() - started:.1f}s")
        return summarize(args.outdir / "index.json", args.fail_on_close)
    except HarnessError as exc:
        log(f"ERROR: {exc}")
        return 2
    except subprocess.CalledProcessError as exc:
        log(f"ERROR: command failed ({exc.returncode}): {shlex.join(map(str, exc.cmd))}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
