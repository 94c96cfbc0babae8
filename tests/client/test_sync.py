"""The synchronous facade (hub_client.sync) against a real ``hub-server`` process.

The ``hub`` fixture is the module's daemon and ``codec`` runs a test with both encodings
(tests/client/conftest.py); tests that restart a hub start their own with ``running_hub``.

Every blocking call is bounded (``timeout=`` or a short request timeout), so that a bug shows
up as a failure within seconds, never as a hung test.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

import hub_client
from hub.exceptions import (
    Disconnected,
    InvalidTopic,
    NotRecovered,
    RequestError,
    Unavailable,
    UsageError,
)
from hub.wire.messages import Pub
from hub_client import ConnectionState, Message
from hub_client.reconnect import Backoff
from hub_client.sync import SyncClient, SyncSubscription, connect
from tests.server.conftest import HubProcess, running_hub

pytestmark = pytest.mark.timeout(30)

#: Upper bound for one message or reply to arrive.
WAIT = 5.0

#: Reconnect fast in the tests that restart the hub.
FAST = Backoff(base=0.05, cap=0.2)


@pytest.fixture
def topic() -> str:
    return f"sync{uuid.uuid4().hex[:10]}.t"


@pytest.fixture
def client(codec: str, hub: HubProcess) -> Iterator[SyncClient]:
    """A client of the module's hub-server (tests/client/conftest.py), with each codec."""
    with connect(hub.uri, codec=codec, request_timeout=WAIT) as sync_client:
        yield sync_client


def state(client: SyncClient) -> ConnectionState:
    return client.state


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hub-client ")]


def take(subscription: SyncSubscription, count: int) -> list[Message]:
    return [subscription.get(timeout=WAIT) for _ in range(count)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- connecting and closing -----------------------------------------------------------------------


def test_connect_and_close(hub: HubProcess) -> None:
    before = len(loop_threads())
    client = connect(hub.uri)
    assert state(client) is ConnectionState.CONNECTED
    assert client.welcome["op"] == "welcome"
    assert client.url == hub.uri
    assert len(loop_threads()) == before + 1
    assert loop_threads()[-1].daemon
    client.close()
    assert state(client) is ConnectionState.CLOSED
    assert client.closed
    assert len(loop_threads()) == before
    assert client.loop.is_closed()


def test_context_manager_closes(hub: HubProcess) -> None:
    with connect(hub.uri) as client:
        assert state(client) is ConnectionState.CONNECTED
    assert state(client) is ConnectionState.CLOSED
    assert client.loop.is_closed()


def test_connection_refused_raises_oserror_and_leaves_no_thread() -> None:
    before = len(loop_threads())
    with pytest.raises(ConnectionRefusedError):
        connect(f"ws://127.0.0.1:{closed_port()}")
    assert len(loop_threads()) == before


def test_bad_option_raises_usage_error() -> None:
    with pytest.raises(UsageError, match="codec"):
        connect("ws://127.0.0.1:1", codec="xml")


def test_close_is_idempotent_and_safe_from_any_thread(hub: HubProcess, topic: str) -> None:
    client = connect(hub.uri)
    threads = [threading.Thread(target=client.close) for _ in range(5)]
    for thread in threads:
        thread.start()
    client.close()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    client.close()
    assert client.state is ConnectionState.CLOSED
    with pytest.raises(Disconnected):
        client.publish(topic, 1)
    with pytest.raises(Disconnected):
        client.subscribe(topic)


def test_close_ends_iteration_in_another_thread(hub: HubProcess, topic: str) -> None:
    client = connect(hub.uri)
    subscription = client.subscribe(topic)
    received: list[Message] = []
    ended = threading.Event()

    def iterate() -> None:
        received.extend(subscription)  # blocks until the subscription ends
        ended.set()

    reader = threading.Thread(target=iterate)
    reader.start()
    client.publish(topic, "before close")
    deadline = time.monotonic() + WAIT
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()
    assert ended.wait(WAIT)
    reader.join(WAIT)
    assert [m.data for m in received] == ["before close"]
    assert not subscription.active


def test_request_waiting_in_another_thread_fails_when_closed(hub: HubProcess) -> None:
    client = connect(hub.uri)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            client.recv()  # nothing comes: it waits until the close
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=receive)
    thread.start()
    time.sleep(0.1)
    client.close()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], Disconnected)


