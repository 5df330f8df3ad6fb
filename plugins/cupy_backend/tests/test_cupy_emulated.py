"""The generated CUDA kernels, run on the CPU by the emulator, against dense float64 numpy.

Blocks of 32 threads (so that small problems still span several blocks and many j-tiles)
run every IR operation, every reduction on awkward sizes, NaN/inf and ties, batches
(also with more batch elements than the grid's y dimension), int64 index arrays, a
j-variable too wide for a full tile, and K-min lists longer than the unrolled limit.
The reference values are computed on the dense (N, M) grid with numpy and SciPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from cuda_emulator import EmulatedCudaEngine
from scipy.special import logsumexp

import lazymat as lm
import lazymat_cupy.cuda_skeleton as cuda
from lazymat.dispatch import ReductionCall
from lazymat.plugin_manager import get_registry
from lazymat.request import ReductionSpec, build_request
from lazymat.testing import dense as dense_reference
from lazymat.testing.clustered import check_clustered, check_clustered_batches, clustered_problem
from lazymat.testing.dense import K_REDUCTIONS, REDUCTIONS, check_outputs, gaussian_product_vjp
from lazymat.testing.operations import (
    INDEX_MATCH,
    OPS,
    data,
    distance,
    distance_dense,
    gaussian,
    gaussian_dense,
    grid,
)

ENGINE = "cuda-emulated"
#: float32 to 2e-5 (the emulator runs the kernels' float32 maths on the CPU)
RTOL = {**dense_reference.RTOL, "float32": 2e-5}


@pytest.fixture(autouse=True, scope="module")
def _emulated(cuda_emulated_engine: EmulatedCudaEngine) -> None:
    """Registers the emulated engine (session fixture) before the module's tests run."""


def check(
    outs: tuple[Any, ...], F: np.ndarray, reduction: str, dtype: str, k: int = 0, what: str = ""
) -> None:
    """Engine outputs against the dense reduction of F (indices exactly in float64)."""
    check_outputs(outs, F, reduction, dtype, k, what, RTOL)


def close(got: np.ndarray, ref: np.ndarray, dtype: str, what: str) -> None:
    dense_reference.close(got, ref, dtype, what, RTOL)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_every_operation(op: str, dtype: str) -> None:
    build, dense = OPS[op]
    x, y, p = (a.astype(dtype) for a in data(37, 71, seed=1))
    K = build(lm.Vi(x), lm.Vj(y), lm.Pm(p))
    F = np.broadcast_to(dense(*grid(*(a.astype(np.float64) for a in (x, y, p)))), (37, 71, K.dim))
    check(K.reduce("sum", engine=ENGINE), F, "sum", dtype, what=op)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 7), (13, 1), (33, 97), (5, 1031)])
def test_every_reduction_awkward_sizes(n: int, m: int, dtype: str) -> None:
    x, y, p = (a.astype(dtype) for a in data(n, m, seed=n + m))
    g = grid(*(a.astype(np.float64) for a in (x, y, p)))
    X, Y, P = lm.Vi(x), lm.Vj(y), lm.Pm(p)
    for reduction in REDUCTIONS:
        check(gaussian(X, Y, P).reduce(reduction, engine=ENGINE), gaussian_dense(*g), reduction, dtype)
    for reduction in K_REDUCTIONS:
        for k in sorted({1, min(m, 4), min(m, cuda.UNROLL_K + 3)}):
            outs = distance(X, Y, P).reduce(reduction, k=k, engine=ENGINE)
            check(outs, distance_dense(*g), reduction, dtype, k, what=f"{n}x{m} K={k}")


