"""The router over the memory backend: first/last subscription, fan-out, encode once."""

from __future__ import annotations

from typing import Any

import pytest

from hub.broker.backend import Backend, OnGap, OnPublication, Publication
from hub.broker.memory import MemoryBackend
from hub.broker.router import Router
from hub.protocol.connection import PreparedMessage
from hub.protocol.frames import Opcode
from hub.wire.codecs import JSON, MSGPACK, Codec


class FakeSession:
    def __init__(self, codec: Codec = JSON) -> None:
        self.codec = codec
        self.frames: list[PreparedMessage] = []
        self.lost_reasons: list[str] = []

    def push(self, frame: PreparedMessage) -> None:
        self.frames.append(frame)

    def lost(self, reason: str) -> None:
        self.lost_reasons.append(reason)

    def messages(self) -> list[Any]:
        return [
            self.codec.decode(f.payload.decode() if f.opcode == Opcode.TEXT else f.payload)
            for f in self.frames
        ]


class CountingBackend(MemoryBackend):
    def __init__(self, on_publication: OnPublication, *, on_gap: OnGap | None = None) -> None:
        super().__init__(on_publication, on_gap=on_gap)
        self.calls: list[tuple[str, str]] = []
        self.fail_next_subscribe = False

    async def subscribe(self, pattern: str) -> None:
        if self.fail_next_subscribe:
            self.fail_next_subscribe = False
            raise ConnectionError("backend down")
        self.calls.append(("subscribe", pattern))
        await super().subscribe(pattern)

    async def unsubscribe(self, pattern: str) -> None:
        self.calls.append(("unsubscribe", pattern))
        await super().unsubscribe(pattern)


@pytest.fixture
async def router() -> Router:
    router = Router(CountingBackend)
    await router.start()
    return router


def backend_of(router: Router) -> CountingBackend:
    backend: Backend = router.backend
    assert isinstance(backend, CountingBackend)
    return backend


async def test_backend_subscribed_on_first_and_unsubscribed_on_last(router: Router) -> None:
    one, two = FakeSession(), FakeSession()
    await router.subscribe("chat.*", one)
    await router.subscribe("chat.*", two)
    await router.unsubscribe("chat.*", one)
    assert backend_of(router).calls == [("subscribe", "chat.*")]
    await router.unsubscribe("chat.*", two)
    assert backend_of(router).calls == [("subscribe", "chat.*"), ("unsubscribe", "chat.*")]


async def test_failed_backend_subscribe_rolls_back(router: Router) -> None:
    session = FakeSession()
    backend_of(router).fail_next_subscribe = True
    with pytest.raises(ConnectionError):
        await router.subscribe("chat.*", session)
    assert "chat.*" not in router.registry
    await router.subscribe("chat.*", session)  # the next attempt subscribes the backend
    assert backend_of(router).calls == [("subscribe", "chat.*")]


async def test_fan_out_names_the_matching_subscription(router: Router) -> None:
    exact, wild = FakeSession(), FakeSession(MSGPACK)
    await router.subscribe("chat.room1", exact)
    await router.subscribe("chat.*", wild)
    await router.subscribe("chat.room1", wild)
    publication = await router.publish("chat.room1", {"text": "hi"})
    assert (publication.offset, publication.topic) == (1, "chat.room1")
    expected = {"op": "msg", "topic": "chat.room1", "data": {"text": "hi"}, "offset": 1}
    assert exact.messages() == [{**expected, "sub": "chat.room1", "epoch": publication.epoch}]
    assert sorted(m["sub"] for m in wild.messages()) == ["chat.*", "chat.room1"]
    assert all(frame.opcode == Opcode.BINARY for frame in wild.frames)


async def test_one_encoding_per_codec_is_shared(router: Router) -> None:
    sessions = [FakeSession(JSON if i % 2 else MSGPACK) for i in range(10)]
    for session in sessions:
        await router.subscribe("t", session)
    await router.publish("t", [1, 2, 3])
    frames = {id(session.frames[0]) for session in sessions}
    assert len(frames) == 2  # the very same object for every subscriber of a codec
    assert router.delivered == 10