def test_blocking_calls_on_the_loop_thread_raise_usage_error(hub: HubProcess, topic: str) -> None:
    holder: list[SyncClient] = []
    errors: list[BaseException] = []

    def on_state(state: ConnectionState) -> None:
        if state is ConnectionState.CLOSED and holder:
            try:
                holder[0].publish(topic, 1)
            except BaseException as exc:
                errors.append(exc)
            holder[0].close()  # allowed on the loop thread: returns at once

    client = connect(hub.uri, on_state=on_state)
    holder.append(client)
    client.close()
    assert len(errors) == 1
    assert isinstance(errors[0], UsageError)


def test_close_from_a_callback(hub: HubProcess, topic: str) -> None:
    client = connect(hub.uri)
    closed = threading.Event()

    def on_message(message: Message) -> None:
        client.close()
        closed.set()

    client.subscribe(topic, callback=on_message)
    client.publish(topic, "close now")
    assert closed.wait(WAIT)
    assert client.loop.is_closed()
    assert state(client) is ConnectionState.CLOSED


def test_close_from_the_loop_thread() -> None:
    holder: list[SyncClient] = []

    def on_state(state: ConnectionState) -> None:
        if state is ConnectionState.RECONNECTING:
            holder[0].close()

    with running_hub() as process:
        client = connect(process.uri, on_state=on_state, backoff=FAST)
        holder.append(client)
        process.stop()
        deadline = time.monotonic() + WAIT
        while not client.loop.is_closed() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert client.closed
    assert client.loop.is_closed()
    assert client.state is ConnectionState.CLOSED
    client.close()  # and again, from here


# --- publish and subscribe ------------------------------------------------------------------------


def test_publish_subscribe_iterate(client: SyncClient, topic: str) -> None:
    with client.subscribe(topic) as subscription:
        assert subscription.pattern == topic
        offsets = [client.publish(topic, {"n": n}) for n in range(3)]
        assert offsets == [1, 2, 3]
        received = []
        for message in subscription:
            received.append(message)
            if len(received) == 3:
                break
    assert [m.data for m in received] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [m.offset for m in received] == [1, 2, 3]
    assert {m.topic for m in received} == {topic}
    assert {m.sub for m in received} == {topic}
    assert len({m.epoch for m in received}) == 1
    assert not subscription.active


def test_binary_data_on_msgpack(hub: HubProcess, topic: str) -> None:
    with connect(hub.uri, codec="msgpack") as client, client.subscribe(topic) as sub:
        client.publish(topic, b"\x00\xff")
        assert sub.get(timeout=WAIT).data == b"\x00\xff"


def test_wildcard_subscription(client: SyncClient, topic: str) -> None:
    prefix = topic.split(".")[0]
    with client.subscribe(f"{prefix}.*") as subscription:
        client.publish(f"{prefix}.a", "a")
        client.publish(f"{prefix}.b", "b")
        messages = take(subscription, 2)
    assert [(m.topic, m.data, m.sub) for m in messages] == [
        (f"{prefix}.a", "a", f"{prefix}.*"),
        (f"{prefix}.b", "b", f"{prefix}.*"),
    ]


def test_publish_without_waiting(client: SyncClient, topic: str) -> None:
    with client.subscribe(topic) as subscription:
        assert client.publish(topic, "fire", wait=False) is None
        message = subscription.get(timeout=WAIT)
    assert message.data == "fire"
    assert message.offset == 1


def test_get_timeout_raises_timeout_error_and_loses_nothing(client: SyncClient, topic: str) -> None:
    with client.subscribe(topic) as subscription:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            subscription.get(timeout=0.2)
        assert 0.15 < time.monotonic() - started < 2
        client.publish(topic, "after the timeout")
        assert subscription.get(timeout=WAIT).data == "after the timeout"
        with pytest.raises(TimeoutError):
            subscription.get(timeout=0)


class Interrupted(Exception):
    pass


