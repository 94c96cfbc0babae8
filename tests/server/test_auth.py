"""Authentication, permissions, token expiry and origins of ``hub-server`` (issue 8).

docs/protocol.md, "Authentication", is the contract. Every test talks to a REAL daemon (see
conftest.py) over raw WebSocket connections (:func:`hub.protocol.connect`, frames encoded by
hand in tests/server/peers.py). Tokens are made here with PyJWT, and the RS256 / ES256 keys with
``cryptography``; the forgeries PyJWT refuses to make (``alg: none``, HS256 signed with an RSA
public key) are put together by hand. Every wait is bounded.

Daemons: one with ``--auth required`` and four keys (two HS256 for rotation, one RS256, one
ES256, each with a ``kid``) shared by the module; others for optional mode, the origin
allow-list, an RS256 key alone, and the bad settings.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import math
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.protocol import InvalidStatus, WebSocketClientProtocol, connect
from tests.server.conftest import (
    START_TIMEOUT,
    HubProcess,
    StartHub,
    _record,
    refused_setting,
    running_hub,
)
from tests.server.peers import JSON, TEST_BOUND, WAIT, Collector, Peer, http_get

# --- keys and tokens ------------------------------------------------------------------------------

#: The two HS256 secrets of the rotation (64 bytes and more: PyJWT warns below 32 for HS256,
#: below 64 for the HS512 forgery).
SECRET_A = "rotation-secret-A-" + "0123456789abcdef" * 4
SECRET_B = "rotation-secret-B-" + "0123456789abcdef" * 4
#: A secret the hub does not know.
WRONG_SECRET = "not-the-hubs-secret-" + "0123456789abcdef" * 4


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass(frozen=True)
class Keys:
    """The module's asymmetric keys: the hub's, and others that it must not trust."""

    rsa_private: rsa.RSAPrivateKey
    ec_private: ec.EllipticCurvePrivateKey
    other_rsa: rsa.RSAPrivateKey
    other_ec: ec.EllipticCurvePrivateKey

    @property
    def rsa_public(self) -> str:
        return _public_pem(self.rsa_private)

    @property
    def ec_public(self) -> str:
        return _public_pem(self.ec_private)

    def auth_keys(self) -> str:
        """The ``--auth-keys`` of the module's required-mode hub."""
        return json.dumps(
            [
                {"alg": "HS256", "key": SECRET_A, "kid": "k1"},
                {"alg": "HS256", "key": SECRET_B, "kid": "k2"},
                {"alg": "RS256", "key": self.rsa_public, "kid": "rsa"},
                {"alg": "ES256", "key": self.ec_public, "kid": "ec"},
            ]
        )


@functools.cache
def keys() -> Keys:
    return Keys(
        rsa_private=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_private=ec.generate_private_key(ec.SECP256R1()),
        other_rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        other_ec=ec.generate_private_key(ec.SECP256R1()),
    )


def claims(sub: str | None = "alice", ttl: float | None = 60.0, **extra: Any) -> dict[str, Any]:
    """``sub``, ``exp`` ``ttl`` seconds from now (an integer, as issuers write it), and extra."""
    result: dict[str, Any] = {}
    if sub is not None:
        result["sub"] = sub
    if ttl is not None:
        result["exp"] = int(time.time() + ttl)
    result.update(extra)
    return result


