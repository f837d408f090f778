"""The package's layout rules: imports point one way, nothing private crosses modules, and every
module and function is small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dask_repsim"
MODULES = sorted(PACKAGE.glob("*.py"))
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _package_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names imported) for every import of a package module in ``path``."""
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [a.name for a in node.names]
                if node.module is None:  # from . import a, b
                    out += [(name, []) for name in names]
                else:
                    out.append((node.module.split(".")[0], names))
            elif node.module and node.module.startswith("dask_repsim."):
                out.append((node.module.split(".")[1], [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dask_repsim."):
                    out.append((alias.name.split(".")[1], []))
    return out


def _code_lines(node: ast.AST, lines: list[str]) -> int:
    """Lines of a function that are code: not its docstring, comments or blank lines."""
    skip: set[int] = set()
    body = node.body
    if ast.get_docstring(node, clean=False) is not None:
        skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(
        1 for i in range(node.lineno, node.end_lineno + 1)
        if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def test_no_import_cycles():
    names = {m.stem for m in MODULES}
    graph = {m.stem: {i for i, _ in _package_imports(m) if i in names} - {m.stem}
             for m in MODULES if m.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_no_private_names_imported_from_another_module(module):
    private = [f"{target}.{name}" for target, names in _package_imports(module)
               for name in names if name.startswith("_") and not name.startswith("__")]
    private += [target for target, _ in _package_imports(module) if target.startswith("_")]
    assert not private, f"{module.name} imports private names: {private}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_modules_and_functions_are_small(module):
    lines = module.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{module.name} has {len(lines)} lines"
    long = [
        (node.name, _code_lines(node, lines)) for node in ast.walk(_tree(module))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _code_lines(node, lines) > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module.name}: functions over {MAX_FUNCTION_LINES} lines of code: {long}"


def test_the_checks_can_fail(tmp_path):
    """The checks above find what they look for."""
    source = "def f():\n    '''Doc.'''\n" + "    x = 1\n" * 61
    module = tmp_path / "long.py"
    module.write_text(source + "from .inputs import _private\n")
    lines = source.splitlines()
    function = _tree(module).body[0]
    assert _code_lines(function, lines) == 62  # the def line and 61 statements
    assert _package_imports(module) == [("inputs", ["_private"])]
