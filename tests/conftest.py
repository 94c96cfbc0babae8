"""Suite-wide pytest hooks."""

from __future__ import annotations

import gc
from collections.abc import Generator

import pytest

# Fixtures of real redis-server processes (tests/redis_server.py says which).
from tests.redis_server import (  # noqa: F401
    redis_prefix,
    redis_server,
    redis_url,
    start_redis_server,
)

#: Whether the test's call phase failed, for fixtures that clean up harder after a failure.
CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the garbage collector out of pytest's failure reports; remember call failures.

    On CPython 3.11.7, when a failing test leaves garbage whose finalizer runs Python code (a
    ``Task exception was never retrieved`` task, an unclosed transport), a collection that starts
    inside pytest's ``ast.parse`` of a traceback source makes it raise ``SystemError: AST
    constructor recursion depth mismatch`` and pytest dies with INTERNALERROR, hiding every later
    result. Pausing the collector while the report is built keeps a failure a failure.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        report = yield
    finally:
        if enabled:
            gc.enable()
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report
