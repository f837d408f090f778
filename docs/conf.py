"""Sphinx configuration: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.

Builds offline: nothing is fetched (no intersphinx inventories, no remote images). The API
reference documents the checkout's package (this repository's root comes first on the path),
the gallery runs the scripts of ``examples/`` in their quick forms, and the tables of paths and
measures, the command-line help and the benchmark pages are generated while building
(``_ext/repsim_docs.py``, ``_ext/repsim_gallery.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]
# subprocesses (the command-line pages, the gallery's cluster workers) import the same package
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
)
os.environ.setdefault("MPLBACKEND", "Agg")

import repsim_gallery  # noqa: E402

import dask_repsim  # noqa: E402

project = "dask-repsim"
author = "the dask-repsim developers"
copyright = "the dask-repsim developers"  # noqa: A001
version = release = dask_repsim.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "repsim_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
smartquotes = False  # "--option" stays two hyphens, quotes stay as typed

# offline: no inventories are fetched
intersphinx_mapping: dict = {}

# -- API reference -----------------------------------------------------------------------------
autodoc_typehints = "none"  # numpydoc sections say the types in words
autodoc_member_order = "bysource"
autosummary_generate = False  # the reference pages list every name by hand (a test checks)
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
add_module_names = False

# -- doctest (the guide's examples are also run by tests/project/test_docs.py) ---------------
doctest_test_doctest_blocks = ""  # only the explicit ``.. doctest::`` blocks of the guide

# -- gallery -------------------------------------------------------------------------------------
GALLERY_SOURCE = DOCS / "_generated" / "gallery_src"
repsim_gallery.stage(ROOT / "examples", GALLERY_SOURCE)

sphinx_gallery_conf = {
    "examples_dirs": str(GALLERY_SOURCE),
    "gallery_dirs": "gallery",
    "filename_pattern": r"\.py$",
    "within_subsection_order": "repsim_gallery.ExampleOrder",
    "reset_argv": "repsim_gallery.quick_argv",
    "image_scrapers": ("repsim_gallery.png_scraper",),
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "show_signature": False,
    "plot_gallery": "True",
    "min_reported_time": 1000,
    "abort_on_example_error": False,
    "copyfile_regex": "",
    # the tests rebuild every example, not only those whose source changed since the last build
    "run_stale_examples": bool(os.environ.get("REPSIM_DOCS_RERUN_EXAMPLES")),
}

# -- HTML --------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"dask-repsim {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list[str] = []
html_show_sourcelink = False

myst_heading_anchors = 3
