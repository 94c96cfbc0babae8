"""A real browser against our server: headless Chromium opens a WebSocket to ``serve()``.

Our server answers plain HTTP for the page (``process_request``) and upgrades ``/ws``. The page
and the server's handler then run a fixed script, both ways:

1. the server sends a text message (non-ASCII, astral, NUL) and a binary one (bytes 0-255); the
   page checks them and echoes them back unchanged;
2. the page sends its own messages: a text one, a binary one (bytes 255-0), and a text and a
   binary message of ~100 KiB each, which span many TCP reads and which Chromium may send in
   several frames, split where it likes (Chromium 156, uncompressed: the binary one in 2-3
   frames, the text one in one; compressed: one frame each);
3. the server answers ``ack``; the page closes with 1000 and a non-ASCII reason; the server's
   ``recv()`` raises ``ConnectionClosedOK`` with that code and reason.

The page reports anything unexpected over the WebSocket itself (``FAIL: ...`` text messages);
what happens outside the socket's lifetime (a script error, the ``close`` event) it reports with
a ``fetch('/report?...')`` that ``process_request`` records. The handler records everything and
the test asserts on it, including the handshake request Chromium sent. Failure messages carry
Chromium's stderr and our server's DEBUG log.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); set
``HUB_TEST_CHROMIUM`` to use another binary. Without it the test skips locally and fails in CI
(``CI=true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hub.protocol import ConnectionClosed, ConnectionClosedOK, WebSocketServerProtocol, serve
from hub.protocol.http11 import Headers

pytestmark = pytest.mark.slow

#: Everything (Chromium's start included) must be over within this many seconds.
DEADLINE = 10.0

SERVER_TEXT = "héllo from hub ☕ — 日本語, 𝄞 and a NUL: \x00."
SERVER_BINARY = bytes(range(256))
PAGE_TEXT = "bonjour from Chromium: ünïcödé ✓ 𝄞 🎉"
PAGE_BINARY = bytes(range(255, -1, -1))
#: Repeated to just over 100 KiB of UTF-8: 1-, 2-, 3- and 4-byte sequences, so that a frame
#: boundary chosen by Chromium can fall inside one.
BIG_TEXT_UNIT = "a é ☕ 𝄞 "
BIG_TEXT_REPEAT = 100 * 1024 // len(BIG_TEXT_UNIT.encode()) + 1
BIG_BINARY_SIZE = 100 * 1024 + 17
CLOSE_REASON = "page done ✓"


def lcg_bytes(size: int, seed: int = 12345) -> bytes:
    """The bytes the page's ``lcgBytes`` makes: incompressible, so deflate can't shrink them."""
    out = bytearray(size)
    x = seed
    for i in range(size):
        x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
        out[i] = x >> 24
    return bytes(out)


BIG_TEXT = BIG_TEXT_UNIT * BIG_TEXT_REPEAT
BIG_BINARY = lcg_bytes(BIG_BINARY_SIZE)

#: What the server must receive, in order: the two echoes, then the page's own messages.
EXPECTED: list[tuple[str, str | bytes]] = [
    ("echo of the server's text", SERVER_TEXT),
    ("echo of the server's binary", SERVER_BINARY),
    ("the page's text", PAGE_TEXT),
    ("the page's binary", PAGE_BINARY),
    ("the page's ~100 KiB text", BIG_TEXT),
    ("the page's ~100 KiB binary", BIG_BINARY),
]

PAGE_SCRIPT = """
"use strict";
const C = __CONSTANTS__;

function report(params) {  // for what happens outside the socket's lifetime
  fetch("/report?" + new URLSearchParams(params)).catch(() => {});
}
window.addEventListener("error", (e) => report({event: "error", message: String(e.message)}));

function lcgBytes(size, seed) {
  const out = new Uint8Array(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

const ws = new WebSocket("ws://" + location.host + "/ws");
ws.binaryType = "arraybuffer";
let step = 0;

function fail(message) {
  console.error("FAIL: " + message);
  ws.send("FAIL: " + message);
}

function checkBytes(what, data, expected) {
  if (!(data instanceof ArrayBuffer)) {
    fail(what + ": expected an ArrayBuffer, got " + Object.prototype.toString.call(data));
    return;
  }
  const got = new Uint8Array(data);
  if (got.length !== expected.length) {
    fail(what + ": " + got.length + " bytes instead of " + expected.length);
    return;
  }
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== expected[i]) {
      fail(what + ": byte " + i + " is " + got[i] + " instead of " + expected[i]);
      return;
    }
  }
}

