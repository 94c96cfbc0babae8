"""permessage-deflate (RFC 7692) on bytes only: negotiation, the codec, and the Connection.

- Section 5 and 7.1: what a server accepts, declines and answers (:func:`accept_offer`,
  :class:`ServerHandshake`), what a client offers and accepts (:func:`client_offer`,
  :func:`client_accept`, :class:`ClientHandshake`), and that both ends of every handshake agree.
- Section 7.2: the codec (:class:`PerMessageDeflate`): round trips, fragments, context takeover,
  window sizes, the trailer, the empty message, the RFC's own examples, corrupt data.
- RFC 6455 section 10.4: ``max_size`` bounds the *inflated* size, while inflating (bombs).
- Section 6: RSV1 on the wire, through :class:`Connection`, in both roles.
- Properties (hypothesis): any compressed payload inflates or fails with 1007/1009, within
  ``max_size``; any messages round-trip between a client and a server, split anywhere.

Frames "from the peer" are built with :func:`peer_frame` (a client peer masks, a server peer does
not) and compressed with the peer's codec from a real handshake (:func:`codecs_for`).
"""

from __future__ import annotations

import logging
import random
import time
import tracemalloc
import zlib
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.exceptions import (
    HandshakeError,
    InvalidPayloadData,
    InvalidRequest,
    InvalidResponse,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
)
from hub.protocol.connection import (
    CLIENT,
    CLOSING,
    OPEN,
    SERVER,
    Connection,
    Event,
    Message,
    Ping,
    Side,
)
from hub.protocol.extensions import parse_extensions
from hub.protocol.frames import Close, Opcode, serialize_frame
from hub.protocol.handshake import ClientHandshake, ServerHandshake
from hub.protocol.http11 import HeadParser, Request, Response
from hub.protocol.permessage_deflate import (
    CLIENT_DEFAULT,
    SERVER_DEFAULT,
    DeflateConfig,
    OfferOutcome,
    PerMessageDeflate,
    accept_offer,
    client_accept,
    client_offer,
    resolve_compression,
)
from hub.protocol.reader import RSV1, Frame, FrameReader
from tests.hypothesis_profiles import budget

PMD = "permessage-deflate"
#: What a sync flush ends with; section 7.2.1 strips it, section 7.2.2 appends it back.
TAIL = b"\x00\x00\xff\xff"
RSV2, RSV3 = 0x20, 0x10
MIB = 2**20

_rng = random.Random(7692)
RANDOM_1M = _rng.randbytes(MIB)
COMPRESSIBLE_1M = b"".join(
    f'{{"topic": "prices.{i % 97}", "seq": {i}, "bid": {i % 1013}.25}}\n'.encode()
    for i in range(MIB // 40)
)[:MIB]
TEXT = "permessage-deflate compresses héllo wörld € 🎉 " * 20
#: A message that compresses by half on its own, and to almost nothing when it was just sent.
UNIQUE = RANDOM_1M[:1500].hex()

SIDES = [pytest.param(SERVER, id="server"), pytest.param(CLIENT, id="client")]


@pytest.fixture(params=SIDES)
def side(request: pytest.FixtureRequest) -> Side:
    return request.param  # type: ignore[no-any-return]


# --- helpers --------------------------------------------------------------------------------------


def negotiate(*values: str, config: DeflateConfig = SERVER_DEFAULT) -> OfferOutcome:
    """The server's answer to these Sec-WebSocket-Extensions values."""
    return accept_offer(parse_extensions(values), config)


def response_params(header: str | None) -> dict[str, str | None]:
    """The parameters of a permessage-deflate response header (each at most once)."""
    assert header is not None
    [(name, params)] = parse_extensions([header])
    assert name == PMD
    assert len({param for param, _ in params}) == len(params), header
    return dict(params)


def accepted(
    *values: str, config: DeflateConfig = SERVER_DEFAULT
) -> tuple[dict[str, str | None], PerMessageDeflate]:
    outcome = negotiate(*values, config=config)
    assert outcome.codec is not None, outcome.declined
    return response_params(outcome.header), outcome.codec


def declined(*values: str, config: DeflateConfig = SERVER_DEFAULT) -> list[str]:
    outcome = negotiate(*values, config=config)
    assert outcome.header is None
    assert outcome.codec is None
    return outcome.declined


def upgrade_request(*extensions: str) -> Request:
    """A valid upgrade request with these Sec-WebSocket-Extensions headers."""
    request = ClientHandshake("example.com").request()
    for value in extensions:
        request.headers["Sec-WebSocket-Extensions"] = value
    return request


def response_with(client: ClientHandshake, *extensions: str) -> Response:
    """The 101 a correct server would send to ``client``, with these extension headers."""
    response = ServerHandshake().accept(client.request()).response
    for value in extensions:
        response.headers["Sec-WebSocket-Extensions"] = value
    return response


def handshake(
    client_config: DeflateConfig = CLIENT_DEFAULT, server_config: DeflateConfig = SERVER_DEFAULT
) -> tuple[PerMessageDeflate, PerMessageDeflate, str]:
    """(client codec, server codec, response header) from a full handshake, through bytes."""
    client = ClientHandshake("example.com", compression=client_config)
    request = HeadParser(is_request=True).feed(client.request().serialize())
    assert isinstance(request, Request)
    result = ServerHandshake(compression=server_config).accept(request)
    response = HeadParser(is_request=False).feed(result.response.serialize())
    assert isinstance(response, Response)
    client.check_response(response)
    assert client.deflate is not None
    assert result.deflate is not None
    return client.deflate, result.deflate, response.headers["Sec-WebSocket-Extensions"]


def codecs_for(
    side: Side,
    client_config: DeflateConfig = CLIENT_DEFAULT,
    server_config: DeflateConfig = SERVER_DEFAULT,
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """(our codec, the peer's codec) for a connection on ``side``, from one handshake."""
    client, server, _ = handshake(client_config, server_config)
    return (server, client) if side is SERVER else (client, server)


#: Both ends keep their compression context, and compress everything.
TAKEOVER_CLIENT = DeflateConfig(server_no_context_takeover=False, min_size=0)
TAKEOVER_SERVER = DeflateConfig(server_no_context_takeover=False, min_size=0)


def make_codec(
    *,
    local_no_context_takeover: bool = False,
    remote_no_context_takeover: bool = False,
    local_max_window_bits: int = 15,
    remote_max_window_bits: int = 15,
    config: DeflateConfig = SERVER_DEFAULT,
) -> PerMessageDeflate:
    return PerMessageDeflate(
        local_no_context_takeover=local_no_context_takeover,
        remote_no_context_takeover=remote_no_context_takeover,
        local_max_window_bits=local_max_window_bits,
        remote_max_window_bits=remote_max_window_bits,
        config=config,
    )


def raw_deflate(data: bytes, *, level: int = 9, wbits: int = 15, zdict: bytes = b"") -> bytes:
    """``data`` compressed as section 7.2.1 says, by zlib directly: one message, tail removed."""
    if zdict:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits, 9, zdict=zdict)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits, 9)
    deflated = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert deflated.endswith(TAIL)
    return deflated[:-4]


def raw_inflate(payload: bytes, *, wbits: int = 15) -> bytes:
    """Section 7.2.2 done by zlib directly, independently of hub's decompressor."""
    return zlib.decompressobj(wbits=-wbits).decompress(payload + TAIL)


def inflate(
    codec: PerMessageDeflate, frames: Sequence[bytes], *, max_size: int | None = None
) -> bytes:
    """One message, frame by frame, through ``codec``."""
    last = len(frames) - 1
    return b"".join(
        codec.decompress(frame, final=index == last, max_size=max_size)
        for index, frame in enumerate(frames)
    )


