"""The abuse limits' counters, on explicit ``now`` values: no clock, no sleeps, no event loop."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

import hub.server.limits
from hub.exceptions import UsageError
from hub.server.limits import AbuseCounter, Counts, KeyedRate, TokenBucket


def test_module_is_pure() -> None:
    """No clock, no event loop, no I/O: time comes from the caller."""
    tree = ast.parse(Path(hub.server.limits.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"asyncio", "time", "socket", "os", "threading", "random"})


# --- TokenBucket ---------------------------------------------------------------------------------


def take_all(bucket: TokenBucket, now: float) -> int:
    """Take single tokens at ``now`` until refused; how many were taken."""
    taken = 0
    while bucket.take(now):
        taken += 1
        assert taken <= 1000, "the bucket never refuses"
    return taken


def test_bucket_starts_full() -> None:
    bucket = TokenBucket(rate=1, burst=3)
    assert bucket.level(0.0) == 3
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=2, burst=4)
    assert take_all(bucket, 10.0) == 4
    assert bucket.level(10.25) == 0.5
    assert not bucket.take(10.25)
    assert bucket.take(10.5)  # 1 token after 0.5 s at 2 per second
    assert not bucket.take(10.5)
    assert take_all(bucket, 11.5) == 2  # 2 more after 1 s


def test_bucket_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(rate=5, burst=3)
    assert take_all(bucket, 0.0) == 3
    assert bucket.level(1000.0) == 3
    assert take_all(bucket, 1000.0) == 3


def test_level_changes_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=2)
    assert take_all(bucket, 0.0) == 2
    assert bucket.level(1.5) == 1.5
    assert bucket.level(1.5) == 1.5
    assert not bucket.full(1.5)
    assert bucket.full(2.0)
    assert take_all(bucket, 1.0) == 1  # level() at 1.5 did not move the refill forward


def test_refusal_takes_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=3)
    assert bucket.take(0.0, 2)
    assert not bucket.take(0.0, 2)  # 1 token left: not enough
    assert bucket.level(0.0) == 1
    assert bucket.take(0.0, 1)  # the refused take left it there
    assert not bucket.take(0.0)


def test_amount_over_burst_is_always_refused() -> None:
    bucket = TokenBucket(rate=100, burst=2)
    assert not bucket.take(0.0, 3)
    assert not bucket.take(1e6, 3)
    assert bucket.take(1e6, 2)


def test_fractional_rate() -> None:
    bucket = TokenBucket(rate=0.5, burst=1)  # one every 2 s
    assert bucket.take(0.0)
    assert not bucket.take(1.0)
    assert not bucket.take(1.999)
    assert bucket.take(2.0)
    assert not bucket.take(2.0)


def test_fractional_amounts() -> None:
    bucket = TokenBucket(rate=0.25, burst=1.5)
    assert bucket.take(0.0, 0.75)
    assert bucket.take(0.0, 0.75)
    assert not bucket.take(0.0, 0.25)
    assert not bucket.take(0.9, 0.25)  # 0.225 tokens
    assert bucket.take(1.0, 0.25)  # 0.25 tokens
    assert bucket.level(1.0) == 0


def test_floating_point_refill_counts_as_enough() -> None:
    bucket = TokenBucket(rate=10, burst=10)
    assert bucket.take(0.3, 10)
    assert (0.7 - 0.3) * 10 < 4  # what floating point refills ...
    assert bucket.take(0.7, 4)  # ... still allows the 4 that 0.4 s at 10 per second give
    assert not bucket.take(0.7, 0.001)
    assert bucket.level(0.7) == 0  # never negative


def test_time_going_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=2, burst=4)
    assert take_all(bucket, 10.0) == 4
    assert not bucket.take(5.0)
    assert bucket.level(5.0) == 0
    assert take_all(bucket, 10.5) == 1  # refilled from 10.0, not from 5.0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, 1), (-1, 1), (math.nan, 1), (math.inf, 1), (1, 0.5), (1, 0), (1, math.nan), (1, math.inf)],
)
def test_bucket_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
    with pytest.raises(ValueError):
        KeyedRate(rate, burst)


@pytest.mark.parametrize("amount", [-1, math.nan, math.inf])
def test_bucket_rejects_bad_amount(amount: float) -> None:
    bucket = TokenBucket(rate=1, burst=1)
    with pytest.raises(ValueError):
        bucket.take(0.0, amount)
    assert bucket.level(0.0) == 1


# --- AbuseCounter --------------------------------------------------------------------------------


def test_abuse_reported_at_limit() -> None:
    counter = AbuseCounter(limit=3, window=10)
    assert not counter.record(0.0)
    assert not counter.record(1.0)
    assert counter.record(2.0)
    assert counter.record(3.0)  # still abusing


def test_abuse_window_slides() -> None:
    counter = AbuseCounter(limit=3, window=10)
    assert not counter.record(0.0)
    assert not counter.record(5.0)
    assert not counter.record(10.0)  # the refusal at 0.0 is a full window old: out
    assert counter.record(11.0)  # 5.0, 10.0, 11.0


def test_spread_refusals_are_not_abuse() -> None:
    counter = AbuseCounter(limit=3, window=10)
    assert not any(counter.record(5.0 * i) for i in range(100))


def test_abuse_ends_after_a_pause() -> None:
    counter = AbuseCounter(limit=2, window=1)
    assert not counter.record(0.0)
    assert counter.record(0.5)
    assert not counter.record(2.0)
    assert counter.record(2.9)


def test_abuse_counter_memory_is_bounded() -> None:
    counter = AbuseCounter(limit=5, window=1e9)
    for i in range(10_000):
        counter.record(float(i))
    assert len(counter._times) == 5


@pytest.mark.parametrize(
    ("limit", "window"), [(0, 1), (1, 0), (1, -1), (1, math.nan), (1, math.inf)]
)
def test_abuse_counter_rejects_bad_parameters(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        AbuseCounter(limit, window)


def test_flood_is_rate_limited_then_closed() -> None:
    """The session's use: refuse past the rate, close with 4029 at the 5th refusal in a second."""
    bucket = TokenBucket(rate=10, burst=10)
    abuse = AbuseCounter(limit=5, window=1)
    answers = []
    for _ in range(20):
        if bucket.take(0.0):
            answers.append("ok")
        elif abuse.record(0.0):
            answers.append("4029")
            break
        else:
            answers.append("rate_limited")
    assert answers == ["ok"] * 10 + ["rate_limited"] * 4 + ["4029"]


