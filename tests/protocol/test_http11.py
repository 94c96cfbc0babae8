"""hub.protocol.http11: the HTTP/1.1 heads of the opening handshake (RFC 6455 section 4.1/4.2)."""

from __future__ import annotations

import pytest

from hub.exceptions import InvalidRequest, InvalidResponse
from hub.protocol.http11 import (
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    MAX_LINE_LENGTH,
    Headers,
    HeadParser,
    Request,
    Response,
    header_tokens,
)

REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n"
)


def parse_request(data: bytes) -> Request:
    parser = HeadParser(is_request=True)
    result = parser.feed(data)
    assert isinstance(result, Request)
    return result


def parse_request_bytewise(data: bytes) -> tuple[Request, bytes]:
    parser = HeadParser(is_request=True)
    for i in range(len(data)):
        result = parser.feed(data[i : i + 1])
        if result is not None:
            assert isinstance(result, Request)
            assert i == len(data) - 1, "head complete before the blank line"
            return result, parser.rest
    raise AssertionError("head never completed")


def request_error(data: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        HeadParser(is_request=True).feed(data)
    return info.value


def request_with_headers(*lines: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


# --- Headers --------------------------------------------------------------------------------------


class TestHeaders:
    def test_case_insensitive(self) -> None:
        headers = Headers([("Sec-WebSocket-Key", "abc")])
        assert headers["sec-websocket-key"] == "abc"
        assert headers["SEC-WEBSOCKET-KEY"] == "abc"
        assert "sec-WebSocket-KEY" in headers
        assert headers.get("SEC-websocket-key") == "abc"

    def test_missing(self) -> None:
        headers = Headers()
        with pytest.raises(KeyError):
            headers["Upgrade"]
        assert headers.get("Upgrade") is None
        assert headers.get("Upgrade", "x") == "x"
        assert headers.get_all("Upgrade") == []
        assert "Upgrade" not in headers
        assert 42 not in headers

    def test_multiple_values(self) -> None:
        headers = Headers()
        headers["Sec-WebSocket-Protocol"] = "chat"
        headers["sec-websocket-protocol"] = "superchat"
        assert headers.get_all("SEC-WEBSOCKET-PROTOCOL") == ["chat", "superchat"]
        assert headers["Sec-WebSocket-Protocol"] == "chat, superchat"
        assert len(headers) == 2
        assert list(headers) == ["Sec-WebSocket-Protocol", "sec-websocket-protocol"]

    def test_raw_items_keep_order_and_spelling(self) -> None:
        items = [("B", "1"), ("a", "2"), ("b", "3")]
        headers = Headers(items)
        assert headers.raw_items() == items
        assert list(headers) == ["B", "a", "b"]

    def test_init_from_mapping_and_headers(self) -> None:
        headers = Headers({"X-One": "1", "X-Two": "2"})
        assert headers["x-one"] == "1"
        copy = Headers(headers)
        assert copy == headers
        copy["X-Three"] = "3"
        assert "X-Three" not in headers

    def test_equality_ignores_name_case_and_order(self) -> None:
        assert Headers([("A", "1"), ("b", "2")]) == Headers([("B", "2"), ("a", "1")])
        assert Headers([("A", "1")]) != Headers([("A", "2")])
        assert Headers([("A", "1")]) != {"A": "1"}

    def test_serialize(self) -> None:
        headers = Headers([("Upgrade", "websocket"), ("Connection", "Upgrade")])
        assert headers.serialize() == b"Upgrade: websocket\r\nConnection: Upgrade\r\n"

    def test_header_tokens(self) -> None:
        headers = Headers([("Connection", "keep-alive, Upgrade"), ("connection", " , close")])
        assert header_tokens(headers, "CONNECTION") == ["keep-alive", "upgrade", "close"]
        assert header_tokens(headers, "Upgrade") == []


# --- Section 4.1 / 4.2.1: the client's request ----------------------------------------------------


class TestRequestParsing:
    def test_whole(self) -> None:
        request = parse_request(REQUEST)
        assert request.method == "GET"
        assert request.path == "/chat?room=1"
        assert request.headers["host"] == "server.example.com"
        assert request.headers["UPGRADE"] == "websocket"
        assert request.headers["Sec-WebSocket-Key"] == "dGhlIHNhbXBsZSBub25jZQ=="
        assert request.headers.get_all("Sec-WebSocket-Protocol") == ["chat, superchat"]
        assert len(request.headers) == 7

    def test_byte_by_byte(self) -> None:
        request, rest = parse_request_bytewise(REQUEST)
        assert request == parse_request(REQUEST)
        assert rest == b""

    @pytest.mark.parametrize("cut", [1, 15, 16, 17, 50, len(REQUEST) - 2, len(REQUEST) - 1])
    def test_two_chunks(self, cut: int) -> None:
        parser = HeadParser(is_request=True)
        assert parser.feed(REQUEST[:cut]) is None
        assert parser.feed(REQUEST[cut:]) == parse_request(REQUEST)

    def test_rest_keeps_bytes_after_head(self) -> None:
        parser = HeadParser(is_request=True)
        frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
        assert isinstance(parser.feed(REQUEST + frame), Request)
        assert parser.rest == frame

    def test_rest_after_split_head(self) -> None:
        parser = HeadParser(is_request=True)
        assert parser.feed(REQUEST[:-3]) is None
        assert isinstance(parser.feed(REQUEST[-3:] + b"extra"), Request)
        assert parser.rest == b"extra"

    def test_multiple_header_values(self) -> None:
        request = parse_request(
            request_with_headers(
                b"Sec-WebSocket-Protocol: chat",
                b"sec-websocket-protocol: superchat",
                b"Host: x",
            )
        )
        assert request.headers.get_all("Sec-WebSocket-Protocol") == ["chat", "superchat"]
        assert request.headers["SEC-WEBSOCKET-PROTOCOL"] == "chat, superchat"

    def test_value_whitespace_stripped(self) -> None:
        request = parse_request(request_with_headers(b"Upgrade: \t websocket \t", b"Empty:"))
        assert request.headers["Upgrade"] == "websocket"
        assert request.headers["Empty"] == ""

    def test_obs_text_in_value(self) -> None:
        request = parse_request(request_with_headers(b"X-Name: caf\xe9"))
        assert request.headers["X-Name"] == "caf\xe9"

    def test_request_serialize_round_trip(self) -> None:
        request = Request("/p?q", Headers([("Host", "h"), ("Upgrade", "websocket")]))
        assert request.serialize() == b"GET /p?q HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"
        assert parse_request(request.serialize()) == request

    def test_no_headers(self) -> None:
        request = parse_request(b"GET / HTTP/1.1\r\n\r\n")
        assert request.path == "/"
        assert len(request.headers) == 0


class TestRequestErrors:
    @pytest.mark.parametrize("method", [b"POST", b"PUT", b"HEAD", b"get", b"OPTIONS"])
    def test_method_not_get(self, method: bytes) -> None:
        # Section 4.1: "The method of the request MUST be GET".
        error = request_error(method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert error.status == 405

    def test_http_1_0(self) -> None:
        # Section 4.1: "the HTTP version MUST be at least 1.1".
        error = request_error(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        assert error.status == 400

    @pytest.mark.parametrize(
        "line",
        [
            b"GET /",
            b"GET / HTTP/1.1 extra",
            b"GET  / HTTP/1.1",
            b"GET / FTP/1.1",
            b"/ HTTP/1.1",
            b"GET http://example.com/ HTTP/1.1",
            b"GET * HTTP/1.1",
        ],
    )
    def test_bad_request_line(self, line: bytes) -> None:
        assert request_error(line + b"\r\nHost: x\r\n\r\n").status == 400

    def test_obs_fold(self) -> None:
        # RFC 9112 section 5.2: obsolete line folding is rejected with 400.
        error = request_error(request_with_headers(b"X-Folded: a", b" b", b"Host: x"))
        assert error.status == 400

    def test_obs_fold_with_tab(self) -> None:
        assert request_error(request_with_headers(b"X-Folded: a", b"\tb")).status == 400

    @pytest.mark.parametrize(
        "line",
        [
            b"Bad Name: x",
            b"Bad-Name : x",
            b"Bad(Name): x",
            b": no name",
            b"No-Colon",
            b"Caf\xe9: x",
        ],
    )
    def test_invalid_header_name(self, line: bytes) -> None:
        assert request_error(request_with_headers(line)).status == 400

    @pytest.mark.parametrize("char", [b"\x00", b"\x01", b"\x0b", b"\x7f", b"\r", b"\n"])
    def test_invalid_value_char(self, char: bytes) -> None:
        assert request_error(request_with_headers(b"X-Bad: a" + char + b"b")).status == 400

    def test_is_invalid_request_with_status(self) -> None:
        error = request_error(b"GET / HTTP/1.0\r\n\r\n")
        assert isinstance(error, InvalidRequest)
        assert not isinstance(error, InvalidResponse)


class TestRequestLimits:
    def test_header_line_at_limit_whole(self) -> None:
        line = b"X-Long: " + b"a" * (MAX_LINE_LENGTH - 8)
        assert len(line) == MAX_LINE_LENGTH
        request = parse_request(request_with_headers(line))
        assert len(request.headers["X-Long"]) == MAX_LINE_LENGTH - 8

    def test_header_line_at_limit_byte_by_byte(self) -> None:
        # Fed whole or byte by byte, the same head gets the same answer: a line of exactly
        # MAX_LINE_LENGTH bytes is allowed (the CR that ends it is not part of the line).
        line = b"X-Long: " + b"a" * (MAX_LINE_LENGTH - 8)
        request, _ = parse_request_bytewise(request_with_headers(line))
        assert len(request.headers["X-Long"]) == MAX_LINE_LENGTH - 8

    def test_header_line_too_long_whole(self) -> None:
        line = b"X-Long: " + b"a" * (MAX_LINE_LENGTH - 7)
        assert request_error(request_with_headers(line)).status == 431

    def test_header_line_too_long_before_line_completes(self) -> None:
        parser = HeadParser(is_request=True)
        assert parser.feed(b"GET / HTTP/1.1\r\nX-Long: ") is None
        assert parser.feed(b"a" * (MAX_LINE_LENGTH - 8)) is None
        with pytest.raises(InvalidRequest) as info:
            parser.feed(b"a")  # MAX_LINE_LENGTH + 1 bytes, no CRLF yet
        assert info.value.status == 431

    def test_request_line_too_long_before_line_completes(self) -> None:
        parser = HeadParser(is_request=True)
        assert parser.feed(b"GET /" + b"a" * (MAX_LINE_LENGTH - 5)) is None
        with pytest.raises(InvalidRequest) as info:
            parser.feed(b"a")  # MAX_LINE_LENGTH + 1 bytes, no CRLF yet
        assert info.value.status == 414  # URI Too Long, as for a complete request line

    def test_request_line_at_limit(self) -> None:
        line = b"GET /" + b"a" * (MAX_LINE_LENGTH - 14) + b" HTTP/1.1"
        assert len(line) == MAX_LINE_LENGTH
        data = line + b"\r\nHost: x\r\n\r\n"
        assert len(parse_request(data).path) == MAX_LINE_LENGTH - 13
        request, _ = parse_request_bytewise(data)
        assert len(request.path) == MAX_LINE_LENGTH - 13

    def test_request_line_too_long_whole(self) -> None:
        line = b"GET /" + b"a" * (MAX_LINE_LENGTH - 13) + b" HTTP/1.1"
        error = request_error(line + b"\r\nHost: x\r\n\r\n")
        assert error.status == 414

    def test_endless_line_refused_early(self) -> None:
        parser = HeadParser(is_request=True)
        parser.feed(b"GET / HTTP/1.1\r\nX: ")
        with pytest.raises(InvalidRequest) as info:
            for _ in range(100):
                parser.feed(b"a" * 1000)
        assert info.value.status == 431

    def test_max_headers_accepted(self) -> None:
        lines = [b"X-H%d: v" % i for i in range(MAX_HEADERS)]
        request = parse_request(request_with_headers(*lines))
        assert len(request.headers) == MAX_HEADERS

    def test_too_many_headers_whole(self) -> None:
        lines = [b"X-H%d: v" % i for i in range(MAX_HEADERS + 1)]
        assert request_error(request_with_headers(*lines)).status == 431

    def test_too_many_headers_before_head_completes(self) -> None:
        parser = HeadParser(is_request=True)
        parser.feed(b"GET / HTTP/1.1\r\n")
        with pytest.raises(InvalidRequest) as info:
            for i in range(MAX_HEADERS + 5):
                parser.feed(b"X-H%d: v\r\n" % i)
        assert info.value.status == 431
        assert i <= MAX_HEADERS + 1

    @staticmethod
    def head_of_size(size: int) -> bytes:
        head = b"GET / HTTP/1.1\r\n"
        count = 0
        while size - len(head) > 8100:
            head += b"X-%03d: " % count + b"a" * 8000 + b"\r\n"
            count += 1
        padding = size - len(head) - len(b"X-End: \r\n\r\n")
        data = head + b"X-End: " + b"b" * padding + b"\r\n\r\n"
        assert len(data) == size
        return data

    def test_head_at_size_limit(self) -> None:
        data = self.head_of_size(MAX_HEAD_SIZE)
        assert isinstance(HeadParser(is_request=True).feed(data), Request)

    def test_head_one_byte_over_size_limit(self) -> None:
        assert request_error(self.head_of_size(MAX_HEAD_SIZE + 1)).status == 431

    def test_head_too_large_whole(self) -> None:
        lines = [b"X-%02d: " % i + b"a" * 8000 for i in range(9)]
        data = request_with_headers(*lines)
        assert len(data) > MAX_HEAD_SIZE
        assert request_error(data).status == 431

    def test_head_too_large_before_head_completes(self) -> None:
        parser = HeadParser(is_request=True)
        parser.feed(b"GET / HTTP/1.1\r\n")
        fed = 16
        with pytest.raises(InvalidRequest) as info:
            for i in range(20):
                chunk = b"X-%02d: " % i + b"a" * 8000 + b"\r\n"
                parser.feed(chunk)
                fed += len(chunk)
        assert info.value.status == 431
        assert fed <= MAX_HEAD_SIZE


# --- Section 4.2.2 / 4.1: the server's response ---------------------------------------------------


class TestResponseParsing:
    def test_whole(self) -> None:
        parser = HeadParser(is_request=False)
        response = parser.feed(RESPONSE)
        assert isinstance(response, Response)
        assert response.status == 101
        assert response.reason == "Switching Protocols"
        assert response.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert response.body == b""

    def test_byte_by_byte(self) -> None:
        parser = HeadParser(is_request=False)
        results = [parser.feed(RESPONSE[i : i + 1]) for i in range(len(RESPONSE))]
        assert results[:-1] == [None] * (len(RESPONSE) - 1)
        assert results[-1] == HeadParser(is_request=False).feed(RESPONSE)

    def test_rest_and_body(self) -> None:
        parser = HeadParser(is_request=False)
        response = parser.feed(RESPONSE + b"\x81\x02hi")
        assert isinstance(response, Response)
        assert parser.rest == b"\x81\x02hi"

    def test_error_response_body(self) -> None:
        data = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope"
        response = HeadParser(is_request=False).feed(data)
        assert isinstance(response, Response)
        assert response.status == 403
        assert response.reason == "Forbidden"
        assert response.body == b"nope"

    def test_no_reason(self) -> None:
        response = HeadParser(is_request=False).feed(b"HTTP/1.1 101\r\n\r\n")
        assert isinstance(response, Response)
        assert (response.status, response.reason) == (101, "")

    def test_serialize_round_trip(self) -> None:
        response = Response(404, "Not Found", Headers([("Content-Length", "2")]), b"no")
        data = response.serialize()
        assert data == b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
        assert HeadParser(is_request=False).feed(data) == response

    @pytest.mark.parametrize(
        "line",
        [
            b"HTTP/1.1",
            b"HTTP/1.1 abc OK",
            b"HTTP/1.1 99 Too Low",
            b"HTTP/1.1 1010 Too Long",
            b"HTTP/2 101 Switching Protocols",
            b"HTTP/1.1  101 Switching Protocols",
            b"ICY 200 OK",
            b"",
        ],
    )
    def test_bad_status_line(self, line: bytes) -> None:
        with pytest.raises(InvalidResponse):
            HeadParser(is_request=False).feed(line + b"\r\nUpgrade: websocket\r\n\r\n")

    def test_bad_header_in_response(self) -> None:
        with pytest.raises(InvalidResponse) as info:
            HeadParser(is_request=False).feed(b"HTTP/1.1 101 OK\r\nBad Header: x\r\n\r\n")
        assert not isinstance(info.value, InvalidRequest)

    def test_response_line_too_long(self) -> None:
        parser = HeadParser(is_request=False)
        parser.feed(b"HTTP/1.1 101 OK\r\nX: ")
        with pytest.raises(InvalidResponse):
            parser.feed(b"a" * (MAX_LINE_LENGTH + 10))
