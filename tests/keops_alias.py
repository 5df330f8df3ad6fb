"""``pykeops`` -> ``lazymat.keops``: run code written for pykeops on lazymat, unchanged.

:func:`aliased` installs an import hook for its duration: ``import pykeops``,
``pykeops.torch``, ``pykeops.numpy``, ``pykeops.torch.cluster``, ``pykeops.config``, ... give
lazymat's modules, except ``pykeops.numpy.utils``, pykeops' own dense numpy helpers (the
test suite's oracles), which is read from the installed pykeops. The modules that real
pykeops had in ``sys.modules`` are put back when the block ends, so real pykeops keeps
working in the same process (the keops engine, the peer benchmarks).

:func:`peer_tests` lists the tests of pykeops' own suite (``pykeops/test/*.py`` of the
installed package, read in place, never copied) and :func:`run_peer_test` runs one of them
under the alias: unittest cases, pytest-style classes and functions, with their
``skipif`` marks honoured (a GPU-only test skips with its own reason), each after seeding
Python's, numpy's and torch's generators with 0. Why: some of the suite draws unseeded data
and is flaky on pykeops itself: ``test_block_sparse_reduction`` compares a block-sparse
Gaussian product with the dense one against a 0.2 % bound that the truncation alone exceeds
for some draws (seeds 0-199: 45 failures on pykeops 2.3, 34 on lazymat; at seeds 1, 7
and 9 each library's result equals a float64 reference built with its own cluster mask to
6e-6, and the two differ because their sorts order the points inside a cluster differently,
so the same random signal lands on other points). Seeded, a run is the same test every time.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import random
import sys
import unittest
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

#: pykeops' modules -> lazymat's (the ``torch``/``numpy`` flavours are one namespace)
TARGETS = {
    "pykeops": "lazymat.keops",
    "pykeops.torch": "lazymat.keops",
    "pykeops.numpy": "lazymat.keops",
    "pykeops.torch.cluster": "lazymat.keops.cluster",
    "pykeops.numpy.cluster": "lazymat.keops.cluster",
    "pykeops.torch.operations": "lazymat.keops",
    "pykeops.numpy.operations": "lazymat.keops",
    "pykeops.config": "lazymat.keops.config",
}
#: pykeops modules read from the installed package under the alias (the suite's dense helpers)
PEER_FILES = {"pykeops.numpy.utils": ("numpy", "utils.py")}


@functools.cache
def pykeops_dir() -> Path | None:
    """The installed pykeops package (found before any alias is in place)."""
    spec = importlib.util.find_spec("pykeops")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


class _Finder(importlib.abc.MetaPathFinder):
    """Resolves the aliased names; any other ``pykeops.*`` name is an error naming it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in PEER_FILES:
            return importlib.util.spec_from_file_location(name, self.root.joinpath(*PEER_FILES[name]))
        if name in TARGETS:
            return importlib.machinery.ModuleSpec(name, _AliasLoader(TARGETS[name]))
        if name.startswith("pykeops."):
            raise ModuleNotFoundError(f"{name} has no lazymat.keops counterpart", name=name)
        return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: Any) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        return None


@contextmanager
def aliased() -> Iterator[None]:
    """``pykeops`` means ``lazymat.keops`` inside the block (real pykeops is put back after)."""
    root = pykeops_dir()
    if root is None:
        raise RuntimeError("pykeops is not installed: its test suite and helpers are read from it")
    saved = {k: v for k, v in sys.modules.items() if k == "pykeops" or k.startswith("pykeops.")}
    for k in saved:
        del sys.modules[k]
    finder = _Finder(root)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k == "pykeops" or k.startswith("pykeops.")]:
            del sys.modules[k]
        sys.modules.update(saved)


# -- pykeops' own test suite ----------------------------------------------------------------


@dataclass(frozen=True)
class PeerTest:
    """One test of pykeops' suite: file stem, class name (or None) and function name."""

    stem: str
    cls: str | None
    name: str

    @property
    def id(self) -> str:
        return f"{self.stem}::{self.cls}::{self.name}" if self.cls else f"{self.stem}::{self.name}"


def _is_test_class(node: ast.ClassDef) -> bool:
    bases = {ast.unparse(b) for b in node.bases}
    return node.name.startswith("Test") or any("TestCase" in b for b in bases)


def peer_tests() -> list[PeerTest]:
    """The tests pytest would collect from ``pykeops/test/test_*.py``, read with ``ast``."""
    root = pykeops_dir()
    if root is None:
        return []
    found = []
    for path in sorted((root / "test").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                found.append(PeerTest(path.stem, None, node.name))
            elif isinstance(node, ast.ClassDef) and _is_test_class(node):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                        found.append(PeerTest(path.stem, node.name, item.name))
    return found


_modules: dict[str, ModuleType] = {}


def _module(stem: str) -> ModuleType:
    """The peer test file, imported once under the alias (its top level computes, too)."""
    if stem not in _modules:
        root = pykeops_dir()
        assert root is not None
        spec = importlib.util.spec_from_file_location(f"pykeops_suite_{stem}", root / "test" / f"{stem}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[stem] = module
    return _modules[stem]


def _skip_marks(obj: Any) -> None:
    for mark in getattr(obj, "pytestmark", []):
        if mark.name == "skip":
            pytest.skip(mark.kwargs.get("reason", "skipped by pykeops' suite"))
        if mark.name == "skipif" and mark.args and bool(mark.args[0]):
            pytest.skip(mark.kwargs.get("reason", "skipped by pykeops' suite"))


def _seed_generators() -> None:
    """Python's, numpy's and torch's generators seeded with 0 (see the module doc)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def run_peer_test(test: PeerTest) -> None:
    """Run one peer test under the alias; its failure or error is this test's failure."""
    _seed_generators()
    with aliased():
        module = _module(test.stem)
        if test.cls is None:
            fn = getattr(module, test.name)
            _skip_marks(fn)
            fn()
            return
        cls = getattr(module, test.cls)
        if isinstance(cls, type) and issubclass(cls, unittest.TestCase):
            result = unittest.TestResult()
            cls(test.name).run(result)
            problems = result.failures + result.errors
            if problems:
                raise AssertionError("\n".join(text for _, text in problems))
            if result.skipped:
                pytest.skip(result.skipped[0][1])
            return
        method = getattr(cls, test.name)
        _skip_marks(method)
        method(cls())
