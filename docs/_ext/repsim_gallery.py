"""The gallery: sphinx-gallery runs the scripts of ``examples/`` unchanged, in their quick form.

The scripts are written to be run from the command line (``argparse``, ``__doc__`` as the
description, ``__file__`` for the default output folder) and write their figures with
matplotlib's ``Figure`` into ``--out``. sphinx-gallery runs a file without ``__file__`` and with
an empty ``__doc__``, and sees only pyplot figures. So :func:`stage` copies each script into a
staging folder with a docstring sphinx-gallery can read (a title underlined) and hidden first
lines that restore ``__doc__`` and ``__file__``; :func:`quick_argv` gives each script its quick
arguments and an output folder; :func:`png_scraper` shows the PNG files the script wrote there.
The code shown on a gallery page is the script's own code.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from typing import Any

#: extra arguments of scripts whose defaults are too slow for a docs build; scripts that
#: have a ``--quick`` option get it
QUICK_ARGUMENTS = {
    "quickstart": ["--samples", "20000"],
    "inference": ["--n", "128", "--permutations", "499"],
}
#: the order of the gallery; scripts not named come after these, by name
ORDER = ["quickstart", "heatmap", "inference", "convergent_learning", "layer_identification",
         "width_and_labels", "model_zoo", "hf_models"]

#: where each script writes, relative to the staging folder (sphinx-gallery runs a script in
#: the folder that holds it)
OUTPUT = "output"
_shown: set[Path] = set()

HEADER = """\
Gallery
=======

The scripts of the repository's ``examples/`` folder, run while these pages were built, each
in its quick form (the arguments are given on its page): the text output and the figures below
are what the script printed and wrote in that run. The quick forms are small and fast; their
numbers illustrate, and only the full-size runs described in ``examples/README.md`` are meant to
reproduce the papers' findings. To run one yourself::

    pip install "dask-repsim[plot,neurons,torch,transformers]"
    python examples/heatmap.py --out examples/output

"""


def arguments(name: str, source: str) -> list[str]:
    """The command-line arguments the gallery runs script ``name`` with."""
    args = list(QUICK_ARGUMENTS.get(name, []))
    if '"--quick"' in source:
        args.append("--quick")
    if '"--out"' in source:
        args += ["--out", f"{OUTPUT}/{name}"]
    return args


def _split_docstring(source: str, path: Path) -> tuple[str, int, int]:
    """The docstring, and the lines where it and the ``__future__`` imports end."""
    tree = ast.parse(source)
    doc = ast.get_docstring(tree, clean=True)
    if doc is None:
        raise ValueError(f"{path} has no module docstring; the gallery takes its title from it")
    doc_end = tree.body[0].end_lineno or 0
    future_end = max((node.end_lineno or 0 for node in tree.body
                      if isinstance(node, ast.ImportFrom) and node.module == "__future__"),
                     default=doc_end)
    return doc, doc_end, future_end


def _docstring(name: str, doc: str, args: list[str]) -> str:
    """An RST docstring: the script's first paragraph as the title, then the rest."""
    first, _, rest = doc.partition("\n\n")
    title = " ".join(first.split()).rstrip(".")
    command = " ".join(["python", f"examples/{name}.py", *args])
    text = (f"{title}\n{'=' * len(title)}\n\n{rest.strip()}\n\n.. note::\n\n"
            f"    This page ran ``{command}`` while the documentation was built.\n")
    return '"""' + text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + '\n"""\n'


def stage(examples: Path, target: Path) -> list[Path]:
    """Copy every script of ``examples`` into ``target`` as sphinx-gallery can run it."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / "GALLERY_HEADER.rst").write_text(HEADER)
    staged = []
    for path in sorted(examples.glob("*.py")):
        source = path.read_text()
        doc, doc_end, future_end = _split_docstring(source, path)
        lines = source.splitlines(keepends=True)
        hidden = (
            "# sphinx_gallery_start_ignore\n"
            f"__doc__ = {doc!r}\n"
            f"__file__ = {f'examples/{path.name}'!r}\n"
            "# sphinx_gallery_end_ignore\n"
        )
        code = "".join(lines[doc_end:future_end]) + hidden + "".join(lines[future_end:])
        out = target / path.name
        out.write_text(_docstring(path.stem, doc, arguments(path.stem, source)) + code)
        staged.append(out)
    return staged


def quick_argv(gallery_conf: dict[str, Any], script_vars: dict[str, Any]) -> list[str]:
    """sphinx-gallery's ``reset_argv``: the quick arguments of the script being run."""
    path = Path(script_vars["src_file"])
    return arguments(path.stem, path.read_text())


class ExampleOrder:
    """sphinx-gallery's ``within_subsection_order``: the order of :data:`ORDER`, then by name."""

    def __init__(self, src_dir: str) -> None:
        self.src_dir = src_dir

    def __call__(self, filename: str) -> tuple[int, str]:
        stem = Path(filename).stem
        return (ORDER.index(stem) if stem in ORDER else len(ORDER), stem)

    def __repr__(self) -> str:  # sphinx-gallery compares configurations by repr
        return "ExampleOrder()"


def png_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """The PNG files the script wrote into its output folder since the last block, as images."""
    from sphinx_gallery.scrapers import figure_rst

    source = Path(block_vars["src_file"])
    folder = source.parent / OUTPUT / source.stem
    new = sorted(p for p in folder.rglob("*.png") if p not in _shown) if folder.exists() else []
    images = []
    for png, image_path in zip(new, block_vars["image_path_iterator"], strict=False):
        shutil.copyfile(png, image_path)
        _shown.add(png)
        images.append(image_path)
    return figure_rst(images, gallery_conf["src_dir"]) if images else ""


def written_pngs(source: str) -> bool:
    """Whether a script writes a figure (``savefig``), so its page must show one."""
    return re.search(r"\.savefig\(", source) is not None
