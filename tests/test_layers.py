"""The package's layers hold: what each folder may import, and no import circles.

Imports are read from the source (imports under ``TYPE_CHECKING`` included: a circle that
closes there is still a circle for the reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "acdg_asgi"
IO_LIBRARIES = {"anyio", "asyncio", "uvicorn", "websockets", "starlette", "redis", "socket"}

PURE = ("protocols", "call", "audio", "config", "policies", "errors", "events")
ABOVE_CORE = ("runtime", "transports", "asgi", "cluster", "observability", "app", "serving",
              "cli", "testing", "session")
RULES: dict[str, tuple[str, ...]] = {
    # layer: what it must not import (acdg_asgi.<name>)
    "protocols": ("call", *ABOVE_CORE, "audio", "config", "events"),
    "call": ABOVE_CORE,
    "audio": ("call", *ABOVE_CORE),
    "config": ("call", "policies", *ABOVE_CORE),
    "policies": ("call", *ABOVE_CORE),
    "errors": ("call", *ABOVE_CORE, "protocols"),
    "events": ("call", *ABOVE_CORE),
    "transports": ("call", "runtime", "asgi", "cluster", "app", "session", "cli", "testing"),
    "observability": ("runtime", "asgi", "cluster", "app", "cli", "testing"),
    "cluster": ("runtime", "asgi", "app", "cli", "testing"),
    "runtime": ("asgi", "app", "cli", "testing"),
    "session": ("runtime", "asgi", "cluster", "app", "cli", "testing"),
    "delivery": ("runtime", "asgi", "cluster", "app", "cli", "testing"),
}


def module_name(path: Path) -> str:
    parts = ["acdg_asgi", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module ``name`` imports: a package's name stands for its ``__init__``, and
    ``from pkg import mod`` for ``pkg.mod``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_keeps_to_its_layer(name: str) -> None:
    own = layer(name)
    found = imports(name)
    if own in PURE:
        io = sorted(m for m in found if m.split(".")[0] in IO_LIBRARIES)
        assert not io, f"{name} is pure but imports {io}"
    banned = RULES.get(own, ())
    wrong = sorted(m for m in found if m.startswith("acdg_asgi.") and layer(m) in banned)
    assert not wrong, f"{name} ({own}) may not import {wrong}"


def test_no_import_circles_between_files() -> None:
    graph = {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_top_level_is_what_users_import() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(top) <= 12, top
