"""The ``hub`` command (hub_client.cli) as a subprocess, against a real ``hub-server``.

The ``hub`` fixture is the module's daemon and ``codec`` runs a test with both encodings
(tests/client/conftest.py). Every subprocess and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgpack
import pytest

from hub.protocol import WebSocketServer, WebSocketServerProtocol, serve
from hub_client.cli import json_safe
from hub_client.sync import connect
from tests.client.commands import WAIT, run
from tests.server.conftest import HubProcess, hub_environment, running_hub

pytestmark = pytest.mark.timeout(30)


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("hub: error: ")
    return result.stderr


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def serving(handler: Callable[[WebSocketServerProtocol], Awaitable[None]]) -> Iterator[str]:
    """A hub played by ``handler`` (hub.protocol.serve on a thread of its own): its URL."""
    loop = asyncio.new_event_loop()
    started: queue.Queue[WebSocketServer] = queue.Queue()

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            serve(handler, "127.0.0.1", 0, subprotocols=["hub.v1.msgpack"])
        )
        started.put(server)
        loop.run_forever()

        async def close() -> None:
            server.close()
            await server.wait_closed()

        loop.run_until_complete(close())
        loop.close()

    thread = threading.Thread(target=run)
    thread.start()
    server = started.get(timeout=WAIT)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)


@pytest.fixture
def topic() -> str:
    return f"cli{uuid.uuid4().hex[:10]}.t"


# --- pub and history ------------------------------------------------------------------------------


def test_pub_then_history(hub: HubProcess, codec: str, topic: str) -> None:
    common = ["--url", hub.uri, "--codec", codec]
    first = run("pub", topic, '{"text": "hi", "n": [1, 2.5, null, true]}', *common)
    assert first.returncode == 0, first.stderr
    published = json.loads(first.stdout)
    assert published["offset"] == 1
    assert isinstance(published["epoch"], str)
    assert run("pub", topic, '"second"', *common).returncode == 0

    history = run("history", topic, *common)
    assert history.returncode == 0, history.stderr
    messages = lines(history.stdout)
    assert [(m["offset"], m["data"]) for m in messages] == [
        (1, {"text": "hi", "n": [1, 2.5, None, True]}),
        (2, "second"),
    ]
    for message in messages:
        assert message["topic"] == topic
        assert message["epoch"] == published["epoch"]
        assert isinstance(message["time"], int)


@pytest.mark.slow
def test_history_options(hub: HubProcess, topic: str) -> None:
    for n in range(1, 6):
        assert run("pub", topic, str(n), "--url", hub.uri).returncode == 0
    newest = run("history", topic, "--limit", "2", "--reverse", "--url", hub.uri)
    assert [m["data"] for m in lines(newest.stdout)] == [5, 4]
    epoch = lines(newest.stdout)[0]["epoch"]
    since = run("history", topic, "--since", f"{epoch}:3", "--url", hub.uri)
    assert [m["offset"] for m in lines(since.stdout)] == [4, 5]
    empty = run("history", f"{topic}.none", "--url", hub.uri)
    assert (empty.returncode, empty.stdout) == (0, "")


def test_pub_raw_sends_a_string(hub: HubProcess, topic: str) -> None:
    assert run("pub", topic, "not {json", "--raw", "--url", hub.uri).returncode == 0
    assert run("pub", topic, "42", "--raw", "--url", hub.uri).returncode == 0
    with connect(hub.uri) as client:
        page = client.history(topic)
    assert [m["data"] for m in page.messages] == ["not {json", "42"]


def test_options_before_the_command_and_from_the_environment(hub: HubProcess, topic: str) -> None:
    assert run("--url", hub.uri, "--codec", "json", "pub", topic, "1").returncode == 0
    from_env = run("pub", topic, "2", env={"HUB_URL": hub.uri})
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["offset"] == 2
    # --url wins over HUB_URL.
    wins = run("pub", topic, "3", "--url", hub.uri, env={"HUB_URL": "ws://127.0.0.1:1"})
    assert wins.returncode == 0, wins.stderr


def test_python_dash_m(hub: HubProcess, topic: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub_client", "pub", topic, "[1]", "--url", hub.uri],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=hub_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["offset"] == 1


# --- sub ----------------------------------------------------------------------------------------


def test_sub_count_prints_json_lines(hub: HubProcess, codec: str, topic: str, start: Any) -> None:
    sub = start("sub", topic, "--count", "2", "--url", hub.uri, "--codec", codec, "-v")
    sub.wait_for_stderr("subscribed to")
    with connect(hub.uri, codec=codec) as client:
        client.publish(topic, {"a": 1})
        client.publish(topic, "two")
        client.publish(topic, "not printed")
    assert sub.wait() == 0, sub.stderr_lines
    messages = [json.loads(line) for line in sub.stdout]
    assert [(m["offset"], m["data"]) for m in messages] == [(1, {"a": 1}), (2, "two")]
    for message in messages:
        assert set(message) == {"topic", "sub", "offset", "epoch", "data"}
        assert (message["topic"], message["sub"]) == (topic, topic)


def test_sub_several_topics_and_binary_data(hub: HubProcess, topic: str, start: Any) -> None:
    prefix = topic.split(".")[0]
    sub = start("sub", topic, f"{prefix}.*", "--count", "3", "--url", hub.uri, "-v")
    sub.wait_for_stderr("subscribed to", count=2)
    with connect(hub.uri, codec="msgpack") as client:
        client.publish(f"{prefix}.bin", b"\x00\xff")
        client.publish(topic, {"b": b"x"})  # matches both subscriptions: printed twice
    assert sub.wait() == 0, sub.stderr_lines
    messages = [json.loads(line) for line in sub.stdout]
    assert sorted((m["sub"], m["topic"], json.dumps(m["data"])) for m in messages) == [
        (f"{prefix}.*", f"{prefix}.bin", '{"$base64": "AP8="}'),
        (f"{prefix}.*", topic, '{"b": {"$base64": "eA=="}}'),
        (topic, topic, '{"b": {"$base64": "eA=="}}'),
    ]


def test_sub_reports_what_its_codec_cannot_print(hub: HubProcess, topic: str, start: Any) -> None:
    """Binary data for a JSON subscriber: the hub sends an error instead; sub says so."""
    sub = start("sub", topic, "--count", "1", "--codec", "json", "--url", hub.uri, "-v")
    sub.wait_for_stderr("subscribed to")
    with connect(hub.uri, codec="msgpack") as client:
        client.publish(topic, b"\x00")
        client.publish(topic, "text")
    sub.wait_for_stderr("cannot be encoded as hub.v1.json")
    assert sub.wait() == 0, sub.stderr_lines
    assert [(m["offset"], m["data"]) for m in map(json.loads, sub.stdout)] == [(2, "text")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sub_stops_on_a_signal_with_status_0(
    hub: HubProcess, topic: str, start: Any, signum: signal.Signals
) -> None:
    sub = start("sub", topic, "--url", hub.uri, "-v")
    sub.wait_for_stderr("subscribed to")
    sub.proc.send_signal(signum)
    assert sub.wait() == 0
    assert not any("Traceback" in line for line in sub.stderr_lines)


@pytest.mark.slow
def test_sub_reconnects_after_a_restart(topic: str, start: Any) -> None:
    """Memory backend: the restarted hub cannot replay, so sub warns on stderr and goes on."""
    with running_hub() as first:
        port = first.port
        sub = start("sub", topic, "--count", "2", "--url", first.uri, "-v")
        sub.wait_for_stderr("subscribed to")
        with connect(first.uri) as client:
            client.publish(topic, "before")
        first.stop()
        sub.wait_for_stderr("reconnecting")
        with running_hub("--port", str(port)) as second:
            sub.wait_for_stderr("reconnected")
            sub.wait_for_stderr("cannot be replayed")
            with connect(second.uri) as client:
                client.publish(topic, "after")
            assert sub.wait() == 0, sub.stderr_lines
    assert [json.loads(line)["data"] for line in sub.stdout] == ["before", "after"]


def test_sub_stops_at_once_on_ctrl_c_while_reconnecting(start: Any, topic: str) -> None:
    with running_hub() as first:
        sub = start("sub", topic, "--url", first.uri, "-v")
        sub.wait_for_stderr("subscribed to")
        first.stop()
        sub.wait_for_stderr("reconnecting")
        started = time.monotonic()
        sub.proc.send_signal(signal.SIGINT)
        assert sub.wait() == 0
        assert time.monotonic() - started < 3


def test_sub_fails_when_the_hub_closes_for_good(start: Any, topic: str) -> None:
    """A close code after which the SDK does not reconnect (1000: the hub ended the session
    on purpose) ends sub with status 1 and a message."""

    async def handler(ws: WebSocketServerProtocol) -> None:
        await ws.send(msgpack.packb({"op": "welcome", "client": "c", "node": "n", "version": 1}))
        request = msgpack.unpackb(await ws.recv())
        reply = {"op": "ok", "id": request["id"], "epoch": "e", "offset": 0, "recovered": False}
        await ws.send(msgpack.packb(reply))
        # Returning closes the connection with 1000.

    with serving(handler) as url:
        sub = start("sub", topic, "--url", url)
        assert sub.wait() == 1
    assert sub.stdout == []
    assert sub.stderr_lines[-1] == "hub: error: the connection closed (1000) and cannot be reopened"
    assert not any("Traceback" in line for line in sub.stderr_lines)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["pub", "x.y", "1"], ["history", "x.y"], ["sub", "x.y", "--count", "1"]]
)
def test_connection_refused_is_one_line_and_status_1(command: list[str]) -> None:
    result = run(*command, "--url", f"ws://127.0.0.1:{closed_port()}")
    assert "connection refused" in assert_one_line_error(result)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/", "ws://127.0.0.1:99999/", "nonsense"])
def test_bad_url_is_one_line_and_status_1(url: str) -> None:
    assert_one_line_error(run("pub", "x.y", "1", "--url", url))


def test_invalid_json_data_is_a_usage_error(hub: HubProcess) -> None:
    result = run("pub", "x.y", "{not json", "--url", hub.uri)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "DATA is not valid JSON" in result.stderr
    assert "--raw" in result.stderr


def test_request_error_is_one_line_and_status_1(hub: HubProcess) -> None:
    stderr = assert_one_line_error(run("pub", "x.*", "1", "--url", hub.uri))
    assert "invalid_topic" in stderr


def test_a_hub_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        result = run("history", "x.y", "--url", f"ws://127.0.0.1:{port}", "--timeout", "0.5")
        assert time.monotonic() - started < 5
    assert "timed out" in assert_one_line_error(result)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["sub"],
        ["sub", "x.y", "--count", "0"],
        ["pub", "x.y"],
        ["history", "x.y", "--since", "no-offset"],
        ["history", "x.y", "--limit", "many"],
        ["pub", "x.y", "1", "--codec", "xml"],
        ["pub", "x.y", "1", "--timeout", "-1"],
        ["presence"],
        ["presence", "x.y", "x.z"],
    ],
)
def test_usage_errors_have_status_2(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr


def test_token_is_sent_as_a_bearer_token() -> None:
    """A listener that records the upgrade request (and answers nothing useful)."""
    received: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(WAIT)
        port = listener.getsockname()[1]

        def accept(count: int) -> None:
            for _ in range(count):
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(WAIT)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = connection.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    received.append(data)
                    connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

        server = threading.Thread(target=accept, args=(2,))
        server.start()
        url = f"ws://127.0.0.1:{port}/"
        from_env = run("pub", "x.y", "1", "--url", url, env={"HUB_TOKEN": "from-env"})
        from_option = run(
            "pub", "x.y", "1", "--url", url, "--token", "opt", env={"HUB_TOKEN": "from-env"}
        )
        server.join(WAIT)
    assert "403" in assert_one_line_error(from_env)
    assert_one_line_error(from_option)
    assert b"authorization: bearer from-env\r\n" in received[0].lower()
    assert b"authorization: bearer opt\r\n" in received[1].lower()


# --- output -------------------------------------------------------------------------------------


def test_json_safe() -> None:
    value = {
        "bytes": b"\x01\x02",
        "nested": [{"deep": bytearray(b"z")}],
        "ext": msgpack.ExtType(5, b"\x00"),
        1: "int key",
        b"k": "bytes key",
        "plain": [1, 2.5, None, True, "s"],
    }
    assert json_safe(value) == {
        "bytes": {"$base64": "AQI="},
        "nested": [{"deep": {"$base64": "eg=="}}],
        "ext": {"$ext": 5, "$base64": "AA=="},
        1: "int key",
        "b'k'": "bytes key",
        "plain": [1, 2.5, None, True, "s"],
    }
    json.dumps(json_safe(value))
