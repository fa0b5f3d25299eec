"""Keeps the shape of the code true: a pure core, I/O at the edges, a thin shell.

Walks the imports of every module in bulktag/ (statically, with ast) and checks the directions
the README's layout promises."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bulktag"

# Modules with no I/O and no event loop: values and arithmetic only.
PURE = {"model", "source", "policy", "summary", "config", "journal.format", "journal.index",
        "auth.catalog"}  # fmt: skip
IO_LIBRARIES = {"aiohttp", "anyio", "structlog", "asyncio"}
# The only modules that may speak HTTP.
HTTP_EDGE = {"transport", "auth.keystone"}
# The only modules that may read the process's argv, environment or exit.
SHELL = {"cli", "__main__"}


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(relative.parts)


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    found: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        pending.extend(c for c in ast.iter_child_nodes(node) if not _is_type_checking_block(c))
    return found


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("name", sorted(PURE & MODULES.keys()))
def test_pure_modules_import_no_io_library(name: str) -> None:
    roots = {imported.split(".")[0] for imported in imports_of(MODULES[name])}
    assert set() == roots & IO_LIBRARIES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_http_edge_and_the_fake_servers_import_the_aiohttp_client(name: str) -> None:
    if name in HTTP_EDGE or name.startswith("fake.") or name == "transport":
        return
    assert "aiohttp" not in {i.split(".")[0] for i in imports_of(MODULES[name])}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_shell_reads_argv_or_exits(name: str) -> None:
    if name in SHELL:
        return
    source = MODULES[name].read_text(encoding="utf-8")
    assert "sys.argv" not in source
    assert "sys.exit(" not in source


def test_the_engine_does_not_import_the_shell() -> None:
    journal = ("journal.__init__", "journal.format", "journal.index", "journal.file")
    for name in ("engine", "scheduler", "pacing", "policy", "source", "transport", *journal):
        imported = imports_of(MODULES[name])
        assert not {"bulktag.cli", "bulktag.runner"} & imported, name
