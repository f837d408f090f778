"""The package's layout rules: the folders are the architecture, imports point one way, nothing
private crosses modules, and every module and function is small enough to read in one sitting.

The folders and what each may import (besides the leaf modules ``exceptions``, ``results`` and
``version``, which import nothing of the package and which anything may import):

- ``io``: inputs, labels, layouts, validation; nothing above it.
- ``engine``: the streaming pass and its statistics; ``io``, never a measure, path, pairwise
  function or front module.
- ``measures``: pure functions of small float64 statistics; no dask, zarr or xarray, even
  through another module of the package.
- ``paths``: one place per registry path; no path imports another.
- ``capture``: ``io`` only.
- ``pairwise``: the one-pair public functions; through the dispatcher (``runners``), never a
  path directly.

Every rule is a function of a package folder, so the last test plants a violation of each in a
package of its own and sees it caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dask_repsim"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
LEAVES = {"exceptions", "results", "version"}
FOLDERS = {"io", "engine", "measures", "paths", "capture", "pairwise", "imports"}
#: folder -> the folders (and top-level modules) its modules may import, besides LEAVES
ALLOWED = {
    "io": {"io"},
    "engine": {"engine", "io"},
    "measures": {"measures", "engine", "io"},
    "paths": {"paths", "engine", "io", "measures"},
    "capture": {"capture", "io"},
    "imports": {"imports", "capture", "io"},
}
NO_DASK = {"dask", "distributed", "zarr", "xarray"}


def modules_of(root: Path) -> dict[str, Path]:
    """Dotted name (relative to the package) -> file, for every module in every folder;
    a folder's ``__init__.py`` is named by the folder (the package's own by ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imports_of(name: str, path: Path, modules: dict[str, Path], package: str = "dask_repsim"
               ) -> tuple[list[tuple[str, list[str]]], set[str]]:
    """(package module imported, names taken from it) for every import of the package in the
    module ``name``, relative imports of any depth resolved; and the outside top-level
    packages it imports."""
    is_package = path.name == "__init__.py" and name != "__init__"
    base = ([] if name == "__init__" else name.split("."))
    base = base if is_package else base[:-1]
    found: list[tuple[str, list[str]]] = []
    outside: set[str] = set()

    def add(module: list[str], names: list[str]) -> None:
        dotted = ".".join(module) or "__init__"
        for item in names:  # `from .engine import moments`: the submodule is what is imported
            sub = ".".join([*module, item])
            if sub in modules:
                found.append((sub, []))
                names = [n for n in names if n != item]
        if names or not found or found[-1][0] != dotted:
            if dotted in modules and names:
                found.append((dotted, names))

    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                up = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                if node.level - 1 > len(base):
                    raise ValueError(f"{name}: relative import beyond the package")
                add(up + (node.module.split(".") if node.module else []), names)
            elif node.module and node.module.split(".")[0] == package:
                add(node.module.split(".")[1:], names)
            elif node.module:
                outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top, *rest = alias.name.split(".")
                if top == package:
                    add(rest, [])
                    if rest:
                        found.append((".".join(rest), []))
                else:
                    outside.add(top)
    return found, outside


def graph_of(root: Path) -> tuple[dict[str, set[str]], dict[str, list], dict[str, set[str]]]:
    """Module -> modules it imports; module -> (target, names) imports; module -> outside."""
    modules = modules_of(root)
    edges, names, outside = {}, {}, {}
    for name, path in modules.items():
        found, out = imports_of(name, path, modules, root.name)
        names[name] = found
        edges[name] = {t for t, _ in found if t in modules} - {name}
        outside[name] = out
    return edges, names, outside


def _group(module: str) -> str:
    """The folder of a module, or the module itself at the top level."""
    return module.split(".")[0]


def cycles(root: Path) -> list[str]:
    edges, _, _ = graph_of(root)
    state: dict[str, int] = {}
    found: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if target == "__init__" or _group(target) == module:  # a package's own __init__
                continue
            if state.get(target) == 1:
                found.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state and module != "__init__":
            visit(module, [module])
    return found


