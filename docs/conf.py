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
