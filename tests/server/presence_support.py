"""What the presence tests of hub-server share: a hub with users, and how presence shows a peer.

Presence needs user ids for its grace period, so those tests run hubs with ``AUTH`` and connect
with :func:`bearer` tokens; :func:`entry` is how ``presence`` lists a peer, and how its events
name it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt

from tests.server.peers import Peer

__all__ = ["AUTH", "SECRET", "bearer", "entry"]

#: The HS256 secret of the hubs with users, and their flags.
SECRET = "presence-test-secret-" + "0123456789abcdef" * 4
AUTH = ("--auth", "required", "--auth-keys", json.dumps([{"alg": "HS256", "key": SECRET}]))


def bearer(user: str, **claims: Any) -> list[tuple[str, str]]:
    """The Authorization header of a token for ``user``, allowed everything unless ``claims``
    say otherwise (an ``info`` claim is shown by presence)."""
    payload = {
        "sub": user,
        "exp": int(time.time() + 600),
        "subscribe": [">"],
        "publish": [">"],
        **claims,
    }
    return [("Authorization", f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}")]


def entry(peer: Peer, user: str | None = None, info: Any = None) -> dict[str, Any]:
    """How presence lists ``peer``: ``info`` only when the token has one."""
    client = peer.welcome["client"]
    assert isinstance(client, str) and client, peer.welcome
    fields: dict[str, Any] = {"client": client, "user": user}
    if info is not None:
        fields["info"] = info
    return fields
