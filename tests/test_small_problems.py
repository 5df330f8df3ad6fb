"""Small problems (issue 17): the paths that make a 10 x 10 .. 300 x 300 reduction cheap,
against dense float64 numpy (lazymat.testing's numpy twins of every operation, and numpy
written here).

- ``Program`` (a formula compiled once into a flat list of steps) evaluates every operation
  of the catalogue like its independent numpy twin;
- every reduction kind, at small and awkward sizes, on each CPU backend with the engine
  dispatch chooses (no engine forced), is right;
- native-cpu's choice of one thread or all (timed on the first calls) never changes a value;
- the LDDMM example prints its timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lazymat as lm
from lazymat.builtin_engines.native_build import find_compiler
from lazymat.builtin_engines.native_cpu import NativeCpuEngine, _ThreadChoice
from lazymat.dispatch import make_call
from lazymat.plugin_manager import get_registry
from lazymat.small_problems import program_for
from lazymat.testing.dense import K_REDUCTIONS, REDUCTIONS, check_outputs, dense_values
from lazymat.testing.operations import OPS, data, distance, distance_dense, gaussian, gaussian_dense, grid

ROOT = Path(__file__).resolve().parents[1]
HAS_CC = not isinstance(find_compiler(), str)


class _Tile:
    """The whole N x M grid as one tile, as the reference engine's TileContext presents it."""

    def __init__(self, arrays: list[np.ndarray], n: int, m: int) -> None:
        import array_api_compat.numpy as xp

        self.xp, self.dtype, self.device = xp, np.float64, "cpu"
        self.arrays, self.n, self.m = arrays, n, m

    def var(self, v: Any) -> np.ndarray:
        a = self.arrays[v.index]
        if v.cat == "i":
            return a[..., :, None, :]
        if v.cat == "j":
            return a[..., None, :, :]
        return a[..., None, None, :]

    def index(self, axis: str) -> np.ndarray:
        return np.arange(self.m)[:, None] if axis == "j" else np.arange(self.n)[:, None, None]


@pytest.mark.parametrize("name", sorted(OPS))
def test_program_evaluates_every_operation_like_its_numpy_twin(name: str) -> None:
    build, dense = OPS[name]
    x, y, p = data(6, 5, seed=1)
    spec, args = build(lm.Vi(x), lm.Vj(y), lm.Pm(p)).prepare("sum", 1)
    program = program_for(spec.formula)
    assert program is program_for(spec.formula)  # built once
    got = np.broadcast_to(program(_Tile(args, 6, 5)), (6, 5, spec.formula.dim))
    np.testing.assert_allclose(got, dense(*grid(x, y, p)), rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(got, dense_values(spec.formula, args, 6, 5), rtol=1e-12, atol=1e-12)


def _backends() -> list[str]:
    return [b for b in ("numpy", "torch", "jax") if b in lm.backends()]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize(("n", "m"), [(1, 1), (3, 10), (10, 10), (37, 29), (100, 100), (300, 256)])
def test_small_reductions_with_the_default_engine(backend: str, n: int, m: int) -> None:
    """Every reduction kind as a user calls it (dispatch chooses), twice, against dense numpy."""
    b = get_registry().backend(backend)
    if backend == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
    x, y, p = data(n, m, seed=n + m)
    X, Y, P = (lm.Vi(b.from_numpy(x)), lm.Vj(b.from_numpy(y)), lm.Pm(b.from_numpy(p)))
    F = gaussian_dense(*grid(x, y, p))
    for reduction in REDUCTIONS:
        for _ in range(2):  # the second call runs from the caches
            outs = gaussian(X, Y, P).reduce(reduction, 1)
            check_outputs([np.asarray(b.to_numpy(o)) for o in outs], F, reduction, "float64")
    D = distance_dense(*grid(x, y, p))
    for reduction in K_REDUCTIONS:
        k = min(m, 3)
        outs = distance(X, Y, P).reduce(reduction, 1, k=k)
        check_outputs([np.asarray(b.to_numpy(o)) for o in outs], D, reduction, "float64", k=k)


@pytest.mark.skipif(not HAS_CC, reason=f"no C compiler: {find_compiler()}")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_thread_or_all_gives_the_same_bits(dtype: str) -> None:
    """The thread choice of native-cpu (timed on the first calls) never changes a value: the
    trial calls (alternately on one thread and on all) and the later ones agree bit for bit, and
    with dense float64."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((700, 3)).astype(dtype)
    y = rng.standard_normal((650, 3)).astype(dtype)
    b = rng.standard_normal((650, 2)).astype(dtype)
    engine = NativeCpuEngine()
    spec, args = ((-0.4 * lm.Vi(x).sqdist(lm.Vj(y))).exp() * lm.Vj(b)).prepare("sum", 1)
    request = make_call(spec, get_registry().backend("numpy")).request(args)
    outs = [engine.run(request)[0] for _ in range(2 * _ThreadChoice.TRIALS + 2)]
    launch = engine._per_key(request).launch
    if launch.threads is None:
        pytest.skip("the kernels run on one thread here (no OpenMP, or OMP_NUM_THREADS=1)")
    assert launch.threads.single is not None, "the choice is made after the trials"
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    ref = np.exp(-0.4 * ((x[:, None].astype(float) - y[None]) ** 2).sum(-1)) @ b.astype(float)
    np.testing.assert_allclose(outs[0], ref, rtol={"float64": 1e-12, "float32": 2e-5}[dtype], atol=1e-5)


def test_lddmm_example_prints_its_timing() -> None:
    """``examples/lddmm.py`` (``make demo``) reports the registration's time and lowers the loss."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lddmm.py"), "--n", "20", "--maxiter", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    assert "LDDMM on n=20" in out and " s (" in out and "per reduction" in out, out
