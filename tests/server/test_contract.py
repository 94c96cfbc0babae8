"""Contract tests of ``hub-server`` (PROTOCOL.md), over raw WebSocket connections.

Every test talks to a REAL daemon (see conftest.py) with :func:`hub.protocol.connect` and
encodes the frames itself, with :mod:`json` in text frames on ``hub.v1.json`` and with
:mod:`msgpack` in binary frames on ``hub.v1.msgpack``; no SDK is involved. Tests that need
special settings start their own daemon with those flags; the others share one per module and
keep to topics under their own random prefix. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from hub.protocol import InvalidStatus, connect
from tests.server.conftest import (
    HubProcess,
    StartHub,
    hub_environment,
    refused_setting,
)
from tests.server.peers import (
    CODECS,
    JSON,
    MSGPACK,
    TEST_BOUND,
    WAIT,
    Collector,
    OpenPeer,
    Peer,
    assert_msg,
    encode,
    http_get,
    same,
)

# --- handshake and welcome ------------------------------------------------------------------------


async def test_welcome_is_the_first_frame(hub: HubProcess, codec: str, open_peer: OpenPeer) -> None:
    async with asyncio.timeout(TEST_BOUND):
        first = await open_peer(hub, codec)
        second = await open_peer(hub, codec)
        assert first.ws.subprotocol == codec
        assert first.ws.response_headers.get("Sec-WebSocket-Protocol") == codec
        for peer in (first, second):
            welcome = peer.welcome
            assert welcome.keys() == {"op", "client", "node", "version"}, welcome
            assert welcome["op"] == "welcome"
            assert same(welcome["version"], 1)
            assert isinstance(welcome["client"], str) and welcome["client"]
            assert isinstance(welcome["node"], str) and welcome["node"]
        assert first.welcome["client"] != second.welcome["client"]
        assert first.welcome["node"] == second.welcome["node"]
        _, _, body = await http_get(hub.port, "/healthz")
        assert json.loads(body)["node"] == first.welcome["node"]


async def test_no_subprotocol_offered_means_json(
    hub: HubProcess, open_peer: OpenPeer, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, None)  # Peer.recv checks that the welcome is a text frame
        assert peer.ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in peer.ws.response_headers
        assert peer.welcome["op"] == "welcome"
        await peer.send_raw(json.dumps({"op": "sub", "id": 1, "topic": f"{prefix}.a"}))
        reply = await peer.recv()
        assert reply["op"] == "ok" and reply["id"] == 1, reply


@pytest.mark.parametrize("known", CODECS)
async def test_a_known_subprotocol_among_unknown_ones_is_chosen(
    hub: HubProcess, open_peer: OpenPeer, known: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, subprotocols=["hub.v0.xml", known, "chat"])
        assert peer.ws.subprotocol == known
        assert peer.welcome["op"] == "welcome"


async def test_both_offered_the_hub_names_its_choice(hub: HubProcess, open_peer: OpenPeer) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, subprotocols=[MSGPACK, JSON])
        assert peer.ws.subprotocol in CODECS
        reply = await peer.ok("pub", topic="both.offered", data=None)
        assert reply["offset"] >= 1


@pytest.mark.parametrize("offered", [["hub.v2.json"], ["chat", "superchat"], ["HUB.V1.JSON"]])
async def test_only_unknown_subprotocols_are_refused_with_400(
    hub: HubProcess, offered: list[str]
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        with pytest.raises(InvalidStatus) as refused:
            ws = await connect(hub.uri, subprotocols=offered, open_timeout=WAIT)
            await ws.close()
        assert refused.value.status == 400
        body = refused.value.body.decode("utf-8")
        assert body.strip(), "the 400 has no body"
        assert all(char.isprintable() or char in "\r\n\t" for char in body), body
        assert "subprotocol" in body, f"the 400 body does not say why: {body!r}"
        assert offered[0] in body, f"the 400 body does not name the offer: {body!r}"


# --- sub, pub, unsub ------------------------------------------------------------------------------


async def test_sub_pub_unsub_replies_and_msg_fields(
    hub: HubProcess, codec: str, open_peer: OpenPeer, prefix: str
) -> None:
    topic = f"{prefix}.room1"
    async with asyncio.timeout(TEST_BOUND):
        subscriber = await open_peer(hub, codec)
        publisher = await open_peer(hub, codec)

        # A concrete subscription's ok carries the topic's position; 0 before any publication.
        sub_ok = await subscriber.ok("sub", topic=topic)
        assert sub_ok.keys() == {"op", "id", "epoch", "offset", "recovered"}, sub_ok
        assert isinstance(sub_ok["epoch"], str) and sub_ok["epoch"]
        assert same(sub_ok["offset"], 0) and same(sub_ok["recovered"], False)
        epoch = sub_ok["epoch"]

        for offset, data in enumerate([{"text": "hi"}, "again"], start=1):
            pub_ok = await publisher.ok("pub", topic=topic, data=data)
            assert pub_ok.keys() == {"op", "id", "offset", "epoch"}, pub_ok
            assert same(pub_ok["offset"], offset) and pub_ok["epoch"] == epoch, pub_ok
            msg = await subscriber.recv()
            assert_msg(msg, topic=topic, sub=topic, data=data, offset=offset, epoch=epoch)

        # A later subscriber learns the latest offset; unknown fields are ignored.
        late = await open_peer(hub, codec)
        late_ok = await late.ok("sub", topic=topic, future_field={"x": 1})
        assert same(late_ok["offset"], 2) and late_ok["epoch"] == epoch, late_ok

        # recover replays what the position missed (offset 2), after the ok.
        recovering = await open_peer(hub, codec)
        recover_ok = await recovering.ok("sub", topic=topic, recover={"epoch": epoch, "offset": 1})
        assert recover_ok["recovered"] is True and same(recover_ok["offset"], 2), recover_ok
        replayed = await recovering.recv()
        assert replayed["op"] == "msg" and same(replayed["offset"], 2), replayed

        # A wildcard subscription's ok has recovered and the hub's time (ms); positions belong
        # to concrete topics.
        pattern_ok = await subscriber.ok("sub", topic=f"{prefix}.*")
        assert pattern_ok["recovered"] is False and type(pattern_ok["time"]) is int, pattern_ok

        unsub_ok = await subscriber.ok("unsub", topic=topic)
        assert unsub_ok == {"op": "ok", "id": unsub_ok["id"]}, unsub_ok


async def test_ids_are_echoed_as_sent(hub: HubProcess, codec: str, open_peer: OpenPeer) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, codec)
        for id_ in (1, 7, 2**31, 2**53):
            await peer.send({"op": "pub", "id": id_, "topic": "ids.echo", "data": id_})
            reply = await peer.recv()
            assert reply["op"] == "ok" and same(reply["id"], id_), reply


async def test_a_request_without_id_gets_no_ok(
    hub: HubProcess, codec: str, open_peer: OpenPeer, prefix: str
) -> None:
    quiet, marker = f"{prefix}.quiet", f"{prefix}.marker"
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, codec)
        publisher = await open_peer(hub, codec)

        # sub without id, then a request with id: the next frame is that request's ok.
        await peer.send({"op": "sub", "topic": quiet})
        await peer.ok("sub", topic=marker)
        # ... and the id-less sub did take effect.
        await publisher.ok("pub", topic=quiet, data=1)
        msg = await peer.recv()
        assert msg["op"] == "msg" and msg["topic"] == quiet, msg

        # pub without id (on a topic the peer does not hold): no ok either.
        await peer.send({"op": "pub", "topic": f"{prefix}.elsewhere", "data": 2})
        reply = await peer.ok("pub", topic=f"{prefix}.elsewhere", data=3)
        assert same(reply["offset"], 2), f"the id-less pub was not made: {reply}"

        # unsub without id: no ok, and delivery stops.
        await peer.send({"op": "unsub", "topic": quiet})
        await peer.ok("pub", topic=f"{prefix}.elsewhere", data=4)
        await publisher.ok("pub", topic=quiet, data=5)
        await publisher.ok("pub", topic=marker, data=6)
        msg = await peer.recv()
        assert msg["op"] == "msg" and msg["topic"] == marker, f"delivered after unsub: {msg}"


JSON_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    2**53,
    2**63,  # the largest integers msgpack carries
    -(2**63),
    1.5,
    -0.25,
    1e300,
    "",
    "héllo ☃ 🎉",
    'quotes " and \\ and \n newlines',
    [],
    {},
    [1, "two", [3, [4, [5]]], {"six": None}],
    {"a": {"b": {"c": {"d": [True, False, None]}}}, "empty": {}, "list": []},
    {"op": "msg", "id": 1, "topic": "not.a.request"},  # data is never interpreted
]
MSGPACK_VALUES: list[object] = [
    *JSON_VALUES,
    b"",
    b"\x00\xff\x80binary",
    {"raw": b"\x01\x02", "nested": [b"\x03", {"deeper": b"\x04"}]},
    {1: "int key", 2: b"two"},
    msgpack.ExtType(42, b"extension"),
    msgpack.Timestamp(1_700_000_000, 123_456_789),
]


async def test_data_round_trips(
    hub: HubProcess, codec: str, open_peer: OpenPeer, prefix: str
) -> None:
    topic = f"{prefix}.data"
    values = JSON_VALUES if codec == JSON else MSGPACK_VALUES
    async with asyncio.timeout(TEST_BOUND):
        subscriber = await open_peer(hub, codec)
        publisher = await open_peer(hub, codec)
        epoch = (await subscriber.ok("sub", topic=topic))["epoch"]
        for offset, value in enumerate(values, start=1):
            await publisher.ok("pub", topic=topic, data=value)
            msg = await subscriber.recv()
            assert_msg(msg, topic=topic, sub=topic, data=value, offset=offset, epoch=epoch)


async def test_json_data_with_integers_beyond_64_bits_round_trips(
    hub: HubProcess, open_peer: OpenPeer, prefix: str
) -> None:
    """PROTOCOL.md: ``data`` is any JSON value and the hub never interprets it."""
    topic = f"{prefix}.bigint"
    async with asyncio.timeout(TEST_BOUND):
        subscriber = await open_peer(hub, JSON)
        publisher = await open_peer(hub, JSON)
        epoch = (await subscriber.ok("sub", topic=topic))["epoch"]
        for offset, value in enumerate([2**64, -(2**63) - 1, 10**30], start=1):
            reply = await publisher.request("pub", topic=topic, data=value)
            assert reply["op"] == "ok", f"pub of the JSON number {value} failed: {reply}"
            msg = await subscriber.recv()
            assert_msg(msg, topic=topic, sub=topic, data=value, offset=offset, epoch=epoch)


async def test_the_publisher_receives_its_own_publication(
    hub: HubProcess, codec: str, open_peer: OpenPeer, prefix: str
) -> None:
    topic = f"{prefix}.self"
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, codec)
        await peer.ok("sub", topic=topic)
        await peer.send({"op": "pub", "id": 99, "topic": topic, "data": "me"})
        frames = [await peer.recv(), await peer.recv()]  # ok and msg, in either order
        assert sorted(frame["op"] for frame in frames) == ["msg", "ok"], frames


# --- wildcards and unsub --------------------------------------------------------------------------


async def test_wildcards_and_one_msg_per_matching_subscription(
    hub: HubProcess, codec: str, open_peer: OpenPeer, prefix: str
) -> None:
    star, tail, middle = f"{prefix}.*", f"{prefix}.>", f"{prefix}.*.z"
    async with asyncio.timeout(TEST_BOUND):
        both = await open_peer(hub, codec)
        await both.ok("sub", topic=star)
        await both.ok("sub", topic=tail)
        only_middle = await open_peer(hub, codec)
        await only_middle.ok("sub", topic=middle)
        publisher = await open_peer(hub, codec)

        published = [
            f"{prefix}.a",  # * and >
            f"{prefix}.a.b",  # > only
            prefix,  # neither: > needs at least one more token
            f"{prefix}x.a",  # neither: tokens compare exactly
            f"{prefix}.q.z",  # > and *.z
            f"{prefix}.end",  # * and >: the last one
        ]
        epochs = {}
        for topic in published:
            reply = await publisher.ok("pub", topic=topic, data={"on": topic})
            epochs[topic] = reply["epoch"]

        expected_both = [
            (f"{prefix}.a", star),
            (f"{prefix}.a", tail),
            (f"{prefix}.a.b", tail),
            (f"{prefix}.q.z", tail),
            (f"{prefix}.end", star),
            (f"{prefix}.end", tail),
        ]
        received = [await both.recv() for _ in expected_both]
        for msg in received:
            assert_msg(
                msg,
                topic=msg["topic"],
                sub=msg["sub"],
                data={"on": msg["topic"]},
                offset=1,
                epoch=epochs[msg["topic"]],
            )
        assert sorted((m["topic"], m["sub"]) for m in received) == sorted(expected_both)

        msg = await only_middle.recv()
        assert (msg["topic"], msg["sub"]) == (f"{prefix}.q.z", middle), msg

        # Whatever else both holds, nothing more came: the next frame is the reply to this.
        await both.ok("pub", topic=f"probe.{prefix}", data=0)
        await only_middle.ok("pub", topic=f"probe.{prefix}", data=0)


async def test_unsub_stops_delivery_of_that_pattern_only(
    hub: HubProcess, codec: str, open_peer: OpenPeer, prefix: str
) -> None:
    topic, star, tail = f"{prefix}.a", f"{prefix}.*", f"{prefix}.>"
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, codec)
        publisher = await open_peer(hub, codec)
        for pattern in (topic, star, tail):
            await peer.ok("sub", topic=pattern)
        await publisher.ok("pub", topic=topic, data=1)
        subs = sorted(
            [(await peer.recv())["sub"], (await peer.recv())["sub"], (await peer.recv())["sub"]]
        )
        assert subs == sorted([topic, star, tail])

        await peer.ok("unsub", topic=tail)  # leaves the other two (no pattern matching)
        await publisher.ok("pub", topic=topic, data=2)
        subs = sorted([(await peer.recv())["sub"], (await peer.recv())["sub"]])
        assert subs == sorted([topic, star])

        await peer.ok("unsub", topic=star)
        await peer.ok("unsub", topic=topic)
        await publisher.ok("pub", topic=topic, data=3)
        # Nothing is delivered any more: the next frame is the reply to this request.
        await peer.ok("pub", topic=f"{prefix}.other", data=0)

        # Subscribing again delivers again, from the current offset on.
        await peer.ok("sub", topic=star)
        await publisher.ok("pub", topic=topic, data=4)
        msg = await peer.recv()
        assert msg["sub"] == star and same(msg["offset"], 4) and same(msg["data"], 4), msg


async def test_unsub_of_a_pattern_not_held_is_not_subscribed(
    hub: HubProcess, codec: str, open_peer: OpenPeer, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, codec)
        error = await peer.error("unsub", topic=f"{prefix}.never")
        assert error["code"] == "not_subscribed", error

        await peer.ok("sub", topic=f"{prefix}.*")
        error = await peer.error("unsub", topic=f"{prefix}.>")  # exact strings, no matching
        assert error["code"] == "not_subscribed", error
        await peer.ok("unsub", topic=f"{prefix}.*")
        error = await peer.error("unsub", topic=f"{prefix}.*")  # twice
        assert error["code"] == "not_subscribed", error

        await peer.send({"op": "unsub", "topic": f"{prefix}.never"})  # without id
        error = await peer.recv()
        assert error["op"] == "error" and error["code"] == "not_subscribed", error
        assert "id" not in error, error


# --- ordering under concurrent publishers ---------------------------------------------------------

PUBLISHERS = 4
PUBS_EACH = 150


async def test_each_topic_is_delivered_in_offset_order_without_gaps(
    hub: HubProcess,
    codec: str,
    open_peer: OpenPeer,
    collect: Callable[[Peer], Collector],
    prefix: str,
) -> None:
    topics = [f"{prefix}.a", f"{prefix}.b", f"{prefix}.c"]
    total = PUBLISHERS * PUBS_EACH
    async with asyncio.timeout(TEST_BOUND):
        subscribers = [await open_peer(hub, codec) for _ in range(2)]
        await subscribers[0].ok("sub", topic=f"{prefix}.>")
        await subscribers[1].ok("sub", topic=f"{prefix}.*")
        collectors = [collect(peer) for peer in subscribers]
        publishers = [await open_peer(hub, codec) for _ in range(PUBLISHERS)]

        async def publish(number: int, peer: Peer) -> list[tuple[dict[str, Any], dict[str, Any]]]:
            """Pipeline every pub, yielding now and then so that the publishers interleave."""
            sent: dict[int, dict[str, Any]] = {}

            async def send_all() -> None:
                for seq in range(PUBS_EACH):
                    request = {
                        "op": "pub",
                        "id": seq + 1,
                        "topic": topics[(seq + number) % len(topics)],
                        "data": {"publisher": number, "seq": seq},
                    }
                    sent[seq + 1] = request
                    await peer.send(request)
                    if seq % 5 == 0:
                        await asyncio.sleep(0)

            async def read_all() -> list[dict[str, Any]]:
                return [await peer.recv() for _ in range(PUBS_EACH)]

            _, replies = await asyncio.gather(send_all(), read_all())
            assert all(reply["op"] == "ok" for reply in replies), replies
            assert sorted(reply["id"] for reply in replies) == sorted(sent)
            return [(sent[reply["id"]], reply) for reply in replies]

        results = await asyncio.gather(*(publish(n, p) for n, p in enumerate(publishers)))
        streams = [await collector.wait_for(total) for collector in collectors]

    # The offsets the publishers were told: per topic, each of 1..N exactly once.
    by_offset: dict[tuple[str, int], object] = {}
    per_topic: dict[str, int] = dict.fromkeys(topics, 0)
    for pairs in results:
        last: dict[str, int] = {}
        for request, reply in sorted(pairs, key=lambda pair: pair[0]["id"]):
            key = (request["topic"], reply["offset"])
            assert key not in by_offset, f"offset {key} given twice"
            by_offset[key] = request["data"]
            per_topic[request["topic"]] += 1
            # One connection's requests are served in order.
            assert reply["offset"] > last.get(request["topic"], 0), (request, reply)
            last[request["topic"]] = reply["offset"]
    for topic, count in per_topic.items():
        assert {offset for t, offset in by_offset if t == topic} == set(range(1, count + 1))

    # Each subscriber: per topic, offsets 1..N in order, the data that was published with each.
    sequences = []
    for stream in streams:
        sequence: dict[str, list[tuple[int, object]]] = {topic: [] for topic in topics}
        for msg in stream:
            assert msg["op"] == "msg", msg
            sequence[msg["topic"]].append((msg["offset"], msg["data"]))
            assert same(msg["data"], by_offset[(msg["topic"], msg["offset"])]), msg
        for topic in topics:
            offsets = [offset for offset, _ in sequence[topic]]
            assert offsets == list(range(1, per_topic[topic] + 1)), (
                f"{topic}: offsets out of order, with gaps or duplicates: {offsets}"
            )
        sequences.append(sequence)
    assert sequences[0] == sequences[1]


# --- errors: every kind of bad frame --------------------------------------------------------------


@dataclass(frozen=True)
class BadFrame:
    name: str
    #: The frame to send, for a subprotocol; a map is encoded with that subprotocol's codec.
    frame: Callable[[str], object]
    code: str
    #: The id the error must echo, or None: no id.
    id: int | None
    only: str | None = None  # one subprotocol only

    def raw(self, subprotocol: str) -> str | bytes:
        frame = self.frame(subprotocol)
        if isinstance(frame, Raw):
            return frame.data
        return encode(subprotocol, frame)


@dataclass(frozen=True)
class Raw:
    """A frame sent as is, not encoded."""

    data: str | bytes


def same_for_both(message: object) -> Callable[[str], object]:
    return lambda _subprotocol: message


def per_codec(json_frame: str | bytes, msgpack_frame: str | bytes) -> Callable[[str], object]:
    return lambda subprotocol: Raw(json_frame if subprotocol == JSON else msgpack_frame)


def _pub(**fields: object) -> dict[str, object]:
    return {"op": "pub", **fields}


T = "errors.topic"
VALID_MSGPACK = msgpack.packb({"op": "sub", "id": 11, "topic": T}, use_bin_type=True)

BAD_FRAMES = [
    # Not decodable, or the wrong frame type: no id can be read.
    BadFrame(
        "truncated",
        per_codec('{"op": "sub", "id": 11,', VALID_MSGPACK[:-3]),
        "bad_request",
        None,
    ),
    BadFrame("garbage", per_codec("not json at all", b"\xc1\xc1\xc1"), "bad_request", None),
    BadFrame(
        "two-messages-in-one-frame",
        per_codec(
            '{"op": "sub", "id": 11, "topic": "a"} {"op": "sub", "id": 12, "topic": "b"}',
            VALID_MSGPACK + VALID_MSGPACK,
        ),
        "bad_request",
        None,
    ),
    BadFrame(
        "binary-frame-on-json",
        same_for_both(Raw(json.dumps({"op": "sub", "id": 11, "topic": T}).encode())),
        "bad_request",
        None,
        only=JSON,
    ),
    BadFrame(
        "text-frame-on-msgpack",
        same_for_both(Raw(json.dumps({"op": "sub", "id": 11, "topic": T}))),
        "bad_request",
        None,
        only=MSGPACK,
    ),
    BadFrame(
        "msgpack-text-frame-of-latin1",
        same_for_both(Raw(VALID_MSGPACK.decode("latin-1"))),
        "bad_request",
        None,
        only=MSGPACK,
    ),
    # Not a map, no op.
    BadFrame("array", same_for_both([{"op": "sub", "id": 11, "topic": T}]), "bad_request", None),
    BadFrame("string", same_for_both("sub"), "bad_request", None),
    BadFrame("number", same_for_both(42), "bad_request", None),
    BadFrame("null", same_for_both(None), "bad_request", None),
    BadFrame("missing-op", same_for_both({"id": 5, "topic": T}), "bad_request", 5),
    BadFrame("op-not-a-string", same_for_both({"op": 1, "id": 6, "topic": T}), "bad_request", 6),
    BadFrame("op-null", same_for_both({"op": None, "id": 6}), "bad_request", 6),
    BadFrame(
        "op-bytes",
        same_for_both({"op": b"sub", "id": 6, "topic": T}),
        "bad_request",
        6,
        only=MSGPACK,
    ),
    # Unknown ops.
    BadFrame(
        "op-subscribe", same_for_both({"op": "subscribe", "id": 7, "topic": T}), "unknown_op", 7
    ),
    BadFrame(
        "op-msg", same_for_both({"op": "msg", "id": 8, "topic": T, "data": 1}), "unknown_op", 8
    ),
    BadFrame("op-ok-no-id", same_for_both({"op": "ok"}), "unknown_op", None),
    BadFrame("op-upper-case", same_for_both({"op": "SUB", "id": 9, "topic": T}), "unknown_op", 9),
    BadFrame("op-empty", same_for_both({"op": "", "id": 9}), "unknown_op", 9),
    # Missing and mistyped fields.
    BadFrame("sub-without-topic", same_for_both({"op": "sub", "id": 10}), "bad_request", 10),
    BadFrame("unsub-without-topic", same_for_both({"op": "unsub", "id": 10}), "bad_request", 10),
    BadFrame(
        "sub-topic-number", same_for_both({"op": "sub", "id": 11, "topic": 42}), "bad_request", 11
    ),
    BadFrame(
        "sub-topic-null", same_for_both({"op": "sub", "id": 11, "topic": None}), "bad_request", 11
    ),
    BadFrame(
        "sub-topic-bytes",
        same_for_both({"op": "sub", "id": 11, "topic": T.encode()}),
        "bad_request",
        11,
        only=MSGPACK,
    ),
    BadFrame("pub-topic-list", same_for_both(_pub(id=12, topic=[T], data=1)), "bad_request", 12),
    BadFrame("pub-without-data", same_for_both(_pub(id=13, topic=T)), "bad_request", 13),
    BadFrame("pub-without-data-or-id", same_for_both(_pub(topic=T)), "bad_request", None),
    BadFrame("pub-without-topic", same_for_both(_pub(id=13, data=1)), "bad_request", 13),
    BadFrame(
        "recover-epoch-number",
        same_for_both({"op": "sub", "id": 14, "topic": T, "recover": {"epoch": 1, "offset": 0}}),
        "bad_request",
        14,
    ),
    BadFrame(
        "recover-offset-negative",
        same_for_both({"op": "sub", "id": 14, "topic": T, "recover": {"epoch": "e", "offset": -1}}),
        "bad_request",
        14,
    ),
    BadFrame(
        "recover-not-a-map",
        same_for_both({"op": "sub", "id": 14, "topic": T, "recover": "latest"}),
        "bad_request",
        14,
    ),
    BadFrame(
        "history-limit-zero",
        same_for_both({"op": "history", "id": 15, "topic": T, "limit": 0}),
        "bad_request",
        15,
    ),
    BadFrame(
        "history-limit-string",
        same_for_both({"op": "history", "id": 15, "topic": T, "limit": "5"}),
        "bad_request",
        15,
    ),
    # Invalid ids: the error has no id.
    BadFrame("id-zero", same_for_both(_pub(id=0, topic=T, data=1)), "bad_request", None),
    BadFrame("id-negative", same_for_both(_pub(id=-1, topic=T, data=1)), "bad_request", None),
    BadFrame("id-too-big", same_for_both(_pub(id=2**53 + 1, topic=T, data=1)), "bad_request", None),
    BadFrame("id-string", same_for_both(_pub(id="1", topic=T, data=1)), "bad_request", None),
    BadFrame("id-float", same_for_both(_pub(id=1.0, topic=T, data=1)), "bad_request", None),
    BadFrame("id-true", same_for_both(_pub(id=True, topic=T, data=1)), "bad_request", None),
    # Invalid topics and patterns.
    BadFrame(
        "sub-empty-token",
        same_for_both({"op": "sub", "id": 16, "topic": "chat..room1"}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "sub-leading-dot",
        same_for_both({"op": "sub", "id": 16, "topic": ".chat"}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "sub-trailing-dot",
        same_for_both({"op": "sub", "id": 16, "topic": "chat."}),
        "invalid_topic",
        16,
    ),
    BadFrame("sub-empty", same_for_both({"op": "sub", "id": 16, "topic": ""}), "invalid_topic", 16),
    BadFrame(
        "sub-space",
        same_for_both({"op": "sub", "id": 16, "topic": "chat room"}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "sub-slash",
        same_for_both({"op": "sub", "id": 16, "topic": "chat/room"}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "sub-non-ascii",
        same_for_both({"op": "sub", "id": 16, "topic": "chät"}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "sub-256-chars",
        same_for_both({"op": "sub", "id": 16, "topic": "a" * 256}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "sub-partial-star",
        same_for_both({"op": "sub", "id": 16, "topic": "ch*t"}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "sub-double-gt",
        same_for_both({"op": "sub", "id": 16, "topic": "chat.>>"}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "sub-gt-not-last",
        same_for_both({"op": "sub", "id": 16, "topic": "chat.>.x"}),
        "invalid_topic",
        16,
    ),
    BadFrame(
        "unsub-invalid",
        same_for_both({"op": "unsub", "id": 17, "topic": "a..b"}),
        "invalid_topic",
        17,
    ),
    BadFrame("pub-star", same_for_both(_pub(id=18, topic="chat.*", data=1)), "invalid_topic", 18),
    BadFrame("pub-gt", same_for_both(_pub(id=18, topic="chat.>", data=1)), "invalid_topic", 18),
    BadFrame(
        "pub-invalid-no-id", same_for_both(_pub(topic="chat..x", data=1)), "invalid_topic", None
    ),
    BadFrame(
        "history-pattern",
        same_for_both({"op": "history", "id": 19, "topic": "chat.*"}),
        "invalid_topic",
        19,
    ),
    BadFrame(
        "presence-pattern",
        same_for_both({"op": "presence", "id": 19, "topic": "chat.>"}),
        "invalid_topic",
        19,
    ),
    BadFrame(
        "history-reverse-string",
        same_for_both({"op": "history", "id": 20, "topic": T, "reverse": "yes"}),
        "bad_request",
        20,
    ),
    BadFrame(
        "sub-topic-with-pattern-recovery",
        same_for_both({"op": "sub", "id": 20, "topic": T, "recover": {"since": 1, "topics": {}}}),
        "bad_request",
        20,
    ),
    BadFrame(
        "sub-wildcard-with-a-position",
        same_for_both(
            {"op": "sub", "id": 20, "topic": "chat.*", "recover": {"epoch": "e", "offset": 1}}
        ),
        "bad_request",
        20,
    ),
    BadFrame(
        "sub-wildcard-since-string",
        same_for_both({"op": "sub", "topic": "chat.*", "recover": {"since": "1", "topics": {}}}),
        "bad_request",
        None,
    ),
    # Valid requests that this release cannot serve.
    BadFrame(
        "presence", same_for_both({"op": "presence", "id": 21, "topic": T}), "unavailable", 21
    ),
]


BAD_CASES = [
    pytest.param(subprotocol, bad, id=f"{subprotocol.rsplit('.', 1)[1]}-{bad.name}")
    for subprotocol in CODECS
    for bad in BAD_FRAMES
    if bad.only in (None, subprotocol)
]


@pytest.mark.parametrize(("codec", "bad"), BAD_CASES)
async def test_bad_frame_gets_its_error_and_the_connection_stays_open(
    hub: HubProcess, codec: str, open_peer: OpenPeer, bad: BadFrame, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await open_peer(hub, codec)
        await peer.send_raw(bad.raw(codec))
        error = await peer.recv()
        assert error["op"] == "error", error
        assert error["code"] == bad.code, error
        assert isinstance(error.get("message"), str) and error["message"], error
        if bad.id is None:
            assert "id" not in error, error
            assert error.keys() == {"op", "code", "message"}, error
        else:
            assert same(error.get("id"), bad.id), error
            assert error.keys() == {"op", "id", "code", "message"}, error
        # The connection is still open and serves the next request.
        await peer.ok("sub", topic=f"{prefix}.after")
        await peer.ok("pub", topic=f"{prefix}.other", data="still here")


# --- limits ---------------------------------------------------------------------------------------


INVALID = [
    BadFrame("invalid-encoding", per_codec("{{{", b"\xc1"), "bad_request", None),
    BadFrame("unknown-op", same_for_both({"op": "nope", "id": 3}), "unknown_op", 3),
    BadFrame(
        "invalid-topic", same_for_both({"op": "sub", "id": 4, "topic": "a..b"}), "invalid_topic", 4
    ),
]


async def test_repeated_invalid_frames_close_with_1008(
    start_hub: StartHub, codec: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        hub = await start_hub("--bad-frame-limit", "3")
        peer = await open_peer(hub, codec)

        # Two invalid frames, a valid request (resets the count), two more: still open.
        for bad in INVALID[:2]:
            await peer.send_raw(bad.raw(codec))
            assert (await peer.recv())["code"] == bad.code
        await peer.ok("sub", topic="limit.reset")
        for bad in INVALID[1:]:
            await peer.send_raw(bad.raw(codec))
            assert (await peer.recv())["code"] == bad.code
        # Errors that are not about the frame (here, not_subscribed) reset the count too.
        await peer.error("unsub", topic="limit.not-held")
        for bad in INVALID[:2]:
            await peer.send_raw(bad.raw(codec))
            assert (await peer.recv())["code"] == bad.code
        await peer.ok("pub", topic="limit.elsewhere", data=None)

        # Three in a row: 1008.
        for bad in INVALID:
            await peer.send_raw(bad.raw(codec))
        frames, closed = await peer.closed()
        assert closed.code == 1008, f"closed with {closed.code} {closed.reason!r}, not 1008"
        assert closed.reason, "the 1008 close frame gives no reason"
        assert all(frame["op"] == "error" for frame in frames), frames
        assert [frame["code"] for frame in frames] == [bad.code for bad in INVALID][: len(frames)]

        # Another connection is not affected.
        other = await open_peer(hub, codec)
        await other.ok("sub", topic="limit.other")


async def test_invalid_frames_before_the_limit_get_their_errors_before_1008(
    start_hub: StartHub, codec: str, open_peer: OpenPeer
) -> None:
    """The first two of three back-to-back invalid frames were read while the connection was
    open, so each gets its ``error`` (PROTOCOL.md: "a request failed; the connection stays
    open") before the close; only the third, the one that hits the limit, may go unanswered."""
    async with asyncio.timeout(TEST_BOUND):
        hub = await start_hub("--bad-frame-limit", "3")
        peer = await open_peer(hub, codec)
        for bad in INVALID:
            await peer.send_raw(bad.raw(codec))
        frames, closed = await peer.closed()
        assert closed.code == 1008, f"closed with {closed.code} {closed.reason!r}, not 1008"
        codes = [frame.get("code") for frame in frames]
        assert codes[:2] == [bad.code for bad in INVALID[:2]], (
            f"errors before the 1008 close: {frames}"
        )


async def test_max_subscriptions(start_hub: StartHub, codec: str, open_peer: OpenPeer) -> None:
    async with asyncio.timeout(TEST_BOUND):
        hub = await start_hub("--max-subscriptions", "2")
        peer = await open_peer(hub, codec)
        publisher = await open_peer(hub, codec)
        await peer.ok("sub", topic="max.a")
        await peer.ok("sub", topic="max.*")
        error = await peer.error("sub", topic="max.c")
        assert error["code"] == "bad_request", error
        assert "2" in error["message"], f"the error does not say the limit: {error}"

        # The refused subscription does not exist; the connection still works.
        await publisher.ok("pub", topic="max.c", data="c")
        msg = await peer.recv()
        assert (msg["topic"], msg["sub"]) == ("max.c", "max.*"), msg
        # A slot freed by unsub can be used again.
        await peer.ok("unsub", topic="max.a")
        await peer.ok("sub", topic="max.c")
        error = await peer.error("sub", topic="max.d")
        assert error["code"] == "bad_request", error
        # The limit is per connection.
        other = await open_peer(hub, codec)
        await other.ok("sub", topic="max.a")
        await other.ok("sub", topic="max.b")


async def test_an_oversized_message_closes_with_1009(
    start_hub: StartHub, codec: str, open_peer: OpenPeer
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        hub = await start_hub("--max-message-size", "2048")
        peer = await open_peer(hub, codec)
        # Within the limit: fine.
        await peer.ok("pub", topic="size.ok", data="x" * 1500)
        # Over it, even though permessage-deflate makes it small on the wire.
        await peer.send({"op": "pub", "id": 99, "topic": "size.big", "data": "x" * 4096})
        frames, closed = await peer.closed()
        assert closed.code == 1009, f"closed with {closed.code} {closed.reason!r}, not 1009"
        assert not any(frame.get("id") == 99 for frame in frames), frames

        # Without compression, random data over the limit: 1009 as well.
        raw = await open_peer(hub, codec, compression=None)
        await raw.send({"op": "pub", "id": 1, "topic": "size.big", "data": os.urandom(1600).hex()})
        _, closed = await raw.closed()
        assert closed.code == 1009, f"closed with {closed.code} {closed.reason!r}, not 1009"


SLOW_CONSUMER_LOG = re.compile(r"closing session \S+ with 4008")
PAYLOAD = 16 * 1024
MAX_PUBS = 1500  # 24 MiB: far more than loopback's socket buffers hold
MORE_PUBS = 30  # published after the overflow


async def test_a_slow_consumer_is_closed_with_4008_and_nobody_else_waits(
    start_hub: StartHub,
    codec: str,
    open_peer: OpenPeer,
    collect: Callable[[Peer], Collector],
) -> None:
    topic = "slow.topic"
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TEST_BOUND + 10):
        hub = await start_hub("--outbox-messages", "50")

        # A subscriber that stops reading: one queued message in the client, then TCP backs up
        # through a small receive buffer.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", hub.port))
            slow = await open_peer(hub, codec, sock=sock, max_queue=1, compression=None)
        except BaseException:
            sock.close()
            raise
        await slow.ok("sub", topic=topic)

        fast = await open_peer(hub, codec)
        await fast.ok("sub", topic=topic)
        fast_frames = collect(fast)
        publisher = await open_peer(hub, codec)

        def payload() -> object:
            data = os.urandom(PAYLOAD * 3 // 4)
            return base64.b64encode(data).decode() if codec == JSON else data

        latencies: list[float] = []
        overflowed_after: int | None = None
        for count in range(1, MAX_PUBS + 1):
            started = loop.time()
            reply = await publisher.ok("pub", topic=topic, data=payload())
            latencies.append(loop.time() - started)
            assert same(reply["offset"], count), reply
            if overflowed_after is None and hub.find_line(SLOW_CONSUMER_LOG):
                overflowed_after = count
            if overflowed_after is not None and count >= overflowed_after + MORE_PUBS:
                break
        else:
            pytest.fail(f"no 4008 after {MAX_PUBS} publications of {PAYLOAD} bytes")
        published = count

        # The other subscriber got every publication, in order.
        received = await fast_frames.wait_for(published, within=10)
        assert [msg["offset"] for msg in received] == list(range(1, published + 1))
        # The publisher never waited for the slow one.
        assert max(latencies) < 1.0, f"a pub waited {max(latencies):.3f} s for its ok"

        # The slow subscriber, reading now: a gapless prefix of the stream, then 4008.
        frames, closed = await slow.closed(within=10)
        assert closed.code == 4008, f"closed with {closed.code} {closed.reason!r}, not 4008"
        offsets = [frame["offset"] for frame in frames if frame["op"] == "msg"]
        assert offsets == list(range(1, len(offsets) + 1)), offsets
        assert len(offsets) < published

        # The hub is fine: the fast subscriber still gets publications.
        await publisher.ok("pub", topic=topic, data="after")
        last = await fast_frames.wait_for(published + 1)
        assert same(last[-1]["data"], "after"), last[-1]


# --- shutdown -------------------------------------------------------------------------------------


async def test_sigterm_closes_connections_with_1001_and_exits_0(
    start_hub: StartHub, codec: str, open_peer: OpenPeer
) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TEST_BOUND):
        hub = await start_hub()
        subscribed = await open_peer(hub, codec)
        await subscribed.ok("sub", topic="shutdown.>")
        idle = await open_peer(hub, codec)

        started = loop.time()
        hub.signal(signal.SIGTERM)
        for peer in (subscribed, idle):
            _, closed = await peer.closed()
            assert closed.code == 1001, f"closed with {closed.code} {closed.reason!r}, not 1001"
        status = await asyncio.to_thread(hub.wait, 5.0)
        elapsed = loop.time() - started
        assert status == 0, f"exit status {status}"
        assert elapsed < 5.0, f"took {elapsed:.1f} s to exit"
        assert hub.find_line(r"hub \S+ stopped"), "the log does not say that the hub stopped"
        assert not hub.find_line("Traceback"), "a traceback at shutdown"


# --- plain HTTP -----------------------------------------------------------------------------------


async def test_healthz(hub: HubProcess, open_peer: OpenPeer) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peers = [await open_peer(hub, JSON), await open_peer(hub, MSGPACK)]
        status, headers, body = await http_get(hub.port, "/healthz")
        assert status == 200, (status, body)
        assert headers.get("content-type", "").startswith("application/json"), headers
        health = json.loads(body)
        assert health["node"] == peers[0].welcome["node"], health
        assert isinstance(health["connections"], int) and health["connections"] >= len(peers)


@pytest.mark.parametrize(("path", "status"), [("/", 426), ("/?x=1", 426), ("/other", 404)])
async def test_plain_http_without_upgrade(hub: HubProcess, path: str, status: int) -> None:
    async with asyncio.timeout(TEST_BOUND):
        got, headers, body = await http_get(hub.port, path)
        assert got == status, (got, headers, body)
        assert body, "no body"
        if status == 426:
            assert headers.get("upgrade", "").lower() == "websocket", headers


# --- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "setting"),
    [
        (["--port", "70000"], {}, "port"),
        (["--port", "eighty"], {}, "port"),
        (["--outbox-messages", "0"], {}, "outbox_messages"),
        (["--log-level", "chatty"], {}, "log_level"),
        ([], {"HUB_BACKEND": "bogus://"}, "backend"),
        ([], {"HUB_MAX_SUBSCRIPTIONS": "-1"}, "max_subscriptions"),
    ],
    ids=["port-range", "port-type", "outbox-zero", "log-level", "env-backend", "env-max-subs"],
)
def test_an_invalid_setting_exits_2_naming_it(
    args: list[str], env: dict[str, str], setting: str
) -> None:
    refused_setting(args, env, setting)


def test_python_dash_m_hub_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub", "--help"],
        env=hub_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    for flag in ("--port", "--host", "--outbox-messages", "--bad-frame-limit", "--config"):
        assert flag in result.stdout, f"{flag} missing from --help"
