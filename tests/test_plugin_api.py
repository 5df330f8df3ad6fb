"""The seams outside code relies on: the declared plugin API, layering, pickling.

- Our own plugins import ``lazymat.plugin`` and nothing else of the core (read from source).
- The core never imports the solvers; no public function shadows a module of its package.
- :data:`lazymat.plugin.REQUIRED_FUNCTIONS` lists every namespace function the core's
  array-API code calls (read from source), and a namespace lacking one is named.
- Every IR operation is in the conformance catalogue (so every engine is walked over it).
- Specs, formulas and block-sparsities pickle, and a spec sent to a process pool reduces to
  the dense value there.
"""

from __future__ import annotations

import ast
import concurrent.futures
import importlib
import inspect
import pickle
import pkgutil
import re
import types
from pathlib import Path

import numpy as np
import pytest

import lazymat
import lazymat.ml
import lazymat.plugin as lp
import lazymat.solvers
from lazymat.block_sparse import BlockSparsity
from lazymat.namespace import check_namespace
from lazymat.testing.dense import dense_reduction
from lazymat.testing.operations import INDEX_MATCH, OPS
from lazymat.testing.operations import data as operation_data

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = sorted(p.parent for p in ROOT.glob("plugins/*/lazymat_*/__init__.py")) + [
    ROOT / "tests" / "sample_plugin" / "lazymat_sample"
]


def lazymat_imports(path: Path) -> list[str]:
    """The ``lazymat...`` modules a source file imports (``from lazymat import x`` -> lazymat.x)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "lazymat"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "lazymat"
        ):
            base = str(node.module)
            found += [f"{base}.{a.name}" if base == "lazymat" else base for a in node.names]
    return found


@pytest.mark.parametrize("package", PLUGIN_PACKAGES, ids=lambda p: p.name)
def test_plugins_import_only_the_declared_api(package: Path) -> None:
    files = sorted(package.glob("*.py"))
    assert files, f"no modules in {package}"
    bad = {
        f"{f.name}: {name}" for f in files for name in lazymat_imports(f) if name not in ("lazymat.plugin",)
    }
    assert not bad, f"plugin modules importing the core beyond lazymat.plugin: {sorted(bad)}"


def test_the_core_never_imports_the_solvers() -> None:
    offenders = []
    for f in sorted((ROOT / "core").rglob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                (node.level == 0 and (node.module or "").startswith("lazymat.solvers"))
                or (node.level > 0 and (node.module or "").startswith("solvers"))
            ):
                offenders.append(f"{f.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name.startswith("lazymat.solvers") for a in node.names):
                offenders.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"core modules importing lazymat.solvers: {offenders}"


@pytest.mark.parametrize("package", [lazymat, lazymat.solvers, lazymat.ml], ids=["lazymat", "solvers", "ml"])
def test_no_function_shadows_a_module(package: types.ModuleType) -> None:
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    shadowing = [
        name
        for name in modules
        if name in vars(package) and not isinstance(vars(package)[name], types.ModuleType)
    ]
    assert not shadowing, f"{package.__name__}: names that hide a submodule: {shadowing}"
    for name in modules:  # and every submodule imports by its dotted name
        importlib.import_module(f"{package.__name__}.{name}")


def test_required_functions_cover_what_the_core_calls() -> None:
    """Every ``xp.<name>`` of the core's array-API code is in the declared list, and so is
    every operation's ``array_api`` function."""
    sources = [*(ROOT / "core").glob("*.py"), *(ROOT / "core" / "ir").glob("*.py")]
    sources.append(ROOT / "core" / "builtin_engines" / "reference.py")
    called = {name for f in sources for name in re.findall(r"\bxp\.([a-z_0-9]+)", f.read_text())}
    called |= {op.array_api for op in lp.operations() if op.array_api is not None}
    missing = called - set(lp.REQUIRED_FUNCTIONS)
    assert not missing, f"namespace functions the core calls but REQUIRED_FUNCTIONS does not list: {missing}"