def sign(
    payload: dict[str, Any],
    key: str | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = SECRET_A,
    alg: str = "HS256",
    kid: str | None = None,
) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers=None if kid is None else {"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def craft(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A token put together by hand: HMAC-SHA256 over it with ``hmac_key``, or no signature."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def tamper(token: str, **changes: Any) -> str:
    """``token`` with its payload changed and its original signature kept."""
    header, payload, signature = token.split(".")
    body = json.loads(_unb64(payload))
    body.update(changes)
    return f"{header}.{_b64(json.dumps(body).encode())}.{signature}"


def strip_to_none(token: str) -> str:
    """A valid token whose header now says ``alg: none``, without its signature."""
    _, payload, _ = token.split(".")
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."


#: Tokens the hub must refuse (HTTP 401 in the handshake, ``unauthorized`` to a refresh).
BAD_TOKENS: dict[str, Callable[[Keys], str]] = {
    # Signatures.
    "forged-hs256": lambda k: sign(claims(), WRONG_SECRET),
    "tampered-payload": lambda k: tamper(sign(claims()), sub="admin", subscribe=[">"]),
    "rs256-other-key": lambda k: sign(claims(), k.other_rsa, "RS256"),
    "es256-other-key": lambda k: sign(claims(), k.other_ec, "ES256"),
    "rs256-other-key-hub-kid": lambda k: sign(claims(), k.other_rsa, "RS256", kid="rsa"),
    # Algorithms no key names.
    "alg-none": lambda k: craft({"alg": "none", "typ": "JWT"}, claims()),
    "alg-none-stripped": lambda k: strip_to_none(sign(claims())),
    "alg-None": lambda k: craft({"alg": "None"}, claims()),
    "hs512-right-secret": lambda k: sign(claims(), SECRET_A, "HS512"),
    "rs512-hub-key": lambda k: sign(claims(), k.rsa_private, "RS512"),
    # kid: it must name the key that signed the token.
    "kid-of-another-key": lambda k: sign(claims(), SECRET_A, kid="k2"),
    "unknown-kid": lambda k: sign(claims(), SECRET_A, kid="nope"),
    # Time.
    "expired": lambda k: sign(claims(ttl=-30)),
    "expired-rs256": lambda k: sign(claims(ttl=-30), k.rsa_private, "RS256"),
    "not-yet-valid": lambda k: sign(claims(nbf=int(time.time()) + 3600)),
    "issued-in-the-future": lambda k: sign(claims(iat=int(time.time()) + 3600)),
    "no-exp": lambda k: sign(claims(ttl=None)),
    "exp-string": lambda k: sign(claims(ttl=None, exp="tomorrow")),
    # The user.
    "no-sub": lambda k: sign(claims(sub=None)),
    "empty-sub": lambda k: sign(claims(sub="")),
    "sub-number": lambda k: sign({**claims(sub=None), "sub": 42}),
    # An audience the hub cannot check.
    "aud": lambda k: sign(claims(aud="another-service")),
    # Permission claims of the wrong type.
    "subscribe-string": lambda k: sign(claims(subscribe="chat.*")),
    "publish-number": lambda k: sign(claims(publish=5)),
    "publish-null": lambda k: sign(claims(publish=None)),
    "subscribe-map": lambda k: sign(claims(subscribe={"chat.*": True})),
    "subscribe-item-number": lambda k: sign(claims(subscribe=["chat.*", 7])),
    "subscribe-bad-pattern": lambda k: sign(claims(subscribe=["chat..a"])),
    "publish-tail-not-last": lambda k: sign(claims(publish=["chat.>.a"])),
    # Malformed strings.
    "abc": lambda k: "abc",
    "a.b.c": lambda k: "a.b.c",
    "dots": lambda k: "..",
    "bad-base64": lambda k: "eyJhbGciOiJIUzI1NiJ9.!!!.???",
    "header-not-json": lambda k: f"{_b64(b'not json')}.{_b64(b'{}')}.{_b64(b'x')}",
    "header-not-object": lambda k: f"{_b64(b'[1]')}.{_b64(b'{}')}.{_b64(b'x')}",
}


# --- connecting -----------------------------------------------------------------------------------


def uri(process: HubProcess, query: str | None = None) -> str:
    return process.uri if query is None else f"{process.uri}?token={urllib.parse.quote(query)}"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


async def handshake(
    process: HubProcess,
    codec: str = JSON,
    *,
    token: str | None = None,
    query: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    origin: str | None = None,
) -> WebSocketClientProtocol:
    """Open a connection with the token in a Bearer header (``token``), in the query
    (``query``), or with the given ``headers``."""
    extra = [*(headers or []), *(bearer(token) if token is not None else [])]
    return await connect(
        uri(process, query),
        subprotocols=[codec],
        extra_headers=extra or None,
        origin=origin,
        open_timeout=WAIT,
        ping_interval=None,
    )


async def refused(process: HubProcess, **options: Any) -> InvalidStatus:
    """The handshake's refusal: no connection is opened."""
    with pytest.raises(InvalidStatus) as caught:
        ws = await handshake(process, **options)
        await ws.close()
    return caught.value


async def raw_handshake(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """An upgrade request written by hand: status, lower-cased headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            "GET / HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        async with asyncio.timeout(WAIT):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *header_lines = head.strip("\r\n").split("\r\n")
            found = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                found[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(found.get("content-length", "0")))
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1]), found, body


class Dial(Protocol):
    async def __call__(
        self,
        process: HubProcess,
        codec: str = ...,
        *,
        token: str | None = ...,
        query: str | None = ...,
        headers: list[tuple[str, str]] | None = ...,
        origin: str | None = ...,
    ) -> Peer: ...


@pytest.fixture
async def dial() -> AsyncIterator[Dial]:
    """``await dial(hub, codec, token=...)``: a peer that has its welcome; closed at teardown."""
    sockets: list[WebSocketClientProtocol] = []

    async def dial_(
        process: HubProcess,
        codec: str = JSON,
        *,
        token: str | None = None,
        query: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        origin: str | None = None,
    ) -> Peer:
        ws = await handshake(
            process, codec, token=token, query=query, headers=headers, origin=origin
        )
        sockets.append(ws)
        peer = Peer(ws)
        peer.welcome = await peer.recv()
        assert peer.welcome["op"] == "welcome", peer.welcome
        return peer

    yield dial_
    async with asyncio.timeout(10):
        for ws in sockets:
            ws.close_timeout = min(ws.close_timeout, 1)
            await ws.close()


async def exchange(
    peer: Peer, op: str, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send ``op`` with a fresh id; its reply, and the msg frames that came before it (the
    protocol lets a publication's msg overtake the ok of its pub)."""
    id_ = peer.next_id()
    await peer.send({"op": op, "id": id_, **fields})
    msgs = []
    while True:
        frame = await peer.recv()
        if frame["op"] == "msg":
            msgs.append(frame)
            continue
        assert frame["op"] in ("ok", "error") and frame.get("id") == id_, (op, id_, frame)
        return frame, msgs


async def forbidden(peer: Peer, op: str, **fields: Any) -> None:
    reply = await peer.error(op, **fields)
    assert reply["code"] == "forbidden", f"{op} {fields}: {reply}"


async def unauthorized(peer: Peer, token: str) -> None:
    reply = await peer.error("refresh", token=token)
    assert reply["code"] == "unauthorized", reply


def full(prefix: str, sub: str = "alice", ttl: float = 60.0) -> str:
    """A token that may subscribe and publish anywhere under ``prefix``."""
    return sign(claims(sub, ttl, subscribe=[f"{prefix}.>"], publish=[f"{prefix}.>"]))


def soon(seconds: float) -> int:
    """An integer ``exp`` at least ``seconds`` from now (and less than a second more)."""
    return math.ceil(time.time() + seconds)


# --- daemons --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def required_hub() -> Iterator[HubProcess]:
    with running_hub("--auth", "required", "--auth-keys", keys().auth_keys()) as process:
        yield process


@pytest.fixture
def hub(required_hub: HubProcess, request: pytest.FixtureRequest) -> HubProcess:
    """The module's ``--auth required`` daemon, checked alive, named in a failure's report."""
    _record(request.node, required_hub)
    if required_hub.proc.poll() is not None:
        pytest.fail(f"the shared hub-server has exited:\n{required_hub.describe()}")
    return required_hub


ANONYMOUS = {"subscribe": ["news.>"], "publish": ["lobby"]}


@pytest.fixture(scope="module")
def optional_hub() -> Iterator[HubProcess]:
    flags = (
        "--auth",
        "optional",
        "--auth-keys",
        json.dumps([{"alg": "HS256", "key": SECRET_A}]),
        "--auth-anonymous",
        json.dumps(ANONYMOUS),
    )
    with running_hub(*flags) as process:
        yield process


@pytest.fixture
def optional(optional_hub: HubProcess, request: pytest.FixtureRequest) -> HubProcess:
    _record(request.node, optional_hub)
    assert optional_hub.proc.poll() is None, optional_hub.describe()
    return optional_hub


# --- refused in the handshake ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["header", "query"])
@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_a_bad_token_is_refused_with_401(hub: HubProcess, case: str, form: str) -> None:
    async with asyncio.timeout(TEST_BOUND):
        token = BAD_TOKENS[case](keys())
        if form == "header":
            error = await refused(hub, token=token)
        else:
            error = await refused(hub, query=token)
        assert error.status == 401, f"{case}: {error}"
        assert error.body.startswith(b"401 Unauthorized"), error.body


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([], None),
        ([("Authorization", "Bearer")], None),
        ([("Authorization", "Bearer ")], None),
        ([("Authorization", "Basic dXNlcjpwYXNzd29yZA==")], None),
        ([("Authorization", sign(claims()))], None),  # the token without its scheme
        ([], ""),
        ([("X-Token", sign(claims()))], None),
    ],
    ids=["none", "bearer-alone", "empty-bearer", "basic", "no-scheme", "empty-query", "x-token"],
)
async def test_no_token_is_refused_with_401(
    hub: HubProcess, headers: list[tuple[str, str]], query: str | None
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        error = await refused(hub, headers=headers, query=query)
        assert error.status == 401, error
        assert b"token is required" in error.body, error.body


async def test_the_401_says_bearer(hub: HubProcess) -> None:
    async with asyncio.timeout(TEST_BOUND):
        status, headers, body = await raw_handshake(hub.port, {})
        assert status == 401, (status, headers, body)
        assert headers.get("www-authenticate") == "Bearer", headers
        assert headers.get("content-type", "").startswith("text/plain"), headers
        status, headers, body = await raw_handshake(
            hub.port, {"Authorization": f"Bearer {BAD_TOKENS['expired'](keys())}"}
        )
        assert status == 401, (status, headers, body)
        assert b"expired" in body, body
        # /healthz needs no token.
        status, _, body = await http_get(hub.port, "/healthz")
        assert status == 200, body


async def test_no_bad_token_gets_a_session(start_hub: StartHub, dial: Dial, prefix: str) -> None:
    """Every refusal above, in both forms, on a daemon of its own: none of them opened a
    session (so none could subscribe or publish), the log counts each refusal, and neither the
    secrets nor a token appear in it."""
    async with asyncio.timeout(TEST_BOUND * 2):
        process = await start_hub("--auth", "required", "--auth-keys", keys().auth_keys())
        watcher = await dial(process, token=sign(claims(subscribe=[">"])))
        await watcher.ok("sub", topic=">")
        tokens = [make(keys()) for make in BAD_TOKENS.values()]
        for token in tokens:
            assert (await refused(process, token=token)).status == 401
            assert (await refused(process, query=token)).status == 401
        assert (await refused(process)).status == 401
        _, _, body = await http_get(process.port, "/healthz")
        assert json.loads(body)["connections"] == 1, body  # the watcher alone
        # A valid token in the query, which must not reach the log either.
        good = sign(claims(subscribe=[f"{prefix}.>"]))
        peer = await dial(process, query=good)
        await peer.ok("sub", topic=f"{prefix}.a")
        # No msg reached the watcher: nobody else could publish.
        with pytest.raises(TimeoutError):
            await watcher.recv(within=0.2)
        log = process.log
        assert len(re.findall(r"refused a handshake", log)) == 2 * len(tokens) + 1, log
        for secret in (SECRET_A, SECRET_B, keys().rsa_public.splitlines()[1]):
            assert secret not in log
        for token in [*tokens, good]:
            if len(token) > 8:
                assert token not in log, f"a token is in the log: {token}"


async def test_hs256_signed_with_the_rs256_public_key_is_refused(
    start_hub: StartHub, dial: Dial
) -> None:
    """Algorithm confusion: with an RS256 key alone, an HS256 token whose HMAC key is that
    public key's PEM text (with and without its last newline) must not verify."""
    async with asyncio.timeout(TEST_BOUND):
        public = keys().rsa_public
        process = await start_hub(
            "--auth", "required", "--auth-keys", json.dumps([{"alg": "RS256", "key": public}])
        )
        for hmac_key in (public, public.rstrip("\n")):
            for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256", "kid": "rsa"}):
                token = craft(header, claims(subscribe=[">"]), hmac_key.encode())
                assert (await refused(process, token=token)).status == 401
                assert (await refused(process, query=token)).status == 401
        # An HS256 token with any secret: no HS256 key is configured.
        assert (await refused(process, token=sign(claims()))).status == 401
        # The key itself works.
        peer = await dial(process, token=sign(claims(subscribe=["a"]), keys().rsa_private, "RS256"))
        await peer.ok("sub", topic="a")


# --- accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["header", "query", "lower-case-scheme"])
async def test_a_token_in_the_header_or_the_query(
    hub: HubProcess, dial: Dial, codec: str, prefix: str, form: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        token = full(prefix)
        if form == "header":
            peer = await dial(hub, codec, token=token)
        elif form == "query":
            peer = await dial(hub, codec, query=token)
        else:
            peer = await dial(hub, codec, headers=[("Authorization", f"bearer {token}")])
        assert peer.welcome["version"] == 1
        await peer.ok("sub", topic=f"{prefix}.a")
        await peer.send({"op": "pub", "topic": f"{prefix}.a", "data": "hi"})  # no id: no ok
        msg = await peer.recv()
        assert msg["op"] == "msg" and msg["data"] == "hi", msg


@pytest.mark.parametrize(
    "signer",
    [
        "hs256-a",
        "hs256-b",
        "hs256-a-kid",
        "hs256-b-kid",
        "rs256",
        "rs256-kid",
        "es256",
        "es256-kid",
    ],
)
async def test_every_configured_key_verifies(
    hub: HubProcess, dial: Dial, prefix: str, signer: str
) -> None:
    """Rotation: either HS256 key, with its kid or without one; RS256 and ES256 keys too."""
    payload = claims(subscribe=[f"{prefix}.>"])
    k = keys()
    token = {
        "hs256-a": lambda: sign(payload, SECRET_A),
        "hs256-b": lambda: sign(payload, SECRET_B),
        "hs256-a-kid": lambda: sign(payload, SECRET_A, kid="k1"),
        "hs256-b-kid": lambda: sign(payload, SECRET_B, kid="k2"),
        "rs256": lambda: sign(payload, k.rsa_private, "RS256"),
        "rs256-kid": lambda: sign(payload, k.rsa_private, "RS256", kid="rsa"),
        "es256": lambda: sign(payload, k.ec_private, "ES256"),
        "es256-kid": lambda: sign(payload, k.ec_private, "ES256", kid="ec"),
    }[signer]()
    async with asyncio.timeout(TEST_BOUND):
        peer = await dial(hub, token=token)
        await peer.ok("sub", topic=f"{prefix}.x")


async def test_the_header_wins_over_the_query(hub: HubProcess, dial: Dial, prefix: str) -> None:
    async with asyncio.timeout(TEST_BOUND):
        good, bad = full(prefix), BAD_TOKENS["forged-hs256"](keys())
        peer = await dial(hub, token=good, query=bad)
        await peer.ok("sub", topic=f"{prefix}.a")
        assert (await refused(hub, token=bad, query=good)).status == 401
        # A header that is not a Bearer one leaves the query's token.
        other = await dial(hub, headers=[("Authorization", "Basic eDp5")], query=good)
        await other.ok("sub", topic=f"{prefix}.a")


async def test_a_token_must_fit_in_the_handshake_but_a_refresh_takes_a_larger_one(
    hub: HubProcess, dial: Dial, prefix: str
) -> None:
    """HTTP lines are limited to 8 KiB: a larger token gets 431 in the header and 414 in the
    query. A refresh takes tokens up to 16,384 characters."""
    async with asyncio.timeout(TEST_BOUND):
        patterns = [f"{prefix}.n{i}.*" for i in range(400)]
        large = sign(claims(subscribe=patterns))
        assert 9000 < len(large) < 16384, len(large)
        assert (await refused(hub, token=large)).status == 431
        assert (await refused(hub, query=large)).status == 414
        peer = await dial(hub, token=full(prefix))
        await peer.ok("refresh", token=large)
        await peer.ok("sub", topic=f"{prefix}.n399.x")


# --- permissions ----------------------------------------------------------------------------------


async def test_the_permission_matrix(hub: HubProcess, dial: Dial, codec: str, prefix: str) -> None:
    """subscribe [chat.*] and publish [chat.a] (under the test's prefix p): every op is
    checked, wildcards included, and the connection stays open after each refusal."""
    p = prefix
    async with asyncio.timeout(TEST_BOUND):
        token = sign(claims(subscribe=[f"{p}.chat.*"], publish=[f"{p}.chat.a"]))
        peer = await dial(hub, codec, token=token)
        # pub (before any sub, so that no msg comes between the replies)
        await peer.ok("pub", topic=f"{p}.chat.a", data=1)
        for topic in (f"{p}.chat.b", f"{p}.chat.a.b", f"{p}.chat", f"{p}.other.x", "chat.a"):
            await forbidden(peer, "pub", topic=topic, data="no")
        # A forbidden pub without id: an error without id.
        await peer.send({"op": "pub", "topic": f"{p}.chat.b", "data": 2})
        reply = await peer.recv()
        assert reply["op"] == "error" and reply["code"] == "forbidden", reply
        assert "id" not in reply, reply
        # history follows the subscribe grant, not the publish one; nothing was published on
        # chat.b (offset 0), and chat.a holds only the allowed pub.
        reply = await peer.ok("history", topic=f"{p}.chat.b")
        assert reply["messages"] == [] and reply["offset"] == 0, reply
        reply = await peer.ok("history", topic=f"{p}.chat.a")
        assert [m["data"] for m in reply["messages"]] == [1], reply
        for topic in (f"{p}.other.x", f"{p}.chat.a.b", f"{p}.chat"):
            await forbidden(peer, "history", topic=topic)
        # presence: forbidden outside the grant; inside it, not implemented yet.
        await forbidden(peer, "presence", topic=f"{p}.other.x")
        reply = await peer.error("presence", topic=f"{p}.chat.b")
        assert reply["code"] == "unavailable", reply
        # sub
        await peer.ok("sub", topic=f"{p}.chat.*")
        await peer.ok("sub", topic=f"{p}.chat.a")
        for pattern in (
            f"{p}.chat.>",
            f"{p}.>",
            ">",
            "*",
            f"{p}.*",
            f"{p}.*.a",
            "*.chat.*",
            f"{p}.chat.a.b",
            f"{p}.chat.*.>",
            f"{p}.chat",
            f"{p}.other.*",
            f"{p}.other.x",
        ):
            await forbidden(peer, "sub", topic=pattern)
        # More refusals in a row than bad_frame_limit (10): refusals are not invalid frames.
        for _ in range(12):
            await forbidden(peer, "sub", topic=">")
        # Still open, and the grants still work: the pub reaches both subscriptions, at offset 2
        # (the refused pubs took no offset).
        reply, msgs = await exchange(peer, "pub", topic=f"{p}.chat.a", data=3)
        assert reply["op"] == "ok" and reply["offset"] == 2, reply
        while len(msgs) < 2:
            msgs.append(await peer.recv())
        got = sorted((m["op"], m["sub"], m["data"], m["offset"]) for m in msgs)
        assert got == [("msg", f"{p}.chat.*", 3, 2), ("msg", f"{p}.chat.a", 3, 2)], msgs


async def test_a_forbidden_sub_delivers_nothing(
    hub: HubProcess, dial: Dial, codec: str, collect: Callable[[Peer], Collector], prefix: str
) -> None:
    p = prefix
    async with asyncio.timeout(TEST_BOUND):
        limited = await dial(hub, codec, token=sign(claims(subscribe=[f"{p}.chat.*"])))
        publisher = await dial(hub, token=sign(claims("bob", publish=[f"{p}.>"])))
        control = await dial(hub, token=sign(claims("carol", subscribe=[f"{p}.>"])))
        await forbidden(limited, "sub", topic=f"{p}.chat.>")
        await forbidden(limited, "sub", topic=f"{p}.other.*")
        await forbidden(limited, "sub", topic=">")
        await limited.ok("sub", topic=f"{p}.chat.*")
        await control.ok("sub", topic=f"{p}.>")
        frames = collect(limited)
        seen = collect(control)
        for topic in (f"{p}.chat.a.b", f"{p}.other.x", f"{p}.chat.a.b.c"):
            await publisher.ok("pub", topic=topic, data="secret")
        await publisher.ok("pub", topic=f"{p}.chat.s", data="sentinel")
        # The control subscriber got all four: the three would have reached the refused subs.
        got = await seen.wait_for(4)
        assert [f["data"] for f in got] == ["secret"] * 3 + ["sentinel"], got
        first = await frames.wait_for(1)
        assert first[0]["data"] == "sentinel" and first[0]["sub"] == f"{p}.chat.*", first
        await asyncio.sleep(0.2)
        assert len(frames.frames) == 1, frames.frames


# --- expiry and refresh ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_connection_closes_with_4001_when_the_token_expires(
    hub: HubProcess, dial: Dial, codec: str, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        exp = soon(1.0)
        token = sign({**claims(ttl=None, subscribe=[f"{prefix}.>"]), "exp": exp})
        peer = await dial(hub, codec, token=token)
        await peer.ok("sub", topic=f"{prefix}.a")
        frames, closed = await peer.closed(within=exp - time.time() + 2)
        at = time.time()
        assert closed.code == 4001, f"closed with {closed.code} {closed.reason!r}"
        assert "expired" in closed.reason, closed.reason
        assert frames == [], frames
        assert exp - 0.1 <= at <= exp + 1.0, f"closed {at - exp:+.2f} s from exp"


@pytest.mark.slow
async def test_a_refresh_before_expiry_extends_the_connection(
    hub: HubProcess, dial: Dial, codec: str, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        grant = [f"{prefix}.>"]
        first = soon(1.0)
        peer = await dial(
            hub, codec, token=sign({**claims(ttl=None, subscribe=grant), "exp": first})
        )
        second = first + 2
        reply = await peer.ok(
            "refresh", token=sign({**claims(ttl=None, subscribe=grant), "exp": second})
        )
        assert reply.keys() == {"op", "id", "expires"}, reply
        assert reply["expires"] == second, reply
        await asyncio.sleep(first + 0.5 - time.time())
        await peer.ok("sub", topic=f"{prefix}.a")  # still open after the first exp
        frames, closed = await peer.closed(within=second - time.time() + 2)
        at = time.time()
        assert closed.code == 4001, f"closed with {closed.code} {closed.reason!r}"
        assert frames == [], frames
        assert second - 0.1 <= at <= second + 1.0, f"closed {at - second:+.2f} s from exp"


async def test_refresh_errors_leave_the_connection_as_it_was(
    hub: HubProcess, dial: Dial, codec: str, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        grant = [f"{prefix}.>"]
        peer = await dial(hub, codec, token=sign(claims(subscribe=grant)))
        await unauthorized(peer, sign(claims("mallory", subscribe=grant)))  # another user
        await unauthorized(peer, sign(claims(sub=None, subscribe=grant)))
        for case in ("forged-hs256", "expired", "alg-none", "abc", "tampered-payload", "aud"):
            await unauthorized(peer, BAD_TOKENS[case](keys()))
        await unauthorized(peer, BAD_TOKENS["subscribe-string"](keys()))
        # Not a token at all: bad_request.
        for value in ("", 42, None):
            reply = await peer.error("refresh", token=value)
            assert reply["code"] == "bad_request", reply
        reply = await peer.error("refresh")
        assert reply["code"] == "bad_request", reply
        # Still open, with the same grants.
        await peer.ok("sub", topic=f"{prefix}.a")
        await forbidden(peer, "sub", topic="elsewhere")


@pytest.mark.slow
async def test_a_failed_refresh_keeps_the_old_expiry(
    hub: HubProcess, dial: Dial, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        exp = soon(1.0)
        peer = await dial(hub, token=sign({**claims(ttl=None), "exp": exp}))
        await unauthorized(peer, sign(claims("mallory", ttl=600)))
        await unauthorized(peer, sign(claims(ttl=600), WRONG_SECRET))
        _, closed = await peer.closed(within=exp - time.time() + 2)
        assert closed.code == 4001, f"closed with {closed.code} {closed.reason!r}"
        assert time.time() <= exp + 1.0


async def test_a_refresh_replaces_the_permissions(
    hub: HubProcess, dial: Dial, codec: str, prefix: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        p = prefix
        peer = await dial(hub, codec, token=sign(claims(subscribe=[f"{p}.a.*"])))
        await forbidden(peer, "sub", topic=f"{p}.b.x")
        await forbidden(peer, "pub", topic=f"{p}.b.x", data=1)
        await peer.ok("history", topic=f"{p}.a.x")
        reply = await peer.ok(
            "refresh", token=sign(claims(subscribe=[f"{p}.b.*"], publish=[f"{p}.b.x"]))
        )
        assert isinstance(reply["expires"], float | int), reply
        await peer.ok("sub", topic=f"{p}.b.x")
        reply, msgs = await exchange(peer, "pub", topic=f"{p}.b.x", data=1)
        assert reply["op"] == "ok", reply
        if not msgs:
            msgs.append(await peer.recv())
        assert msgs[0]["op"] == "msg" and msgs[0]["data"] == 1, msgs
        # The new grant replaces the old one; it does not add to it.
        await forbidden(peer, "sub", topic=f"{p}.a.y")
        await forbidden(peer, "history", topic=f"{p}.a.x")
        # A refresh without claims grants nothing: refused while a subscription it would not
        # allow is held, accepted once it is gone.
        await forbidden(peer, "refresh", token=sign(claims()))
        await peer.ok("unsub", topic=f"{p}.b.x")
        await peer.ok("refresh", token=sign(claims()))
        await forbidden(peer, "sub", topic=f"{p}.b.y")
        await forbidden(peer, "pub", topic=f"{p}.b.x", data=2)


async def test_a_narrowing_refresh_stops_deliveries_outside_the_new_grant(
    hub: HubProcess, dial: Dial, collect: Callable[[Peer], Collector], prefix: str
) -> None:
    p = prefix
    async with asyncio.timeout(TEST_BOUND):
        peer = await dial(hub, token=sign(claims(subscribe=[f"{p}.a.*", f"{p}.b.*"])))
        publisher = await dial(hub, token=sign(claims("bob", publish=[f"{p}.>"])))
        await peer.ok("sub", topic=f"{p}.a.*")
        await peer.ok("sub", topic=f"{p}.b.*")
        reply = await peer.request("refresh", token=sign(claims(subscribe=[f"{p}.b.*"])))
        frames = collect(peer)
        await publisher.ok("pub", topic=f"{p}.a.x", data="revoked")
        await publisher.ok("pub", topic=f"{p}.b.x", data="sentinel")
        if reply["op"] == "ok":
            # Either the subscription ended (a notice may come), or the connection did.
            await asyncio.sleep(0.3)
            data = [f.get("data") for f in frames.frames if f["op"] == "msg"]
            assert "revoked" not in data, frames.frames


# --- optional mode --------------------------------------------------------------------------------


async def test_optional_mode_gives_anonymous_clients_the_configured_grants(
    optional: HubProcess, dial: Dial, codec: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await dial(optional, codec)
        await peer.ok("sub", topic="news.>")
        await peer.ok("sub", topic="news.sport")
        await peer.ok("history", topic="news.sport")
        await forbidden(peer, "sub", topic=">")
        await forbidden(peer, "sub", topic="chat.a")
        await forbidden(peer, "pub", topic="news.sport", data=1)
        await peer.ok("pub", topic="lobby", data="hello")
        await forbidden(peer, "pub", topic="lobby.x", data=1)
        # An anonymous connection has no user: a token cannot become its identity.
        await unauthorized(peer, sign(claims(subscribe=[">"])))
        await forbidden(peer, "sub", topic=">")


@pytest.mark.parametrize("case", ["forged-hs256", "expired", "alg-none", "abc", "no-exp"])
async def test_optional_mode_still_refuses_an_invalid_token(
    optional: HubProcess, case: str
) -> None:
    async with asyncio.timeout(TEST_BOUND):
        token = BAD_TOKENS[case](keys())
        assert (await refused(optional, token=token)).status == 401
        assert (await refused(optional, query=token)).status == 401


async def test_optional_mode_gives_a_token_its_own_grants(optional: HubProcess, dial: Dial) -> None:
    async with asyncio.timeout(TEST_BOUND):
        peer = await dial(optional, token=sign(claims(subscribe=["chat.*"])))
        await peer.ok("sub", topic="chat.a")
        # Not the anonymous grants as well: the token's claims are all it has.
        await forbidden(peer, "sub", topic="news.sport")
        await forbidden(peer, "pub", topic="lobby", data=1)
        # A token without permission claims grants nothing.
        bare = await dial(optional, token=sign(claims()))
        await forbidden(bare, "sub", topic="news.sport")
        await forbidden(bare, "pub", topic="lobby", data=1)


# --- origins --------------------------------------------------------------------------------------


async def test_the_origin_allow_list(start_hub: StartHub, dial: Dial) -> None:
    async with asyncio.timeout(TEST_BOUND):
        process = await start_hub("--allowed-origins", json.dumps(["https://app.example"]))
        for origin in (
            "https://evil.example",
            "null",
            "http://app.example",
            "https://app.example.",
        ):
            error = await refused(process, origin=origin)
            assert error.status == 403, f"{origin}: {error}"
        peer = await dial(process, origin="https://app.example")
        await peer.ok("sub", topic="a")
        plain = await dial(process)  # no Origin: not a browser
        await plain.ok("sub", topic="a")
        # Auth is off: a refresh is accepted, whatever the token, and changes nothing.
        reply = await plain.ok("refresh", token="anything")
        assert reply["expires"] is None, reply


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "setting"),
    [
        (["--auth", "required"], {}, "auth_keys"),
        (["--auth", "optional"], {}, "auth_keys"),
        ([], {"HUB_AUTH": "required"}, "auth_keys"),
        (["--auth", "sometimes"], {}, "auth"),
        (["--auth-keys", "not json"], {}, "auth_keys"),
        (["--auth-keys", json.dumps([{"alg": "HS512", "key": SECRET_A}])], {}, "auth_keys"),
        (["--auth-keys", json.dumps([{"alg": "HS256", "key": ""}])], {}, "auth_keys"),
        (["--auth-keys", json.dumps([{"alg": "HS256", "key": SECRET_A, "x": 1}])], {}, "auth_keys"),
        (["--auth-anonymous", json.dumps({"subscribe": ["a..b"]})], {}, "auth_anonymous"),
        (["--auth-anonymous", json.dumps(["a"])], {}, "auth_anonymous"),
        (["--allowed-origins", json.dumps("https://app.example")], {}, "allowed_origins"),
    ],
    ids=[
        "required-without-keys",
        "optional-without-keys",
        "env-required-without-keys",
        "mode",
        "keys-not-json",
        "keys-alg",
        "keys-empty-key",
        "keys-unknown-field",
        "anonymous-pattern",
        "anonymous-not-a-map",
        "origins-not-a-list",
    ],
)
def test_an_invalid_auth_setting_exits_2_naming_it(
    args: list[str], env: dict[str, str], setting: str
) -> None:
    output = refused_setting(["--port", "0", *args], env, setting)
    assert SECRET_A not in output, f"the secret was printed: {output}"


def _start_or_exit(flags: tuple[str, ...]) -> tuple[HubProcess, int | None]:
    """Start a daemon; (process, None) once it listens, (process, status) if it exited."""
    process = HubProcess(flags)
    try:
        process.wait_ready()
    except AssertionError:
        if process.proc.poll() is None:
            process.stop()
            raise
        return process, process.wait(START_TIMEOUT)
    return process, None


@pytest.mark.parametrize(
    "key",
    [
        {"alg": "RS256", "key": "not a PEM key"},
        {"alg": "ES256", "key": "RSA"},  # replaced below by an RSA public key
        {"alg": "HS256", "key": "RSA"},  # a public key pasted as an HS256 secret
    ],
    ids=["rs256-not-pem", "es256-rsa-key", "hs256-pem"],
)
def test_an_unusable_key_is_refused_at_start(
    key: dict[str, str], request: pytest.FixtureRequest
) -> None:
    if key["key"] == "RSA":
        key = {**key, "key": keys().rsa_public}
    process, status = _start_or_exit(("--auth", "required", "--auth-keys", json.dumps([key])))
    _record(request.node, process)
    try:
        assert status == 2, f"the hub started with an unusable {key['alg']} key"
        assert "auth_keys" in process.log, process.log
    finally:
        process.stop()


async def test_an_rs256_private_key_does_not_break_handshakes(
    request: pytest.FixtureRequest,
) -> None:
    """Either the setting is refused at start, or the key verifies (its public half)."""
    flags = (
        "--auth",
        "required",
        "--auth-keys",
        json.dumps([{"alg": "RS256", "key": _private_pem(keys().rsa_private)}]),
    )
    process, status = await asyncio.to_thread(_start_or_exit, flags)
    _record(request.node, process)
    try:
        if status is not None:
            assert status == 2 and "auth_keys" in process.log, process.log
            return
        async with asyncio.timeout(TEST_BOUND):
            ws = await handshake(process, token=sign(claims(), keys().rsa_private, "RS256"))
            await ws.close()
    finally:
        await asyncio.to_thread(process.stop)


async def test_an_exp_beyond_the_float_range_is_refused(hub: HubProcess) -> None:
    async with asyncio.timeout(TEST_BOUND):
        token = sign({**claims(ttl=None), "exp": 10**400})
        error = await refused(hub, token=token)
        assert error.status == 401, error


# --- the warning when auth is off on the network --------------------------------------------------

LISTENING_ANYWHERE = r"hub\.server: hub \S+ listening on"
AUTH_OFF_WARNING = r"WARNING hub\.server: auth is off and 0\.0\.0\.0 is reachable from the network"


@pytest.mark.parametrize("auth", ["off", "required"])
async def test_auth_off_on_a_network_address_logs_a_warning(
    auth: str, request: pytest.FixtureRequest
) -> None:
    """``--host 0.0.0.0`` (the conftest's fixtures look for 127.0.0.1 in the listening line,
    so the process is driven here by hand)."""
    flags: tuple[str, ...] = ("--host", "0.0.0.0")
    if auth == "required":
        flags += (
            "--auth",
            "required",
            "--auth-keys",
            json.dumps([{"alg": "HS256", "key": SECRET_A}]),
        )
    process = HubProcess(flags)
    _record(request.node, process)
    try:
        await asyncio.to_thread(process.wait_for_line, LISTENING_ANYWHERE, START_TIMEOUT)
        warned = process.find_line(AUTH_OFF_WARNING) is not None
        assert warned == (auth == "off"), process.describe()
        assert SECRET_A not in process.log
    finally:
        await asyncio.to_thread(process.stop)


async def test_auth_off_on_loopback_logs_no_warning(start_hub: StartHub) -> None:
    process = await start_hub()
    assert process.find_line(r"auth is off") is None, process.describe()
