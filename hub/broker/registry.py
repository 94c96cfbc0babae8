"""Which local subscribers hold which patterns: a token trie that matches a topic without
scanning every subscription.

Matching walks one trie level per topic token, following at most three edges per level (the
token itself, ``*`` and ``>``), so the cost of a publish grows with the topic's length and the
number of matching patterns, not with the number of subscriptions.

The registry also reports the transitions the router acts on: :meth:`Registry.add` says when a
pattern gets its first subscriber (subscribe the backend) and :meth:`Registry.remove` when it
loses its last one (unsubscribe the backend). It knows nothing of connections: a subscriber is
any hashable value.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from hub.broker.topics import SINGLE, TAIL

__all__ = ["Registry"]

S = TypeVar("S", bound=Hashable)


class _Node(Generic[S]):
    __slots__ = ("children", "pattern", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node[S]] = {}
        #: The pattern that ends at this node, and who holds it (empty when none does).
        self.pattern: str | None = None
        self.subscribers: set[S] = set()


class Registry(Generic[S]):
    """Subscribers by pattern, with trie matching. Patterns must be validated beforehand."""

    def __init__(self) -> None:
        self._root: _Node[S] = _Node()
        self._patterns: dict[str, _Node[S]] = {}

    def __len__(self) -> int:
        """How many distinct patterns have at least one subscriber."""
        return len(self._patterns)

    def __contains__(self, pattern: object) -> bool:
        return pattern in self._patterns

    def patterns(self) -> list[str]:
        return list(self._patterns)

    def subscribers(self, pattern: str) -> frozenset[S]:
        node = self._patterns.get(pattern)
        return frozenset(node.subscribers) if node is not None else frozenset()

    def add(self, pattern: str, subscriber: S) -> bool:
        """Add a subscription; True if it is the pattern's first subscriber."""
        node = self._patterns.get(pattern)
        if node is None:
            node = self._root
            for token in pattern.split("."):
                node = node.children.setdefault(token, _Node())
            node.pattern = pattern
            self._patterns[pattern] = node
        first = not node.subscribers
        node.subscribers.add(subscriber)
        return first

    def remove(self, pattern: str, subscriber: S) -> bool:
        """Remove a subscription (a no-op if absent); True if the pattern has no subscriber left."""
        node = self._patterns.get(pattern)
        if node is None or subscriber not in node.subscribers:
            return False
        node.subscribers.discard(subscriber)
        if node.subscribers:
            return False
        del self._patterns[pattern]
        node.pattern = None
        self._prune(pattern.split("."))
        return True

    def _prune(self, tokens: list[str]) -> None:
        """Drop the nodes of a removed pattern that no other pattern goes through."""
        path = [self._root]
        for token in tokens:
            path.append(path[-1].children[token])
        for depth in range(len(tokens), 0, -1):
            node = path[depth]
            if node.children or node.subscribers:
                return
            del path[depth - 1].children[tokens[depth - 1]]

    def match(self, topic: str) -> Iterator[tuple[str, frozenset[S]]]:
        """Yield ``(pattern, subscribers)`` for every pattern that matches the concrete topic."""
        tokens = topic.split(".")
        last = len(tokens)
        stack: list[tuple[_Node[S], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            children = node.children
            tail = children.get(TAIL)
            # ">" matches one or more remaining tokens.
            if tail is not None and depth < last and tail.pattern is not None:
                yield tail.pattern, frozenset(tail.subscribers)
            if depth == last:
                if node.pattern is not None:
                    yield node.pattern, frozenset(node.subscribers)
                continue
            exact = children.get(tokens[depth])
            if exact is not None:
                stack.append((exact, depth + 1))
            single = children.get(SINGLE)
            if single is not None:
                stack.append((single, depth + 1))