ws.onopen = () => console.log("websocket open, extensions: " + JSON.stringify(ws.extensions));
ws.onmessage = (event) => {
  step += 1;
  const data = event.data;
  if (step === 1) {
    if (typeof data !== "string") {
      fail("first message: expected text, got " + Object.prototype.toString.call(data));
    } else if (data !== C.serverText) {
      fail("first message: got " + JSON.stringify(data) + " instead of the expected text");
    }
    ws.send(data);  // echo, unchanged
  } else if (step === 2) {
    checkBytes("second message", data, Uint8Array.from({length: 256}, (_, i) => i));
    ws.send(data);  // echo, unchanged (an ArrayBuffer: a binary message)
    ws.send(C.pageText);
    ws.send(Uint8Array.from({length: 256}, (_, i) => 255 - i));
    ws.send(C.bigTextUnit.repeat(C.bigTextRepeat));
    ws.send(lcgBytes(C.bigBinarySize, C.seed));
  } else if (step === 3) {
    if (data !== "ack") fail("third message: expected 'ack', got " + JSON.stringify(data));
    ws.close(1000, C.closeReason);
  } else {
    fail("unexpected message #" + step + ": " + JSON.stringify(String(data).slice(0, 100)));
  }
};
ws.onerror = () => report({event: "websocket-error"});
ws.onclose = (e) => report({
  event: "close", code: String(e.code), reason: e.reason, wasClean: String(e.wasClean),
  extensions: ws.extensions,
});
"""


def page_html() -> bytes:
    constants = {
        "serverText": SERVER_TEXT,
        "pageText": PAGE_TEXT,
        "bigTextUnit": BIG_TEXT_UNIT,
        "bigTextRepeat": BIG_TEXT_REPEAT,
        "bigBinarySize": BIG_BINARY_SIZE,
        "seed": 12345,
        "closeReason": CLOSE_REASON,
    }
    # ensure_ascii: every non-ASCII character (astral ones as surrogate pairs) becomes a \\u
    # escape that JavaScript decodes to the same string; "</" can't end the <script> element.
    script = PAGE_SCRIPT.replace("__CONSTANTS__", json.dumps(constants).replace("</", "<\\/"))
    html = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>hub browser test</title>"
        f"</head><body><script>{script}</script></body></html>\n"
    )
    return html.encode()


# --- finding and running Chromium -----------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def chromium_binary() -> str:
    """The browser to run, or skip (locally) / fail (in CI) when there is none."""
    configured = os.environ.get("HUB_TEST_CHROMIUM")
    if configured:
        found = shutil.which(configured)
        if found is None:
            pytest.fail(f"HUB_TEST_CHROMIUM={configured!r} is not an executable")
        return found
    for candidate in ("chromium", "/usr/bin/chromium"):
        found = shutil.which(candidate)
        if found is not None:
            return found
    reason = (
        "Chromium not found (looked for `chromium` on PATH, /usr/bin/chromium and "
        "$HUB_TEST_CHROMIUM); install it with `apt-get install chromium` (.ci/run does)"
    )
    if in_ci():
        pytest.fail(reason + " -- CI must run the browser test")
    pytest.skip(reason)


def chromium_command(binary: str, profile: Path, url: str) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",  # we run as root in CI; the sandbox refuses to start as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-breakpad",  # no crashpad handler: it would run outside the process group
        "--disable-crash-reporter",
        "--disable-dev-shm-usage",
        "--mute-audio",
        "--enable-logging=stderr",  # console messages (console.log/error) go to stderr too
        "--v=0",
        f"--user-data-dir={profile}",
        url,
    ]


async def stop(process: asyncio.subprocess.Process) -> None:
    """Kill Chromium and every process it started (they share its new process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await process.wait()


# --- what the server saw --------------------------------------------------------------------------


@dataclass
class Record:
    """Everything the server side saw, for the assertions and the failure messages."""

    http_paths: list[str] = field(default_factory=list)
    reports: list[dict[str, str]] = field(default_factory=list)
    path: str | None = None
    request_headers: Headers | None = None
    response_headers: Headers | None = None
    received: list[str | bytes] = field(default_factory=list)
    page_failures: list[str] = field(default_factory=list)
    after_ack: list[str | bytes] = field(default_factory=list)
    closed: ConnectionClosed | None = None
    close_code: int | None = None
    close_reason: str | None = None
    error: str | None = None
    connections: int = 0

    def summary(self) -> str:
        def short(message: str | bytes) -> str:
            return repr(message[:60]) + (f"... [{len(message)}]" if len(message) > 60 else "")

        return "\n".join(
            [
                f"HTTP requests: {self.http_paths}",
                f"page reports: {self.reports}",
                f"websocket connections: {self.connections}, path {self.path!r}",
                f"request headers: {self.request_headers}",
                f"response headers: {self.response_headers}",
                f"received: {[short(m) for m in self.received]}",
                f"page failures: {self.page_failures}",
                f"after ack: {[short(m) for m in self.after_ack]}",
                f"closed: {self.closed!r} (close_code {self.close_code}, "
                f"close_reason {self.close_reason!r})",
                f"handler error: {self.error}",
            ]
        )


def first_difference(got: str | bytes, expected: str | bytes) -> str | None:
    """None if equal, else a short description (never a 100 KiB repr)."""
    if type(got) is not type(expected):
        return f"{type(got).__name__} instead of {type(expected).__name__}"
    if got == expected:
        return None
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            return f"differs at index {i}: {got[i : i + 8]!r} instead of {expected[i : i + 8]!r}"
    return f"length {len(got)} instead of {len(expected)}"


# --- the test -------------------------------------------------------------------------------------


async def exchange_done(handler_done: asyncio.Future[None], page_closed: asyncio.Event) -> None:
    """The handler has returned and the page has reported its ``close`` event."""
    await handler_done
    await page_closed.wait()


def serve_takes(option: str) -> bool:
    return option in inspect.signature(serve).parameters


@pytest.mark.timeout(15)
@pytest.mark.parametrize("compression", ["server-default", "off"])
async def test_chromium_talks_to_our_server(
    compression: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Chromium offers permessage-deflate. ``server-default`` runs ``serve()`` as it comes (it
    negotiates compression once hub supports it); ``off`` passes ``compression=None`` so that the
    uncompressed path is exercised too (Chromium then splits big binary messages into frames).
    """
    options: dict[str, Any] = {}
    if compression == "off":
        if not serve_takes("compression"):
            pytest.skip("serve() has no compression option yet: every run is uncompressed")
        options["compression"] = None
    binary = chromium_binary()
    caplog.set_level(logging.DEBUG, logger="hub.protocol")  # before any connection reads it
    record = Record()
    handler_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    page_closed = asyncio.Event()
    page = page_html()

    def process_request(
        path: str, headers: Headers
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        record.http_paths.append(path)
        if path == "/ws":
            return None  # upgrade
        if path == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], page
        if path.startswith("/report?"):
            query = urllib.parse.parse_qs(path.partition("?")[2], keep_blank_values=True)
            report = {key: values[-1] for key, values in query.items()}
            record.reports.append(report)
            if report.get("event") == "close":
                page_closed.set()
            return 204, [], b""
        return 404, [("Content-Type", "text/plain")], b"not found\n"

    async def handler(ws: WebSocketServerProtocol, path: str) -> None:
        record.connections += 1
        if record.connections > 1:
            return  # only the first connection runs the script
        record.path = path
        record.request_headers = ws.request_headers
        record.response_headers = ws.response_headers
        try:
            await ws.send(SERVER_TEXT)
            await ws.send(SERVER_BINARY)
            acked = False
            while True:
                message = await ws.recv()
                if isinstance(message, str) and message.startswith("FAIL: "):
                    record.page_failures.append(message)
                elif acked:
                    record.after_ack.append(message)
                else:
                    record.received.append(message)
                    if len(record.received) == len(EXPECTED):
                        await ws.send("ack")
                        acked = True
        except ConnectionClosed as exc:
            record.closed = exc
        except Exception:
            record.error = traceback.format_exc()
        finally:
            await ws.wait_closed()
            record.close_code, record.close_reason = ws.close_code, ws.close_reason
            handler_done.set_result(None)

    stderr_path = tmp_path / "chromium-stderr.log"
    started = time.monotonic()
    async with serve(handler, "127.0.0.1", 0, process_request=process_request, **options) as server:
        port = server.sockets[0].getsockname()[1]
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *chromium_command(binary, tmp_path / "profile", f"http://127.0.0.1:{port}/"),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # its own process group, killed whole by stop()
            )
            try:
                # Wait for the whole exchange, but not past Chromium's death nor the deadline.
                finished = asyncio.ensure_future(exchange_done(handler_done, page_closed))
                exited = asyncio.ensure_future(process.wait())
                try:
                    await asyncio.wait(
                        {finished, exited}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED
                    )
                    completed = finished.done()
                finally:
                    finished.cancel()
                    exited.cancel()
                exit_code = process.returncode
            finally:
                await stop(process)
        elapsed = time.monotonic() - started

    def diagnostics() -> str:
        chromium_log = "".join(  # without the D-Bus complaints of a machine with no session bus
            line
            for line in stderr_path.read_text(errors="replace").splitlines(keepends=True)
            if "dbus" not in line and "D-Bus" not in line
        )
        server_log = "\n".join(
            f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == "hub.protocol"
        )
        return (
            f"\n--- what the server saw ---\n{record.summary()}"
            f"\n--- chromium: {binary}, exit code {exit_code} (None: was running) ---\n"
            f"{chromium_log[-6000:]}"
            f"\n--- server log (hub.protocol, DEBUG) ---\n{server_log[-6000:]}"
        )

    if not completed and exit_code is not None:
        pytest.fail(f"Chromium exited ({exit_code}) before the exchange was over" + diagnostics())
    assert completed, f"no complete exchange within {DEADLINE} s" + diagnostics()
    assert record.error is None, record.error + diagnostics()
    assert record.page_failures == [], diagnostics()
    assert [r for r in record.reports if r.get("event") != "close"] == [], diagnostics()
    assert record.connections == 1, diagnostics()
    assert record.path == "/ws", diagnostics()

    # Both directions, byte-exact.
    assert len(record.received) == len(EXPECTED), diagnostics()
    for (what, expected), got in zip(EXPECTED, record.received, strict=True):
        difference = first_difference(got, expected)
        assert difference is None, f"{what}: {difference}" + diagnostics()
    assert record.after_ack == [], diagnostics()

    # The page's close, as the server saw it...
    assert isinstance(record.closed, ConnectionClosedOK), diagnostics()
    assert (record.closed.code, record.closed.reason) == (1000, CLOSE_REASON), diagnostics()
    assert (record.close_code, record.close_reason) == (1000, CLOSE_REASON), diagnostics()
    # ... and as the page saw our answer: a clean close with the code it sent.
    close_reports = [r for r in record.reports if r.get("event") == "close"]
    assert len(close_reports) == 1, diagnostics()
    assert close_reports[0]["code"] == "1000", diagnostics()
    assert close_reports[0]["wasClean"] == "true", diagnostics()

    # The handshake Chromium sent.
    request = record.request_headers
    assert request is not None, diagnostics()
    assert (request.get("Upgrade") or "").lower() == "websocket", diagnostics()
    assert "upgrade" in (request.get("Connection") or "").lower(), diagnostics()
    assert request.get("Sec-WebSocket-Version") == "13", diagnostics()
    assert request.get("Sec-WebSocket-Key"), diagnostics()
    assert request.get("Host") == f"127.0.0.1:{port}", diagnostics()
    assert request.get("Origin") == f"http://127.0.0.1:{port}", diagnostics()
    assert "Chrome/" in (request.get("User-Agent") or ""), diagnostics()
    offer = request.get("Sec-WebSocket-Extensions")
    assert offer is not None, diagnostics()
    assert "permessage-deflate" in offer, diagnostics()
    response = record.response_headers
    assert response is not None, diagnostics()
    accepted = response.get("Sec-WebSocket-Extensions")
    if accepted is not None:  # once our server negotiates compression
        assert "permessage-deflate" in accepted, diagnostics()
    if compression == "off":
        assert accepted is None, diagnostics()
    # The browser agrees on what was negotiated (WebSocket.extensions echoes the response).
    assert close_reports[0].get("extensions", "") == (accepted or ""), diagnostics()

    assert elapsed < DEADLINE + 5, diagnostics()
