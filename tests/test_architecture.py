"""Keeps the shape of the code true: a pure core, I/O at the edges, a thin shell, no cycles.

Walks the imports of every module in bulktag/ (statically, with ast) and checks the directions
the README's layout promises."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bulktag"

# Modules that run without an event loop or the log: callable from anywhere, tested with plain
# values. Some read or write a stream they are handed (source, summary): loop-free, not pure.
LOOP_FREE = {"model", "source", "policy", "summary", "config", "journal.format", "journal.index",
             "auth.catalog", "errors", "environment", "inflight", "text",
             # the pacer, but its async gate: the controller reads no clock (now is passed in)
             "pacing.policy", "pacing.evidence", "pacing.verdict", "pacing.controller"}  # fmt: skip
LOOP_LIBRARIES = {"aiohttp", "anyio", "structlog", "asyncio"}
# Of those, the ones with no I/O at all: values and arithmetic only.
PURE = LOOP_FREE - {"source", "summary", "environment"}
OS_LIBRARIES = {"os", "io", "pathlib", "socket", "fcntl", "shutil", "tempfile", "subprocess", "sys"}
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


def _type_checking_nodes(tree: ast.AST) -> list[ast.AST]:
    """The nodes under ``if TYPE_CHECKING:`` blocks only."""
    blocks = [node for node in ast.walk(tree) if _is_type_checking_block(node)]
    return [node for block in blocks for node in ast.walk(block)]


def imports_of(path: Path, type_checking: bool = False) -> set[str]:
    """The modules ``path`` imports when it runs, function-level imports included (or, with
    ``type_checking``, those it imports only for the type checker). ``from bulktag import x``
    counts as importing ``bulktag.x``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in _type_checking_nodes(tree) if type_checking else _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _bulktag_modules(imported: set[str]) -> set[str]:
    """The modules of bulktag among ``imported`` (a package stands for its ``__init__``)."""
    found = set()
    for name in imported:
        if name.startswith("bulktag."):
            relative = name.removeprefix("bulktag.")
            if relative in MODULES:
                found.add(relative)
            elif f"{relative}.__init__" in MODULES:
                found.add(f"{relative}.__init__")
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (or one importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            group.append(node)
            if len(group) > 1 or node in graph[node]:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _graph(type_checking: bool) -> dict[str, set[str]]:
    """Who imports whom among bulktag's modules. A package's own submodules importing one
    another through it (journal.file -> journal.format, run while journal/__init__ imports
    journal.file) are not edges to the package's ``__init__``: only what is written counts."""
    graph = {name: _bulktag_modules(imports_of(path)) for name, path in MODULES.items()}
    if type_checking:
        for name, path in MODULES.items():
            graph[name] |= _bulktag_modules(imports_of(path, type_checking=True))
    return graph


def test_no_import_cycle_among_runtime_imports_function_level_ones_included() -> None:
    assert [] == _cycles(_graph(type_checking=False))


def test_no_import_cycle_even_counting_type_checking_imports() -> None:
    assert [] == _cycles(_graph(type_checking=True))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert [["a", "b"]] == _cycles({"a": {"b"}, "b": {"a", "c"}, "c": set()})


@pytest.mark.parametrize("name", sorted(LOOP_FREE & MODULES.keys()))
def test_loop_free_modules_import_no_event_loop_or_log_library(name: str) -> None:
    roots = {imported.split(".")[0] for imported in imports_of(MODULES[name])}
    assert set() == roots & LOOP_LIBRARIES


@pytest.mark.parametrize("name", sorted(PURE & MODULES.keys()))
def test_pure_modules_import_no_file_or_os_library(name: str) -> None:
    roots = {imported.split(".")[0] for imported in imports_of(MODULES[name])}
    assert set() == roots & OS_LIBRARIES


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
    pacing = ("pacing.__init__", "pacing.policy", "pacing.evidence", "pacing.verdict",
              "pacing.controller", "pacing.gate")  # fmt: skip
    for name in ("engine", "scheduler", "policy", "source", "transport", *journal, *pacing):
        imported = imports_of(MODULES[name])
        assert not {"bulktag.cli", "bulktag.runner"} & imported, name
