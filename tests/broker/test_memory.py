"""What is specific to the in-memory backend (the shared contract is test_backend_contract.py)."""

from __future__ import annotations

import pytest

from hub.broker.memory import MemoryBackend
from hub.exceptions import UsageError


async def test_a_restarted_process_starts_a_new_epoch() -> None:
    first, second = MemoryBackend(lambda p: None), MemoryBackend(lambda p: None)
    await first.start()
    await second.start()
    one, other = await first.publish("a", b""), await second.publish("a", b"")
    assert (one.offset, other.offset) == (1, 1)
    assert one.epoch != other.epoch


async def test_publish_needs_a_started_backend() -> None:
    backend = MemoryBackend(lambda p: None)
    with pytest.raises(UsageError, match="not started"):
        await backend.publish("a", b"")
    await backend.start()
    await backend.close()
    with pytest.raises(UsageError):
        await backend.publish("a", b"")
