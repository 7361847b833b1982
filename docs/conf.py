"""Sphinx configuration for minise's course site (built offline: no CDN, maths served from _static)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import minise

project = "minise"
author = "the minise authors"
release = minise.__version__

extensions = [
    "myst_parser",  # the existing Markdown pages (results, instructors, benchmarks) as they are
    "sphinx.ext.autodoc",  # the API reference from the docstrings
    "sphinx.ext.napoleon",  # numpy/google-style sections in docstrings
    "sphinx.ext.viewcode",  # a link from each object to its source
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static: maths typeset with no network
]

myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "results/**"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "pydata_sphinx_theme"
html_title = "minise"
html_theme_options = {"navigation_with_keys": False}

# The twelve tutorials (tutorials/NN_*.py) as a gallery: sphinx-gallery runs each script at build time
# and makes it a page (lesson, code, printed output, figures) under docs/tutorials/ (generated, git-ignored),
# with the script and a notebook to download. gallery_hooks.py says which steps run with --quick and
# collects the figures the scripts save. Its functions are named as strings so that Sphinx can pickle
# this configuration (a function object here would make -W fail on an "unpickleable" warning).
sys.path.insert(0, os.path.abspath("."))
extensions.append("sphinx_gallery.gen_gallery")
sphinx_gallery_conf = {
    "examples_dirs": "../tutorials",
    "gallery_dirs": "tutorials",
    "filename_pattern": r"/\d\d_",  # run every numbered step, not only files named plot_*
    "ignore_pattern": r"_common\.py",
    "within_subsection_order": "FileNameSortKey",  # step 1 first (the default orders by length)
    "reset_argv": "gallery_hooks.reset_argv",
    "image_scrapers": ("gallery_hooks.new_figures",),
    "first_notebook_cell": "# This notebook imports tutorials/_common.py: run it from minise's tutorials/ folder",
    "download_all_examples": False,
    # the execution-times page loads its table scripts from CDNs: not on an offline site
    "write_computation_times": False,
    # MINISE_DOCS_RERUN=1 runs every step again even when its script is unchanged (tests/docs does)
    "run_stale_examples": os.environ.get("MINISE_DOCS_RERUN", "") == "1",
}