def split(data: bytes, parts: int) -> list[bytes]:
    size = -(-len(data) // parts) or 1
    return [data[i : i + size] for i in range(0, max(len(data), 1), size)]


def peer_frame(
    side: Side, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0
) -> bytes:
    """A frame as the peer of ``side`` sends it: a client peer masks, a server peer does not."""
    return serialize_frame(opcode, payload, fin=fin, mask=side is SERVER, rsv=rsv)


def compressed_message(
    side: Side, peer: PerMessageDeflate, opcode: int, parts: Sequence[bytes]
) -> bytes:
    """One message compressed by ``peer``, a frame per part, RSV1 on the first frame only."""
    frames = []
    for index, part in enumerate(parts):
        final = index == len(parts) - 1
        payload = peer.compress(part, final=final)
        frames.append(
            peer_frame(
                side,
                opcode if index == 0 else Opcode.CONT,
                payload,
                fin=final,
                rsv=RSV1 if index == 0 else 0,
            )
        )
    return b"".join(frames)


def sent_frames(conn: Connection) -> list[Frame]:
    """Drain data_to_send and parse it as the peer would (RSV1 allowed, masking checked)."""
    chunks = [chunk for chunk in conn.data_to_send() if chunk]
    reader = FrameReader(mask_expected=conn.side is CLIENT, max_size=None, allowed_rsv=RSV1)
    frames = reader.feed(b"".join(chunks))
    assert reader.error is None, reader.error
    return frames


def assert_failed(conn: Connection, code: int, error_type: type[ProtocolError]) -> None:
    """The connection was failed with ``code``: a close frame with that code went out."""
    assert isinstance(conn.failure, error_type), conn.failure
    assert conn.failure.code == code
    assert conn.state is CLOSING
    frames = sent_frames(conn)
    assert [frame.opcode for frame in frames] == [Opcode.CLOSE]
    assert frames[0].rsv == 0
    assert Close.parse(frames[0].payload).code == code


def deliver(sender: Connection, receiver: Connection, cuts: Sequence[int] = ()) -> list[Event]:
    """Feed everything ``sender`` wrote to ``receiver``, cut at ``cuts``; return the events."""
    data = b"".join(sender.data_to_send())
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    for start, end in pairwise(bounds):
        receiver.receive_data(data[start:end])
    assert receiver.failure is None, receiver.failure
    return receiver.events_received()


def connection_pair(
    client_config: DeflateConfig = CLIENT_DEFAULT,
    server_config: DeflateConfig = SERVER_DEFAULT,
    *,
    max_size: int | None = MIB,
) -> tuple[Connection, Connection]:
    client_codec, server_codec, _ = handshake(client_config, server_config)
    return (
        Connection(CLIENT, deflate=client_codec, max_size=max_size),
        Connection(SERVER, deflate=server_codec, max_size=max_size),
    )


def zeros_bomb(megabytes: int) -> bytes:
    """A compressed message (tail stripped) that inflates to ``megabytes`` MiB of zeros.

    zlib at level 9 turns 1 MiB of zeros into ~1 KiB; once the window is full of zeros the next
    MiB compresses to the same self-contained blocks, so repeating them costs nothing to build.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    first = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    then = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return (first + then * (megabytes - 1))[:-4]


BOMB_100M = zeros_bomb(100)


# --- Section 5: extension negotiation, server side ------------------------------------------------


class TestSection5ServerNegotiation:
    def test_no_offer(self) -> None:
        assert negotiate() == OfferOutcome(None, None, [])

    def test_other_extensions_only(self) -> None:
        assert negotiate("x-webkit-deflate-frame, deflate-frame; x") == OfferOutcome(None, None, [])

    def test_offer_accepted(self) -> None:
        outcome = negotiate(PMD)
        assert outcome.header == f"{PMD}; server_no_context_takeover"
        assert isinstance(outcome.codec, PerMessageDeflate)
        assert outcome.declined == []

    def test_other_extensions_around_the_offer(self) -> None:
        params, _ = accepted("foo; bar=1", f"x, {PMD}; client_max_window_bits=10, y")
        assert params["client_max_window_bits"] == "10"

    def test_first_acceptable_offer_wins(self) -> None:
        outcome = negotiate(
            f"{PMD}; foo, {PMD}; client_max_window_bits=10",
            f"{PMD}; client_max_window_bits=11",
        )
        assert response_params(outcome.header)["client_max_window_bits"] == "10"
        assert len(outcome.declined) == 1
        assert "unknown parameter foo" in outcome.declined[0]

    def test_first_offer_wins_when_all_acceptable(self) -> None:
        outcome = negotiate(
            f"{PMD}; server_max_window_bits=9, {PMD}; server_max_window_bits=10, {PMD}"
        )
        assert response_params(outcome.header)["server_max_window_bits"] == "9"
        assert outcome.declined == []

    def test_offers_are_taken_in_order_across_headers(self) -> None:
        outcome = negotiate(f"{PMD}; x", f"{PMD}; server_max_window_bits=11", f"{PMD}")
        assert response_params(outcome.header)["server_max_window_bits"] == "11"
        assert len(outcome.declined) == 1

    def test_every_offer_declined(self) -> None:
        reasons = declined(f"{PMD}; a", f"{PMD}; b, {PMD}; server_max_window_bits=8")
        assert len(reasons) == 3
        assert "unknown parameter a" in reasons[0]
        assert "unknown parameter b" in reasons[1]
        assert "server_max_window_bits=8" in reasons[2]

    def test_handshake_accepts_offer(self) -> None:
        result = ServerHandshake(compression=SERVER_DEFAULT).accept(upgrade_request(PMD))
        assert result.response.status == 101
        assert result.response.headers.get_all("Sec-WebSocket-Extensions") == [
            f"{PMD}; server_no_context_takeover"
        ]
        assert isinstance(result.deflate, PerMessageDeflate)

    def test_handshake_without_offer(self) -> None:
        result = ServerHandshake(compression=SERVER_DEFAULT).accept(upgrade_request())
        assert "Sec-WebSocket-Extensions" not in result.response.headers
        assert result.deflate is None

    def test_handshake_with_compression_off(self) -> None:
        result = ServerHandshake(compression=None).accept(upgrade_request(PMD))
        assert result.response.status == 101
        assert "Sec-WebSocket-Extensions" not in result.response.headers
        assert result.deflate is None

    def test_handshake_off_by_default(self) -> None:
        result = ServerHandshake().accept(upgrade_request(PMD))
        assert "Sec-WebSocket-Extensions" not in result.response.headers
        assert result.deflate is None

    def test_handshake_declines_and_goes_on(self, caplog: pytest.LogCaptureFixture) -> None:
        # Section 5: declining an offer is not an error; the connection goes on uncompressed,
        # and the log says why compression is off.
        caplog.set_level(logging.INFO, logger="hub.protocol")
        request = upgrade_request(f"{PMD}; server_max_window_bits=8")
        result = ServerHandshake(compression=SERVER_DEFAULT).accept(request)
        assert result.response.status == 101
        assert "Sec-WebSocket-Extensions" not in result.response.headers
        assert result.deflate is None
        [record] = [r for r in caplog.records if "declined" in r.getMessage()]
        assert record.levelno == logging.INFO
        assert "server_max_window_bits=8" in record.getMessage()

    @pytest.mark.parametrize("compression", [SERVER_DEFAULT, None], ids=["on", "off"])
    @pytest.mark.parametrize(
        "value",
        [f"{PMD}; client_max_window_bits=", f"{PMD} x", f'{PMD}; a="b c"', f"{PMD};;"],
    )
    def test_malformed_header_is_400(self, value: str, compression: DeflateConfig | None) -> None:
        with pytest.raises(InvalidRequest) as info:
            ServerHandshake(compression=compression).accept(upgrade_request(value))
        assert info.value.status == 400
        message = str(info.value)
        assert message.startswith("invalid Sec-WebSocket-Extensions header: ")
        assert repr(value) in message

    def test_malformed_second_header_is_400(self) -> None:
        with pytest.raises(InvalidRequest):
            ServerHandshake(compression=SERVER_DEFAULT).accept(upgrade_request(PMD, "a b"))


# --- Section 7.1: extension parameters, server side -----------------------------------------------


class TestSection7_1_1_1ServerNoContextTakeover:
    def test_always_in_response_by_default(self) -> None:
        params, codec = accepted(PMD)
        assert params == {"server_no_context_takeover": None}
        assert codec.local_no_context_takeover is True

    def test_offered(self) -> None:
        params, codec = accepted(f"{PMD}; server_no_context_takeover")
        assert params == {"server_no_context_takeover": None}
        assert codec.local_no_context_takeover is True

    def test_not_offered_server_keeps_context(self) -> None:
        config = DeflateConfig(server_no_context_takeover=False)
        params, codec = accepted(PMD, config=config)
        assert params == {}
        assert codec.local_no_context_takeover is False

    def test_offered_to_a_server_that_keeps_context(self) -> None:
        # "A server accepts an offer with this parameter by including it in the response."
        config = DeflateConfig(server_no_context_takeover=False)
        params, codec = accepted(f"{PMD}; server_no_context_takeover", config=config)
        assert params == {"server_no_context_takeover": None}
        assert codec.local_no_context_takeover is True

    @pytest.mark.parametrize("value", ["1", "true", '"x"'])
    def test_value_declines(self, value: str) -> None:
        [reason] = declined(f"{PMD}; server_no_context_takeover={value}")
        assert "server_no_context_takeover takes no value" in reason


class TestSection7_1_1_2ClientNoContextTakeover:
    def test_offered_is_echoed(self) -> None:
        params, codec = accepted(f"{PMD}; client_no_context_takeover")
        assert "client_no_context_takeover" in params
        assert params["client_no_context_takeover"] is None
        assert codec.remote_no_context_takeover is True

    def test_not_offered(self) -> None:
        params, codec = accepted(PMD)
        assert "client_no_context_takeover" not in params
        assert codec.remote_no_context_takeover is False

    def test_server_requires_it(self) -> None:
        # A server may include it even when the offer does not (section 7.1.1.2).
        params, codec = accepted(PMD, config=DeflateConfig(client_no_context_takeover=True))
        assert "client_no_context_takeover" in params
        assert codec.remote_no_context_takeover is True

    @pytest.mark.parametrize("value", ["1", "false"])
    def test_value_declines(self, value: str) -> None:
        [reason] = declined(f"{PMD}; client_no_context_takeover={value}")
        assert "client_no_context_takeover takes no value" in reason


class TestSection7_1_2_1ServerMaxWindowBits:
    @pytest.mark.parametrize("bits", range(9, 16))
    def test_offered_value(self, bits: int) -> None:
        params, codec = accepted(f"{PMD}; server_max_window_bits={bits}")
        assert params["server_max_window_bits"] == str(bits)
        assert codec.local_max_window_bits == bits

    @pytest.mark.parametrize(("offered", "configured"), [(12, 10), (10, 12), (9, 15), (15, 9)])
    def test_response_never_exceeds_offer(self, offered: int, configured: int) -> None:
        config = DeflateConfig(server_max_window_bits=configured)
        params, codec = accepted(f"{PMD}; server_max_window_bits={offered}", config=config)
        response_bits = params["server_max_window_bits"]
        assert response_bits is not None
        assert int(response_bits) == min(offered, configured)
        assert codec.local_max_window_bits == int(response_bits)

    def test_not_offered(self) -> None:
        params, codec = accepted(PMD)
        assert "server_max_window_bits" not in params
        assert codec.local_max_window_bits == 15

    def test_not_offered_server_limits_itself(self) -> None:
        # A server may include it even when the offer does not (section 7.1.2.1).
        params, codec = accepted(PMD, config=DeflateConfig(server_max_window_bits=11))
        assert params["server_max_window_bits"] == "11"
        assert codec.local_max_window_bits == 11

    def test_quoted_value(self) -> None:
        params, _ = accepted(f'{PMD}; server_max_window_bits="10"')
        assert params["server_max_window_bits"] == "10"

    def test_8_declines(self) -> None:
        # zlib cannot compress with a 256-byte window, so an offer that requires one is declined.
        [reason] = declined(f"{PMD}; server_max_window_bits=8")
        assert "server_max_window_bits=8" in reason
        assert "not supported" in reason

    def test_8_declined_next_offer_accepted(self) -> None:
        outcome = negotiate(
            f"{PMD}; server_max_window_bits=8; client_max_window_bits",
            f"{PMD}; client_max_window_bits",
        )
        assert response_params(outcome.header) == {
            "server_no_context_takeover": None,
            "client_max_window_bits": "12",
        }
        assert len(outcome.declined) == 1
        assert "server_max_window_bits=8" in outcome.declined[0]

    def test_missing_value_declines(self) -> None:
        [reason] = declined(f"{PMD}; server_max_window_bits")
        assert "server_max_window_bits needs a value" in reason

    @pytest.mark.parametrize(
        "value", ["7", "16", "0", "08", "015", "+9", "-9", "9.0", "1e1", "ten"]
    )
    def test_invalid_value_declines(self, value: str) -> None:
        [reason] = declined(f"{PMD}; server_max_window_bits={value}")
        assert f"server_max_window_bits={value} is not an integer from 8 to 15" in reason
        assert PMD in reason  # the reason quotes the declined offer


class TestSection7_1_2_2ClientMaxWindowBits:
    def test_bare_gets_the_server_default(self) -> None:
        params, codec = accepted(f"{PMD}; client_max_window_bits")
        assert params["client_max_window_bits"] == "12"
        assert codec.remote_max_window_bits == 12

    @pytest.mark.parametrize(
        ("offered", "expected"), [(9, 9), (10, 10), (12, 12), (13, 12), (15, 12)]
    )
    def test_value(self, offered: int, expected: int) -> None:
        params, codec = accepted(f"{PMD}; client_max_window_bits={offered}")
        assert params["client_max_window_bits"] == str(expected)
        assert codec.remote_max_window_bits == expected

    def test_absent_not_in_response(self) -> None:
        # "If a received offer doesn't have the client_max_window_bits parameter, the response
        # MUST NOT include it": the client may not understand it.
        params, codec = accepted(PMD)
        assert "client_max_window_bits" not in params
        assert codec.remote_max_window_bits == 15

    def test_absent_not_in_response_even_if_server_wants_a_limit(self) -> None:
        params, _ = accepted(PMD, config=DeflateConfig(client_max_window_bits=9))
        assert "client_max_window_bits" not in params

    def test_bare_with_server_without_limit(self) -> None:
        params, codec = accepted(
            f"{PMD}; client_max_window_bits", config=DeflateConfig(client_max_window_bits=None)
        )
        assert "client_max_window_bits" not in params
        assert codec.remote_max_window_bits == 15

    def test_value_with_server_without_limit(self) -> None:
        params, codec = accepted(
            f"{PMD}; client_max_window_bits=10", config=DeflateConfig(client_max_window_bits=None)
        )
        assert params.get("client_max_window_bits", "10") == "10"
        assert codec.remote_max_window_bits == 10

    def test_8_accepted(self) -> None:
        # The client promises a 256-byte window; a bigger one inflates that stream too.
        params, codec = accepted(f"{PMD}; client_max_window_bits=8")
        assert params["client_max_window_bits"] == "8"
        assert codec.remote_max_window_bits >= 8
        data = b"abcdefgh" * 100
        assert inflate(codec, [raw_deflate(data, wbits=9)]) == data

    @pytest.mark.parametrize("value", ["7", "16", "0", "09", "x"])
    def test_invalid_value_declines(self, value: str) -> None:
        [reason] = declined(f"{PMD}; client_max_window_bits={value}")
        assert f"client_max_window_bits={value} is not an integer from 8 to 15" in reason


class TestSection7_1DeclinedOffers:
    @pytest.mark.parametrize(
        ("params", "reason"),
        [
            pytest.param("foo", "unknown parameter foo", id="unknown"),
            pytest.param("foo=1", "unknown parameter foo", id="unknown-with-value"),
            pytest.param(
                "Server_No_Context_Takeover",
                "unknown parameter Server_No_Context_Takeover",
                id="wrong-case",
            ),
            pytest.param(
                "server_no_context_takeover; server_no_context_takeover",
                "duplicate parameter server_no_context_takeover",
                id="duplicate-flag",
            ),
            pytest.param(
                "client_max_window_bits; client_max_window_bits=10",
                "duplicate parameter client_max_window_bits",
                id="duplicate-bits",
            ),
            pytest.param(
                "server_max_window_bits=10; server_max_window_bits=10",
                "duplicate parameter server_max_window_bits",
                id="duplicate-same-value",
            ),
            pytest.param(
                "client_no_context_takeover=yes",
                "client_no_context_takeover takes no value",
                id="value-on-flag",
            ),
            pytest.param(
                "server_max_window_bits", "server_max_window_bits needs a value", id="no-value"
            ),
            pytest.param(
                "server_max_window_bits=99",
                "server_max_window_bits=99 is not an integer from 8 to 15",
                id="out-of-range",
            ),
            pytest.param(
                "server_max_window_bits=8", "server_max_window_bits=8", id="server-bits-8"
            ),
        ],
    )
    def test_declined_with_reason(self, params: str, reason: str) -> None:
        offer = f"{PMD}; {params}"
        [text] = declined(offer)
        assert reason in text
        # The reason quotes the offer, so that a log line is self-explanatory.
        assert text.startswith(repr(offer))


# --- Section 5 and 7.1: the client side -----------------------------------------------------------


class TestClientOffer:
    @pytest.mark.parametrize(
        ("config", "offer"),
        [
            pytest.param(CLIENT_DEFAULT, f"{PMD}; client_max_window_bits", id="client-default"),
            pytest.param(
                SERVER_DEFAULT,
                f"{PMD}; server_no_context_takeover; client_max_window_bits=12",
                id="default-config",
            ),
            pytest.param(
                DeflateConfig(
                    server_no_context_takeover=True,
                    client_no_context_takeover=True,
                    server_max_window_bits=10,
                    client_max_window_bits=9,
                ),
                f"{PMD}; server_no_context_takeover; client_no_context_takeover; "
                "server_max_window_bits=10; client_max_window_bits=9",
                id="everything",
            ),
            pytest.param(
                DeflateConfig(server_no_context_takeover=False, server_max_window_bits=15),
                f"{PMD}; server_max_window_bits=15; client_max_window_bits=12",
                id="server-bits",
            ),
        ],
    )
    def test_offer(self, config: DeflateConfig, offer: str) -> None:
        assert client_offer(config) == offer

    @pytest.mark.parametrize(
        "config",
        [
            CLIENT_DEFAULT,
            SERVER_DEFAULT,
            DeflateConfig(client_no_context_takeover=True, server_max_window_bits=9),
        ],
    )
    def test_our_server_accepts_our_offers(self, config: DeflateConfig) -> None:
        outcome = negotiate(client_offer(config))
        assert outcome.codec is not None
        assert outcome.declined == []

    def test_request_header(self) -> None:
        request = ClientHandshake("example.com", compression=CLIENT_DEFAULT).request()
        assert request.headers.get_all("Sec-WebSocket-Extensions") == [
            f"{PMD}; client_max_window_bits"
        ]

    def test_request_without_compression(self) -> None:
        request = ClientHandshake("example.com").request()
        assert "Sec-WebSocket-Extensions" not in request.headers

    def test_resolve_compression(self) -> None:
        assert resolve_compression("deflate", server=True) is SERVER_DEFAULT
        assert DeflateConfig() == SERVER_DEFAULT  # the class's defaults, shared
        assert resolve_compression("deflate", server=False) is CLIENT_DEFAULT
        assert resolve_compression(None, server=True) is None
        config = DeflateConfig(level=1)
        assert resolve_compression(config, server=False) is config
        with pytest.raises(ValueError, match="compression must be"):
            resolve_compression("gzip", server=True)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"server_max_window_bits": 8}, "server_max_window_bits must be between 9 and 15"),
            ({"client_max_window_bits": 16}, "client_max_window_bits must be between 9 and 15"),
            ({"level": 10}, "level must be between -1 and 9"),
            ({"mem_level": 0}, "mem_level must be between 1 and 9"),
            ({"min_size": -1}, "min_size must not be negative"),
        ],
    )
    def test_invalid_config(self, options: dict[str, int], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            DeflateConfig(**options)  # type: ignore[arg-type]


class TestClientAccept:
    @pytest.mark.parametrize(
        ("config", "response", "expected"),
        [
            # expected: local/remote no_context_takeover, local/remote max_window_bits
            pytest.param(CLIENT_DEFAULT, PMD, (False, False, 15, 15), id="bare"),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; server_no_context_takeover; client_max_window_bits=12",
                (False, True, 12, 15),
                id="our-server-default",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; client_no_context_takeover",
                (True, False, 15, 15),
                id="client-no-takeover-unsolicited",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; server_max_window_bits=10",
                (False, False, 15, 10),
                id="server-bits-unsolicited",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; client_max_window_bits=9",
                (False, False, 9, 15),
                id="client-bits-9",
            ),
            pytest.param(
                DeflateConfig(client_max_window_bits=10),
                f"{PMD}; server_no_context_takeover",
                (False, True, 10, 15),
                id="our-promise-holds",
            ),
            pytest.param(
                DeflateConfig(client_max_window_bits=10),
                f"{PMD}; server_no_context_takeover; client_max_window_bits=9",
                (False, True, 9, 15),
                id="lowered",
            ),
            pytest.param(
                DeflateConfig(server_max_window_bits=10),
                f"{PMD}; server_no_context_takeover; server_max_window_bits=9",
                (False, True, 12, 9),
                id="server-bits-lowered",
            ),
            pytest.param(
                DeflateConfig(client_no_context_takeover=True),
                f"{PMD}; server_no_context_takeover",
                (True, True, 12, 15),
                id="client-no-takeover-offered",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f'{PMD}; server_max_window_bits="11"',
                (False, False, 15, 11),
                id="quoted",
            ),
        ],
    )
    def test_valid(
        self, config: DeflateConfig, response: str, expected: tuple[bool, bool, int, int]
    ) -> None:
        codec = client_accept(parse_extensions([response]), config)
        assert codec is not None
        assert (
            codec.local_no_context_takeover,
            codec.remote_no_context_takeover,
            codec.local_max_window_bits,
            codec.remote_max_window_bits,
        ) == expected

    def test_server_window_8(self) -> None:
        # The server says it compresses with a 256-byte window: inflate with a window >= that.
        codec = client_accept(
            parse_extensions([f"{PMD}; server_max_window_bits=8"]), CLIENT_DEFAULT
        )
        assert codec is not None
        assert codec.remote_max_window_bits >= 8
        data = b"0123456789" * 100
        assert inflate(codec, [raw_deflate(data, wbits=9)]) == data

    def test_no_extension(self) -> None:
        assert client_accept([], CLIENT_DEFAULT) is None

    @pytest.mark.parametrize(
        ("config", "response", "message"),
        [
            pytest.param(
                CLIENT_DEFAULT,
                "x-foo",
                "selected extensions that were not offered: x-foo",
                id="other-extension",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}, {PMD}",
                f"selected extensions that were not offered: {PMD}, {PMD}",
                id="twice",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}, x-foo",
                "not offered",
                id="with-another",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; foo",
                "invalid permessage-deflate response: unknown parameter foo",
                id="unknown-param",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; server_no_context_takeover; server_no_context_takeover",
                "duplicate parameter server_no_context_takeover",
                id="duplicate",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; client_max_window_bits",
                "client_max_window_bits needs a value",
                id="client-bits-bare",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; server_max_window_bits=16",
                "server_max_window_bits=16 is not an integer from 8 to 15",
                id="server-bits-16",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; client_no_context_takeover=1",
                "client_no_context_takeover takes no value",
                id="value-on-flag",
            ),
            pytest.param(
                CLIENT_DEFAULT,
                f"{PMD}; client_max_window_bits=8",
                "client_max_window_bits=8 is not supported",
                id="client-bits-8",
            ),
            pytest.param(
                DeflateConfig(client_max_window_bits=10),
                f"{PMD}; server_no_context_takeover; client_max_window_bits=11",
                "raised client_max_window_bits above our offer",
                id="client-bits-raised",
            ),
            pytest.param(
                DeflateConfig(server_max_window_bits=10),
                f"{PMD}; server_no_context_takeover; server_max_window_bits=11",
                "server ignored server_max_window_bits=10",
                id="server-bits-above-offer",
            ),
            pytest.param(
                DeflateConfig(server_max_window_bits=10),
                f"{PMD}; server_no_context_takeover",
                "server ignored server_max_window_bits=10",
                id="server-bits-missing",
            ),
            pytest.param(
                SERVER_DEFAULT,
                PMD,
                "server did not accept server_no_context_takeover",
                id="takeover-requested-missing",
            ),
        ],
    )
    def test_invalid(self, config: DeflateConfig, response: str, message: str) -> None:
        with pytest.raises(NegotiationError) as info:
            client_accept(parse_extensions([response]), config)
        assert message in str(info.value)

    def test_check_response_accepts(self) -> None:
        client = ClientHandshake("example.com", compression=CLIENT_DEFAULT)
        client.check_response(response_with(client, f"{PMD}; client_max_window_bits=11"))
        assert client.deflate is not None
        assert client.deflate.local_max_window_bits == 11

    def test_check_response_without_extension(self) -> None:
        client = ClientHandshake("example.com", compression=CLIENT_DEFAULT)
        client.check_response(response_with(client))
        assert client.deflate is None

    def test_check_response_extension_not_offered(self) -> None:
        client = ClientHandshake("example.com")
        with pytest.raises(InvalidResponse, match="extension that was not offered"):
            client.check_response(response_with(client, PMD))
        assert client.deflate is None

    def test_check_response_malformed_header(self) -> None:
        client = ClientHandshake("example.com", compression=CLIENT_DEFAULT)
        with pytest.raises(InvalidResponse, match="invalid Sec-WebSocket-Extensions header"):
            client.check_response(response_with(client, f"{PMD}; client_max_window_bits=1 2"))

    def test_check_response_across_two_headers(self) -> None:
        # Two headers are two selected extensions, even when each is valid on its own.
        client = ClientHandshake("example.com", compression=CLIENT_DEFAULT)
        with pytest.raises(NegotiationError, match="not offered"):
            client.check_response(response_with(client, PMD, PMD))

    def test_check_response_invalid_params(self) -> None:
        client = ClientHandshake("example.com", compression=CLIENT_DEFAULT)
        with pytest.raises(HandshakeError, match="unknown parameter x"):
            client.check_response(response_with(client, f"{PMD}; x"))


# --- Section 5 and 7.1: both ends of a handshake agree --------------------------------------------

SERVER_CONFIGS = [
    pytest.param(SERVER_DEFAULT, id="s-default"),
    pytest.param(DeflateConfig(server_no_context_takeover=False), id="s-takeover"),
    pytest.param(DeflateConfig(server_max_window_bits=9, client_max_window_bits=9), id="s-bits9"),
    pytest.param(
        DeflateConfig(client_no_context_takeover=True, server_max_window_bits=11), id="s-strict"
    ),
    pytest.param(
        DeflateConfig(server_no_context_takeover=False, client_max_window_bits=None),
        id="s-no-client-cap",
    ),
    pytest.param(DeflateConfig(level=1, mem_level=1, min_size=0), id="s-fast"),
]
CLIENT_CONFIGS = [
    pytest.param(CLIENT_DEFAULT, id="c-default"),
    pytest.param(SERVER_DEFAULT, id="c-server-default"),
    pytest.param(
        DeflateConfig(server_no_context_takeover=True, client_no_context_takeover=True),
        id="c-no-takeover",
    ),
    pytest.param(
        DeflateConfig(
            server_no_context_takeover=False, server_max_window_bits=10, client_max_window_bits=10
        ),
        id="c-bits10",
    ),
    pytest.param(
        DeflateConfig(
            server_no_context_takeover=False, server_max_window_bits=15, client_max_window_bits=15
        ),
        id="c-bits15",
    ),
    pytest.param(
        DeflateConfig(server_max_window_bits=9, client_max_window_bits=9, min_size=0),
        id="c-bits9",
    ),
]


@pytest.mark.parametrize("server_config", SERVER_CONFIGS)
@pytest.mark.parametrize("client_config", CLIENT_CONFIGS)
def test_handshake_end_to_end(client_config: DeflateConfig, server_config: DeflateConfig) -> None:
    client, server, header = handshake(client_config, server_config)
    # Each decompressor can read what the other side's compressor writes.
    assert client.local_max_window_bits <= server.remote_max_window_bits
    assert server.local_max_window_bits <= client.remote_max_window_bits
    if server.remote_no_context_takeover:
        assert client.local_no_context_takeover
    if client.remote_no_context_takeover:
        assert server.local_no_context_takeover
    # What the client asked for, it got (section 7.1: else the server must decline).
    if client_config.server_no_context_takeover:
        assert server.local_no_context_takeover
    if client_config.server_max_window_bits is not None:
        assert server.local_max_window_bits <= client_config.server_max_window_bits
    if client_config.client_max_window_bits is not None:
        assert client.local_max_window_bits <= client_config.client_max_window_bits
    if client_config.client_no_context_takeover:
        assert client.local_no_context_takeover
    # And what the server wanted.
    if server_config.server_no_context_takeover:
        assert server.local_no_context_takeover
        assert "server_no_context_takeover" in response_params(header)
    if server_config.server_max_window_bits is not None:
        assert server.local_max_window_bits <= server_config.server_max_window_bits
    if server_config.client_max_window_bits is not None:
        assert client.local_max_window_bits <= server_config.client_max_window_bits
    if server_config.client_no_context_takeover:
        assert client.local_no_context_takeover
    # Messages go both ways, several times (context takeover), whatever their size.
    messages = [TEXT.encode(), b"", RANDOM_1M[:3000], TEXT.encode(), COMPRESSIBLE_1M[:70000]]
    for sender, receiver in [(client, server), (server, client)]:
        for message in messages * 2:
            assert inflate(receiver, [sender.compress(message, final=True)]) == message
        halves = split(COMPRESSIBLE_1M[:5000], 2)
        frames = [sender.compress(halves[0], final=False), sender.compress(halves[1], final=True)]
        assert inflate(receiver, frames) == COMPRESSIBLE_1M[:5000]


# --- Section 7.2.1: compression -------------------------------------------------------------------

DATA = [
    pytest.param(b"", id="empty"),
    pytest.param(b"x", id="tiny"),
    pytest.param(RANDOM_1M, id="1MiB-random"),
    pytest.param(COMPRESSIBLE_1M, id="1MiB-compressible"),
    pytest.param(TEXT.encode(), id="text"),
]


class TestSection7_2_1Compression:
    @pytest.mark.parametrize("data", DATA)
    def test_round_trip(self, data: bytes) -> None:
        sender, receiver = make_codec(), make_codec()
        compressed = sender.compress(data, final=True)
        assert inflate(receiver, [compressed]) == data
        assert raw_inflate(compressed) == data  # as any other implementation reads it

    def test_compressible_data_shrinks(self) -> None:
        compressed = make_codec().compress(COMPRESSIBLE_1M, final=True)
        assert len(compressed) < len(COMPRESSIBLE_1M) // 5

    def test_random_data_barely_grows(self) -> None:
        compressed = make_codec().compress(RANDOM_1M, final=True)
        assert len(compressed) < len(RANDOM_1M) * 1.01

    @pytest.mark.parametrize("data", DATA)
    def test_trailer_stripped(self, data: bytes) -> None:
        # "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end."
        codec = make_codec()
        for _ in range(3):
            compressed = codec.compress(data, final=True)
            assert not compressed.endswith(TAIL)

    def test_non_final_fragments_end_with_a_sync_flush(self) -> None:
        # Each frame must be decodable as it arrives; only the message's end is stripped.
        codec = make_codec()
        assert codec.compress(b"first part", final=False).endswith(TAIL)
        assert not codec.compress(b"last part", final=True).endswith(TAIL)

    @pytest.mark.parametrize("takeover", [True, False], ids=["takeover", "no-takeover"])
    def test_empty_message_is_a_single_zero_byte(self, takeover: bool) -> None:
        # Section 7.2.3.6: an empty message compresses to 0x00 (an empty stored block's header).
        codec = make_codec(local_no_context_takeover=not takeover)
        assert codec.compress(b"", final=True) == b"\x00"
        codec.compress(TEXT.encode(), final=True)
        assert codec.compress(b"", final=True) == b"\x00"
        assert inflate(make_codec(), [b"\x00"]) == b""

    def test_empty_last_fragment(self) -> None:
        codec, receiver = make_codec(), make_codec()
        first = codec.compress(TEXT.encode(), final=False)
        last = codec.compress(b"", final=True)
        assert last == b"\x00"
        assert inflate(receiver, [first, last]) == TEXT.encode()

    @pytest.mark.parametrize("parts", [2, 3, 17, 1000])
    @pytest.mark.parametrize(
        "data",
        [pytest.param(RANDOM_1M[:50000], id="random"), pytest.param(COMPRESSIBLE_1M, id="text")],
    )
    def test_fragmented_message(self, data: bytes, parts: int) -> None:
        sender, receiver = make_codec(), make_codec()
        chunks = split(data, parts)
        frames = [sender.compress(chunk, final=False) for chunk in chunks[:-1]]
        frames.append(sender.compress(chunks[-1], final=True))
        assert inflate(receiver, frames) == data
        assert raw_inflate(b"".join(frames)) == data
        # The frame boundaries on the wire need not match the compressor's calls.
        assert inflate(make_codec(), split(b"".join(frames), 7)) == data

    def test_fragmented_then_whole_messages_share_the_context(self) -> None:
        sender, receiver = make_codec(), make_codec()
        chunks = split(TEXT.encode(), 3)
        frames = [sender.compress(c, final=i == 2) for i, c in enumerate(chunks)]
        assert inflate(receiver, frames) == TEXT.encode()
        again = sender.compress(TEXT.encode(), final=True)
        assert len(again) < 20  # a back-reference to the fragmented message
        assert inflate(receiver, [again]) == TEXT.encode()


class TestSection7_1_1ContextTakeover:
    def test_takeover_shrinks_the_second_message(self) -> None:
        sender, receiver = make_codec(), make_codec()
        first = sender.compress(UNIQUE.encode(), final=True)
        second = sender.compress(UNIQUE.encode(), final=True)
        assert len(second) < len(first) // 4
        assert inflate(receiver, [first]) == UNIQUE.encode()
        assert inflate(receiver, [second]) == UNIQUE.encode()

    def test_no_takeover_same_bytes_every_time(self) -> None:
        sender = make_codec(local_no_context_takeover=True)
        receiver = make_codec(remote_no_context_takeover=True)
        compressed = [sender.compress(UNIQUE.encode(), final=True) for _ in range(3)]
        assert compressed[0] == compressed[1] == compressed[2]
        for message in compressed:
            assert inflate(receiver, [message]) == UNIQUE.encode()

    def test_no_takeover_after_fragmented_message(self) -> None:
        sender = make_codec(local_no_context_takeover=True)
        whole = sender.compress(UNIQUE.encode(), final=True)
        sender.compress(b"abc", final=False)
        sender.compress(UNIQUE.encode(), final=True)
        assert sender.compress(UNIQUE.encode(), final=True) == whole

    def test_receiver_without_takeover_forgets_the_window(self) -> None:
        # A receiver that negotiated no takeover for its peer starts each message afresh: a
        # message that refers to the previous one (which the peer must not send) is corrupt.
        sender = make_codec()
        receiver = make_codec(remote_no_context_takeover=True)
        assert inflate(receiver, [sender.compress(UNIQUE.encode(), final=True)]) == UNIQUE.encode()
        with pytest.raises(InvalidPayloadData):
            inflate(receiver, [sender.compress(UNIQUE.encode(), final=True)])

    @pytest.mark.parametrize(
        ("client_config", "server_config", "client_takes_over", "server_takes_over"),
        [
            pytest.param(CLIENT_DEFAULT, SERVER_DEFAULT, True, False, id="defaults"),
            pytest.param(
                CLIENT_DEFAULT,
                DeflateConfig(server_no_context_takeover=False, client_no_context_takeover=True),
                False,
                True,
                id="server-decides",
            ),
            pytest.param(
                DeflateConfig(server_no_context_takeover=False, client_no_context_takeover=True),
                DeflateConfig(server_no_context_takeover=False),
                False,
                True,
                id="client-decides",
            ),
            pytest.param(CLIENT_DEFAULT, TAKEOVER_SERVER, True, True, id="both"),
        ],
    )
    def test_negotiated_on_both_sides(
        self,
        client_config: DeflateConfig,
        server_config: DeflateConfig,
        client_takes_over: bool,
        server_takes_over: bool,
    ) -> None:
        client, server, _ = handshake(client_config, server_config)
        for sender, receiver, takes_over in [
            (client, server, client_takes_over),
            (server, client, server_takes_over),
        ]:
            sizes = []
            for _ in range(3):
                compressed = sender.compress(UNIQUE.encode(), final=True)
                assert inflate(receiver, [compressed]) == UNIQUE.encode()
                sizes.append(len(compressed))
            if takes_over:
                assert sizes[1] < sizes[0] // 4
                assert sizes[2] < sizes[0] // 4
            else:
                assert sizes[0] == sizes[1] == sizes[2]


class TestSection7_1_2WindowBits:
    # 1000 random bytes twice: the repeat is 1000 bytes back, beyond a 512-byte window.
    FAR_REPEAT = RANDOM_1M[:1000] * 2

    @pytest.mark.parametrize("bits", [9, 10, 12, 15])
    def test_compressor_respects_its_window(self, bits: int) -> None:
        compressed = make_codec(local_max_window_bits=bits).compress(self.FAR_REPEAT, final=True)
        assert raw_inflate(compressed, wbits=bits) == self.FAR_REPEAT
        if bits >= 12:
            assert len(compressed) < 1200  # the repeat was found
        else:
            # Out of reach: zlib matches at most 2**bits - 262 bytes back.
            assert len(compressed) > 2000

    def test_negotiated_windows_are_used(self) -> None:
        client, server, _ = handshake(
            DeflateConfig(server_max_window_bits=9, client_max_window_bits=9), SERVER_DEFAULT
        )
        for sender in (client, server):
            compressed = sender.compress(self.FAR_REPEAT, final=True)
            assert raw_inflate(compressed, wbits=9) == self.FAR_REPEAT


# --- Section 7.2.2 and 7.2.3: decompression, the RFC's examples -----------------------------------


class TestSection7_2_3Examples:
    @pytest.mark.parametrize(
        "frames",
        [
            pytest.param(["f248cdc9c90700"], id="7.2.3.1-one-block"),
            pytest.param(["f248cd", "c9c90700"], id="7.2.3.1-fragmented"),
            pytest.param(["000500faff48656c6c6f00"], id="7.2.3.3-no-compression"),
            pytest.param(["f348cdc9c9070000"], id="7.2.3.4-bfinal"),
            pytest.param(["f24805000000ffffcac9c90700"], id="7.2.3.5-two-blocks"),
        ],
    )
    def test_hello(self, frames: list[str]) -> None:
        codec = make_codec()
        assert inflate(codec, [bytes.fromhex(frame) for frame in frames]) == b"Hello"

    def test_7_2_3_1_compress_hello(self) -> None:
        # zlib at its default level writes exactly the RFC's bytes.
        assert make_codec().compress(b"Hello", final=True) == bytes.fromhex("f248cdc9c90700")

    def test_7_2_3_2_sharing_the_window(self) -> None:
        codec = make_codec()
        assert inflate(codec, [bytes.fromhex("f248cdc9c90700")]) == b"Hello"
        assert inflate(codec, [bytes.fromhex("f200110000")]) == b"Hello"
        sender = make_codec()
        sender.compress(b"Hello", final=True)
        assert sender.compress(b"Hello", final=True) == bytes.fromhex("f200110000")

    def test_7_2_3_2_without_the_window(self) -> None:
        codec = make_codec(remote_no_context_takeover=True)
        assert inflate(codec, [bytes.fromhex("f248cdc9c90700")]) == b"Hello"
        with pytest.raises(InvalidPayloadData):
            inflate(codec, [bytes.fromhex("f200110000")])

    def test_7_2_3_6_empty(self) -> None:
        assert inflate(make_codec(), [b"\x00"]) == b""

    def test_7_2_3_4_bfinal_then_next_message(self) -> None:
        # A sender that ends each message with a BFINAL block (section 7.2.3.4) starts the next
        # message with fresh blocks; this one has no back-reference, so it reads as "Hello"
        # whatever the receiver does with its window. It must not vanish (zlib's decompressor
        # reports end-of-stream after a BFINAL block and swallows what follows as unused_data).
        codec = make_codec()
        assert inflate(codec, [bytes.fromhex("f348cdc9c9070000")]) == b"Hello"
        assert inflate(codec, [bytes.fromhex("f348cdc9c9070000")]) == b"Hello"


class TestSection7_2_2Decompression:
    @pytest.mark.parametrize(
        "payload",
        [
            pytest.param(b"\xff", id="reserved-block-type"),
            pytest.param(b"\x07\xff\xff", id="block-type-11"),
            pytest.param(b"\x00\x05\x00\x05\x00Hello", id="stored-length-mismatch"),
            pytest.param(
                raw_deflate(b"hello hello world", zdict=b"hello world"), id="distance-too-far"
            ),
            pytest.param(b"\xfc" + bytes(50), id="bad-huffman-table"),
        ],
    )
    def test_corrupt_data(self, payload: bytes) -> None:
        with pytest.raises(InvalidPayloadData) as info:
            inflate(make_codec(), [payload])
        assert info.value.code == 1007
        assert "invalid compressed data" in str(info.value)

    def test_corrupt_data_in_a_later_fragment(self) -> None:
        codec = make_codec()
        assert codec.decompress(raw_deflate(b"abc") + TAIL, final=False, max_size=None) == b"abc"
        with pytest.raises(InvalidPayloadData):
            codec.decompress(b"\xff\xff", final=True, max_size=None)

    def test_compressed_by_other_levels_and_windows(self) -> None:
        data = COMPRESSIBLE_1M[:100000]
        for level in (0, 1, 9):
            for wbits in (9, 15):
                assert inflate(make_codec(), [raw_deflate(data, level=level, wbits=wbits)]) == data


# --- RFC 6455 section 10.4: max_size bounds the inflated message ----------------------------------


class TestSection10_4MaxSize:
    def test_bomb_is_really_a_bomb(self) -> None:
        assert len(BOMB_100M) < 120_000
        decompressor = zlib.decompressobj(wbits=-15)
        total, pending = 0, BOMB_100M + TAIL
        while pending:
            out = decompressor.decompress(pending, 16 * MIB)
            assert out.count(0) == len(out)
            total += len(out)
            pending = decompressor.unconsumed_tail
        assert total == 100 * MIB

    def test_bomb_fails_fast_in_bounded_memory(self) -> None:
        codec = make_codec()
        tracemalloc.start()
        try:
            start = time.perf_counter()
            with pytest.raises(PayloadTooBig) as info:
                codec.decompress(BOMB_100M, final=True, max_size=MIB)
            elapsed = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.value.code == 1009
        assert "max_size" in str(info.value)
        assert elapsed < 0.5
        assert peak < 5 * MIB  # the 100 MiB were never there

    def test_small_frame_large_message(self) -> None:
        # About 1 KiB that inflates to 1 MiB, against max_size = 64 KiB.
        payload = raw_deflate(bytes(MIB))
        assert len(payload) < 1100
        with pytest.raises(PayloadTooBig):
            inflate(make_codec(), [payload], max_size=64 * 1024)

    def test_bomb_in_fragments(self) -> None:
        # The budget covers the whole message, not each frame.
        codec = make_codec()
        sender = make_codec()
        chunk = bytes(300 * 1024)
        for _ in range(3):
            out = codec.decompress(sender.compress(chunk, final=False), final=False, max_size=MIB)
            assert len(out) == len(chunk)
        with pytest.raises(PayloadTooBig):
            codec.decompress(sender.compress(chunk, final=True), final=True, max_size=MIB)

    @pytest.mark.parametrize("parts", [1, 3])
    def test_exactly_max_size(self, parts: int) -> None:
        payload = raw_deflate(bytes(1000))
        frames = split(payload, parts)
        assert inflate(make_codec(), frames, max_size=1000) == bytes(1000)
        with pytest.raises(PayloadTooBig):
            inflate(make_codec(), frames, max_size=999)

    def test_budget_resets_between_messages(self) -> None:
        codec = make_codec()
        payload = raw_deflate(bytes(1000))
        for _ in range(3):
            assert inflate(codec, [payload], max_size=1000) == bytes(1000)

    def test_no_limit(self) -> None:
        payload = raw_deflate(bytes(5 * MIB))
        assert len(inflate(make_codec(), [payload], max_size=None)) == 5 * MIB


# --- Section 6: RSV1 on the wire, through Connection ----------------------------------------------


class TestSection6_2Receiving:
    @pytest.mark.parametrize(
        ("opcode", "data"),
        [
            pytest.param(Opcode.TEXT, TEXT.encode(), id="text"),
            pytest.param(Opcode.BINARY, RANDOM_1M[:5000], id="binary"),
            pytest.param(Opcode.TEXT, b"", id="empty-text"),
            pytest.param(Opcode.BINARY, b"", id="empty-binary"),
        ],
    )
    def test_compressed_message(self, side: Side, opcode: int, data: bytes) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.receive_data(compressed_message(side, peer, opcode, [data]))
        expected = data.decode() if opcode == Opcode.TEXT else data
        assert conn.events_received() == [Message(expected)]
        assert conn.failure is None
        assert conn.data_to_send() == []

    def test_uncompressed_message_on_deflate_connection(self, side: Side) -> None:
        ours, _ = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.receive_data(
            peer_frame(side, Opcode.TEXT, b"plain") + peer_frame(side, Opcode.BINARY, b"\x00\xff")
        )
        assert conn.events_received() == [Message("plain"), Message(b"\x00\xff")]

    def test_uncompressed_message_keeps_the_context(self, side: Side) -> None:
        ours, peer = codecs_for(side, TAKEOVER_CLIENT, TAKEOVER_SERVER)
        assert not peer.local_no_context_takeover
        conn = Connection(side, deflate=ours)
        data = UNIQUE.encode()
        first = compressed_message(side, peer, Opcode.TEXT, [data])
        second = compressed_message(side, peer, Opcode.TEXT, [data])
        assert len(second) < len(first) // 4  # it refers to the first
        conn.receive_data(first + peer_frame(side, Opcode.BINARY, b"raw") + second)
        assert conn.events_received() == [Message(UNIQUE), Message(b"raw"), Message(UNIQUE)]

    def test_many_messages_with_takeover(self, side: Side) -> None:
        ours, peer = codecs_for(side, TAKEOVER_CLIENT, TAKEOVER_SERVER)
        conn = Connection(side, deflate=ours)
        messages = [f"message {i}: {TEXT}" for i in range(50)]
        conn.receive_data(
            b"".join(compressed_message(side, peer, Opcode.TEXT, [m.encode()]) for m in messages)
        )
        assert conn.events_received() == [Message(m) for m in messages]

    def test_fragmented_compressed_message(self, side: Side) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        data = TEXT.encode()
        # Cut inside a multi-byte character: the UTF-8 decoder sees inflated fragments.
        cut = data.index("€".encode()) + 1
        parts = [data[:cut], data[cut : cut + 100], data[cut + 100 :]]
        conn.receive_data(compressed_message(side, peer, Opcode.TEXT, parts))
        assert conn.events_received() == [Message(TEXT)]

    def test_fragmented_with_interleaved_ping(self, side: Side) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        first = peer.compress(RANDOM_1M[:300], final=False)
        last = peer.compress(RANDOM_1M[300:600], final=True)
        conn.receive_data(
            peer_frame(side, Opcode.BINARY, first, fin=False, rsv=RSV1)
            + peer_frame(side, Opcode.PING, b"ping?")
            + peer_frame(side, Opcode.CONT, last)
        )
        assert conn.events_received() == [Ping(b"ping?"), Message(RANDOM_1M[:600])]
        [pong] = sent_frames(conn)
        assert (pong.opcode, pong.payload, pong.rsv) == (Opcode.PONG, b"ping?", 0)

    def test_byte_by_byte(self, side: Side) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        data = compressed_message(side, peer, Opcode.TEXT, split(TEXT.encode(), 3))
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
        assert conn.events_received() == [Message(TEXT)]

    @pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
    def test_rsv1_on_control_frame(self, side: Side, opcode: int) -> None:
        ours, _ = codecs_for(side)
        conn = Connection(side, deflate=ours)
        payload = b"\x03\xe8" if opcode == Opcode.CLOSE else b"x"
        conn.receive_data(peer_frame(side, opcode, payload, rsv=RSV1))
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    @pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "uncompressed"])
    def test_rsv1_on_continuation_frame(self, side: Side, compressed: bool) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        if compressed:
            first = peer_frame(
                side, Opcode.TEXT, peer.compress(b"abc", final=False), fin=False, rsv=RSV1
            )
            cont = peer_frame(side, Opcode.CONT, peer.compress(b"def", final=True), rsv=RSV1)
        else:
            first = peer_frame(side, Opcode.TEXT, b"abc", fin=False)
            cont = peer_frame(side, Opcode.CONT, raw_deflate(b"def"), rsv=RSV1)
        conn.receive_data(first + cont)
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
    def test_rsv1_without_deflate(self, side: Side, opcode: int) -> None:
        conn = Connection(side)
        conn.receive_data(peer_frame(side, opcode, raw_deflate(b"Hello"), rsv=RSV1))
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    @pytest.mark.parametrize("rsv", [RSV2, RSV3, RSV1 | RSV2], ids=["rsv2", "rsv3", "rsv1+2"])
    def test_other_rsv_bits_with_deflate(self, side: Side, rsv: int) -> None:
        ours, _ = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.receive_data(peer_frame(side, Opcode.BINARY, raw_deflate(b"Hello"), rsv=rsv))
        assert conn.events_received() == []
        assert_failed(conn, 1002, ProtocolError)

    def test_corrupt_compressed_data(self, side: Side) -> None:
        ours, _ = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.receive_data(peer_frame(side, Opcode.BINARY, b"\xff\xfe\xfd", rsv=RSV1))
        assert conn.events_received() == []
        assert_failed(conn, 1007, InvalidPayloadData)

    def test_compressed_invalid_utf8(self, side: Side) -> None:
        ours, _ = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.receive_data(peer_frame(side, Opcode.TEXT, raw_deflate(b"caf\xe9"), rsv=RSV1))
        assert conn.events_received() == []
        assert_failed(conn, 1007, InvalidPayloadData)


class TestSection6_2MaxSize:
    def test_inflated_size_is_bounded(self, side: Side) -> None:
        ours, _ = codecs_for(side)
        conn = Connection(side, max_size=1000, deflate=ours)
        payload = raw_deflate(bytes(1001))
        assert len(payload) < 1000  # only the inflated size is too big
        conn.receive_data(peer_frame(side, Opcode.BINARY, payload, rsv=RSV1))
        assert conn.events_received() == []
        assert_failed(conn, 1009, PayloadTooBig)

    def test_exactly_max_size(self, side: Side) -> None:
        ours, _ = codecs_for(side)
        conn = Connection(side, max_size=1000, deflate=ours)
        payload = raw_deflate(bytes(1000))
        conn.receive_data(peer_frame(side, Opcode.BINARY, payload, rsv=RSV1) * 2)
        assert conn.events_received() == [Message(bytes(1000))] * 2
        assert conn.failure is None

    def test_inflated_size_of_fragments_is_bounded(self, side: Side) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, max_size=1000, deflate=ours)
        conn.receive_data(compressed_message(side, peer, Opcode.BINARY, [bytes(600)] * 2))
        assert conn.events_received() == []
        assert_failed(conn, 1009, PayloadTooBig)

    def test_bomb(self, side: Side) -> None:
        ours, _ = codecs_for(side)
        conn = Connection(side, max_size=MIB, deflate=ours)
        frame = peer_frame(side, Opcode.BINARY, BOMB_100M, rsv=RSV1)
        tracemalloc.start()
        try:
            start = time.perf_counter()
            conn.receive_data(frame)
            elapsed = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert conn.events_received() == []
        assert_failed(conn, 1009, PayloadTooBig)
        assert elapsed < 0.5
        assert peak < 5 * MIB

    @pytest.mark.parametrize(
        ("rsv", "length", "refused"),
        [
            pytest.param(RSV1, 1000 + (1000 >> 4) + 1024 + 1, True, id="compressed-above-slack"),
            pytest.param(RSV1, 1000 + (1000 >> 4) + 1024, False, id="compressed-within-slack"),
            pytest.param(0, 1001, True, id="uncompressed-above-max-size"),
        ],
    )
    def test_refused_from_the_header(
        self, side: Side, rsv: int, length: int, refused: bool
    ) -> None:
        # A compressed frame can be a little bigger than what it inflates to, never much bigger:
        # beyond max_size plus a slack it is refused before its payload arrives.
        ours, _ = codecs_for(side)
        conn = Connection(side, max_size=1000, deflate=ours)
        frame = peer_frame(side, Opcode.BINARY, bytes(length), rsv=rsv)
        header = frame[: 4 + (4 if side is SERVER else 0)]
        conn.receive_data(header)
        assert conn.events_received() == []
        if refused:
            assert_failed(conn, 1009, PayloadTooBig)
        else:
            assert conn.state is OPEN
            assert conn.failure is None

    def test_own_max_size_message_is_accepted(self, side: Side) -> None:
        # max_size bounds the message once inflated (Connection's docstring): a message of exactly
        # max_size bytes, compressed by our own default codec, must be accepted. 1 MiB of random
        # bytes deflates (mem_level=5: a ~2 KiB stored block each time, 5 bytes of header) to
        # ~2.5 KiB more than 1 MiB, beyond the reader's max_size/1024 + 1024 slack.
        ours, peer = codecs_for(side)
        conn = Connection(side, max_size=MIB, deflate=ours)
        conn.receive_data(compressed_message(side, peer, Opcode.BINARY, [RANDOM_1M]))
        assert conn.failure is None, conn.failure
        assert conn.events_received() == [Message(RANDOM_1M)]

    def test_small_fragments_within_max_size_are_accepted(self, side: Side) -> None:
        # Each compressed fragment ends with a sync flush (~5 bytes or more): a message sent in
        # small fragments by a legitimate peer (here: our own Connection) grows on the wire by
        # far more than the slack, while it inflates to max_size exactly.
        ours, peer = codecs_for(side, TAKEOVER_CLIENT, TAKEOVER_SERVER)
        sender = Connection(CLIENT if side is SERVER else SERVER, deflate=peer)
        data = RANDOM_1M[:4096]
        sender.send_binary(data[:8], fin=False)
        for start in range(8, 4096, 8):
            sender.send_continuation(data[start : start + 8], fin=start + 8 == 4096)
        wire = b"".join(sender.data_to_send())
        assert len(wire) > 2 * 4096  # 512 frames of 8 bytes: headers and flushes add up
        conn = Connection(side, max_size=4096, deflate=ours)
        conn.receive_data(wire)
        assert conn.failure is None, conn.failure
        assert conn.events_received() == [Message(data)]


class TestSection6_1Sending:
    def test_message_compressed(self, side: Side) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.send_text(TEXT)
        [frame] = sent_frames(conn)
        assert (frame.opcode, frame.fin, frame.rsv) == (Opcode.TEXT, True, RSV1)
        assert len(frame.payload) < len(TEXT.encode()) // 4
        assert inflate(peer, [frame.payload]) == TEXT.encode()

    def test_binary_compressed(self, side: Side) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.send_binary(bytearray(COMPRESSIBLE_1M[:10000]))
        [frame] = sent_frames(conn)
        assert (frame.opcode, frame.rsv) == (Opcode.BINARY, RSV1)
        assert inflate(peer, [frame.payload]) == COMPRESSIBLE_1M[:10000]

    def test_rsv1_on_first_frame_only(self, side: Side) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.send_text("a" * 100, fin=False)
        conn.send_continuation(b"b" * 100, fin=False)
        conn.send_continuation(b"c" * 100, fin=True)
        frames = sent_frames(conn)
        assert [(f.opcode, f.fin, f.rsv) for f in frames] == [
            (Opcode.TEXT, False, RSV1),
            (Opcode.CONT, False, 0),
            (Opcode.CONT, True, 0),
        ]
        assert inflate(peer, [f.payload for f in frames]) == b"a" * 100 + b"b" * 100 + b"c" * 100

    @pytest.mark.parametrize("size", [0, 1, 31])
    def test_below_min_size_uncompressed(self, side: Side, size: int) -> None:
        ours, _ = codecs_for(side)
        assert ours.config.min_size == 32
        conn = Connection(side, deflate=ours)
        conn.send_binary(b"z" * size)
        [frame] = sent_frames(conn)
        assert (frame.rsv, frame.payload) == (0, b"z" * size)

    def test_at_min_size_compressed(self, side: Side) -> None:
        ours, peer = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.send_binary(b"z" * 32)
        [frame] = sent_frames(conn)
        assert frame.rsv == RSV1
        assert inflate(peer, [frame.payload]) == b"z" * 32

    def test_custom_min_size(self, side: Side) -> None:
        config = DeflateConfig(min_size=1000, server_no_context_takeover=False)
        ours, _ = codecs_for(side, config, config)
        conn = Connection(side, deflate=ours)
        conn.send_text("x" * 999)
        conn.send_text("x" * 1000)
        assert [f.rsv for f in sent_frames(conn)] == [0, RSV1]

    def test_empty_message_with_min_size_zero(self, side: Side) -> None:
        ours, peer = codecs_for(side, TAKEOVER_CLIENT, TAKEOVER_SERVER)
        conn = Connection(side, deflate=ours)
        conn.send_text("")
        [frame] = sent_frames(conn)
        assert (frame.rsv, frame.payload) == (RSV1, b"\x00")
        assert inflate(peer, [frame.payload]) == b""

    def test_first_fragment_decides(self, side: Side) -> None:
        # An uncompressed message stays uncompressed, however long its later fragments.
        ours, _ = codecs_for(side)
        conn = Connection(side, deflate=ours)
        conn.send_binary(b"s", fin=False)
        conn.send_continuation(COMPRESSIBLE_1M[:5000], fin=True)
        frames = sent_frames(conn)
        assert [f.rsv for f in frames] == [0, 0]
        assert frames[1].payload == COMPRESSIBLE_1M[:5000]

    def test_control_frames_never_compressed(self, side: Side) -> None:
        ours, _ = codecs_for(side, TAKEOVER_CLIENT, TAKEOVER_SERVER)
        assert ours.should_compress(0)
        conn = Connection(side, deflate=ours)
        conn.send_ping(b"p" * 125)
        conn.send_pong(b"q" * 125)
        conn.receive_data(peer_frame(side, Opcode.PING, b"r" * 100))  # answered with a pong
        conn.send_close(1000, "s" * 100)
        frames = sent_frames(conn)
        assert [(f.opcode, f.rsv, f.payload) for f in frames] == [
            (Opcode.PING, 0, b"p" * 125),
            (Opcode.PONG, 0, b"q" * 125),
            (Opcode.PONG, 0, b"r" * 100),
            (Opcode.CLOSE, 0, Close(1000, "s" * 100).serialize()),
        ]

    def test_fail_close_frame_not_compressed(self, side: Side) -> None:
        ours, _ = codecs_for(side, TAKEOVER_CLIENT, TAKEOVER_SERVER)
        conn = Connection(side, deflate=ours)
        conn.fail(1011, "x" * 100)
        [frame] = sent_frames(conn)
        assert (frame.opcode, frame.rsv) == (Opcode.CLOSE, 0)

    def test_without_deflate_never_rsv1(self, side: Side) -> None:
        conn = Connection(side)
        conn.send_text(TEXT)
        conn.send_binary(COMPRESSIBLE_1M[:1000], fin=False)
        conn.send_continuation(b"x", fin=True)
        assert [f.rsv for f in sent_frames(conn)] == [0, 0, 0]


# --- Both roles, end to end: client <-> server Connections ----------------------------------------


class TestRoundTrip:
    @pytest.mark.parametrize(
        "message",
        [
            pytest.param("", id="empty-text"),
            pytest.param(b"", id="empty-binary"),
            pytest.param("é", id="tiny-text"),
            pytest.param(TEXT, id="text"),
            pytest.param(RANDOM_1M[: MIB - 4096], id="random-binary"),
            pytest.param(COMPRESSIBLE_1M.decode(), id="1MiB-text"),
            pytest.param(COMPRESSIBLE_1M, id="1MiB-binary"),
        ],
    )
    @pytest.mark.parametrize("direction", ["client-to-server", "server-to-client"])
    def test_message(self, direction: str, message: str | bytes) -> None:
        client, server = connection_pair(TAKEOVER_CLIENT, TAKEOVER_SERVER)
        sender, receiver = (client, server) if direction == "client-to-server" else (server, client)
        for _ in range(2):
            if isinstance(message, str):
                sender.send_text(message)
            else:
                sender.send_binary(message)
        assert deliver(sender, receiver, cuts=[1, 7, 1000]) == [Message(message)] * 2

    @pytest.mark.parametrize("server_config", SERVER_CONFIGS)
    @pytest.mark.parametrize("client_config", CLIENT_CONFIGS)
    def test_configs(self, client_config: DeflateConfig, server_config: DeflateConfig) -> None:
        client, server = connection_pair(client_config, server_config)
        messages: list[str | bytes] = [TEXT, COMPRESSIBLE_1M[:20000], "x", TEXT, b""]
        for sender, receiver in [(client, server), (server, client)]:
            for message in messages:
                if isinstance(message, str):
                    sender.send_text(message)
                else:
                    sender.send_binary(message)
            sender.send_text(TEXT[:50], fin=False)
            sender.send_continuation(TEXT[50:].encode(), fin=True)
            expected = [Message(m) for m in messages] + [Message(TEXT)]
            assert deliver(sender, receiver) == expected


# --- properties (hypothesis) ----------------------------------------------------------------------

PROTOCOL_CODES = {1007, 1009}


@st.composite
def compressed_payloads(draw: st.DrawFn) -> bytes:
    """Bytes to feed as a compressed message: random, valid, damaged, or highly compressible."""
    kind = draw(st.sampled_from(["random", "valid", "damaged", "zeros"]))
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "zeros":
        return raw_deflate(bytes(draw(st.integers(0, 300_000))), level=draw(st.integers(1, 9)))
    plain = draw(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
    payload = raw_deflate(plain, level=draw(st.integers(0, 9)), wbits=draw(st.integers(9, 15)))
    if kind == "damaged" and payload:
        position = draw(st.integers(0, len(payload) - 1))
        how = draw(st.sampled_from(["flip", "truncate", "append"]))
        if how == "flip":
            bit = 1 << draw(st.integers(0, 7))
            payload = (
                payload[:position] + bytes([payload[position] ^ bit]) + payload[position + 1 :]
            )
        elif how == "truncate":
            payload = payload[:position]
        else:
            payload += draw(st.binary(min_size=1, max_size=20))
    return payload


def cut_points(data: st.DataObject, length: int) -> list[int]:
    return sorted(data.draw(st.lists(st.integers(0, length), max_size=4)))


def pieces(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@budget(2)
@given(
    st.lists(compressed_payloads(), min_size=1, max_size=3),
    st.sampled_from([None, 0, 1, 100, 4096, 100_000]),
    st.booleans(),
    st.sampled_from([9, 12, 15]),
    st.data(),
)
def test_any_payload_inflates_or_fails_cleanly(
    payloads: list[bytes],
    max_size: int | None,
    takeover: bool,
    bits: int,
    data: st.DataObject,
) -> None:
    """Whatever the peer sends as compressed messages (each cut into frames anywhere), the codec
    returns at most max_size bytes per message or raises InvalidPayloadData / PayloadTooBig."""
    codec = make_codec(remote_no_context_takeover=not takeover, remote_max_window_bits=bits)
    for payload in payloads:
        frames = pieces(payload, cut_points(data, len(payload)))
        total = 0
        try:
            for index, frame in enumerate(frames):
                out = codec.decompress(frame, final=index == len(frames) - 1, max_size=max_size)
                assert isinstance(out, bytes)
                total += len(out)
                assert max_size is None or total <= max_size
        except ProtocolError as exc:
            assert isinstance(exc, InvalidPayloadData | PayloadTooBig), repr(exc)
            assert exc.code in PROTOCOL_CODES
            return  # the connection is failed: nothing more is read


@budget(2)
@given(
    st.lists(
        st.tuples(st.sampled_from([Opcode.TEXT, Opcode.BINARY]), compressed_payloads()),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([SERVER, CLIENT]),
    st.sampled_from([None, 0, 100, 4096]),
    st.data(),
)
def test_connection_receives_any_compressed_payload(
    messages: list[tuple[Opcode, bytes]],
    side: Side,
    max_size: int | None,
    data: st.DataObject,
) -> None:
    """Through a Connection: messages of at most max_size, or a failure with 1007 or 1009."""
    ours, _ = codecs_for(side, TAKEOVER_CLIENT, TAKEOVER_SERVER)
    conn = Connection(side, max_size=max_size, deflate=ours)
    stream = b"".join(peer_frame(side, opcode, payload, rsv=RSV1) for opcode, payload in messages)
    for piece in pieces(stream, cut_points(data, len(stream))):
        conn.receive_data(piece)
    events = conn.events_received()
    for event in events:
        assert isinstance(event, Message)
        size = len(event.data.encode() if isinstance(event.data, str) else event.data)
        assert max_size is None or size <= max_size
    if conn.failure is None:
        assert len(events) == len(messages)
    else:
        assert conn.failure.code in PROTOCOL_CODES, repr(conn.failure)
        assert len(events) < len(messages)


CONFIGS = st.builds(
    DeflateConfig,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=st.none() | st.integers(9, 15),
    client_max_window_bits=st.none() | st.integers(9, 15),
    level=st.integers(-1, 9),
    mem_level=st.integers(1, 9),
    min_size=st.integers(0, 64),
)
MESSAGES = st.lists(
    st.text(max_size=300)
    | st.binary(max_size=300)
    | st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=10), st.integers(1, 200)),
    max_size=5,
)


def send_in_fragments(conn: Connection, message: str | bytes, data: st.DataObject) -> None:
    """Send ``message`` cut anywhere (text: the first cut on a character boundary)."""
    if isinstance(message, str):
        head = data.draw(st.integers(0, len(message)))
        rest = message[head:].encode()
        cuts = cut_points(data, len(rest))
        parts = pieces(rest, cuts)
        if not cuts:
            conn.send_text(message)
            return
        conn.send_text(message[:head], fin=False)
    else:
        cuts = cut_points(data, len(message))
        parts = pieces(message, cuts)
        if not cuts:
            conn.send_binary(message)
            return
        conn.send_binary(parts.pop(0), fin=False)
    for index, part in enumerate(parts):
        conn.send_continuation(part, fin=index == len(parts) - 1)


@budget(2)
@given(CONFIGS, CONFIGS, MESSAGES, MESSAGES, st.data())
def test_messages_round_trip(
    client_config: DeflateConfig,
    server_config: DeflateConfig,
    client_messages: list[str | bytes],
    server_messages: list[str | bytes],
    data: st.DataObject,
) -> None:
    """Any messages, sent twice (context takeover) in fragments cut anywhere, and delivered in
    chunks cut anywhere, arrive unchanged, client to server and server to client."""
    client, server = connection_pair(client_config, server_config)
    for sender, receiver, messages in [
        (client, server, client_messages * 2),
        (server, client, server_messages * 2),
    ]:
        for message in messages:
            send_in_fragments(sender, message, data)
        cuts = data.draw(st.lists(st.integers(0, 10**6), max_size=5))
        assert deliver(sender, receiver, cuts) == [Message(m) for m in messages]