# --- KeyedRate -----------------------------------------------------------------------------------


def test_keys_have_their_own_buckets() -> None:
    rate = KeyedRate(rate=1, burst=2)
    assert [rate.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert rate.allow("b", 0.0)
    assert not rate.allow("a", 0.5)
    assert rate.allow("a", 1.0)


def test_idle_full_buckets_are_evicted() -> None:
    rate = KeyedRate(rate=1, burst=2)
    assert rate.allow("a", 0.0)
    assert rate.allow("b", 0.5)
    assert "a" in rate  # 1.5 tokens: not full yet
    assert rate.allow("b", 0.999)
    assert "a" in rate
    assert rate.allow("c", 1.0)  # "a" is full again at 1.0
    assert "a" not in rate
    assert len(rate) == 2
    assert rate.allow("d", 100.0)
    assert len(rate) == 1
    assert "d" in rate


def test_every_bucket_is_evicted_once_idle_burst_over_rate() -> None:
    rate = KeyedRate(rate=1, burst=2)
    assert rate.allow("a", 0.0)
    assert rate.allow("a", 0.0)  # empty: full again at 2.0
    assert rate.allow("b", 0.5)  # full again at 1.5, but behind "a"
    assert rate.allow("c", 1.9)
    assert "a" in rate
    assert rate.allow("c", 2.5)  # "b" idle 2 s = burst / rate
    assert "a" not in rate
    assert "b" not in rate
    assert len(rate) == 1


def test_eviction_never_forgives_a_refused_key() -> None:
    rate = KeyedRate(rate=1, burst=1)
    assert rate.allow("a", 0.0)
    assert not rate.allow("a", 0.5)
    for i in range(50):
        assert rate.allow(f"other-{i}", 0.5 + i * 0.01)
    assert not rate.allow("a", 0.999)
    assert rate.allow("a", 1.0)


def test_max_keys_evicts_least_recently_used() -> None:
    rate = KeyedRate(rate=0.001, burst=1, max_keys=3)
    for key in "abc":
        assert rate.allow(key, 0.0)
    assert not rate.allow("a", 1.0)  # "a" is now the most recently used
    assert rate.allow("d", 2.0)
    assert len(rate) == 3
    assert "b" not in rate
    assert {"a", "c", "d"} == {key for key in "abcd" if key in rate}
    assert not rate.allow("a", 3.0)  # kept, so still refused
    assert rate.allow("b", 3.0)  # evicted: a new bucket


def test_refused_key_that_keeps_trying_stays_refused_at_max_keys() -> None:
    rate = KeyedRate(rate=0.1, burst=1, max_keys=3)  # one every 10 s
    assert rate.allow("attacker", 0.0)
    for i in range(1, 20):
        now = i * 0.5
        assert not rate.allow("attacker", now)
        assert rate.allow(f"x{i}", now)
        assert rate.allow(f"y{i}", now)
        assert len(rate) == 3
    assert rate.allow("attacker", 10.0)


def test_max_keys_forgives_a_key_that_waits_behind_enough_others() -> None:
    """The documented trade-off of the memory bound: its debt is forgotten."""
    rate = KeyedRate(rate=0.1, burst=1, max_keys=3)
    assert rate.allow("a", 0.0)
    assert not rate.allow("a", 0.0)
    for key in "xyz":
        assert rate.allow(key, 1.0)
    assert "a" not in rate
    assert rate.allow("a", 1.0)


def test_keyed_rate_rejects_bad_max_keys() -> None:
    with pytest.raises(ValueError):
        KeyedRate(rate=1, burst=1, max_keys=0)


# --- Counts --------------------------------------------------------------------------------------


def test_counts_acquire_up_to_limit() -> None:
    counts = Counts(limit=2)
    assert counts.acquire("alice")
    assert counts.acquire("alice")
    assert not counts.acquire("alice")
    assert counts.count("alice") == 2  # the refusal counted nothing
    assert counts.acquire("bob")
    assert counts.count("bob") == 1


def test_counts_release_makes_room() -> None:
    counts = Counts(limit=1)
    assert counts.acquire("alice")
    assert not counts.acquire("alice")
    counts.release("alice")
    assert counts.count("alice") == 0
    assert counts.acquire("alice")


def test_counts_remove_keys_at_zero() -> None:
    counts = Counts(limit=3)
    for _ in range(3):
        assert counts.acquire("alice")
    assert not counts.acquire("alice")
    assert counts.acquire("bob")
    assert len(counts) == 2
    for _ in range(3):
        counts.release("alice")
    assert len(counts) == 1
    counts.release("bob")
    assert len(counts) == 0


def test_counts_release_of_nothing_is_a_usage_error() -> None:
    counts = Counts(limit=1)
    with pytest.raises(UsageError):
        counts.release("alice")
    assert counts.acquire("alice")
    counts.release("alice")
    with pytest.raises(UsageError):
        counts.release("alice")
    assert len(counts) == 0


def test_counts_rejects_bad_limit() -> None:
    with pytest.raises(ValueError):
        Counts(limit=0)