def test_an_interrupted_get_loses_nothing(client: SyncClient, topic: str) -> None:
    """Like Ctrl-C in a blocking get(): the get goes on in the loop, the next one returns its
    message."""

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with client.subscribe(topic) as subscription:
            timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
            timer.start()
            with pytest.raises(Interrupted):
                subscription.get(timeout=WAIT)
            timer.join()
            client.publish(topic, "after the interrupt")
            assert subscription.get(timeout=WAIT).data == "after the interrupt"
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_pending(client: SyncClient, topic: str) -> None:
    with client.subscribe(topic) as subscription:
        client.publish(topic, 1)
        client.publish(topic, 2)
        deadline = time.monotonic() + WAIT
        while subscription.pending() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert subscription.pending() == 2
        take(subscription, 2)
        assert subscription.pending() == 0


def test_unsubscribe_ends_iteration(client: SyncClient, topic: str) -> None:
    subscription = client.subscribe(topic)
    client.publish(topic, "kept")
    assert subscription.get(timeout=WAIT).data == "kept"
    subscription.unsubscribe()
    assert not subscription.active
    assert list(subscription) == []
    with pytest.raises(StopIteration):
        subscription.get(timeout=WAIT)
    subscription.unsubscribe()  # again: nothing happens
    # The pattern is free again.
    with client.subscribe(topic) as again:
        client.publish(topic, "again")
        assert again.get(timeout=WAIT).data == "again"


def test_subscribing_twice_raises_usage_error(client: SyncClient, topic: str) -> None:
    with client.subscribe(topic), pytest.raises(UsageError, match="already subscribed"):
        client.subscribe(topic)


def test_invalid_pattern_raises_invalid_topic(client: SyncClient) -> None:
    with pytest.raises(InvalidTopic) as caught:
        client.subscribe("bad..pattern")
    assert caught.value.code == "invalid_topic"


def test_callback_runs_in_a_worker_thread_and_may_call_the_client(
    client: SyncClient, topic: str
) -> None:
    received: list[tuple[object, str]] = []
    done = threading.Event()
    echo = f"{topic}echo"

    def on_message(message: Message) -> None:
        received.append((message.data, threading.current_thread().name))
        if message.topic == topic:
            client.publish(echo, message.data)  # a blocking call from the callback
        if len(received) == 4:
            done.set()

    with client.subscribe(topic, callback=on_message), client.subscribe(echo, callback=on_message):
        client.publish(topic, 1)
        client.publish(topic, 2)
        assert done.wait(WAIT), received
    assert sorted(data for data, _ in received) == [1, 1, 2, 2]  # type: ignore[type-var]
    assert all(name.startswith("hub-client-callback") for _, name in received)


