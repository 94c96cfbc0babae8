"""hub.protocol.handshake: the opening handshake, RFC 6455 4.1 (client) and 4.2 (server)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import ClassVar

import pytest

from hub.exceptions import (
    HandshakeError,
    InvalidOrigin,
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    InvalidVersion,
    NegotiationError,
)
from hub.protocol.handshake import (
    ClientHandshake,
    ServerHandshake,
    accept_key,
    generate_key,
    reject,
)
from hub.protocol.http11 import Headers, HeadParser, Request, Response

# Section 1.3 / 4.2.2 example.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

BASE_HEADERS = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Version", "13"),
]


def make_request(
    *extra: tuple[str, str], drop: Sequence[str] = (), replace: dict[str, str] | None = None
) -> Request:
    """A valid upgrade request, minus the ``drop`` headers, with ``replace`` values and extras."""
    replace = replace or {}
    headers = Headers(
        [(name, replace.get(name, value)) for name, value in BASE_HEADERS if name not in drop]
    )
    for name, value in extra:
        headers[name] = value
    return Request("/chat", headers)


def accept(request: Request, **policy: object) -> tuple[Response, str | None]:
    response, subprotocol, _ = ServerHandshake(**policy).accept(request)  # type: ignore[arg-type]
    return response, subprotocol


def server_error(request: Request, error: type[HandshakeError], **policy: object) -> HandshakeError:
    with pytest.raises(error) as info:
        accept(request, **policy)
    return info.value


def good_response(client: ClientHandshake, *extra: tuple[str, str]) -> Response:
    headers = Headers(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(client.key)),
        ]
    )
    for name, value in extra:
        headers[name] = value
    return Response(101, "Switching Protocols", headers)


# --- Section 1.3 / 4.2.2: Sec-WebSocket-Accept ----------------------------------------------------


class TestSection4_2_2AcceptKey:
    def test_rfc_example(self) -> None:
        assert accept_key(RFC_KEY) == RFC_ACCEPT

    def test_other_key(self) -> None:
        # Computed independently: base64(SHA-1("x3JJHMbDL1EzLkh9GBhXDw==" + GUID)).
        assert accept_key("x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk="

    def test_generate_key(self) -> None:
        keys = {generate_key() for _ in range(100)}
        assert len(keys) == 100
        for key in keys:
            assert len(base64.b64decode(key, validate=True)) == 16


# --- Section 4.2.1: the server reads the client's handshake ---------------------------------------


class TestSection4_2_1ServerAccept:
    def test_accept(self) -> None:
        response, subprotocol = accept(make_request())
        assert response.status == 101
        assert response.reason == "Switching Protocols"
        assert response.headers["Upgrade"].lower() == "websocket"
        assert response.headers["Connection"].lower() == "upgrade"
        assert response.headers.get_all("Sec-WebSocket-Accept") == [RFC_ACCEPT]
        assert "Sec-WebSocket-Protocol" not in response.headers
        assert "Sec-WebSocket-Extensions" not in response.headers
        assert response.body == b""
        assert subprotocol is None

    def test_response_serializes_as_rfc_example(self) -> None:
        response, _ = accept(make_request())
        data = response.serialize()
        assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nSec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n" in data
        assert data.endswith(b"\r\n\r\n")

    def test_accept_parsed_request(self) -> None:
        raw = make_request().serialize()
        request = HeadParser(is_request=True).feed(raw)
        assert isinstance(request, Request)
        response, _ = accept(request)
        assert response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("Upgrade", "WebSocket"),
            ("Upgrade", "WEBSOCKET"),
            ("Connection", "keep-alive, Upgrade"),
            ("Connection", "upgrade"),
            ("Connection", "Upgrade,keep-alive"),
        ],
    )
    def test_token_matching_is_case_insensitive(self, name: str, value: str) -> None:
        response, _ = accept(make_request(replace={name: value}))
        assert response.status == 101

    def test_header_names_case_insensitive(self) -> None:
        headers = Headers([(name.upper(), value) for name, value in BASE_HEADERS])
        response, _ = accept(Request("/", headers))
        assert response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT

    def test_connection_split_over_two_headers(self) -> None:
        request = make_request(("Connection", "Upgrade"), replace={"Connection": "keep-alive"})
        response, _ = accept(request)
        assert response.status == 101

    @pytest.mark.parametrize("name", ["Upgrade", "Connection", "Sec-WebSocket-Key"])
    def test_missing_header(self, name: str) -> None:
        error = server_error(make_request(drop=[name]), InvalidRequest)
        assert error.status == 400

    def test_missing_host(self) -> None:
        # Section 4.2.1 item 2: the request must carry a Host header; without it the server
        # "MUST stop processing the client's handshake" and answer 400 (RFC 9112 section 3.2 too).
        error = server_error(make_request(drop=["Host"]), InvalidRequest)
        assert error.status == 400

    @pytest.mark.parametrize("value", ["h2c", "websocket2", "", "web socket"])
    def test_invalid_upgrade(self, value: str) -> None:
        assert server_error(make_request(replace={"Upgrade": value}), InvalidRequest).status == 400

    @pytest.mark.parametrize("value", ["keep-alive", "close", "", "Upgraded"])
    def test_invalid_connection(self, value: str) -> None:
        request = make_request(replace={"Connection": value})
        assert server_error(request, InvalidRequest).status == 400

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param(base64.b64encode(b"x" * 15).decode(), id="15-bytes"),
            pytest.param(base64.b64encode(b"x" * 17).decode(), id="17-bytes"),
            pytest.param(base64.b64encode(b"x" * 32).decode(), id="32-bytes"),
            pytest.param("", id="empty"),
            pytest.param("not base64 at all!!!", id="not-base64"),
            pytest.param("dGhlIHNhbXBsZSBub25jZQ", id="missing-padding"),
            pytest.param("dGhlIHNhbXBsZSBub25jZQ==x", id="trailing-garbage"),
            pytest.param("dGhlIHNhbXBs*SBub25jZQ==", id="invalid-char"),
        ],
    )
    def test_invalid_key(self, key: str) -> None:
        request = make_request(replace={"Sec-WebSocket-Key": key})
        assert server_error(request, InvalidRequest).status == 400

    def test_two_keys(self) -> None:
        request = make_request(("Sec-WebSocket-Key", "AQIDBAUGBwgJCgsMDQ4PEA=="))
        assert server_error(request, InvalidRequest).status == 400

    def test_two_identical_keys(self) -> None:
        request = make_request(("Sec-WebSocket-Key", RFC_KEY))
        assert server_error(request, InvalidRequest).status == 400

    @pytest.mark.parametrize("version", ["8", "12", "14", "13, 8", "", "thirteen"])
    def test_unsupported_version(self, version: str) -> None:
        # Section 4.4: answer 426 and say which version the server speaks.
        request = make_request(replace={"Sec-WebSocket-Version": version})
        error = server_error(request, InvalidVersion)
        assert error.status == 426

    def test_missing_version(self) -> None:
        error = server_error(make_request(drop=["Sec-WebSocket-Version"]), HandshakeError)
        assert error.status in (400, 426)

    def test_two_versions(self) -> None:
        request = make_request(("Sec-WebSocket-Version", "8"))
        assert server_error(request, InvalidVersion).status == 426

    def test_extensions_offered_are_ignored(self) -> None:
        # We support no extension: the offer is declined by not echoing it.
        response, _ = accept(make_request(("Sec-WebSocket-Extensions", "permessage-deflate")))
        assert "Sec-WebSocket-Extensions" not in response.headers

    def test_extra_headers(self) -> None:
        policy = {"extra_headers": [("Server", "hub"), ("X-Trace", "abc")]}
        response, _ = accept(make_request(), **policy)
        assert response.headers["Server"] == "hub"
        assert response.headers["x-trace"] == "abc"
        assert response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT

    def test_extra_headers_mapping(self) -> None:
        response, _ = accept(make_request(), extra_headers={"X-One": "1"})
        assert response.headers["X-One"] == "1"


class TestSection4_2_1Origin:
    ORIGINS: ClassVar[tuple[str, ...]] = ("https://good.example", "https://also.example")

    def test_no_policy_accepts_anything(self) -> None:
        response, _ = accept(make_request(("Origin", "https://evil.example")))
        assert response.status == 101
        response, _ = accept(make_request())
        assert response.status == 101

    @pytest.mark.parametrize("origin", ORIGINS)
    def test_allowed(self, origin: str) -> None:
        response, _ = accept(make_request(("Origin", origin)), origins=self.ORIGINS)
        assert response.status == 101

    @pytest.mark.parametrize(
        "origin", ["https://evil.example", "https://good.example.evil", "HTTPS://GOOD.EXAMPLE", ""]
    )
    def test_not_allowed(self, origin: str) -> None:
        request = make_request(("Origin", origin))
        assert server_error(request, InvalidOrigin, origins=self.ORIGINS).status == 403

    def test_missing_origin_refused(self) -> None:
        assert server_error(make_request(), InvalidOrigin, origins=self.ORIGINS).status == 403

    def test_none_admits_missing_origin(self) -> None:
        origins = [*self.ORIGINS, None]
        response, _ = accept(make_request(), origins=origins)
        assert response.status == 101
        request = make_request(("Origin", "https://evil.example"))
        assert server_error(request, InvalidOrigin, origins=origins).status == 403

    def test_two_origins(self) -> None:
        request = make_request(("Origin", self.ORIGINS[0]), ("Origin", self.ORIGINS[1]))
        assert server_error(request, InvalidOrigin, origins=self.ORIGINS).status == 403


class TestSection4_2_2Subprotocols:
    def test_server_preference_order(self) -> None:
        request = make_request(("Sec-WebSocket-Protocol", "chat, superchat"))
        response, chosen = accept(request, subprotocols=["superchat", "chat"])
        assert chosen == "superchat"
        assert response.headers.get_all("Sec-WebSocket-Protocol") == ["superchat"]

    def test_offers_in_several_headers(self) -> None:
        request = make_request(
            ("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b , chat")
        )
        _, chosen = accept(request, subprotocols=["chat"])
        assert chosen == "chat"

    def test_none_offered(self) -> None:
        response, chosen = accept(make_request(), subprotocols=["chat"])
        assert chosen is None
        assert "Sec-WebSocket-Protocol" not in response.headers

    def test_no_common_subprotocol(self) -> None:
        request = make_request(("Sec-WebSocket-Protocol", "mqtt"))
        response, chosen = accept(request, subprotocols=["chat"])
        assert chosen is None
        assert "Sec-WebSocket-Protocol" not in response.headers

    def test_server_supports_none(self) -> None:
        response, chosen = accept(make_request(("Sec-WebSocket-Protocol", "chat")))
        assert chosen is None
        assert "Sec-WebSocket-Protocol" not in response.headers

    def test_select_subprotocol_hook(self) -> None:
        calls: list[tuple[list[str], list[str]]] = []

        def select(offered: Sequence[str], supported: Sequence[str]) -> str | None:
            calls.append((list(offered), list(supported)))
            return offered[-1]

        request = make_request(("Sec-WebSocket-Protocol", "chat, superchat"))
        response, chosen = accept(
            request, subprotocols=["chat", "superchat"], select_subprotocol=select
        )
        assert calls == [(["chat", "superchat"], ["chat", "superchat"])]
        assert chosen == "superchat"
        assert response.headers["Sec-WebSocket-Protocol"] == "superchat"

    def test_select_subprotocol_hook_returns_none(self) -> None:
        request = make_request(("Sec-WebSocket-Protocol", "chat"))
        response, chosen = accept(
            request, subprotocols=["chat"], select_subprotocol=lambda offered, supported: None
        )
        assert chosen is None
        assert "Sec-WebSocket-Protocol" not in response.headers

    def test_select_subprotocol_hook_not_offered(self) -> None:
        request = make_request(("Sec-WebSocket-Protocol", "chat"))
        error = server_error(
            request,
            NegotiationError,
            subprotocols=["chat", "other"],
            select_subprotocol=lambda offered, supported: "other",
        )
        assert error.status == 400


# --- Section 4.1: the client's request and its checks of the response -----------------------------


class TestSection4_1ClientRequest:
    def test_request(self) -> None:
        client = ClientHandshake("server.example.com:8080", "/chat?x=1")
        request = client.request()
        assert request.method == "GET"
        assert request.path == "/chat?x=1"
        headers = request.headers
        assert headers["Host"] == "server.example.com:8080"
        assert headers["Upgrade"] == "websocket"
        assert headers["Connection"] == "Upgrade"
        assert headers["Sec-WebSocket-Version"] == "13"
        assert headers["Sec-WebSocket-Key"] == client.key
        assert len(base64.b64decode(client.key, validate=True)) == 16
        assert "Origin" not in headers
        assert "Sec-WebSocket-Protocol" not in headers
        assert "Sec-WebSocket-Extensions" not in headers

    def test_fresh_key_per_handshake(self) -> None:
        assert ClientHandshake("h").key != ClientHandshake("h").key

    def test_options(self) -> None:
        client = ClientHandshake(
            "h",
            subprotocols=["chat", "superchat"],
            origin="https://app.example",
            extra_headers=[("Authorization", "Bearer t")],
            user_agent=None,
        )
        headers = client.request().headers
        assert headers["Origin"] == "https://app.example"
        assert headers["Sec-WebSocket-Protocol"] == "chat, superchat"
        assert headers["Authorization"] == "Bearer t"
        assert "User-Agent" not in headers

    def test_client_request_accepted_by_server(self) -> None:
        client = ClientHandshake("h", subprotocols=["chat"], origin="https://app.example")
        raw = client.request().serialize()
        request = HeadParser(is_request=True).feed(raw)
        assert isinstance(request, Request)
        response, chosen, _ = ServerHandshake(
            origins=["https://app.example"], subprotocols=["chat"]
        ).accept(request)
        assert chosen == "chat"
        parsed = HeadParser(is_request=False).feed(response.serialize())
        assert isinstance(parsed, Response)
        assert client.check_response(parsed) == "chat"


class TestSection4_1ClientCheckResponse:
    def test_ok(self) -> None:
        client = ClientHandshake("h")
        assert client.check_response(good_response(client)) is None

    def test_rfc_example(self) -> None:
        client = ClientHandshake("h")
        client.key = RFC_KEY
        response = Response(
            101,
            "Switching Protocols",
            Headers(
                [
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", RFC_ACCEPT),
                ]
            ),
        )
        assert client.check_response(response) is None

    @pytest.mark.parametrize(("status", "reason"), [(200, "OK"), (403, "Forbidden"), (426, "")])
    def test_not_101(self, status: int, reason: str) -> None:
        client = ClientHandshake("h")
        response = good_response(client)
        response.status, response.reason, response.body = status, reason, b"go away\n"
        with pytest.raises(InvalidStatus) as info:
            client.check_response(response)
        assert info.value.status == status
        assert info.value.reason == reason
        assert info.value.body == b"go away\n"
        assert str(status) in str(info.value)
        assert isinstance(info.value, InvalidResponse)

    @pytest.mark.parametrize("name", ["Upgrade", "Connection", "Sec-WebSocket-Accept"])
    def test_missing_header(self, name: str) -> None:
        client = ClientHandshake("h")
        response = good_response(client)
        response.headers = Headers([(n, v) for n, v in response.headers.raw_items() if n != name])
        with pytest.raises(InvalidResponse):
            client.check_response(response)

    def test_wrong_accept(self) -> None:
        client = ClientHandshake("h")
        client.key = generate_key()
        response = good_response(client)
        response.headers = Headers(
            [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "x")]
        )
        with pytest.raises(InvalidResponse):
            client.check_response(response)

    def test_accept_for_another_key(self) -> None:
        client = ClientHandshake("h")
        other = ClientHandshake("h")
        with pytest.raises(InvalidResponse):
            client.check_response(good_response(other))

    def test_two_accept_headers(self) -> None:
        client = ClientHandshake("h")
        response = good_response(client, ("Sec-WebSocket-Accept", accept_key(client.key)))
        with pytest.raises(InvalidResponse):
            client.check_response(response)

    def test_wrong_upgrade(self) -> None:
        client = ClientHandshake("h")
        response = good_response(client)
        response.headers = Headers(
            [
                ("Upgrade", "h2c"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_key(client.key)),
            ]
        )
        with pytest.raises(InvalidResponse):
            client.check_response(response)

    def test_unexpected_extension(self) -> None:
        # Section 4.1 item 5: the client offered no extension.
        client = ClientHandshake("h")
        response = good_response(client, ("Sec-WebSocket-Extensions", "permessage-deflate"))
        with pytest.raises(InvalidResponse):
            client.check_response(response)

    def test_subprotocol_selected(self) -> None:
        client = ClientHandshake("h", subprotocols=["chat", "superchat"])
        response = good_response(client, ("Sec-WebSocket-Protocol", "superchat"))
        assert client.check_response(response) == "superchat"

    def test_subprotocol_not_offered(self) -> None:
        # Section 4.1 item 6.
        client = ClientHandshake("h", subprotocols=["chat"])
        response = good_response(client, ("Sec-WebSocket-Protocol", "superchat"))
        with pytest.raises(NegotiationError):
            client.check_response(response)

    def test_subprotocol_when_none_offered(self) -> None:
        client = ClientHandshake("h")
        response = good_response(client, ("Sec-WebSocket-Protocol", "chat"))
        with pytest.raises(NegotiationError):
            client.check_response(response)

    def test_several_subprotocols_selected(self) -> None:
        client = ClientHandshake("h", subprotocols=["chat", "superchat"])
        response = good_response(
            client, ("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Protocol", "superchat")
        )
        with pytest.raises(NegotiationError):
            client.check_response(response)

    def test_server_may_decline_subprotocols(self) -> None:
        client = ClientHandshake("h", subprotocols=["chat"])
        assert client.check_response(good_response(client)) is None


# --- Refusing a handshake -------------------------------------------------------------------------


class TestReject:
    @pytest.mark.parametrize(
        ("status", "reason"),
        [(400, "Bad Request"), (403, "Forbidden"), (426, "Upgrade Required"), (431, None)],
    )
    def test_reject(self, status: int, reason: str | None) -> None:
        response = reject(status, "Failed to open a WebSocket connection: bad key.")
        assert response.status == status
        if reason is not None:
            assert response.reason == reason
        assert response.reason
        assert response.body == b"Failed to open a WebSocket connection: bad key.\n"
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["Content-Length"] == str(len(response.body))
        assert response.headers["Connection"] == "close"

    def test_trailing_newline_not_doubled(self) -> None:
        assert reject(400, "bad\n").body == b"bad\n"

    def test_utf8_body(self) -> None:
        response = reject(400, "clé invalide")
        assert response.body == "clé invalide\n".encode()
        assert response.headers["Content-Length"] == str(len(response.body))

    def test_extra_headers(self) -> None:
        response = reject(426, "use version 13", [("Sec-WebSocket-Version", "13")])
        assert response.headers["Sec-WebSocket-Version"] == "13"

    def test_unknown_status(self) -> None:
        response = reject(499, "client closed")
        assert response.status == 499
        assert response.reason

    def test_round_trip_through_client(self) -> None:
        error = server_error(make_request(replace={"Sec-WebSocket-Version": "8"}), InvalidVersion)
        response = reject(error.status, str(error), [("Sec-WebSocket-Version", "13")])
        parsed = HeadParser(is_request=False).feed(response.serialize())
        assert isinstance(parsed, Response)
        assert parsed.status == 426
        assert parsed.body == response.body
        with pytest.raises(InvalidStatus) as info:
            ClientHandshake("h").check_response(parsed)
        assert info.value.status == 426
        assert b"version 13" in info.value.body