def test_nan_and_inf() -> None:
    x, y, p = data(6, 100, seed=3)
    x[2, 1] = np.nan  # row 2: NaN everywhere
    y[70, 2] = np.inf  # column 70 (third tile of 32): +inf distances, -inf in the log-sum-exp
    g = grid(x, y, p)
    X, Y, P = lm.Vi(x), lm.Vj(y), lm.Pm(p)
    for reduction in REDUCTIONS:
        check(
            (-distance(X, Y, P)).reduce(reduction, engine=ENGINE), -distance_dense(*g), reduction, "float64"
        )
    for reduction in K_REDUCTIONS:
        check(
            distance(X, Y, P).reduce(reduction, k=5, engine=ENGINE),
            distance_dense(*g),
            reduction,
            "float64",
            5,
        )
    # rows of -inf (log-sum-exp: -inf, not NaN), +inf, and values below exp's range
    v = np.array([[0.0], [1.0], [2.0]])
    w = np.concatenate([np.zeros((40, 1)), [[np.inf]], np.full((30, 1), 3.0)])
    for formula, dense, j_data in (
        (  # log(0) = -inf everywhere
            lambda A, B: (A * 0.0 + B * 0.0).log(),
            lambda a, b: np.full(np.broadcast_shapes(a.shape, b.shape), -np.inf),
            np.ones((71, 1)),
        ),
        (lambda A, B: (A + 1.0) * B, lambda a, b: (a + 1.0) * b, w),
        (lambda A, B: (A - B) * 1e4 - 1e5, lambda a, b: (a - b) * 1e4 - 1e5, w),
    ):
        F = dense(v[:, None, :], j_data[None, :, :])
        for reduction in ("sum", "lse", "min_argmin", "max_argmax"):
            check(formula(lm.Vi(v), lm.Vj(j_data)).reduce(reduction, engine=ENGINE), F, reduction, "float64")


def test_ties_go_to_the_lowest_index() -> None:
    rng = np.random.default_rng(4)
    base = np.round(rng.standard_normal((40, 2)) * 8) / 8  # exact in float32: the same ties
    y = np.concatenate([base, base[::-1], base, np.zeros((70, 2)), base])  # ties across tiles
    x = np.round(rng.standard_normal((40, 2)) * 8) / 8
    x[3] = 0.0
    for dtype in ("float64", "float32"):
        xs, ys = x.astype(dtype), y.astype(dtype)
        F = np.sum((xs[:, None, :].astype(np.float64) - ys[None, :, :]) ** 2, -1)
        D = lm.Vi(xs).sqdist(lm.Vj(ys))
        np.testing.assert_array_equal(D.reduce("argmin", engine=ENGINE)[0][:, 0], np.argmin(F, 1))
        np.testing.assert_array_equal(D.reduce("argmax", engine=ENGINE)[0][:, 0], np.argmax(F, 1))
        for k in (7, cuda.UNROLL_K + 3):
            got = D.reduce("argkmin", k=k, engine=ENGINE)[0]
            ref = np.argsort(F, 1, kind="stable")[:, :k]
            np.testing.assert_array_equal(got, ref, err_msg=f"{dtype} K={k}")


