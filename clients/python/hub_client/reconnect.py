"""When and how soon the client reconnects: a decision per close code, and the backoff.

The close codes are the contract's (PROTOCOL.md, "Close codes"): the client reconnects after a
lost connection and after the codes that ask for it, and stops for good after those that say
the client itself is at fault, where a reconnect would only fail again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RECONNECT", "TERMINAL", "Backoff", "reconnects"]

#: Close codes after which reconnecting cannot help: fix the client (or get a new token).
TERMINAL = frozenset({1002, 1003, 1007, 1008, 1009, 1010, 4001})

#: Close codes that ask the client to come back (1006: no close frame, a lost connection).
RECONNECT = frozenset({1001, 1006, 1011, 1012, 1013, 1014, 4008, 4010, 4029})

#: 4029 (rate limited) waits at least this many times the usual delay.
RATE_LIMITED_FACTOR = 10


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` (from 0) waits a uniform delay up to
    ``min(cap, base * factor**n)`` seconds; after 4029, ``RATE_LIMITED_FACTOR`` times longer."""

    base: float = 0.1
    cap: float = 10.0
    factor: float = 2.0

    def delay(self, attempt: int, close_code: int | None = None) -> float:
        ceiling = min(self.cap, self.base * self.factor ** min(attempt, 64))
        if close_code == 4029:
            ceiling = max(ceiling, self.base) * RATE_LIMITED_FACTOR
        return random.uniform(0, ceiling)


def reconnects(close_code: int | None, *, has_new_token: bool = False) -> bool:
    """Whether a connection that ended with ``close_code`` (None: no close frame) should be
    reopened. 4001 is terminal unless the client can present a new token; 1000 means the
    hub ended the session on purpose; an unknown code is treated as a lost connection."""
    if close_code is None:
        return True
    if close_code == 4001:
        return has_new_token
    return close_code not in TERMINAL and close_code != 1000
