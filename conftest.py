"""Test-session setup shared by ``tests/`` and ``plugins/*/tests/``: KeOps' build folder, and
one pytest-xdist worker for the tests that compile KeOps formulas.

pykeops compiles every new formula (10-60 s each on two cores) into its build folder and
finds it there next time. All the tests that run pykeops (the KeOps conformance subset,
the benchmark smoke test, the pykeops peers, GeomLoss's online and multiscale backends)
therefore share one folder, ``$KEOPS_CACHE_FOLDER``, which defaults to ``keops-cache``
inside the virtual environment running the tests (``.venv/keops-cache`` under
``make test``; the Makefile exports the same path for the benchmarks): a fresh machine
compiles each formula once, and ``make clean`` removes it with the environment. The
variable is set before any test module imports pykeops, and subprocesses inherit it.

A test whose id names KeOps (``keops``, any case) in a module that names pykeops gets the
``keops`` marker; the others that run pykeops (through GeomLoss's online, multiscale or image
routines) mark themselves, with ``pytest.mark.keops`` as a decorator of a top-level test or
class or in the module's ``pytestmark`` (lazymat.keops' own API tests never run pykeops), so
``-m "not keops"`` leaves pykeops out. Under ``--dist loadgroup`` (``make test``) all of
them run on one worker, one after the other, so that two workers never compile the same
formula at once: twice the work, and pykeops does not lock its build folder (a process that
loads a library another one is writing fails with "file too short", and its pykeops is broken
for the tests that follow). The scheduler sees node ids only (pytest-xdist 3.8's own
``xdist_group`` marks are lost on pytest 9.2, pytest-xdist issue 1386), so it reads the marks
from the modules' source (:func:`marked_keops`); ``xdist_group`` marks are still honoured
where they work.

The modules of :data:`ONE_WORKER_MODULES` likewise run whole on one worker (their group is
their path): each starts a process cluster in a module-scoped fixture, which two workers
splitting the module would start twice, two clusters then competing for the same cores.
xdist hands the largest groups out first, one per worker, so the KeOps group and a cluster
module start side by side and the single tests fill in around them.
"""

from __future__ import annotations

import ast
import functools
import os
import sys
from pathlib import Path
from typing import Any

import pytest

#: the marker of the tests that run pykeops, and the name of their xdist group
KEOPS = "keops"
#: test modules (paths from the rootdir) whose tests share one xdist worker: a module-scoped
#: fixture starts a ``distributed.LocalCluster`` of worker processes
ONE_WORKER_MODULES = frozenset({"plugins/dask_backend/tests/test_dask_cluster.py"})


def keops_cache_folder() -> Path | None:
    """``keops-cache`` in the running virtual environment; None outside one (KeOps' default,
    ``~/.cache/keops<version>``, then applies: a system prefix is not writable)."""
    if sys.prefix == sys.base_prefix:
        return None
    return Path(sys.prefix) / "keops-cache"


_folder = keops_cache_folder()
if _folder is not None:
    os.environ.setdefault("KEOPS_CACHE_FOLDER", str(_folder))


@functools.cache
def _source(module: str) -> str:
    """A test module's source ("" for an id that is not a file here), read once."""
    path = Path(__file__).resolve().parent / module  # node ids are relative to the rootdir, here
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def mentions_pykeops(module: str) -> bool:
    """Whether a test module's source names pykeops (the modules of lazymat.keops' own API,
    which never run pykeops, do not)."""
    return "pykeops" in _source(module)


def _is_keops_mark(node: ast.expr) -> bool:
    """``pytest.mark.keops`` (or ``mark.keops``) anywhere in an expression."""
    return any(isinstance(n, ast.Attribute) and n.attr == KEOPS for n in ast.walk(node))


@functools.cache
def marked_keops(module: str) -> tuple[bool, frozenset[str]]:
    """(whether a module's ``pytestmark`` holds ``pytest.mark.keops``, the names of its top-level
    tests and classes decorated with it), read from its source."""
    tree = ast.parse(_source(module))
    whole = any(
        isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
        and _is_keops_mark(node.value)
        for node in tree.body
    )
    names = frozenset(
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and any(map(_is_keops_mark, node.decorator_list))
    )
    return whole, names


def names_keops(nodeid: str) -> bool:
    """Whether a test may run pykeops: its id names KeOps and its module names pykeops, or its
    source marks it ``keops``."""
    module, _, rest = nodeid.partition("::")
    if KEOPS in nodeid.lower() and mentions_pykeops(module):
        return True
    whole, names = marked_keops(module)
    return whole or rest.split("::", 1)[0].split("[", 1)[0] in names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if names_keops(item.nodeid) and item.get_closest_marker(KEOPS) is None:
            item.add_marker(KEOPS)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown (and unused) without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None  # xdist's own scheduler
    from xdist.scheduler import LoadGroupScheduling

    class KeOpsGroupScheduling(LoadGroupScheduling):
        """``--dist loadgroup``, with the tests whose id names KeOps in one group and each
        module of :data:`ONE_WORKER_MODULES` in a group of its own."""

        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            if scope != nodeid:  # an xdist_group mark that survived
                return scope
            if names_keops(nodeid):
                return KEOPS
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return KeOpsGroupScheduling(config, log)
