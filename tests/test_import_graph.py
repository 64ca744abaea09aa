"""Imports among bot/ and launcher/ run one way: no module reaches itself through its imports.

Every import counts, at module level, inside functions and under TYPE_CHECKING (a
type-only import is still a dependency a reader has to follow), and importing
``a.b.c`` also imports its packages ``a`` and ``a.b``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "launcher")


def module_files(root: Path) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _known(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _with_packages(name: str, mods: dict[str, Path]) -> set[str]:
    """``name`` and every package above it that is one of ours (Python imports those first)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in mods}


def imports_of(module: str, path: Path, mods: dict[str, Path]) -> dict[str, int]:
    """Our modules that ``module`` imports, each with the first line that does."""
    found: dict[str, int] = {}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def add(name: str | None, line: int) -> None:
        target = _known(name, mods) if name else None
        if target:
            for dep in _with_packages(target, mods):
                found.setdefault(dep, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                add(sub if sub in mods else source, node.lineno)
    for own in _with_packages(module, mods):  # a module's own packages are already importing it
        found.pop(own, None)
    return found


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    mods = module_files(root)
    return {m: imports_of(m, p, mods) for m, p in mods.items()}


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, {})):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return "\n".join(f"  {a} imports {b} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:]))


def test_bot_and_launcher_have_no_import_cycle():
    graph = import_graph()
    assert "bot.scheduler" in graph and "launcher.routes" in graph  # the walk found the code
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle:\n" + describe(graph, cycle)


@pytest.mark.parametrize("files, expected", [
    ({"bot/a.py": "from bot import b\n", "bot/b.py": "from typing import TYPE_CHECKING\n"
      "if TYPE_CHECKING:\n    from bot.a import X\n"}, ["bot.a", "bot.b", "bot.a"]),
    ({"bot/a.py": "def f():\n    from bot.b import g\n", "bot/b.py": "import bot.a\n"}, ["bot.a", "bot.b", "bot.a"]),
    ({"bot/p/__init__.py": "from bot.p.x import X\n", "bot/p/x.py": "X = 1\n", "bot/q.py": "from bot.p import x\n"},
     None),
    ({"bot/p/__init__.py": "from bot.q import Q\n", "bot/p/x.py": "X = 1\n", "bot/q.py": "from bot.p.x import X\n"},
     ["bot.p", "bot.q", "bot.p"]),
    ({"bot/p/__init__.py": "", "bot/p/x.py": "from . import y\n", "bot/p/y.py": "from .x import X\n"},
     ["bot.p.x", "bot.p.y", "bot.p.x"]),
])
def test_the_check_sees_type_only_lazy_package_and_relative_imports(tmp_path, files, expected):
    """The detector itself: each kind of import that makes a loop is seen (and a package
    importing its own submodule is not a loop)."""
    for name, text in {"bot/__init__.py": "", "launcher/__init__.py": "", **files}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert find_cycle(import_graph(tmp_path)) == expected
