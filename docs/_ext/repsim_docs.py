"""Pages generated from the package and the repository while the docs build, so they cannot drift.

Directives:

``.. repsim-paths::``
    The table of computational paths, from :data:`dask_repsim.registry.PATHS`.
``.. repsim-measures::``
    The table of measures by path, from :data:`dask_repsim.registry.MEASURES`.
``.. repsim-command::``
    Runs shell commands (one per line; ``\\`` continues a line) in a scratch folder shared by
    the whole build, and shows each command with its output. ``dask-repsim`` and ``python`` run
    with the Python that builds the docs, on the checkout's package; ``examples/`` in the scratch
    folder is the repository's. Options: ``:returncode:`` (expected exit status, default 0),
    ``:hide:`` (run only), ``:image:`` (a file the commands wrote, shown below them).
    A command that fails is a build warning (an error with ``-W``).
``.. repsim-benchmarks::``
    Every report in ``benchmarks/results/`` (the ``.txt`` files the benchmark scripts write:
    command, date, machine, versions, tables), its tables as tables, the rest as written; and
    a summary of the core benchmark from its ``.json`` files.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SCRATCH = Path(tempfile.mkdtemp(prefix="repsim-docs-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def escape(text: Any) -> str:
    """``text`` as literal RST inline text (also where a list marker could start a cell)."""
    text = re.sub(r"([*`|_\[\]])", r"\\\1", str(text).replace("\\", "\\\\"))
    if re.match(r"(\(?\w+[.)]|[-+#])(\s|$)", text):
        text = "\\" + text
    return text


def list_table(header: list[str], rows: list[list[str]], widths: str = "auto") -> list[str]:
    """The lines of an RST ``list-table`` (cells already RST)."""
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0] or ' '}")
        lines += [f"     - {cell or ' '}" for cell in row[1:]]
    return lines + [""]


class _Generated(SphinxDirective):
    """A directive whose output is RST text, parsed in place (titles allowed)."""

    def lines(self) -> list[str]:
        raise NotImplementedError

    #: modules whose change must rebuild the page (the tables read them)
    depends_on: tuple[str, ...] = ()

    def run(self) -> list[nodes.Node]:
        import importlib

        for module in self.depends_on:
            self.env.note_dependency(importlib.import_module(module).__file__)
        container = nodes.section()  # a holder: its children replace the directive
        content = StringList(self.lines(), source=f"<{self.name}>")
        nested_parse_with_titles(self.state, content, container)
        return container.children


class PathsTable(_Generated):
    """The table of computational paths."""

    depends_on = ("dask_repsim.registry",)

    def lines(self) -> list[str]:
        from dask_repsim.registry import PATHS

        def yes(flag: bool) -> str:
            return "yes" if flag else ""

        rows = [
            [f"``{p.name}``", escape(p.description), f"``{p.cost}``", yes(p.exact), yes(p.auto),
             yes(p.interval), yes(p.permutations), yes(p.nan_omit)]
            for p in PATHS.values()
        ]
        header = ["``method=``", "what", "cost of one pair", "exact", "chosen by ``auto``",
                  "``interval=``", "``permutations=``", "``nan_policy='omit'``"]
        return list_table(header, rows)


def call_of(measure: Any) -> str:
    """The pairwise call that gives ``measure``: its keyword options, or the attribute of the
    result they name (``cca(x, y).r2``)."""
    import inspect

    import dask_repsim

    if measure.function is None:
        return "``compare`` only"
    parameters = inspect.signature(getattr(dask_repsim, measure.function)).parameters
    given = {k: v for k, v in measure.options.items() if k in parameters}
    attributes = "".join(f".{v}" for k, v in measure.options.items() if k not in parameters)
    if not measure.options:
        return f":func:`~dask_repsim.{measure.function}`"
    arguments = ", ".join(["x, y", *(f"{k}={v!r}" for k, v in given.items())])
    return f"``{measure.function}({arguments}){attributes}``"


class MeasuresTable(_Generated):
    """The table of measures by the paths that compute them."""

    depends_on = ("dask_repsim.registry", "dask_repsim.pairwise.cka", "dask_repsim.pairwise.cca",
                  "dask_repsim.pairwise.shape", "dask_repsim.pairwise.samples")

    def lines(self) -> list[str]:
        from dask_repsim.registry import DEFAULT_METRICS, MEASURES, PATHS

        rows = []
        for m in MEASURES.values():
            rows.append([f"``{m.name}``" + (" (default)" if m.name in DEFAULT_METRICS else ""),
                         escape(m.description), call_of(m),
                         *["yes" if p in m.paths else "" for p in PATHS]])
        header = ["metric", "what", "pairwise function", *[f"``{p}``" for p in PATHS]]
        return list_table(header, rows)


class InferenceTable(_Generated):
    """The table of measures by the paths that give each its intervals, permutation tests and
    Gamma approximation (:func:`dask_repsim.registry.supports`)."""

    depends_on = ("dask_repsim.registry",)

    def lines(self) -> list[str]:
        from dask_repsim.registry import MEASURES, supports

        def where(m: Any, need: str) -> str:
            if need == "permutations" and not m.paired:
                return "(not paired)"
            return ", ".join(f"``{p}``" for p in m.paths if supports(m.name, p, need))

        rows = [[f"``{m.name}``", where(m, "interval"), where(m, "permutations"),
                 where(m, "gamma")] for m in MEASURES.values()]
        header = ["metric", "``interval='jackknife'``", "``permutations=``",
                  "``null='gamma'``"]
        return list_table(header, rows)


def wrap(command: str, width: int = 92) -> str:
    """A long command on several lines, broken before options, as a shell reads it."""
    lines = [""]
    for word in re.split(r" (?=-)", command):
        if lines[-1] and len(lines[-1]) + len(word) + 1 > width:
            lines[-1] += " \\"
            lines.append("    ")
        lines[-1] += ("" if not lines[-1].strip() else " ") + word
    return "\n".join(lines)


class Command(SphinxDirective):
    """Run shell commands at build time and show them with their output."""

    has_content = True
    option_spec = {"returncode": int, "hide": directives.flag, "image": directives.unchanged}

    def commands(self) -> list[str]:
        joined, current = [], ""
        for line in self.content:
            current += line.strip()
            if current.endswith("\\"):
                current = current[:-1].rstrip() + " "
                continue
            if current:
                joined.append(current)
            current = ""
        return joined

    def execute(self, command: str) -> tuple[int, str]:
        examples = SCRATCH / "examples"
        if not examples.exists():
            examples.symlink_to(ROOT / "examples")
        python = f'"{sys.executable}"'
        shell = re.sub(r"(^|\|\s*)dask-repsim\b", rf"\1{python} -m dask_repsim.cli", command)
        shell = re.sub(r"(^|\|\s*)python\b", rf"\1{python}", shell)
        env = {**os.environ, "COLUMNS": "100", "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(shell, shell=True, cwd=SCRATCH, env=env, capture_output=True,
                              text=True, timeout=600)
        return done.returncode, (done.stdout + done.stderr).rstrip()

    def run(self) -> list[nodes.Node]:
        shown = []
        for command in self.commands():
            code, output = self.execute(command)
            expected = self.options.get("returncode", 0)
            if code != expected:
                logger.warning("command %r exited with %d, not %d:\n%s", command, code,
                               expected, output, location=self.get_location())
            wrapped = wrap(command)
            shown.append(f"$ {wrapped}" + (f"\n{output}" if output else ""))
        if "hide" in self.options:
            return []
        block = nodes.literal_block("\n".join(shown), "\n".join(shown), language="console")
        result: list[nodes.Node] = [block]
        if "image" in self.options:
            name = self.options["image"]
            target = Path(self.env.srcdir) / "_generated" / "commands" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not (SCRATCH / name).exists():
                logger.warning("command did not write %s", name, location=self.get_location())
                return result
            shutil.copyfile(SCRATCH / name, target)
            result += self.parse_text_to_nodes(f".. image:: /_generated/commands/{name}\n"
                                               f"   :alt: {name}\n")
        return result


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row; ``|`` inside ``[...]`` belongs to the cell."""
    protected = re.sub(r"\[[^\]]*\]", lambda m: m.group(0).replace("|", "\0"), line.strip())
    return [c.strip().replace("\0", "|") for c in protected.strip("|").split("|")]


