"""Grants and the requests they cover (hub/server/permissions.py, issue 8)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Any

import pytest

import hub.server.permissions
from hub.broker.topics import matches, validate_pattern
from hub.server.permissions import Permissions, covers

# (grant, requested, covered). The first block is the brief's examples; every row is checked
# against brute force below as well, so a wrong row cannot hide a wrong covers().
COVERS = [
    ("chat.*", "chat.a", True),
    ("chat.*", "chat.*", True),
    ("chat.*", "chat.>", False),
    ("chat.*", ">", False),
    ("chat.>", "chat.a.b", True),
    ("chat.>", "chat.*", True),
    ("chat.>", "chat.>", True),
    ("chat.>", "chat", False),
    ("a.*.c", "a.*.c", True),
    ("a.*.c", "a.>", False),
    ("*.b", "a.b", True),
    ("a.b", "a.*", False),
    # Concrete grants cover only themselves.
    ("chat", "chat", True),
    ("chat", "chats", False),
    ("chat", "chat.a", False),
    ("chat.a", "chat", False),
    ("chat", "*", False),
    ("chat", ">", False),
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b.d", False),
    ("a.b.c", "a.*.c", False),
    # A grant with "*" never allows ">", wherever the ">" is.
    ("*", ">", False),
    ("*", "a.>", False),
    ("*.*", "a.>", False),
    ("*.*", "*.>", False),
    ("*.*.*", "*.*.>", False),
    ("a.*", "a.>", False),
    ("*.b", "*.>", False),
    ("*.>", ">", False),  # ">" reaches "x", which "*.>" (two tokens or more) does not
    ("*.*.>", "*.>", False),
    # "*" holds one concrete token or one "*", and only at its own position.
    ("*", "a", True),
    ("*", "*", True),
    ("*", "a.b", False),
    ("*.*", "a", False),
    ("*.*", "a.b", True),
    ("*.*", "*.b", True),
    ("*.*", "*.*", True),
    ("*.*", "a.b.c", False),
    ("a.*", "b.c", False),
    ("a.*", "*.c", False),
    ("*.b", "*.b", True),
    ("*.b", "*.*", False),
    # ">" grants cover any non-empty rest, wildcards included.
    (">", "a", True),
    (">", "*", True),
    (">", ">", True),
    (">", "a.b.c.d.e", True),
    (">", "*.>", True),
    (">", "a.*.>", True),
    ("a.>", "a.b", True),
    ("a.>", "a.*", True),
    ("a.>", "a.>", True),
    ("a.>", "a.b.>", True),
    ("a.>", "a.*.>", True),
    ("a.>", "a.*.c.*", True),
    ("a.>", "a", False),
    ("a.>", "*", False),
    ("a.>", "*.b", False),
    ("a.>", ">", False),
    ("a.>", "b.>", False),
    ("a.b.>", "a.>", False),
    ("a.b.>", "a.*.c", False),
    ("a.b.>", "a.b", False),
    # Mixed: "*" then ">", and ">" after concrete tokens.
    ("*.>", "a.b", True),
    ("*.>", "*.*", True),
    ("*.>", "*.>", True),
    ("*.>", "a.>", True),
    ("*.>", "a", False),
    ("*.>", "*", False),
    ("*.*.>", "a.b.c", True),
    ("*.*.>", "a.*.>", True),
    ("*.*.>", "a.b", False),
    ("*.*.>", "a.>", False),
    ("a.*.>", "a.b.c.d", True),
    ("a.*.>", "a.*.*", True),
    ("a.*.>", "b.*.*", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.*.d", False),
    ("a.*.c", "a.*.c.d", False),
    ("user:42.>", "user:42.inbox", True),
    ("user:42.>", "user:43.inbox", False),
    ("user:42.>", "*.inbox", False),
]


@pytest.mark.parametrize(("grant", "requested", "expected"), COVERS)
def test_covers(grant: str, requested: str, expected: bool) -> None:
    assert validate_pattern(grant) and validate_pattern(requested)
    assert covers(grant, requested) is expected


@pytest.mark.parametrize("pattern", sorted({row[0] for row in COVERS} | {row[1] for row in COVERS}))
def test_every_pattern_covers_itself(pattern: str) -> None:
    assert covers(pattern, pattern)
    assert covers(">", pattern)


@pytest.mark.parametrize("pattern", ["*", "a.*", "*.*", "*.b.*", "a.*.c"])
def test_a_grant_without_tail_never_allows_a_tail(pattern: str) -> None:
    tokens = pattern.split(".")
    # Replace each position, and append past the end: no way of slipping a ">" in is covered.
    for index in range(len(tokens) + 1):
        requested = ".".join([*tokens[:index], ">"])
        assert not covers(pattern, requested), requested
    assert not covers(pattern, ">")


# --- brute force --------------------------------------------------------------------------------


def _patterns(alphabet: tuple[str, ...], max_tokens: int) -> list[str]:
    """Every pattern of 1 to ``max_tokens`` tokens over ``alphabet``, "*" and a last ">"."""
    result = []
    for length in range(1, max_tokens + 1):
        for tokens in itertools.product((*alphabet, "*"), repeat=length):
            result.append(".".join(tokens))
        for tokens in itertools.product((*alphabet, "*"), repeat=length - 1):
            result.append(".".join([*tokens, ">"]))
    return result


def _topics(alphabet: tuple[str, ...], max_tokens: int) -> list[str]:
    return [
        ".".join(tokens)
        for length in range(1, max_tokens + 1)
        for tokens in itertools.product(alphabet, repeat=length)
    ]


# Exact, not a sample: with patterns of at most N tokens, topics of up to N + 1 tokens decide
# every pair. A topic longer than that, matched by a request ending in ">" (at index < N), can be
# cut to N + 1 tokens: the request still matches it, and the grant matches both or neither (a
# grant ending in ">" at index < N only looks at the kept prefix; one without ">" has at most N
# tokens and matches neither). Two or more names per token make a concrete token differ from "*".
@pytest.mark.parametrize(("alphabet", "max_tokens"), [(("a", "b"), 4), (("a", "b", "c"), 3)])
def test_covers_agrees_with_brute_force(alphabet: tuple[str, ...], max_tokens: int) -> None:
    patterns = _patterns(alphabet, max_tokens)
    topics = _topics(alphabet, max_tokens + 1)
    assert len(set(patterns)) == len(patterns)
    reached = {p: frozenset(t for t in topics if matches(p, t)) for p in patterns}
    # Every request reaches some topic, so a subset test is never vacuously true.
    assert all(reached.values())
    disagreements = [
        (grant, requested)
        for grant in patterns
        for requested in patterns
        if covers(grant, requested) != (reached[requested] <= reached[grant])
    ]
    assert disagreements == []
    # The universe reaches past every grant's fixed part, so ">" requests are really tried.
    assert max(len(t.split(".")) for t in topics) > max_tokens


@pytest.mark.parametrize(("grant", "requested", "expected"), COVERS)
def test_table_agrees_with_brute_force(grant: str, requested: str, expected: bool) -> None:
    # The same argument as above, per row: the row's own names plus one that it does not use
    # (so that "*" differs from every concrete token), topics one token longer than the row.
    rows = (grant, requested)
    names = {t for p in rows for t in p.split(".")} - {"*", ">"}
    longest = max(len(p.split(".")) for p in rows)
    topics = _topics((*sorted(names), "other"), longest + 1)
    reached = [t for t in topics if matches(requested, t)]
    assert reached
    assert all(matches(grant, t) for t in reached) is expected


# --- Permissions --------------------------------------------------------------------------------


def test_all_and_none() -> None:
    everything = Permissions.all()
    nothing = Permissions.none()
    for request in ["a", "a.b", "*", ">", "chat.>", "a.*.c"]:
        assert everything.may_subscribe(request)
        assert not nothing.may_subscribe(request)
    for topic in ["a", "chat.room-1", "user:42.inbox"]:
        assert everything.may_publish(topic) and everything.may_read(topic)
        assert not nothing.may_publish(topic) and not nothing.may_read(topic)
    assert everything == Permissions(subscribe=(">",), publish=(">",))
    assert nothing == Permissions(subscribe=(), publish=())


GRANTED = Permissions(subscribe=("chat.*", "news.>", "user:42.inbox"), publish=("chat.*.msgs",))


@pytest.mark.parametrize(
    ("pattern", "allowed"),
    [
        ("chat.room", True),
        ("chat.*", True),
        ("chat.>", False),
        ("chat.room.x", False),
        (">", False),
        ("*", False),
        ("*.room", False),
        ("news.a", True),
        ("news.a.b", True),
        ("news.*", True),
        ("news.>", True),
        ("news", False),
        ("user:42.inbox", True),
        ("user:42.*", False),
        ("user:42.>", False),
        ("user:43.inbox", False),
    ],
)
def test_may_subscribe(pattern: str, allowed: bool) -> None:
    assert GRANTED.may_subscribe(pattern) is allowed
    assert GRANTED.may_subscribe(pattern) is any(covers(g, pattern) for g in GRANTED.subscribe)


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("chat.room.msgs", True),
        ("chat.room", False),
        ("chat.room.other", False),
        ("news.a", False),
        ("chat.a.msgs.b", False),
    ],
)
def test_may_publish(topic: str, allowed: bool) -> None:
    assert GRANTED.may_publish(topic) is allowed


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("chat.room", True),
        ("chat.room.msgs", False),  # publishing there is allowed, reading it is not
        ("news.a.b.c", True),
        ("user:42.inbox", True),
        ("user:43.inbox", False),
        ("other", False),
    ],
)
def test_may_read_follows_subscribe(topic: str, allowed: bool) -> None:
    assert GRANTED.may_read(topic) is allowed
    assert GRANTED.may_read(topic) is GRANTED.may_subscribe(topic)


def test_permissions_are_frozen_and_hashable() -> None:
    with pytest.raises(AttributeError):
        GRANTED.subscribe = (">",)  # type: ignore[misc]
    assert hash(GRANTED) == hash(Permissions(GRANTED.subscribe, GRANTED.publish))


@pytest.mark.parametrize(
    ("subscribe", "publish", "message"),
    [
        (["a"], (), "subscribe must be a tuple of patterns, not list"),
        ((), "a", "publish must be a tuple of patterns, not str"),
        (("a.>.b",), (), r"subscribe\[0\]: .*'>' may only be the last token"),
        ((), ("a", ""), r"publish\[1\]: pattern must be 1 to 255"),
        ((), (42,), r"publish\[0\]: pattern must be a string, not int"),
    ],
)
def test_constructor_validates(subscribe: Any, publish: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Permissions(subscribe=subscribe, publish=publish)


# --- from_claims ----------------------------------------------------------------------------------

DEFAULT = Permissions(subscribe=("public.>",), publish=())


@pytest.mark.parametrize(
    ("claims", "subscribe", "publish"),
    [
        ({}, ("public.>",), ()),
        ({"sub": "u1", "exp": 1}, ("public.>",), ()),
        ({"subscribe": ["chat.*"]}, ("chat.*",), ()),
        ({"publish": ["chat.a"]}, ("public.>",), ("chat.a",)),
        ({"subscribe": [], "publish": []}, (), ()),
        ({"subscribe": ["a", "b.>"], "publish": [">"]}, ("a", "b.>"), (">",)),
        ({"subscribe": ("a",)}, ("a",), ()),
    ],
)
def test_from_claims(
    claims: dict[str, Any], subscribe: tuple[str, ...], publish: tuple[str, ...]
) -> None:
    permissions = Permissions.from_claims(claims, DEFAULT)
    assert permissions == Permissions(subscribe=subscribe, publish=publish)


def test_from_claims_missing_takes_the_default_each() -> None:
    default = Permissions(subscribe=("s.>",), publish=("p.>",))
    assert Permissions.from_claims({"subscribe": ["x"]}, default).publish == ("p.>",)
    assert Permissions.from_claims({"publish": ["x"]}, default).subscribe == ("s.>",)
    assert Permissions.from_claims({}, Permissions.all()) == Permissions.all()


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"subscribe": "chat.*"}, "claim 'subscribe' must be a list of patterns, not str"),
        ({"subscribe": None}, "claim 'subscribe' must be a list of patterns, not NoneType"),
        ({"publish": {"chat": True}}, "claim 'publish' must be a list of patterns, not dict"),
        ({"publish": 1}, "claim 'publish' must be a list of patterns, not int"),
        ({"subscribe": ["a", 1]}, r"claim 'subscribe'\[1\] must be a pattern string, not int"),
        ({"publish": [None]}, r"claim 'publish'\[0\] must be a pattern string, not NoneType"),
        ({"publish": [["a"]]}, r"claim 'publish'\[0\] must be a pattern string, not list"),
    ],
)
def test_from_claims_wrong_type(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Permissions.from_claims(claims, DEFAULT)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"subscribe": [">.a"]}, r"claim 'subscribe'\[0\]: .*'>' may only be the last token"),
        ({"subscribe": ["ok", "a..b"]}, r"claim 'subscribe'\[1\]: .*invalid token ''"),
        ({"publish": [""]}, r"claim 'publish'\[0\]: pattern must be 1 to 255"),
        ({"publish": ["a" * 256]}, r"claim 'publish'\[0\]: pattern must be 1 to 255"),
        ({"publish": ["a b"]}, r"claim 'publish'\[0\]: .*invalid token 'a b'"),
        ({"subscribe": ["chat.#"]}, r"claim 'subscribe'\[0\]: .*invalid token '#'"),
    ],
)
def test_from_claims_invalid_pattern(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Permissions.from_claims(claims, DEFAULT)


def test_is_pure() -> None:
    # The session decides what to do with a denial; this module only answers, with no I/O.
    source = Path(hub.server.permissions.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "collections", "dataclasses", "typing", "hub"}