@pytest.mark.parametrize("grid_y", [cuda.MAX_GRID_Y, 2])
def test_batch_dimensions(grid_y: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Broadcast batches; with grid_y=2 the kernel's grid-stride loop covers 6 batch elements."""
    monkeypatch.setattr(cuda, "MAX_GRID_Y", grid_y)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 1, 37, 3))
    y = rng.standard_normal((3, 70, 3))
    p = rng.random((2, 3, 3)) + 0.5
    gx, gy, gp = x[..., :, None, :], y[..., None, :, :], p[..., None, None, :]
    F = np.broadcast_to(gaussian_dense(gx, gy, gp), (2, 3, 37, 70, 2))
    D = np.broadcast_to(distance_dense(gx, gy, gp), (2, 3, 37, 70, 1))
    for dtype in ("float64", "float32"):
        X, Y, P = lm.Vi(x.astype(dtype)), lm.Vj(y.astype(dtype)), lm.Pm(p.astype(dtype))
        for reduction in ("sum", "lse", "min_argmin", "max_argmax"):
            check(gaussian(X, Y, P).reduce(reduction, engine=ENGINE), F, reduction, dtype, what="batch")
        check(distance(X, Y, P).reduce("kmin_argkmin", k=4, engine=ENGINE), D, "kmin_argkmin", dtype, 4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_block_sparse_clustered_problem_matches_dense_masked(dtype: str) -> None:
    """Ranged kernels on many grid clusters (chunks of one thread block, rows visiting nothing)."""
    problem = clustered_problem(600, 400, seed=23, voxel=0.4, radius=0.5)
    sizes = np.diff(problem.ranges.i_bounds)
    assert len(sizes) > 30 and sizes.max() > 32 and 0.05 < problem.mask.mean() < 0.6  # 32: block
    assert not problem.mask.any(1).all(), "some rows must visit nothing (identities)"
    check_clustered(ENGINE, problem, dtype)


def test_block_sparse_with_batch_dimensions() -> None:
    """One structure for every batch element (the grid's y dimension)."""
    problem = clustered_problem(100, 80, seed=24, voxel=0.3, radius=0.45)
    check_clustered_batches(ENGINE, problem)


@pytest.mark.parametrize("name", sorted(INDEX_MATCH))
def test_index_match_with_int64_arrays(name: str) -> None:
    formula, args, dense = INDEX_MATCH[name](45, 77, np.random.default_rng(6))
    backend = get_registry().backend("numpy")
    (got,) = ReductionCall(ReductionSpec(formula, "sum"), backend, ENGINE, 2**25).run(*args)
    close(got, dense.sum(1), "float64", name)
    (got,) = ReductionCall(ReductionSpec(formula, "max"), backend, ENGINE, 2**25).run(*args)
    close(got, dense.max(1), "float64", name)


def test_wide_j_variable_uses_short_tiles() -> None:
    """A j-variable of 300 float64 (2400 bytes per j) leaves room for 13 j per tile, not 32."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((40, 300)) / 10, rng.standard_normal((50, 300)) / 10
    K = (lm.Vi(x) * lm.Vj(y)).inner_sum()
    engine = get_registry().engine(ENGINE)
    spec, args = K.prepare("lse", 1)
    request = build_request(spec, args, get_registry().backend("numpy"), 2**20)
    skeleton = engine.skeleton(engine.kernel_spec(request))
    assert not isinstance(skeleton, str) and skeleton.tile == 13
    F = (x @ y.T)[:, :, None]
    for reduction in ("lse", "min_argmin", "sum"):
        check(K.reduce(reduction, engine=ENGINE), F, reduction, "float64", what="wide")


def test_gradients_through_lazymat_vjp_match_dense() -> None:
    """lazymat.vjp (the core's symbolic VJP reductions) on the emulated kernels vs numpy."""
    x, y, _ = data(31, 90, seed=8)
    b = np.random.default_rng(9).standard_normal((90, 1))
    K = (-lm.Vi(x).sqdist(lm.Vj(y)) * 2.0).exp() * lm.Vj(b)
    cot = np.random.default_rng(10).standard_normal((31, 1))
    with lm.config(engine=ENGINE):
        gx, gy, gb = lm.vjp(K, cot, wrt=[x, y, b])
    ref_x, ref_y, ref_b = gaussian_product_vjp(x, y, b, cot, 2.0)
    close(gx, ref_x, "float64", "d/dx")
    close(gy, ref_y, "float64", "d/dy")
    close(gb, ref_b, "float64", "d/db")


def test_float32_long_sums_stay_within_the_stated_bound() -> None:
    """300000 terms: error <= (tile + 2) 2**-24 sum |F| (codegen/cuda.py); a plain float32
    running sum of these numbers is off by 4.1e-6 relative, twice that bound."""
    rng = np.random.default_rng(11)
    x = np.zeros((3, 1), dtype=np.float32)
    y = rng.random((300_000, 1)).astype(np.float32)
    K = lm.Vi(x) + lm.Vj(y)
    tile = get_registry().engine(ENGINE).block  # one float per j: tiles are as long as blocks
    bound = (tile + 2) * 2.0**-24
    exact = np.sum(y.astype(np.float64))
    got = K.sum(axis=1, engine=ENGINE)
    assert np.max(np.abs(got.astype(np.float64) - exact)) <= bound * exact
    (lse,) = K.reduce("lse", engine=ENGINE)
    ref = logsumexp(y.astype(np.float64))
    # the relative error of the scaled sum becomes an absolute one, plus the final log's rounding
    assert np.max(np.abs(lse.astype(np.float64) - ref)) <= bound + 4 * 2.0**-24 * abs(ref)
