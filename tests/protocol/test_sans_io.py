"""The sans-I/O core must never import asyncio (or any other I/O framework)."""

from __future__ import annotations

import ast
import pathlib

import hub.protocol

PROTOCOL_DIR = pathlib.Path(hub.protocol.__file__).parent
# The I/O layer and the package entry points that re-export it are the only allowed importers.
IO_LAYER = {PROTOCOL_DIR / "asyncio", PROTOCOL_DIR / "__init__.py", PROTOCOL_DIR / "__main__.py"}
FORBIDDEN = {"asyncio", "socket", "selectors", "ssl", "trio", "anyio", "hub.protocol.asyncio"}


def core_modules() -> list[pathlib.Path]:
    return [
        path
        for path in sorted(PROTOCOL_DIR.rglob("*.py"))
        if not any(path == io or io in path.parents for io in IO_LAYER)
    ]


def imported_names(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


def is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_core_modules_exist() -> None:
    names = {path.name for path in core_modules()}
    assert {"connection.py", "reader.py", "frames.py", "handshake.py", "http11.py"} <= names


def test_core_does_no_io() -> None:
    offenders = {
        str(path.relative_to(PROTOCOL_DIR)): sorted(
            name for name in imported_names(path) if is_forbidden(name)
        )
        for path in core_modules()
    }
    assert {path: names for path, names in offenders.items() if names} == {}