def test_callback_errors_are_logged_not_raised(
    client: SyncClient, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen = threading.Event()

    def on_message(message: Message) -> None:
        if message.data == "boom":
            raise ValueError("boom")
        seen.set()

    with client.subscribe(topic, callback=on_message):
        client.publish(topic, "boom")
        client.publish(topic, "fine")
        assert seen.wait(WAIT)
    assert "the callback failed" in caplog.text


def test_iterators_in_several_threads(client: SyncClient, topic: str) -> None:
    count = 40
    with client.subscribe(topic) as subscription:
        results: list[list[int]] = [[], []]

        def read(into: list[int]) -> None:
            while sum(len(r) for r in results) < count:
                try:
                    message = subscription.get(timeout=0.1)
                except TimeoutError:
                    continue
                into.append(message.offset)

        readers = [threading.Thread(target=read, args=(r,)) for r in results]
        for reader in readers:
            reader.start()
        for n in range(count):
            client.publish(topic, n)
        for reader in readers:
            reader.join(WAIT * 2)
            assert not reader.is_alive()
    offsets = sorted(results[0] + results[1])
    assert offsets == list(range(1, count + 1))  # each message exactly once


# --- history, presence, errors ------------------------------------------------------------------


def test_history(client: SyncClient, topic: str) -> None:
    for n in range(5):
        client.publish(topic, n)
    page = client.history(topic)
    assert [m["data"] for m in page.messages] == [0, 1, 2, 3, 4]
    assert page.offset == 5
    newest = client.history(topic, limit=2, reverse=True)
    assert [m["offset"] for m in newest.messages] == [5, 4]
    after = client.history(topic, since=(page.epoch, 3))
    assert [m["offset"] for m in after.messages] == [4, 5]
    assert all(isinstance(m["time"], int) for m in page.messages)


def test_presence_raises_the_wire_error(client: SyncClient, topic: str) -> None:
    # The module's hub has no presence topics: presence is unavailable on every topic.
    with pytest.raises(Unavailable) as caught:
        client.presence(topic)
    assert caught.value.code == "unavailable"
    assert isinstance(caught.value, RequestError)


def test_publish_error_keeps_its_type_and_code(client: SyncClient) -> None:
    with pytest.raises(InvalidTopic) as caught:
        client.publish("not.a.*", 1)
    assert caught.value.code == "invalid_topic"
    assert isinstance(caught.value, hub_client.HubError)


def test_request(client: SyncClient, topic: str) -> None:
    reply = client.request("pub", topic=topic, data="x")
    assert reply["op"] == "ok"
    assert reply["offset"] == 1
    assert isinstance(reply["epoch"], str)


# --- the raw layer ------------------------------------------------------------------------------


def test_send_and_recv(client: SyncClient, topic: str) -> None:
    # Ids the client does not use for its own requests (it counts from 1).
    client.send({"op": "pub", "id": 2**53, "topic": topic, "data": "raw"})
    reply = client.recv(timeout=WAIT)
    assert reply == {"op": "ok", "id": 2**53, "offset": 1, "epoch": reply["epoch"]}
    client.send(Pub(op="pub", id=2**53 - 1, topic=topic, data="model"))
    assert client.recv(timeout=WAIT)["offset"] == 2
    client.send({"op": "nope"})
    error = client.recv(timeout=WAIT)
    assert error["op"] == "error"
    assert error["code"] == "unknown_op"


def test_recv_timeout(client: SyncClient) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.recv(timeout=0.2)
    assert time.monotonic() - started < 2


# --- reconnect ----------------------------------------------------------------------------------


def test_states_and_not_recovered_after_a_restart(topic: str) -> None:
    """Memory backend: a restarted hub has lost the history, so the subscription raises
    NotRecovered once in the iterator, then goes on with live messages."""
    with running_hub() as first:
        port = first.port
        client = connect(first.uri, backoff=FAST, request_timeout=WAIT)
        try:
            states = client.states()
            subscription = client.subscribe(topic)
            client.publish(topic, "before")
            assert subscription.get(timeout=WAIT).data == "before"
            first.stop()
            assert next(states) is ConnectionState.RECONNECTING
            with running_hub("--port", str(port)):
                assert next(states) is ConnectionState.CONNECTED
                with pytest.raises(NotRecovered) as caught:
                    subscription.get(timeout=WAIT)
                assert caught.value.topic == topic
                client.publish(topic, "after")
                received = []
                for message in subscription:  # iterate again after NotRecovered
                    received.append(message)
                    break
                assert [(m.data, m.offset) for m in received] == [("after", 1)]
                client.close()
                assert list(states) == [ConnectionState.CLOSED]
        finally:
            client.close()


def test_requests_wait_for_the_reconnect(topic: str) -> None:
    with running_hub() as first:
        port = first.port
        with connect(first.uri, backoff=FAST, request_timeout=WAIT) as client:
            first.stop()
            result: list[int | None] = []
            publisher = threading.Thread(target=lambda: result.append(client.publish(topic, 1)))
            publisher.start()
            with running_hub("--port", str(port)):
                publisher.join(WAIT)
                assert not publisher.is_alive()
            assert result == [1]


def test_fail_fast_when_disconnected(topic: str) -> None:
    with (
        running_hub() as first,
        connect(first.uri, backoff=Backoff(base=0.2, cap=0.2), when_disconnected="fail") as client,
    ):
        first.stop()
        deadline = time.monotonic() + WAIT
        while client.state is ConnectionState.CONNECTED and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(Disconnected):
            client.publish(topic, 1)
