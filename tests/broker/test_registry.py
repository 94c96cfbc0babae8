"""The subscription registry: first/last transitions, and trie matching equal to brute force."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.broker.registry import Registry
from hub.broker.topics import matches
from tests.hypothesis_profiles import budget


def matched(registry: Registry[str], topic: str) -> dict[str, frozenset[str]]:
    result = dict(registry.match(topic))
    assert len(result) == len(list(registry.match(topic)))  # each pattern yielded once
    return result


class TestFirstAndLast:
    def test_first_subscriber_and_last(self) -> None:
        registry: Registry[str] = Registry()
        assert registry.add("chat.*", "a") is True
        assert registry.add("chat.*", "b") is False
        assert registry.add("chat.*", "a") is False  # already there: not a new pattern
        assert registry.remove("chat.*", "a") is False
        assert "chat.*" in registry
        assert registry.remove("chat.*", "b") is True
        assert "chat.*" not in registry
        assert len(registry) == 0

    def test_remove_absent_is_a_no_op(self) -> None:
        registry: Registry[str] = Registry()
        assert registry.remove("chat", "a") is False
        registry.add("chat", "a")
        assert registry.remove("chat", "b") is False
        assert registry.subscribers("chat") == {"a"}

    def test_removing_a_pattern_keeps_longer_and_shorter_ones(self) -> None:
        registry: Registry[str] = Registry()
        for pattern in ("a", "a.b", "a.b.c", "a.>"):
            registry.add(pattern, "s")
        assert registry.remove("a.b", "s") is True
        assert set(matched(registry, "a.b.c")) == {"a.b.c", "a.>"}
        assert set(matched(registry, "a")) == {"a"}
        assert set(matched(registry, "a.b")) == {"a.>"}
        assert sorted(registry.patterns()) == ["a", "a.>", "a.b.c"]

    def test_pruned_trie_forgets_removed_paths(self) -> None:
        registry: Registry[str] = Registry()
        registry.add("x.y.z", "s")
        registry.remove("x.y.z", "s")
        assert registry._root.children == {}


class TestMatch:
    def test_each_matching_pattern_with_its_subscribers(self) -> None:
        registry: Registry[str] = Registry()
        registry.add("chat.room1", "exact")
        registry.add("chat.*", "single")
        registry.add("chat.>", "tail")
        registry.add(">", "everything")
        registry.add("news.*", "other")
        assert matched(registry, "chat.room1") == {
            "chat.room1": frozenset({"exact"}),
            "chat.*": frozenset({"single"}),
            "chat.>": frozenset({"tail"}),
            ">": frozenset({"everything"}),
        }
        assert matched(registry, "chat.room1.thread") == {
            "chat.>": frozenset({"tail"}),
            ">": frozenset({"everything"}),
        }
        assert matched(registry, "news") == {">": frozenset({"everything"})}

    def test_no_subscription_no_match(self) -> None:
        assert matched(Registry(), "chat") == {}


TOKENS = st.sampled_from(["a", "b", "c"])
TOPICS = st.lists(TOKENS, min_size=1, max_size=4).map(".".join)
PATTERN_TOKENS = st.sampled_from(["a", "b", "c", "*"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(PATTERN_TOKENS, min_size=1, max_size=4))
    if draw(st.booleans()):
        tokens[-1] = ">"
    return ".".join(tokens)


@given(
    subscriptions=st.lists(st.tuples(patterns(), st.sampled_from("xyz")), max_size=30),
    removals=st.lists(st.integers(min_value=0, max_value=29), max_size=10),
    topics=st.lists(TOPICS, min_size=1, max_size=10),
)
@budget(2)
def test_trie_matches_exactly_what_brute_force_matches(
    subscriptions: list[tuple[str, str]], removals: list[int], topics: list[str]
) -> None:
    registry: Registry[str] = Registry()
    model: dict[str, set[str]] = {}
    for pattern, subscriber in subscriptions:
        assert registry.add(pattern, subscriber) is (not model.get(pattern))
        model.setdefault(pattern, set()).add(subscriber)
    for index in removals:
        if index < len(subscriptions):
            pattern, subscriber = subscriptions[index]
            was_last = model.get(pattern) == {subscriber}
            assert registry.remove(pattern, subscriber) is was_last
            model.get(pattern, set()).discard(subscriber)
            if not model.get(pattern):
                model.pop(pattern, None)
    assert sorted(registry.patterns()) == sorted(model)
    for topic in topics:
        expected = {p: frozenset(s) for p, s in model.items() if matches(p, topic)}
        assert matched(registry, topic) == expected
