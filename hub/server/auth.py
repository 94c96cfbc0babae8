"""Who a client is and what it may do: JWT connection tokens, checked in the opening handshake.

A client presents a token in an ``Authorization: Bearer <token>`` header or, for browsers that
cannot set headers, a ``token`` query parameter. :meth:`Authenticator.authenticate` verifies it
with PyJWT against the configured keys (several keys verify side by side, so that a key can be
rotated): HS256 with a shared secret, RS256 or ES256 with a public key. ``alg: none`` and any
algorithm that no key names are refused, whatever the token says. The claims are ``sub`` (the
user id), ``exp`` (required) and optional ``subscribe`` / ``publish`` lists of topic patterns
(:mod:`hub.server.permissions`), and an optional ``info`` (any JSON value) that presence shows.

Modes: ``off`` (everyone may do everything: local development), ``required`` (no valid token,
no connection: HTTP 401) and ``optional`` (a client without a token gets the configured
anonymous permissions; a client with an invalid one is still refused).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from hub.exceptions import Unauthorized
from hub.protocol.http11 import Headers
from hub.server.permissions import Permissions

__all__ = [
    "EVERYONE",
    "Authenticator",
    "Identity",
    "Key",
    "check_key",
    "token_of",
]

Mode = Literal["off", "required", "optional"]


@dataclass(frozen=True, slots=True)
class Key:
    """A key that verifies tokens: ``alg`` is HS256 (``key`` is the shared secret), RS256 or
    ES256 (``key`` is a PEM public key); ``kid``, if set, must match the token's header."""

    alg: Literal["HS256", "RS256", "ES256"]
    key: str
    kid: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """A connection's user (None: anonymous), what it may do, when its token expires
    (seconds since the Unix epoch; None: never, when auth is off or for anonymous clients),
    and the token's ``info`` claim, which presence shows to others."""

    user: str | None
    permissions: Permissions
    expires: float | None = None
    info: Any = None


#: With auth off: nobody in particular, allowed everything.
EVERYONE = Identity(None, Permissions.all())


def check_key(alg: str, key: str) -> None:
    """ValueError unless ``key`` can verify ``alg`` tokens: a secret that is no PEM for
    HS256, a public key (not a private one) of the right kind for RS256 and ES256. Checked at
    start, so that a wrong key stops the hub instead of refusing every token."""
    algorithm = jwt.get_algorithm_by_name(alg)
    try:
        prepared = algorithm.prepare_key(key)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise ValueError(f"not a usable {alg} key: {exc}") from None
    if alg != "HS256" and not hasattr(prepared, "verify"):
        raise ValueError(f"a {alg} key must be the PEM public key, not the private key")


def token_of(path: str, headers: Headers) -> str | None:
    """The token of a handshake request: the Bearer header, else the ``token`` query field."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    query = urllib.parse.urlsplit(path).query
    for name, value in urllib.parse.parse_qsl(query):
        if name == "token" and value:
            return value
    return None


class Authenticator:
    """Built from the settings once; :meth:`authenticate` for each handshake and refresh."""

    def __init__(self, mode: Mode, keys: Sequence[Key], anonymous: Permissions) -> None:
        if mode != "off" and not keys:
            raise ValueError(f"auth {mode!r} needs at least one key (auth_keys)")
        self.mode = mode
        self.keys = list(keys)
        self.anonymous = Identity(None, anonymous)

    def authenticate(self, token: str | None) -> Identity:
        """The identity that ``token`` proves. Unauthorized if it proves none: the handshake
        answers 401, a ``refresh`` the ``unauthorized`` error."""
        if self.mode == "off":
            return EVERYONE
        if token is None:
            if self.mode == "optional":
                return self.anonymous
            raise Unauthorized("a token is required")
        claims = self._verify(token)
        user = claims.get("sub")
        if not isinstance(user, str) or not user:
            raise Unauthorized("the token has no sub (user id)")
        try:
            permissions = Permissions.from_claims(claims, default=Permissions.none())
            expires = float(claims["exp"])
        except (OverflowError, ValueError) as exc:
            raise Unauthorized(f"the token's claims are invalid: {exc}") from None
        return Identity(user, permissions, expires, claims.get("info"))

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        candidates = [
            k for k in self.keys if k.alg == alg and (kid is None or k.kid in (None, kid))
        ]
        if not candidates:
            # alg "none", or an algorithm no key uses: never trust what the token asks for.
            raise Unauthorized(f"tokens signed with {alg!r} are not accepted")
        error: Exception | None = None
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, key.key, algorithms=[key.alg], options={"require": ["exp", "sub"]}
                )
                return claims
            except jwt.ExpiredSignatureError:
                raise Unauthorized("the token has expired") from None
            except (jwt.PyJWTError, OverflowError, ValueError, TypeError) as exc:
                error = exc
        raise Unauthorized(f"invalid token: {error}")
