#!/usr/bin/env python3
"""Drive a WebSocket client implementation through an Autobahn fuzzing server.

The fuzzing server (``wstest -m fuzzingserver`` or ``kosoku -m fuzzingserver``)
exposes three endpoints:

* ``/getCaseCount``            sends one text message: the number of cases;
* ``/runCase?case=N&agent=A``  runs case N (1-based) against the client;
* ``/updateReports?agent=A``   writes the reports (index.json) for agent A.

For every case the client under test echoes each message it receives until the
connection closes.  Exceptions raised by the client (protocol errors, abnormal
closures, ...) are expected for many cases and are only counted.

The client implementation is loaded from ``--connect MODULE:ATTR`` (default
``hub.protocol:connect``); it must be usable as
``async with connect(uri, max_size=None) as ws`` and ``ws`` must support
``async for msg in ws`` and ``await ws.send(msg)``.

Standard library only (besides the client under test).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from typing import Any


def load_connect(spec: str) -> Callable[..., Any]:
    module_name, _, attr_path = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in (attr_path or "connect").split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    connect: Callable[..., Any] = obj
    return connect


async def collect_messages(connect: Callable[..., Any], uri: str) -> list[Any]:
    """Open ``uri`` and return every message received until the peer closes."""
    received = []
    async with connect(uri, max_size=None) as ws:
        async for msg in ws:
            received.append(msg)
    return received


def case_options(spec: str) -> dict[str, Any]:
    """Extra connect() options for a case run.

    hub compresses every message here, as the server side does (see run.py's
    DEFAULT_SERVER_CMD): kosoku 0.1.0 crashes on an empty message that arrives uncompressed
    on a deflate connection, which RFC 7692 allows but its Python 3 port mishandles.
    """
    if not spec.startswith("hub.protocol"):
        return {}
    from hub.protocol.permessage_deflate import CLIENT_DEFAULT

    return {"compression": dataclasses.replace(CLIENT_DEFAULT, min_size=0)}


async def echo_case(connect: Callable[..., Any], uri: str, **options: Any) -> None:
    async with connect(uri, max_size=None, **options) as ws:
        async for msg in ws:
            await ws.send(msg)


async def amain(args: argparse.Namespace) -> int:
    connect = load_connect(args.connect)
    base = args.url.rstrip("/")
    agent = urllib.parse.quote(args.agent, safe="")

    messages = await asyncio.wait_for(
        collect_messages(connect, f"{base}/getCaseCount"), args.control_timeout
    )
    if not messages:
        print("client: /getCaseCount sent no message", file=sys.stderr)
        return 2
    count = int(messages[0])
    print(f"client: {count} cases to run against {base} as agent {args.agent!r}")

    errors: Counter[str] = Counter()
    timeouts: list[int] = []
    started = time.monotonic()
    for case in range(1, count + 1):
        uri = f"{base}/runCase?case={case}&agent={agent}"
        case_started = time.monotonic()
        try:
            await asyncio.wait_for(
                echo_case(connect, uri, **case_options(args.connect)), args.case_timeout
            )
        except TimeoutError:
            timeouts.append(case)
            print(f"client: case {case} timed out after {args.case_timeout}s")
        except Exception as exc:  # expected for many protocol-violation cases
            errors[type(exc).__name__] += 1
            if args.verbose:
                print(f"client: case {case}: {type(exc).__name__}: {exc}")
        case_elapsed = time.monotonic() - case_started
        if case_elapsed > args.slow:
            print(f"client: case {case} took {case_elapsed:.1f}s")
        if args.verbose and case % 50 == 0:
            print(f"client: {case}/{count} done ({time.monotonic() - started:.1f}s)")

    try:
        await asyncio.wait_for(
            collect_messages(connect, f"{base}/updateReports?agent={agent}"),
            args.control_timeout,
        )
    except Exception as exc:
        # Some fuzzing servers drop the connection once the reports are
        # written; whether they were is checked by the caller (index.json).
        print(f"client: /updateReports connection ended: {type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{name} x{n}" for name, n in errors.most_common()) or "none"
    print(f"client: ran {count} cases in {elapsed:.1f}s; exceptions caught: {summary}")
    if timeouts:
        print(f"client: cases timed out (by index): {timeouts}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:9001",
        help="base URL of the fuzzing server (default: %(default)s)",
    )
    parser.add_argument(
        "--agent",
        default="hub",
        help="agent name reported to the fuzzing server (default: %(default)s)",
    )
    parser.add_argument(
        "--connect",
        default="hub.protocol:connect",
        help="client factory as MODULE:ATTR (default: %(default)s)",
    )
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=60.0,
        help="seconds allowed for one case (default: %(default)s)",
    )
    parser.add_argument(
        "--control-timeout",
        type=float,
        default=60.0,
        help="seconds allowed for /getCaseCount and /updateReports (default: %(default)s)",
    )
    parser.add_argument(
        "--slow",
        type=float,
        default=2.0,
        help="report cases that take longer than this many seconds (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every exception caught")
    args = parser.parse_args()
    try:
        return asyncio.run(amain(args))
    except Exception as exc:
        print(f"client: aborted: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
