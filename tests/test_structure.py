"""The house: no import circle (function-local imports included), no module above 400 lines outside the games,
no class above 250 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import msgrpo

PACKAGE = Path(msgrpo.__file__).parent
GAMES = PACKAGE / "components" / "games"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (annotations only: never imported at run time)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of the package it imports``, anywhere in the file (function-local imports too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in modules:  # `from msgrpo.lm import decoding` -> msgrpo.lm.decoding
                    target = target.rpartition(".")[0]
                if target and target != name and target != "msgrpo":
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert graph["msgrpo.policy"] >= {"msgrpo.lm.loading", "msgrpo.lm.decoding"}  # the walk sees imports
    assert "msgrpo.components.games.snake" in graph["msgrpo.components.games"]  # package faces too
    assert cycles(graph) == []


def test_no_module_above_400_lines_outside_the_games_and_no_class_above_250():
    long_modules, long_classes = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if GAMES not in path.parents and len(text.splitlines()) > 400:
            long_modules.append((name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250:
                long_classes.append((name, node.name, node.end_lineno - node.lineno + 1))
    assert long_modules == [] and long_classes == []


def test_old_module_paths_are_the_new_modules_with_a_warning():
    import importlib
    import subprocess
    import sys

    for old, new in (("msgrpo.selection", "msgrpo.callbacks.selection"), ("msgrpo.loading", "msgrpo.lm.loading")):
        sys.modules.pop(old, None)
        with pytest.warns(FutureWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new) and module.__spec__.name == new  # its own spec kept
    from msgrpo.callbacks.selection import BestPolicy

    assert importlib.import_module("msgrpo.selection").BestPolicy is BestPolicy  # the same class: isinstance holds
    done = subprocess.run([sys.executable, "-m", "msgrpo.plot", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "python -m msgrpo.tools.plot" in done.stdout  # an old `python -m` path