def folder_violations(root: Path) -> list[str]:
    """Imports that break the folder rules of the module docstring."""
    edges, _, outside = graph_of(root)
    bad = []
    for module, targets in edges.items():
        group = _group(module)
        if group in LEAVES:
            bad += [f"{module} is a leaf but imports {t}" for t in sorted(targets)]
        for target in sorted(targets):
            tgroup = _group(target)
            if tgroup in LEAVES or "." not in module:  # the top-level modules are free
                continue
            if group in ALLOWED and tgroup not in ALLOWED[group]:
                bad.append(f"{module} ({group}) imports {target}")
            if group == "paths" and tgroup == "paths":
                mine, theirs = module.split(".")[1], target.split(".")[1]
                if mine != theirs:
                    bad.append(f"path {mine} imports path {theirs} ({module} -> {target})")
            if group == "pairwise" and tgroup == "paths":
                bad.append(f"{module} (pairwise) imports the path {target}: go through runners")
        if group == "measures":
            bad += [f"{module} (measures) imports {t}" for t in sorted(outside[module] & NO_DASK)]
    # measures import no dask through another module either
    for module in (m for m in edges if _group(m) == "measures"):
        seen, todo = set(), [module]
        while todo:
            current = todo.pop()
            for target in edges.get(current, ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        heavy = sorted(t for t in seen if outside.get(t, set()) & NO_DASK)
        if heavy:
            bad.append(f"{module} (measures) reaches dask/zarr/xarray through {heavy}")
    return bad


def empty_folder_inits(root: Path) -> list[str]:
    """Folders' ``__init__.py`` stay empty: the package's ``__init__`` builds the public API."""
    return [str(p.relative_to(root)) for p in root.rglob("__init__.py")
            if p.parent != root and p.read_text().strip()]


def private_imports(root: Path) -> list[str]:
    _, names, _ = graph_of(root)
    bad = []
    for module, found in names.items():
        for target, taken in found:
            if target == module:
                continue
            bad += [f"{module} imports {target}.{n}" for n in taken
                    if n.startswith("_") and not n.startswith("__")]
            if any(part.startswith("_") and part != "__init__" for part in target.split(".")):
                bad.append(f"{module} imports the private module {target}")
    return bad


def _docstring_lines(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if ast.get_docstring(node, clean=False) is not None:
                first = node.body[0]
                skip.update(range(first.lineno, first.end_lineno + 1))
    return skip


def _code_lines(first: int, last: int, lines: list[str], skip: set[int]) -> int:
    """Lines ``first..last`` that are code: not docstrings, comments or blank lines."""
    return sum(
        1 for i in range(first, last + 1)
        if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def size_violations(root: Path) -> list[str]:
    bad = []
    for name, path in modules_of(root).items():
        tree, lines = _tree(path), path.read_text().splitlines()
        skip = _docstring_lines(tree)
        total = _code_lines(1, len(lines), lines, skip)
        if total > MAX_MODULE_LINES:
            bad.append(f"{name}: {total} lines of code (> {MAX_MODULE_LINES})")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                count = _code_lines(node.lineno, node.end_lineno, lines, skip)
                if count > MAX_FUNCTION_LINES:
                    bad.append(f"{name}.{node.name}: {count} lines of code "
                               f"(> {MAX_FUNCTION_LINES})")
    return bad


RULES = {
    "cycles": cycles, "folders": folder_violations, "private": private_imports,
    "sizes": size_violations, "inits": empty_folder_inits,
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_package_keeps_its_rules(rule):
    assert RULES[rule](PACKAGE) == []


def test_the_folders_are_the_architecture():
    """Every module lives in a folder of the design, or is one of the front and core modules."""
    top = {n for n in modules_of(PACKAGE) if "." not in n} - FOLDERS
    assert top <= {"__init__", "version", "exceptions", "results", "registry", "options",
                   "planning", "runners", "grid", "zoo", "accessor", "cli", "cli_output",
                   "plot"}, top
    assert {n.split(".")[0] for n in modules_of(PACKAGE) if "." in n} <= FOLDERS
    paths = {n.split(".")[1] for n in modules_of(PACKAGE) if n.startswith("paths.")}
    from dask_repsim.registry import PATHS

    assert paths == set(PATHS), "one place per registry path"


def _plant(root: Path, files: dict[str, str]) -> Path:
    package = root / "dask_repsim"
    for name, text in {"__init__.py": "", "exceptions.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in package.rglob("*.py")} - {package}:
        (folder / "__init__.py").touch()
    return package


@pytest.mark.parametrize(("rule", "files", "expected"), [
    ("cycles", {"io/a.py": "from .b import f\n", "io/b.py": "from .a import g\n"},
     "io.a -> io.b -> io.a"),
    ("folders", {"engine/e.py": "from ..measures import m\n", "measures/m.py": ""},
     "engine.e (engine) imports measures.m"),
    ("folders", {"measures/m.py": "import dask.array\n"}, "measures.m (measures) imports dask"),
    ("folders", {"measures/m.py": "from ..io.i import f\n", "io/i.py": "import zarr\n"},
     "measures.m (measures) reaches dask/zarr/xarray through ['io.i']"),
    ("folders", {"paths/qr.py": "from .gram.tiles import t\n", "paths/gram/tiles.py": ""},
     "path qr imports path gram (paths.qr -> paths.gram.tiles)"),
    ("folders", {"io/i.py": "from ..engine import moments\n", "engine/moments.py": ""},
     "io.i (io) imports engine.moments"),
    ("folders", {"pairwise/p.py": "from ..paths import qr\n", "paths/qr.py": ""},
     "pairwise.p (pairwise) imports the path paths.qr: go through runners"),
    ("folders", {"exceptions.py": "from .io import i\n", "io/i.py": ""},
     "exceptions is a leaf but imports io.i"),
    ("private", {"engine/a.py": "from .b import _hidden\n", "engine/b.py": ""},
     "engine.a imports engine.b._hidden"),
    ("sizes", {"engine/long.py": "def f():\n    '''Doc.'''\n" + "    x = 1\n" * 60},
     "engine.long.f: 61 lines of code (> 60)"),
    ("sizes", {"io/big.py": '"""Doc."""\n' + "x = 1\n" * 451},
     "io.big: 451 lines of code (> 450)"),
    ("inits", {"engine/__init__.py": "from .a import b\n", "engine/a.py": ""},
     "engine/__init__.py"),
])
def test_the_checks_can_fail(tmp_path, rule, files, expected):
    """Each rule finds a violation planted in a package of its own, and nothing in a clean
    one."""
    package = _plant(tmp_path, files)
    assert expected in RULES[rule](package)
    clean = _plant(tmp_path / "clean", {"engine/a.py": "from ..io import i\nfrom . import b\n",
                                        "engine/b.py": "", "io/i.py": ""})
    assert all(RULES[r](clean) == [] for r in RULES)


def test_relative_imports_of_any_depth_resolve(tmp_path):
    package = _plant(tmp_path, {
        "paths/gram/tiles.py": "from ...engine.moments import M\nfrom ... import exceptions\n"
                               "from ..qr import r\nfrom . import scratch\n",
        "paths/gram/scratch.py": "", "paths/qr.py": "", "engine/moments.py": "",
    })
    modules = modules_of(package)
    found, _ = imports_of("paths.gram.tiles", modules["paths.gram.tiles"], modules)
    assert found == [("engine.moments", ["M"]), ("exceptions", []), ("paths.qr", ["r"]),
                     ("paths.gram.scratch", [])]


def tree_modules(text: str) -> set[str]:
    """The module files a ``dask_repsim/`` folder tree (two spaces an indent) lists."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "dask_repsim/")
    base = len(lines[start]) - len(lines[start].lstrip())
    out: set[str] = set()
    stack: list[str] = []
    for line in lines[start + 1:]:
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent <= base:
            break
        depth = (indent - base) // 2 - 1
        entry = line.split()[0].rstrip(",")
        stack = stack[:depth]
        if entry.endswith("/"):
            stack.append(entry.rstrip("/"))
        elif entry.endswith(".py"):
            out.add("/".join([*stack, entry]))
    return out


@pytest.mark.parametrize("page", ["README.md", "docs/contributing.rst"])
def test_the_documented_tree_is_the_package(page):
    """README's "Architecture" and the contributing page show every module, one line each."""
    listed = tree_modules((PACKAGE.parent / page).read_text())
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if p.name != "__init__.py" or p.parent == PACKAGE}
    assert listed == actual, (f"missing: {sorted(actual - listed)}; "
                              f"not in the package: {sorted(listed - actual)}")
