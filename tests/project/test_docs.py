"""The documentation: it builds with warnings as errors, documents every public name, its gallery
shows what the examples draw, its generated pages follow the package, and its code runs.

The HTML build (``python -m sphinx -W --keep-going -b html docs <tmp>``, offline) runs once per
session, in a subprocess, with the gallery's examples re-run; it takes about a minute on two
cores, so the tests that read it are marked ``slow`` (which the default test run includes).

The Python blocks of the getting-started page and of the user guide are ``.. doctest::`` blocks;
:func:`test_guide_code_runs` runs each page's blocks in order, in one namespace, with doctest's
checks of the shown output. The command-line blocks of the guide are ``.. repsim-command::``
blocks, which the HTML build runs (a failing command fails the build).
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest

import dask_repsim
from dask_repsim.registry import MEASURES, PATHS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results"
GUIDE_PAGES = sorted([DOCS / "getting_started.rst", *(DOCS / "guide").glob("*.rst")])


@pytest.fixture(scope="session")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built from scratch with warnings as errors."""
    out = tmp_path_factory.mktemp("docs") / "html"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REPSIM_DOCS_RERUN_EXAMPLES": "1",
           "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out.parent / "doctrees"), str(DOCS), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, f"sphinx failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return out


class _Collector(HTMLParser):
    """Image sources, table rows (as lists of cell texts) and all text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def page(html: Path, name: str) -> _Collector:
    path = html / name
    assert path.exists(), f"{name} is not in the built site"
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def inventory_names(html: Path) -> set[str]:
    """Every object the site documents, from its ``objects.inv``."""
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda *parts: "/".join(parts))
    return {name for kind, items in inventory.items() if kind.startswith("py:") for name in items}


def public_names() -> list[str]:
    return [f"dask_repsim.{name}" for name in dask_repsim.__all__] + [
        f"dask_repsim.plot.{name}" for name in ("heatmap", "zoo_heatmap", "network_heatmap")]


@pytest.mark.slow  # the site is built once per session, about a minute on 2 cores
def test_api_reference_documents_every_public_name(html: Path) -> None:
    documented = inventory_names(html)
    missing = [name for name in public_names() if name not in documented]
    assert not missing, f"public names missing from the API reference (docs/api/): {missing}"
    # the docstrings' examples are on the pages
    text = " ".join("".join(page(html, "api/pairwise.html").text).split())
    assert "round(cka(x, 3 * x @ q), 6)" in text


@pytest.mark.slow  # the site is built once per session, about a minute on 2 cores
def test_gallery_pages_show_the_images_the_examples_write(html: Path) -> None:
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert scripts
    drawing = 0
    for script in scripts:
        parsed = page(html, f"gallery/{script.stem}.html")
        text = "".join(parsed.text)
        assert f"python examples/{script.name}" in text  # the command the page ran
        images = [src for src in parsed.images if f"sphx_glr_{script.stem}_" in src
                  and "thumb" not in src]
        if ".savefig(" not in script.read_text():
            continue
        drawing += 1
        assert images, f"gallery/{script.stem}.html shows no image of {script.name}"
        for src in images:
            png = (html / "gallery" / src).resolve()
            data = png.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n", src
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            assert width >= 300 and height >= 200, (src, width, height)
    assert drawing >= 4  # heatmap, convergent learning and the two paper examples draw


@pytest.mark.slow  # the site is built once per session, about a minute on 2 cores
def test_tables_of_paths_and_measures_follow_the_registry(html: Path) -> None:
    rows = page(html, "api/tables.html").rows
    header = next(r for r in rows if r and r[0] == "metric")
    paths = header[3:]
    assert paths == list(PATHS)
    by_metric = {r[0].removesuffix(" (default)"): r for r in rows if r and r[0] in
                 {m for m in MEASURES} | {f"{m} (default)" for m in MEASURES}}
    assert set(by_metric) == set(MEASURES)
    for name, measure in MEASURES.items():
        marks = by_metric[name][3:]
        assert [p for p, mark in zip(paths, marks, strict=True) if mark == "yes"] == \
            list(p for p in PATHS if p in measure.paths), name
    path_rows = {r[0]: r for r in rows if r and r[0] in PATHS}
    for name, info in PATHS.items():
        flags = [info.exact, info.auto, info.interval, info.permutations, info.nan_omit]
        assert path_rows[name][3:] == ["yes" if f else "" for f in flags], name
    # the guide shows the same tables
    guide = page(html, "guide/paths.html").rows
    assert {r[0] for r in guide if r and r[0] in PATHS} == set(PATHS)


@pytest.mark.slow  # the site is built once per session, about a minute on 2 cores
def test_command_line_page_shows_the_current_help(html: Path) -> None:
    from contextlib import redirect_stdout
    from io import StringIO

    from dask_repsim.cli import main

    cli = page(html, "guide/cli.html")
    text = "".join(cli.text)
    buffer = StringIO()
    with redirect_stdout(buffer):
        assert main(["compare", "--help"]) == 0
    options = set(re.findall(r"--[a-z][a-z-]+", buffer.getvalue()))
    assert options and all(option in text for option in options)
    assert "dask-repsim: error:" in text  # the page ran a failing command too
    assert any(src.endswith("heatmap_cli.png") for src in cli.images)  # and drew with --plot


@pytest.mark.slow  # the site is built once per session, about a minute on 2 cores
def test_benchmark_page_is_generated_from_the_results(html: Path) -> None:
    parsed = page(html, "benchmarks.html")
    text = " ".join("".join(parsed.text).split())
    cells = {cell for row in parsed.rows for cell in row}
    reports = sorted(RESULTS.glob("*.txt"))
    assert reports
    for report in reports:
        assert report.name in text
        lines = report.read_text().splitlines()
        command = next((x.removeprefix("command: ") for x in lines if x.startswith("command: ")),
                       None)
        if command:
            assert " ".join(command.split()) in text, report.name
        table = [x for x in lines if x.startswith("| (") or re.match(r"\| [\d,]+ \|", x)]
        for row in table[:3]:  # numbers of the report's tables are cells of the page's tables
            first_number = next(c.strip() for c in row.strip("|").split("|")[1:]
                                if re.fullmatch(r"[\d.,]+", c.strip()))
            assert first_number in cells, (report.name, row)


def doctest_blocks(path: Path) -> list[tuple[int, int, str]]:
    """The ``.. doctest::`` blocks of an RST page: first and last line, dedented content."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = re.match(r"(\s*)\.\. doctest::", lines[i])
        i += 1
        if not match:
            continue
        indent = len(match.group(1))
        start, body = i, []
        while i < len(lines) and (not lines[i].strip() or
                                  len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        body = [x for x in body if not re.match(r"\s*:\w[\w-]*:", x)]  # directive options
        width = min(len(x) - len(x.lstrip()) for x in body if x.strip())
        blocks.append((start + 1, i, "\n".join(x[width:] for x in body)))
    return blocks


@pytest.mark.parametrize("path", GUIDE_PAGES, ids=lambda p: p.name)
def test_guide_code_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = doctest_blocks(path)
    text = path.read_text(encoding="utf-8")
    # every Python block of the page is a doctest block: nothing shown goes unrun
    assert not re.search(r"^\s*\.\. (code-block|code|sourcecode):: (python|pycon|py)\b", text,
                         re.M), f"{path.name}: Python in a code-block; make it a doctest block"
    shown = [n for n, line in enumerate(text.splitlines(), 1) if line.lstrip().startswith(">>>")]
    inside = {n for first, last, _ in blocks for n in range(first, last + 1)}
    assert all(n in inside for n in shown), f"{path.name}: >>> lines outside doctest blocks"
    if not blocks:
        return  # a page of prose and command-line blocks (which the HTML build runs)
    monkeypatch.chdir(tmp_path)  # pages write their example files into the current folder
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs: dict = {"__name__": "__main__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", dask_repsim.RepsimWarning)
        for line, _, body in blocks:
            test = parser.get_doctest(body, globs, f"{path.name}:{line}", str(path), line)
            runner.run(test, clear_globs=False)
            globs = test.globs  # a DocTest runs in a copy: the next block continues from it
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} example(s) of {path.name} failed (see above)"
