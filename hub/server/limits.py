"""Counters behind the hub's abuse limits: rates, abuse windows, per-key counts.

Theory of operation: everything here is pure, synchronous and deterministic. Nothing reads a
clock: the caller passes ``now``, in seconds from :func:`time.monotonic`, to every call that
depends on time, so the tests walk time forward with explicit values and never sleep. Nothing
awaits and nothing does I/O; the session and the handshake call these and decide what to send.

- :class:`TokenBucket`: publishes per second of one connection. On a refusal, the session answers
  ``rate_limited`` and feeds the refusal to an :class:`AbuseCounter`.
- :class:`AbuseCounter`: refusals in a sliding window. Once it reports persistent abuse, the
  session closes the connection with 4029.
- :class:`KeyedRate`: one token bucket per key (handshakes per client IP). On a refusal, the
  handshake answers HTTP 429. Memory stays bounded (see the class).
- :class:`Counts`: holders per key (connections per user id). On a refusal, the handshake answers
  HTTP 429; every successful acquire is released exactly once, when the connection ends.

Invalid parameters raise :class:`ValueError` (they come from settings); releasing what was not
acquired raises :class:`~hub.exceptions.UsageError` (a bug in the caller).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

from hub.exceptions import UsageError

__all__ = ["AbuseCounter", "Counts", "KeyedRate", "TokenBucket"]

#: Token amounts this close to enough count as enough: from 0.3 to 0.7 s at 10 per second, floating
#: point refills 3.9999999999999996 tokens, which must allow a take of 4.
EPSILON = 1e-9


def _check_rate(rate: float, burst: float) -> None:
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a finite number > 0, not {rate!r}")
    if not (burst >= 1 and math.isfinite(burst)):
        raise ValueError(f"burst must be a finite number >= 1, not {burst!r}")


class TokenBucket:
    """Allow ``rate`` events per second on average, and bursts of up to ``burst`` at once.

    The bucket starts full (``burst`` tokens) and refills continuously at ``rate`` tokens per
    second, never above ``burst``. Call :meth:`take` for each event; on False, refuse the event
    (a publish answers ``rate_limited``; record the refusal in an :class:`AbuseCounter`).
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        _check_rate(rate, burst)
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last: float | None = None  # the latest ``now`` seen; None before the first call

    def level(self, now: float) -> float:
        """The tokens available at ``now`` (changes nothing)."""
        if self._last is None or now <= self._last:
            return self._tokens
        return min(self.burst, self._tokens + (now - self._last) * self.rate)

    def full(self, now: float) -> bool:
        """Whether the bucket holds ``burst`` tokens at ``now``: as good as a new bucket."""
        return self.level(now) >= self.burst

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Refill up to ``now``, then take ``amount`` tokens and return True if there are enough.

        On False nothing is taken: refuse the event (answer ``rate_limited``). An ``amount``
        above ``burst`` is always refused. A ``now`` earlier than a previous one (which
        :func:`time.monotonic` never returns) refills nothing.
        """
        if not (amount >= 0 and math.isfinite(amount)):
            raise ValueError(f"amount must be a finite number >= 0, not {amount!r}")
        self._tokens = self.level(now)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens + EPSILON < amount:
            return False
        self._tokens = max(0.0, self._tokens - amount)
        return True


class AbuseCounter:
    """Detect persistent abuse: ``limit`` refusals within ``window`` seconds.

    Call :meth:`record` for each refusal (e.g. each publish answered ``rate_limited``); once it
    returns True, close the connection with 4029. It keeps at most ``limit`` timestamps.
    """

    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit!r}")
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a finite number > 0, not {window!r}")
        self.limit = limit
        self.window = float(window)
        # Only the latest ``limit`` refusals can decide whether ``limit`` fall in the window.
        self._times: deque[float] = deque(maxlen=limit)

    def record(self, now: float) -> bool:
        """Record a refusal at ``now``; True when ``limit`` refusals (this one included) fall
        within the last ``window`` seconds, i.e. after ``now - window``: close with 4029."""
        self._times.append(now)
        horizon = now - self.window
        while self._times[0] <= horizon:
            self._times.popleft()
        return len(self._times) >= self.limit


class KeyedRate:
    """One :class:`TokenBucket` per key, e.g. handshakes per client IP.

    Memory is bounded two ways, and neither lets a refused key through while it keeps trying:

    - A bucket that is full again is dropped: it behaves exactly like the new bucket that replaces
      it. Buckets are kept in order of last use and each call drops full ones from the least
      recently used end, so a bucket is gone at the first call after it has been idle
      ``burst / rate`` seconds (it is full by then), or sooner.
    - At most ``max_keys`` buckets are kept: a new key beyond that evicts the least recently used
      bucket even if it is not full, so that key is forgiven its debt. Each call (refused ones
      included) makes its key the most recently used, so a key that keeps trying is evicted only
      after ``max_keys`` other keys came since its last attempt.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        _check_rate(rate, burst)
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, not {max_keys!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        """The number of buckets kept."""
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has a bucket (one that is not full again, or not yet dropped)."""
        return key in self._buckets

    def allow(self, key: str, now: float) -> bool:
        """Take a token from ``key``'s bucket at ``now``; on False, refuse (the handshake answers
        HTTP 429)."""
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if not oldest.full(now):
                break
            buckets.popitem(last=False)
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
            bucket = buckets[key] = TokenBucket(self.rate, self.burst)
        else:
            buckets.move_to_end(key)
        return bucket.take(now)


class Counts:
    """Holders per key, at most ``limit`` each, e.g. connections per user id.

    Call :meth:`acquire` when a holder arrives; on False, refuse it (the handshake answers HTTP
    429). Call :meth:`release` exactly
    once for each successful acquire, when the holder leaves (in a ``finally``). Keys whose count
    falls to 0 are removed, so memory follows the keys held.
    """

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit!r}")
        self.limit = limit
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        """The number of keys held at least once."""
        return len(self._counts)

    def count(self, key: str) -> int:
        """How many holders ``key`` has."""
        return self._counts.get(key, 0)

    def acquire(self, key: str) -> bool:
        """Count one more holder of ``key``; False (nothing counted) when ``key`` already has
        ``limit``: refuse the holder (the handshake answers HTTP 429)."""
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        """Count one holder of ``key`` less; raises UsageError when ``key`` has none."""
        count = self._counts.get(key, 0)
        if count <= 0:
            raise UsageError(f"release of {key!r}, which holds nothing")
        if count == 1:
            del self._counts[key]
        else:
            self._counts[key] = count - 1