async def test_offsets_are_per_topic_and_in_order(router: Router) -> None:
    session = FakeSession()
    await router.subscribe(">", session)
    for topic in ("a", "b", "a", "a", "b"):
        await router.publish(topic, None)
    seen = [(m["topic"], m["offset"]) for m in session.messages()]
    assert seen == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]


async def test_publication_without_subscriber_is_not_decoded(router: Router) -> None:
    router.deliver(Publication("nobody", b"\xc1 not msgpack", 1, "e"))  # would fail to decode
    assert router.delivered == 0


async def test_data_a_codec_cannot_hold_becomes_an_error_for_its_subscribers(
    router: Router,
) -> None:
    json_client, msgpack_client = FakeSession(JSON), FakeSession(MSGPACK)
    await router.subscribe("t", json_client)
    await router.subscribe("t", msgpack_client)
    await router.publish("t", b"\x00binary")  # fine for msgpack, impossible in JSON
    await router.publish("t", 2**70)  # fine for JSON, impossible in msgpack
    assert [m["op"] for m in json_client.messages()] == ["error", "msg"]
    assert [m["op"] for m in msgpack_client.messages()] == ["msg", "error"]
    error = json_client.messages()[0]
    assert error["code"] == "unavailable" and "publication 1 on t" in error["message"]
    assert json_client.messages()[1]["data"] == 2**70
    assert msgpack_client.messages()[0]["data"] == b"\x00binary"


async def test_a_gap_reaches_exactly_the_subscribers_of_the_lost_patterns() -> None:
    router = Router(CountingBackend)
    await router.start()
    hit, also_hit, spared = FakeSession(), FakeSession(MSGPACK), FakeSession()
    await router.subscribe("chat.*", hit)
    await router.subscribe("chat.*", also_hit)
    await router.subscribe("chat.room", spared)
    router.backend.on_gap(["chat.*", "never.subscribed"])
    assert len(hit.lost_reasons) == len(also_hit.lost_reasons) == 1
    assert "chat.*" in hit.lost_reasons[0]
    assert spared.lost_reasons == []
    await router.close()


async def test_a_held_subscription_gets_what_the_replay_did_not_cover(router: Router) -> None:
    held, live = FakeSession(), FakeSession()
    await router.subscribe("t.*", live)
    router.hold("t.*", held)
    await router.subscribe("t.*", held)
    for topic in ("t.a", "t.a", "t.b", "t.a"):
        await router.publish(topic, topic)
    assert held.frames == [] and len(live.frames) == 4
    # The replay covered t.a up to 2; t.b was not replayed at all.
    router.release("t.*", held, {"t.a": (backend_of(router).epoch, 2)})
    assert [(m["topic"], m["offset"]) for m in held.messages()] == [("t.b", 1), ("t.a", 3)]
    await router.publish("t.a", "live")
    assert [m["offset"] for m in held.messages()][-1] == 4  # live again
    assert held.lost_reasons == []


async def test_a_gap_between_the_replay_and_the_held_ones_is_reported(router: Router) -> None:
    session = FakeSession()
    await router.publish("t", 1)
    router.hold("t", session)
    await router.subscribe("t", session)
    await router.publish("t", 2)
    await router.publish("t", 3)
    router.release("t", session, {"t": (backend_of(router).epoch, 0)})  # 1 is in neither: a gap
    assert session.frames == []
    assert session.lost_reasons and "gap" in session.lost_reasons[0]


async def test_too_many_held_publications_lose_the_subscription(router: Router) -> None:
    session = FakeSession()
    router.hold_limit = 3
    router.hold("t", session)
    await router.subscribe("t", session)
    for i in range(4):
        await router.publish("t", i)
    assert len(session.lost_reasons) == 1
    router.unhold("t", session)
    await router.publish("t", "after")
    assert [m["data"] for m in session.messages()] == ["after"]