def report_lines(text: str) -> list[str]:
    """A benchmark report: its markdown tables as tables, ``##`` lines as rubrics, the rest
    as written (literal blocks)."""
    out: list[str] = []
    literal: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if any(line.strip() for line in literal):
            while not literal[-1].strip():
                literal.pop()
            out.extend([".. code-block:: text", ""]
                       + [f"    {line}" if line.strip() else "" for line in literal] + [""])
        literal.clear()
        if table:
            header, rows = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-:")]
            out.extend(list_table([escape(c) for c in header],
                                  [[escape(c) for c in r[:len(header)]] for r in rows]))
            table.clear()

    for line in text.splitlines()[1:]:  # the first line is the title
        if line.startswith("|"):
            if literal:
                flush()
            table.append(_cells(line))
            continue
        if table:
            flush()
        if line.startswith("## "):
            flush()
            out.extend([f".. rubric:: {escape(line[3:])}", ""])
            continue
        if literal or line.strip():
            literal.append(line)
    flush()
    return out


#: the reports in reading order; any others follow by name
REPORT_ORDER = ["core_1000000", "core_4000000", "core_1000000_uncertainty",
                "grid_200000", "scaling", "scaling_workers",
                "wide_20000x16384_rbf50000", "wide_4000x4096_rbf10000", "conv_n2048",
                "conv_n10000", "conv_n20000", "zoo_n2048_8", "zoo_n10000_4", "zoo_grow",
                "zoo_cluster_n2048_8", "rsa_knn"]


