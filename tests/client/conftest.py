"""Fixtures for the tests of the client SDK: real hub-server processes (tests/server/conftest.py),
fake hubs (support.FakeHub), and clients that are closed at teardown."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from hub_client import Client
from tests.client.commands import Running
from tests.client.support import FakeHub, Handler, close_client, connect, minimal

# Real hub-server daemons, and the report of their logs when a test fails.
from tests.server.conftest import (  # noqa: F401
    hub,
    pytest_runtest_makereport,
    shared_hub,
    start_hub,
)

OpenClient = Callable[..., Awaitable[Client]]
StartFake = Callable[..., Awaitable[FakeHub]]


@pytest.fixture(params=["json", "msgpack"])
def codec(request: pytest.FixtureRequest) -> str:
    """The client's codec (hub.v1.json or hub.v1.msgpack)."""
    name: str = request.param
    return name


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own: offsets on a shared hub start at 1."""
    return "c" + uuid.uuid4().hex[:12]


@pytest.fixture
async def open_client(codec: str) -> AsyncIterator[OpenClient]:
    """``await open_client(url, **options)``: a connected client with the test's codec, a fast
    backoff and bounded requests; every client is closed at teardown."""
    clients: list[Client] = []

    async def open_(url: str, **options: Any) -> Client:
        options.setdefault("codec", codec)
        client = await connect(url, **options)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        await close_client(client)


@pytest.fixture
async def start_fake() -> AsyncIterator[StartFake]:
    """``await start_fake(handler)``: a fake hub, closed at teardown."""
    fakes: list[FakeHub] = []

    async def start(handler: Handler = minimal) -> FakeHub:
        fake = await FakeHub(handler).start()
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        await fake.close()


@pytest.fixture
def start() -> Iterator[Any]:
    """``start("sub", ...)``: a running ``hub`` command, killed at teardown if still running."""
    processes: list[Running] = []

    def start_(*args: str) -> Running:
        process = Running(*args)
        processes.append(process)
        return process

    yield start_
    for process in processes:
        process.stop()
