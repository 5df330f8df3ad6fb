"""Sphinx configuration of lazymat's documentation (``make docs``).

The build is strict: ``make docs`` runs ``sphinx-build -W --keep-going`` with
``nitpicky = True``, so a broken cross-reference, a docstring that does not parse or a
gallery example that raises fails it.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))

import lazymat_gallery  # noqa: E402

import lazymat  # noqa: E402

project = "lazymat"
author = "the lazymat developers"
copyright = "2026, the lazymat developers"
release = version = lazymat.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "lazymat_autodoc",  # napoleon for Google-style sections, see its docstring
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_gallery_src", "**/GALLERY_HEADER.rst", "sg_execution_times.rst"]
templates_path = ["_templates"]

# --- strictness -----------------------------------------------------------------------
nitpicky = True
# The build has no network, so no intersphinx inventories: names of Python's standard
# library and of third-party libraries in signatures and docstrings cannot be linked and
# are shown as plain names. Everything under lazymat must resolve.
THIRD_PARTY = "numpy|torch|jax|sklearn|gpytorch|linear_operator"
STANDARD_LIBRARY = r"collections\.abc|contextvars|logging"
nitpick_ignore_regex = [(r"py:.*", rf"({THIRD_PARTY}|{STANDARD_LIBRARY})(\..*)?")]

# --- API reference --------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# --- pages ----------------------------------------------------------------------------
myst_heading_anchors = 3
html_theme = "pydata_sphinx_theme"
html_title = f"lazymat {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_depth": 3,
    "show_toc_level": 2,
    "navbar_align": "left",
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
}

# --- gallery --------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(lazymat_gallery.STAGED),
    "gallery_dirs": "auto_examples",
    "subsection_order": "lazymat_gallery.subsection_order",
    "within_subsection_order": "lazymat_gallery.within_section_order",
    "filename_pattern": r"\.py$",  # run every example
    "reset_argv": "lazymat_gallery.reset_argv",
    "image_scrapers": ("lazymat_gallery.written_figures",),
    "abort_on_example_error": False,  # run them all, then fail the build naming each
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "show_signature": False,
    "remove_config_comments": True,
    "min_reported_time": 0,
}


def setup(app: object) -> None:
    """Stage the examples into their sections before sphinx-gallery reads them."""
    lazymat_gallery.stage()