def _order(path: Path) -> tuple[int, str]:
    stem = path.stem
    return (REPORT_ORDER.index(stem) if stem in REPORT_ORDER else len(REPORT_ORDER), stem)


def _command_of(report: Path) -> str:
    for line in report.read_text().splitlines():
        if line.startswith("command: "):
            return line.removeprefix("command: ")
    first = report.read_text().splitlines()[0]
    return first.lstrip("# ")


def core_summary() -> list[str]:
    """The core benchmark's steps, one row per run, from its ``.json`` files, with the floor
    (the larger of the read pass and the float64 arithmetic at the measured GEMM rate) where
    the run measured it. Runs from before the script ran every baseline in its best
    configuration are marked: plain dask (b) with BLAS at its default inside each dask thread,
    numpy (d) with BLAS held to fewer threads than the cores (``--blas-threads``)."""
    steps = {"a": "(a) read", "b": "(b) plain dask ``Z.T @ Z``, 1 BLAS thread per dask thread",
             "c": "(c) ``compare``", "d": "(d) numpy", "e": "(e) jackknife",
             "f": "(f) 100 permutations"}
    rows = []
    for path in sorted(RESULTS.glob("core_*.json"), key=_order):
        record = json.loads(path.read_text())
        results = record.get("results")
        if not isinstance(results, dict):
            logger.warning("%s has no 'results' table to summarise", path, location=path)
            continue
        report = path.with_suffix(".txt")
        command = _command_of(report) if report.exists() else ""

        def cell(key: str, results: dict = results) -> str:
            step = results.get(key)
            if not step or "seconds" not in step:
                return ""
            return f"{step['seconds']:.1f} s / {step['peak_bytes'] / 1e9:.2f} GB"

        cells = [cell(k) for k in steps]
        if cells[1] and "blas" not in record and record.get("blas_threads") != 1:
            cells[1] += " (BLAS oversubscribed: not its best)"
        if cells[3] and "blas" not in record and record.get("blas_threads"):
            cells[3] += f" (BLAS {record['blas_threads']} thread: not its best)"
        floor = record.get("floor_seconds")
        rows.append([f"``{command}``" if command else path.stem, *cells,
                     f"{floor:.1f} s" if floor else "not measured"])
    header = ["run (``benchmarks/results/``)", *steps.values(), "floor"]
    return list_table(header, rows)


def _gb(step: dict) -> str:
    return f"{step['seconds']:.1f} s / {step['peak_bytes'] / 1e9:.2f} GB"


