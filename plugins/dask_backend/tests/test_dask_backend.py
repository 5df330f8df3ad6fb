"""The dask backend's own behaviour, on the threads scheduler of this process.

Every value is checked against dense float64 numpy written here (kernel sums, masked
block-sparse log-sum-exps, stable argsorts, gradients), never against another lazymat
run; the graph checks count tasks in the graph dask is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback

import lazymat as lm
import lazymat_dask
from lazymat.block_sparse import BlockSparsity
from lazymat_dask import namespace as dxp
from lazymat_dask.graph import column_ranges


@pytest.fixture(autouse=True)
def _threads_scheduler() -> Iterator[None]:
    with dask.config.set(scheduler="threads"):
        yield


def _clouds(n: int = 211, m: int = 173, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((m, d))


def _sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def test_results_are_lazy_dask_arrays_chunked_like_the_reduced_sides_rows() -> None:
    x, y = _clouds()
    X, Y = da.from_array(x, chunks=(50, 3)), da.from_array(y, chunks=(40, 3))
    K = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp()
    calls: list[int] = []
    with Callback(pretask=lambda key, dsk, state: calls.append(1)):
        rows, cols = K.sum(axis=1), K.sum(axis=0)
    assert not calls, "building a reduction must compute nothing"
    assert isinstance(rows, da.Array) and rows.chunks == (X.chunks[0], (1,))
    assert isinstance(cols, da.Array) and cols.chunks == (Y.chunks[0], (1,))
    dense = np.exp(-_sqdist(x, y))
    np.testing.assert_allclose(rows.compute()[:, 0], dense.sum(1), rtol=1e-13)
    np.testing.assert_allclose(cols.compute()[:, 0], dense.sum(0), rtol=1e-13)


def test_compute_and_persist_options() -> None:
    x, y = _clouds()
    X, Y = da.from_array(x, chunks=(50, 3)), da.from_array(y, chunks=(40, 3))
    dense = np.exp(-_sqdist(x, y)).sum(1)
    with lazymat_dask.config(compute=True):
        out = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1)
        assert type(out) is np.ndarray
    with lazymat_dask.config(persist=True):
        held = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1)
    assert isinstance(held, da.Array)
    assert len(held.dask) == held.npartitions, "a persisted result is its chunks, not a graph"
    np.testing.assert_allclose(out[:, 0], dense, rtol=1e-13)
    np.testing.assert_allclose(held.compute()[:, 0], dense, rtol=1e-13)
    assert lazymat_dask.current().results == "lazy"


def test_options_refuse_what_they_do_not_know() -> None:
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"compute": True, "persist": True}, ValueError, "exclude each other"),
        ({"lazy": True}, TypeError, "unknown lazymat_dask option"),
        ({"results": "eager"}, ValueError, "results must be one of"),
        ({"chunk_rows": 0}, ValueError, "chunk_rows"),
    ]
    for options, error, message in bad:
        with pytest.raises(error, match=message), lazymat_dask.config(**options):
            pass
    with lazymat_dask.config(compute=True), lazymat_dask.config(compute=False):
        assert lazymat_dask.current().results == "lazy"


def test_unknown_chunk_sizes_are_refused_with_the_fix() -> None:
    x, y = _clouds()
    X = da.from_array(x, chunks=(50, 3))
    X = X[X[:, 0] > 0]  # boolean indexing: row count unknown until computed
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        (-lm.Vi(X).sqdist(lm.Vj(da.from_array(y)))).exp().sum(axis=1)


def test_kmin_over_columns_chunked_finer_than_k() -> None:
    """Column chunks of 1 and 2 columns: blocks span several chunks so that each holds K."""
    x, y = _clouds(37, 29)
    X = da.from_array(x, chunks=(10, 3))
    Y = da.from_array(y, chunks=((1, 2, 1, 7, 2, 1, 15), (3,)))
    assert all(b - a >= 5 for (a, b), _ in column_ranges(Y.chunks[0], 5))
    values, indices = lm.Vi(X).sqdist(lm.Vj(Y)).Kmin_argKmin(5, axis=1)
    d = _sqdist(x, y)
    order = np.argsort(d, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices.compute(), order)
    np.testing.assert_allclose(values.compute(), np.take_along_axis(d, order, axis=1), rtol=1e-14)


def test_block_sparse_reductions_skip_the_blocks_they_do_not_visit() -> None:
    x, y = _clouds(60, 48)
    i_bounds, j_bounds = (0, 20, 40, 60), (0, 16, 32, 48)
    sparsity = BlockSparsity(i_bounds, j_bounds, ((0,), (1, 2), ()))
    X, Y = da.from_array(x, chunks=(20, 3)), da.from_array(y, chunks=(16, 3))
    (lse,) = (-lm.Vi(X).sqdist(lm.Vj(Y))).reduce("lse", 1, ranges=sparsity)
    blocks = [k for k in lse.dask if isinstance(k, tuple) and str(k[0]).startswith("lazymat-block-")]
    # visited pairs: (0, 0), (1, 1), (1, 2); row chunk 2 visits nothing and keeps one block
    assert len(blocks) == 4, sorted(blocks)
    mask = sparsity.dense_mask()
    with np.errstate(divide="ignore"):
        ref = np.log(np.where(mask, np.exp(-_sqdist(x, y)), 0.0).sum(1))
    got = lse.compute()[:, 0]
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref))
    np.testing.assert_allclose(got[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-13, atol=1e-14)


def test_merges_form_a_balanced_tree_in_column_order() -> None:
    x, y = _clouds(40, 64)
    X, Y = da.from_array(x, chunks=(40, 3)), da.from_array(y, chunks=(8, 3))  # 8 column chunks
    out = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1)
    graph = dict(out.dask)
    merges = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("lazymat-merge-")]
    assert sorted((k[2], k[3]) for k in merges) == sorted(
        [(0, 8), (0, 4), (4, 8), (0, 2), (2, 4), (4, 6), (6, 8)]
    ), "one merge per node of the balanced tree over 8 column ranges"
    np.testing.assert_allclose(out.compute()[:, 0], np.exp(-_sqdist(x, y)).sum(1), rtol=1e-13)


def test_gradients_with_a_numpy_cotangent_and_in_compute_mode() -> None:
    """lazymat.vjp wraps a numpy cotangent (and, in compute mode, the numpy outputs its
    derivative reductions meet) as dask arrays chunked like their side."""
    x, y = _clouds(45, 38, 2)
    X, Y = da.from_array(x, chunks=(11, 2)), da.from_array(y, chunks=(9, 2))
    cot = np.random.default_rng(5).standard_normal((45, 1))
    k = np.exp(-_sqdist(x, y))  # d/dx_i sum_j k_ij c_i = -2 c_i sum_j k_ij (x_i - y_j)
    gx_ref = -2 * cot * (k[:, :, None] * (x[:, None, :] - y[None, :, :])).sum(1)
    gy_ref = 2 * ((cot * k)[:, :, None] * (x[:, None, :] - y[None, :, :])).sum(0)
    for options in ({}, {"compute": True}):
        with lazymat_dask.config(**options):
            gx, gy = lm.vjp((-lm.Vi(X).sqdist(lm.Vj(Y))).exp(), cot, wrt=[X, Y])
        np.testing.assert_allclose(np.asarray(gx), gx_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(gy), gy_ref, rtol=1e-12, atol=1e-14)


def test_lse_gradient_through_lazy_outputs_vs_finite_differences() -> None:
    x, y = _clouds(30, 25, 2, seed=3)
    X, Y = da.from_array(x, chunks=(7, 2)), da.from_array(y, chunks=(6, 2))

    def value(xx: np.ndarray) -> float:
        return float(np.log(np.exp(-_sqdist(xx, y)).sum(1)).sum())

    (gx,) = lm.grad(-lm.Vi(X).sqdist(lm.Vj(Y)), reduction="lse", wrt=[X])
    h, fd = 1e-6, np.zeros_like(x)
    for i, j in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[i, j] = h
        fd[i, j] = (value(x + e) - value(x - e)) / (2 * h)
    np.testing.assert_allclose(gx.compute(), fd, rtol=1e-6, atol=1e-8)


def test_from_numpy_chunks_rows_as_configured() -> None:
    backend = lm.backend_for(da.zeros(3))
    a = np.arange(30.0).reshape(10, 3)
    with lazymat_dask.config(chunk_rows=4):
        assert backend.from_numpy(a).chunks == ((4, 4, 2), (3,))
        assert backend.from_numpy(np.arange(10.0)).chunks == ((4, 4, 2),)
    np.testing.assert_array_equal(backend.to_numpy(backend.from_numpy(a)), a)


def test_namespace_take_along_axis_and_eigh() -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((9, 12))
    idx = rng.integers(0, 12, (9, 4))
    got = dxp.take_along_axis(da.from_array(a, chunks=(4, 5)), da.from_array(idx, chunks=(2, 3)), axis=1)
    np.testing.assert_array_equal(got.compute(), np.take_along_axis(a, idx, axis=1))
    s = a[:, :9] @ a[:, :9].T
    w, v = dxp.linalg.eigh(da.from_array(s, chunks=(4, 4)))
    w, v = w.compute(), v.compute()
    np.testing.assert_allclose(w, np.linalg.eigvalsh(s), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v @ np.diag(w) @ v.T, s, rtol=1e-10, atol=1e-10)


def test_torch_chunks_run_on_torch_and_come_back_as_tensors() -> None:
    torch = pytest.importorskip("torch")
    x, y = _clouds(50, 41)

    def tensors(a: np.ndarray, rows: int) -> Any:
        meta = torch.zeros((0, 0), dtype=torch.float64)
        return da.from_array(a, chunks=(rows, 3)).map_blocks(torch.from_numpy, meta=meta)

    X, Y = tensors(x, 13), tensors(y, 10)
    assert lm.backend_for(X).device_name(X) == "cpu"
    values, indices = lm.Vi(X).sqdist(lm.Vj(Y)).min_argmin(axis=1)
    s = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1)
    values, indices, s = dask.compute(values, indices, s)
    assert isinstance(values, torch.Tensor) and isinstance(indices, torch.Tensor)
    d = _sqdist(x, y)
    np.testing.assert_array_equal(indices.numpy()[:, 0], d.argmin(1))
    np.testing.assert_allclose(values.numpy()[:, 0], d.min(1), rtol=1e-14)
    np.testing.assert_allclose(s.numpy()[:, 0], np.exp(-d).sum(1), rtol=1e-13)


def test_materialize_keeps_the_iteration_graph_from_growing() -> None:
    """cg tests convergence on numbers every iteration: with the iterates materialized, the
    tasks that each test computes stay constant instead of growing with the iterations."""
    from lazymat.solvers import cg

    rng = np.random.default_rng(6)
    x = rng.random((300, 2))
    b = rng.standard_normal((300, 1))
    X, B = da.from_array(x, chunks=(70, 2)), da.from_array(b, chunks=(70, 1))
    per_compute: list[int] = []

    class Count(Callback):  # type: ignore[misc]
        def _start(self, dsk: Any) -> None:
            per_compute.append(0)

        def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
            per_compute[-1] += 1

    with Count():
        sol, info = cg((-lm.Vi(X).sqdist(lm.Vj(X)) / 0.05).exp(), B, alpha=0.5, tol=1e-12)
    assert info.converged and info.iterations > 10
    third = len(per_compute) // 3
    middle, last = per_compute[third : 2 * third], per_compute[2 * third :]
    assert max(last) <= max(middle), f"tasks per compute grow with the iterations: {per_compute}"
    K = np.exp(-_sqdist(x, x) / 0.05)
    exact = np.linalg.solve(K + 0.5 * np.eye(300), b)
    np.testing.assert_allclose(sol.compute(), exact, rtol=1e-9, atol=1e-11)


def test_persist_mode_submits_new_inputs_with_the_outputs() -> None:
    """In persist mode a reduction whose inputs are new is one submission (inputs and outputs
    together), and a later reduction on the same inputs reads them persisted: their chunks
    run once in all (``+ 0.0``: chunks that are tasks, which from_array's are not)."""
    x, y = _clouds(seed=3)
    X, Y = da.from_array(x, chunks=(50, 3)) + 0.0, da.from_array(y, chunks=(40, 3)) + 0.0
    submissions: list[int] = []
    chunk_runs: list[Any] = []

    def pretask(key: Any, dsk: Any, state: Any) -> None:
        if isinstance(key, tuple) and key[0] in (X.name, Y.name):
            chunk_runs.append(key)

    count = Callback(start=lambda dsk: submissions.append(1), pretask=pretask)
    with lazymat_dask.config(persist=True), count:
        first = (-lm.Vi(X).sqdist(lm.Vj(Y))).exp().sum(axis=1)
        second = lm.Vi(X).sqdist(lm.Vj(Y)).min(axis=1)
    assert len(submissions) == 2, f"{len(submissions)} submissions for two reductions"
    assert len(chunk_runs) == X.npartitions + Y.npartitions, chunk_runs
    d = _sqdist(x, y)
    np.testing.assert_allclose(first.compute()[:, 0], np.exp(-d).sum(1), rtol=1e-13)
    np.testing.assert_allclose(second.compute()[:, 0], d.min(1), rtol=1e-14)


def test_sinkhorn_computes_its_constants_once() -> None:
    """The Sinkhorn loop's constants (the points' stacks, the log-weights) hold their values:
    the input chunks (tasks: ``+ 0.0``) run a few times before the loop, not again in each of
    its iterations."""
    from test_dask_solvers import entropic_ot

    from lazymat.solvers import sinkhorn

    rng = np.random.default_rng(11)
    x, y = rng.random((120, 2)), rng.random((90, 2)) + 0.2
    a, b = rng.random(120) + 0.1, rng.random(90) + 0.1
    a, b = a / a.sum(), b / b.sum()
    inputs = [da.from_array(v, chunks=(60, *v.shape[1:])) + 0.0 for v in (x, y, a, b)]
    names = {v.name for v in inputs}
    runs: list[Any] = []

    def pretask(key: Any, dsk: Any, state: Any) -> None:
        if isinstance(key, tuple) and key[0] in names:
            runs.append(key)

    with Callback(pretask=pretask):
        r = sinkhorn(*inputs, blur=0.3, debias=False, scaling=0.8, tol=1e-11)
        value = float(r.value)
    assert r.converged and r.n_iter > 30
    assert 0 < len(runs) <= 8 * len(names) * 2, f"input chunks ran {len(runs)} times in {r.n_iter} iterations"
    np.testing.assert_allclose(value, entropic_ot(a, x, b, y, 0.3**2), rtol=1e-9)


def test_an_array_wrapped_with_two_chunkings_is_two_arrays() -> None:
    """A numpy argument wrapped for reductions whose sides are cut differently (a cotangent
    of two calls) gives two dask arrays of distinct keys: computed together, each is the
    array itself, not chunks of the other cut."""
    from lazymat_dask.arrays import as_dask

    a = np.arange(12.0).reshape(6, 2)
    one, two = as_dask(a, (4, 2)), as_dask(a, (1, 5))
    assert one.name != two.name
    for got in dask.compute(one, two, scheduler="threads"):
        np.testing.assert_array_equal(got, a)
