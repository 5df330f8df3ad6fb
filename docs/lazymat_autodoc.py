"""How lazymat's docstrings become the API reference (a local Sphinx extension).

- Google-style sections (``Args:``, ``Returns:``, ``Raises:``) of functions, classes and
  modules are parsed by napoleon's ``GoogleDocstring``. Attributes, data and properties
  are left as written: lazymat documents them with ``#:`` comments in prose, where
  napoleon would read the text before a colon as a type ("the device: ..." -> a reference
  to a class named "the device").
- scikit-learn generates ``set_{method}_request`` methods (metadata routing) on every
  estimator class; they are scikit-learn's, documented by scikit-learn, and their
  docstrings refer to its own glossary: they are left out of ours.
"""

from __future__ import annotations

import re
from typing import Any

from sphinx.application import Sphinx
from sphinx.ext.napoleon import Config
from sphinx.ext.napoleon.docstring import GoogleDocstring

NAPOLEON = Config(napoleon_use_rtype=False, napoleon_use_ivar=True)
PROSE = ("attribute", "data", "property")
SKLEARN_ROUTING = re.compile(r"set_\w+_request$")


def google_sections(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what in PROSE:
        return
    lines[:] = GoogleDocstring(lines, NAPOLEON, app, what, name, obj, options).lines()


def skip_sklearn_routing(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    return True if SKLEARN_ROUTING.match(name) else None


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", google_sections)
    app.connect("autodoc-skip-member", skip_sklearn_routing)
    return {"parallel_read_safe": True}