def test_a_namespace_lacking_a_function_is_named() -> None:
    import array_api_compat.numpy as full

    partial = types.SimpleNamespace(**{k: getattr(full, k) for k in lp.REQUIRED_FUNCTIONS})
    check_namespace("partial-ok", partial)
    del partial.take_along_axis, partial.argsort
    assert lp.missing_functions(partial) == ["argsort", "take_along_axis"]
    with pytest.raises(TypeError, match=r"backend 'partial'.*lacks argsort, take_along_axis"):
        check_namespace("partial", partial)


def test_the_catalogue_walks_every_operation() -> None:
    """The conformance suite's ``test_every_operation`` runs the catalogue on every engine: it
    must contain every IR operation (a new operation without an entry fails here)."""
    x, y, p = operation_data(3, 4)
    seen: set[type] = set()
    for builder, _ in OPS.values():
        K = builder(lazymat.Vi(x), lazymat.Vj(y), lazymat.Pm(p))
        seen |= {type(node) for node in K.formula.walk()}
    for make in INDEX_MATCH.values():
        seen |= {type(node) for node in make(3, 4, np.random.default_rng(0))[0].walk()}
    missing = {op.__name__ for op in lp.operations()} - {t.__name__ for t in seen}
    assert not missing, f"operations missing from lazymat.testing.operations: {sorted(missing)}"


def test_every_operation_declares_its_parts() -> None:
    """A dense twin for each operation; a C rule and a KeOps spelling where the engines need them."""
    from lazymat.codegen.expr import has_rule

    for op in lp.operations():
        assert "dense" in vars(op) or any("dense" in vars(b) for b in op.__mro__[1:-2]), op.__name__
        assert has_rule(op), f"{op.__name__}: no C template and no layout rule"
        assert op.__doc__, f"{op.__name__} has no docstring"


def _spec_with_everything() -> tuple[lp.ReductionSpec, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((9, 3)), rng.standard_normal((7, 3))
    ranges = BlockSparsity((0, 4, 9), (0, 3, 7), ((0,), (0, 1)))
    K = (-lazymat.Vi(x).sqdist(lazymat.Vj(y)) / lazymat.Pm(np.array([0.5]))).exp() * lazymat.Vj(y)[1:3]
    spec, args = K.prepare("lse", 1, ranges=ranges)
    return spec, args


def test_specs_round_trip_through_pickle() -> None:
    spec, args = _spec_with_everything()
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and hash(back) == hash(spec)
    assert back.ranges == spec.ranges and back.ranges is not spec.ranges
    call = lp.make_call(spec, lazymat.backend_for(args[0]))
    assert pickle.loads(pickle.dumps(call)).spec == spec
    for a, b in zip(dense_reduction(back, args), dense_reduction(spec, args), strict=True):
        np.testing.assert_array_equal(a, b)


def _reduce_in_worker(payload: bytes) -> np.ndarray:
    from lazymat.dispatch import reduce

    spec, args = pickle.loads(payload)
    return np.asarray(reduce(spec, args)[0])


def test_a_spec_reduces_in_a_process_pool() -> None:
    spec, args = _spec_with_everything()
    payload = pickle.dumps((spec, args))
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        got = pool.submit(_reduce_in_worker, payload).result(timeout=1800)
    np.testing.assert_allclose(got, dense_reduction(spec, args)[0], rtol=1e-12)


def test_the_plugin_api_is_documented() -> None:
    """Every name of lazymat.plugin has a docstring (the plugin author's reference)."""
    undocumented = [
        name
        for name in lp.__all__
        if (inspect.isclass(getattr(lp, name)) or inspect.isfunction(getattr(lp, name)))
        and not inspect.getdoc(getattr(lp, name))
    ]
    assert not undocumented, f"lazymat.plugin names without a docstring: {undocumented}"