def conv_summary() -> list[str]:
    """The conv benchmark's runs, one row per ``conv_n*.json``, with figures from its report."""
    rows = []
    for path in sorted(RESULTS.glob("conv_n*.json"), key=lambda p: int(p.stem[6:])):
        results, report = json.loads(path.read_text()), path.with_suffix(".txt").read_text()
        ours, numpy_ = results.get("ours"), results.get("numpy")
        floor = re.search(r"^arithmetic floor = .* = ([\d.]+) s", report, re.M)
        # the floor: the larger of the read pass and the arithmetic floor
        larger = re.search(r"^floor = max\(.*\) = ([\d.]+) s", report, re.M) or floor
        budget = re.search(r"repsim\.memory-budget: ([^;]+);", report)
        if not ours or not floor:
            logger.warning("%s has no 'ours' step or floor to summarise", path, location=path)
            continue
        attrs = ours["attrs"]
        rows.append([
            f"{attrs['n_samples']:,} ({results['read']['bytes'] / 1e9:.2f} GB)",
            budget.group(1) if budget else "", attrs["method"], _gb(ours),
            _gb(numpy_) if numpy_ else "not run",
            f"{ours['seconds'] / numpy_['seconds']:.2f}" if numpy_ else "",
            f"{results['read']['seconds']:.1f} s", f"{float(floor.group(1)):.1f} s",
            f"{ours['seconds'] / float(larger.group(1)):.2f}",
        ])
    header = ["n (data)", "budget", "path", "``compare``", "numpy in memory", "x numpy",
              "read pass", "arithmetic floor", "x floor (the larger of the two)"]
    return list_table(header, rows)


def rsa_knn_summary() -> list[str]:
    """``rsa_knn.txt``'s steps by sample count: seconds / peak GB, or why a step did not run."""
    report = RESULTS / "rsa_knn.txt"
    names = {"rsa": "``rsa``, row-block tiles", "rsatoolbox": "rsatoolbox, data in memory",
             "knn": "``mutual_knn`` (and CKNNA), row-block tiles",
             "numpy_knn": "numpy, n x n similarities in memory"}
    cells: dict[str, dict[int, str]] = {}
    for line in report.read_text().splitlines():
        run = re.match(r"(\w+)\s+(\d+) x \d+ \(x2\)\s+(.*)$", line)
        if not run or run.group(1) not in names:
            continue
        rest = run.group(3)
        figures = re.match(r"([\d.]+)\s+([\d.]+)\s+([\d.]+)\s", rest)
        cells.setdefault(run.group(1), {})[int(run.group(2))] = (
            f"{figures.group(2)} s / {figures.group(3)} GB (value {figures.group(1)})"
            if figures else rest.split(" (")[0])
    sizes = sorted({n for by_n in cells.values() for n in by_n})
    rows = [[names[step], *[cells[step].get(n, "") for n in sizes]] for step in names
            if step in cells]
    return list_table(["step", *[f"{n:,} x 512 (x2)" for n in sizes]], rows)


class RsaKnnSummary(_Generated):
    """The RSA and mutual k-NN benchmark at a glance, from ``benchmarks/results/rsa_knn.txt``."""

    def lines(self) -> list[str]:
        self.env.note_dependency(str(RESULTS / "rsa_knn.txt"))
        return rsa_knn_summary()


class ConvSummary(_Generated):
    """The conv benchmark's runs at a glance, from ``benchmarks/results/conv_n*``."""

    def lines(self) -> list[str]:
        for path in RESULTS.glob("conv_n*"):
            self.env.note_dependency(str(path))
        return conv_summary()


class Benchmarks(_Generated):
    """Every benchmark report of ``benchmarks/results/``."""

    def lines(self) -> list[str]:
        machines = sorted({line.removeprefix("machine: ")
                           for report in RESULTS.glob("*.txt")
                           for line in report.read_text().splitlines()
                           if line.startswith("machine: ")})
        out = [
            "Machines of the reports:", "",
            *[f"- ``{machine}``" for machine in machines], "",
            "At a glance: the core benchmark",
            "-------------------------------",
            "",
            "Wall time and peak memory of each step, from the ``core_*.json`` files "
            "(one run per row; an empty cell: the step did not run).",
            "",
            *core_summary(),
        ]
        for report in sorted(RESULTS.glob("*.txt"), key=_order):
            self.env.note_dependency(str(report))
            title = report.read_text().splitlines()[0].lstrip("# ").strip()
            heading = f"{title} (``{report.name}``)"
            out += ["", heading, "-" * len(heading), "",
                    f"From ``benchmarks/results/{report.name}``, as the benchmark wrote it.", ""]
            out += report_lines(report.read_text())
        return out


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("repsim-paths", PathsTable)
    app.add_directive("repsim-measures", MeasuresTable)
    app.add_directive("repsim-inference", InferenceTable)
    app.add_directive("repsim-command", Command)
    app.add_directive("repsim-benchmarks", Benchmarks)
    app.add_directive("repsim-conv-summary", ConvSummary)
    app.add_directive("repsim-rsa-knn-summary", RsaKnnSummary)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
