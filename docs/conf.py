"""Sphinx configuration of optimkit's documentation site.

    pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html

The optimizer pages, the primitives and states pages and the migration tables are generated from
`optimkit.registry` and the package at build time by `_ext/optimkit_docs.py`.
"""

from __future__ import annotations

import pathlib
import sys
import warnings

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # the optimkit of this checkout, installed or not

import optimkit  # noqa: E402

project = "optimkit"
author = "the optimkit authors"
copyright = "the optimkit authors"
release = optimkit.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings are Google style (Args:, Returns:)
    # Between napoleon and the type hints: it reads the plain-text docstrings that napoleon has
    # sectioned, before sphinx_autodoc_typehints adds its own markup (see _ext/optimkit_docs.py).
    "optimkit_docs",
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_fragments"]  # fragments are {include}d by the guides

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# `name` in a docstring links to the object when Sphinx knows it, and is code otherwise.
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # sphinx_autodoc_typehints puts the types next to Args
autodoc_preserve_defaults = True
typehints_defaults = None
always_document_param_types = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"optimkit {release}"

copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# sphinx-autodoc-typehints 3.6 still calls an API Sphinx 9 deprecates; the call works, the
# Python warning it prints on every docstring is noise.
warnings.filterwarnings("ignore", message=".*set_application.*is deprecated")
