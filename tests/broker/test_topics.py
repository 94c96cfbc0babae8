"""Topic and pattern rules of the wire contract (PROTOCOL.md, "Topics")."""

from __future__ import annotations

import pytest

from hub.broker.topics import (
    MAX_TOPIC_LENGTH,
    is_pattern,
    matches,
    validate_pattern,
    validate_topic,
)
from hub.exceptions import InvalidTopic, RequestError

VALID_TOPICS = ["a", "chat", "chat.room-1", "user:42.inbox", "a.b.c.d", "x@y_z", "A" * 255]
INVALID_TOPICS = [
    "",
    "A" * 256,
    ".",
    "a.",
    ".a",
    "a..b",
    "a b",
    "chat.*",
    "chat.>",
    "é",
    "a/b",
    "a.#",
]


class TestTopics:
    @pytest.mark.parametrize("topic", VALID_TOPICS)
    def test_valid(self, topic: str) -> None:
        assert validate_topic(topic) == topic

    @pytest.mark.parametrize("topic", INVALID_TOPICS)
    def test_invalid(self, topic: str) -> None:
        with pytest.raises(InvalidTopic) as info:
            validate_topic(topic)
        assert info.value.code == "invalid_topic"
        assert isinstance(info.value, RequestError)

    @pytest.mark.parametrize("value", [None, 42, b"chat", ["chat"]])
    def test_not_a_string(self, value: object) -> None:
        with pytest.raises(InvalidTopic, match="must be a string"):
            validate_topic(value)

    def test_wildcard_message_says_why(self) -> None:
        with pytest.raises(InvalidTopic, match="only allowed in subscriptions"):
            validate_topic("chat.*")

    def test_length_limit_is_inclusive(self) -> None:
        assert validate_topic("a" * MAX_TOPIC_LENGTH)
        with pytest.raises(InvalidTopic, match="1 to 255"):
            validate_topic("a" * (MAX_TOPIC_LENGTH + 1))


class TestPatterns:
    @pytest.mark.parametrize(
        "pattern", [*VALID_TOPICS, "*", ">", "chat.*", "*.x.*", "chat.>", "*.>"]
    )
    def test_valid(self, pattern: str) -> None:
        assert validate_pattern(pattern) == pattern

    @pytest.mark.parametrize(
        "pattern", ["", "a" * 256, "a..b", ">.a", "chat.>.x", "ch*t", "chat.**", "chat.>>", "a b"]
    )
    def test_invalid(self, pattern: str) -> None:
        with pytest.raises(InvalidTopic):
            validate_pattern(pattern)

    @pytest.mark.parametrize(
        ("pattern", "wild"), [("chat", False), ("chat.*", True), (">", True), ("a.b", False)]
    )
    def test_is_pattern(self, pattern: str, wild: bool) -> None:
        assert is_pattern(pattern) is wild


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("chat", "chat", True),
        ("chat", "chat.x", False),
        ("chat.*", "chat.x", True),
        ("chat.*", "chat", False),
        ("chat.*", "chat.x.y", False),
        ("*", "chat", True),
        ("*", "chat.x", False),
        ("chat.>", "chat.x", True),
        ("chat.>", "chat.x.y.z", True),
        ("chat.>", "chat", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("*.>", "a", False),
        ("*.>", "a.b", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
    ],
)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected
