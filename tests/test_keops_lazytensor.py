"""``lazymat.keops.LazyTensor`` parity with KeOps' LazyTensor, against dense numpy and torch.

KeOps' indexing ``[..., k]``, ``t()``, comparisons as operators, ``keops_kron`` and
``keops_tensordot``, ``sinc``, ``other=`` on log-sum-exp, one-sided formulas, ``dim=`` and
KeOps' defaults (inner reductions), ``ranges`` set on the tensor with KeOps' cluster
helpers, complex LazyTensors, K-min of vector formulas, ``solve``; each against the dense
computation written here.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from lazymat.keops import ComplexLazyTensor, LazyTensor, Vi, Vj
from lazymat.keops.cluster import cluster_ranges_centroids, from_matrix, grid_cluster, sort_clusters

RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((8, 3)), RNG.standard_normal((6, 3))
W = RNG.standard_normal((6, 2))


def _ij() -> tuple[LazyTensor, LazyTensor]:
    return LazyTensor(X[:, None, :]), LazyTensor(Y[None, :, :])


def test_ellipsis_and_full_slice_indexing() -> None:
    x_i, y_j = _ij()
    K = x_i[..., 0] * y_j[:, :, 1:3]
    np.testing.assert_allclose(K.sum(dim=1), X[:, :1] * Y[:, 1:3].sum(0), rtol=1e-13)
    np.testing.assert_allclose(x_i[..., -1].sum(dim=0) * 1.0, [[X[:, -1].sum()]] * 1, rtol=1e-13)
    with pytest.raises(IndexError, match=r"index only the inner dimension"):
        x_i[0, ..., 1]


def test_transpose_matches_the_dense_transpose() -> None:
    x_i, y_j = _ij()
    K = (-((x_i - y_j) ** 2).sum(2)).exp()
    dense = np.exp(-((X[:, None] - Y[None]) ** 2).sum(-1))
    w = RNG.standard_normal((8, 2))
    np.testing.assert_allclose(K.t() @ w, dense.T @ w, rtol=1e-13)
    np.testing.assert_allclose(K.T @ w, dense.T @ w, rtol=1e-13)
    assert K.shape == (8, 6) and K.t().shape == (6, 8)


def test_keops_defaults_inner_reductions_and_dims() -> None:
    x_i, y_j = _ij()
    D = x_i - y_j
    d = X[:, None] - Y[None]
    np.testing.assert_allclose(D.sum().sum(dim=1), d.sum(-1).sum(1)[:, None], rtol=1e-13)  # sum() is inner
    np.testing.assert_allclose(D.min().sum(dim=1), d.min(-1).sum(1)[:, None], rtol=1e-13)
    np.testing.assert_allclose(D.max(-1).sum(dim=0), d.max(-1).sum(0)[:, None], rtol=1e-13)
    np.testing.assert_allclose(D.argmin().sum(dim=1), d.argmin(-1).sum(1)[:, None], rtol=1e-13)
    np.testing.assert_allclose(D.argmax(axis=2).sum(dim=1), d.argmax(-1).sum(1)[:, None], rtol=1e-13)
    with pytest.raises(ValueError, match=r"needs dim="):
        D.logsumexp()


def test_comparison_operators() -> None:
    x_i, y_j = _ij()
    K = (x_i < y_j) + (x_i >= y_j) * 2 + (x_i[..., 0] == x_i[..., 0]) * 4 + (x_i != y_j) * 8
    d_lt = X[:, None] < Y[None]
    ref = d_lt + (~d_lt) * 2 + 4 + 8 * (X[:, None] != Y[None])
    np.testing.assert_allclose(K.sum(dim=1), ref.sum(1), rtol=1e-15)


def test_logsumexp_with_other_and_weight() -> None:
    x_i, y_j = _ij()
    F = -((x_i - y_j) ** 2).sum(-1)
    b = np.exp(RNG.standard_normal((6, 1)))
    d = -((X[:, None] - Y[None]) ** 2).sum(-1)
    ref = logsumexp(d, axis=1, b=b[:, 0][None])
    np.testing.assert_allclose(F.logsumexp(dim=1, other=LazyTensor(b[None]))[:, 0], ref, rtol=1e-13)
    np.testing.assert_allclose(F.logsumexp(dim=1, weight=LazyTensor(b[None]))[:, 0], ref, rtol=1e-13)


def test_sinc_kron_and_tensordot() -> None:
    x_i, y_j = _ij()
    np.testing.assert_allclose(
        (x_i * y_j).sinc().sum(dim=1), np.sinc(X[:, None] * Y[None]).sum(1), rtol=1e-13
    )
    kron = x_i.keops_kron(y_j[..., 0:2], [3, 1], [1, 2])
    ref = np.einsum("ia,jb->ijab", X, Y[:, :2]).reshape(8, 6, 6).sum(1)
    np.testing.assert_allclose(kron.sum(dim=1), ref, rtol=1e-13)
    td = x_i.keops_tensordot(y_j, (3,), (3,), (0,), (0,))
    np.testing.assert_allclose(td.sum(dim=1), (X @ Y.T).sum(1, keepdims=True), rtol=1e-13)


def test_one_sided_formulas_count_the_missing_side_as_one() -> None:
    x_i = LazyTensor(X[:, None, :])
    np.testing.assert_allclose(x_i.exp().sum(dim=1), np.exp(X), rtol=1e-15)
    np.testing.assert_allclose(x_i.exp().sum(dim=0), np.exp(X).sum(0, keepdims=True), rtol=1e-14)
    p = LazyTensor(np.array([1.0, 2.0])[None, None, :])
    np.testing.assert_allclose((p * 3).sum(dim=1), [[3.0, 6.0]], rtol=1e-15)


def test_kmin_of_vector_formulas_and_vi_vj_helpers() -> None:
    K = (Vi(X) - Vj(Y)).abs()
    values = K.Kmin(2, dim=1)
    ref = np.sort(np.abs(X[:, None] - Y[None]), axis=1)[:, :2]
    assert values.shape == (8, 2, 3)
    np.testing.assert_allclose(values, ref, rtol=1e-15)


def test_solve_against_numpy() -> None:
    x_i, x_j = LazyTensor(X[:, None, :]), LazyTensor(X[None, :, :])
    K = (-((x_i - x_j) ** 2).sum(-1)).exp()
    b = RNG.standard_normal((8, 2))
    dense = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1))
    got = K.solve(LazyTensor(b[:, None, :]), alpha=0.5, eps=1e-12)
    np.testing.assert_allclose(got, np.linalg.solve(0.5 * np.eye(8) + dense, b), rtol=1e-9, atol=1e-11)


def test_clear_errors() -> None:
    with pytest.raises(NotImplementedError, match=r"symbolic KeOps variables"):
        Vi(0, 3)
    with pytest.raises(NotImplementedError, match=r"symbolic LazyTensor variables"):
        LazyTensor((0, 3, 0))
    x_i, y_j = _ij()
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['tile'\]"):
        (x_i - y_j).sum(dim=1, tile=3)
    z = LazyTensor(X[:, None, :] + 1j * X[:, None, :])
    with pytest.raises(TypeError, match=r"takes real LazyTensors"):
        z.sin()


# -- block-sparsity with KeOps' cluster helpers -------------------------------------------------


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_ranges_on_a_lazytensor_with_keops_cluster_helpers(library: str) -> None:
    """KeOps' block-sparse recipe (grid_cluster, sort_clusters, from_matrix, K.ranges = ...)
    against the dense reduction of the same masked matrix."""
    to = (lambda a: a) if library == "numpy" else pytest.importorskip("torch").from_numpy
    x, y = RNG.random((300, 2)), RNG.random((250, 2)) * 0.6 + 0.2
    eps = 0.1
    x_labels, y_labels = grid_cluster(to(x), eps), grid_cluster(to(y), eps)
    x_ranges, x_centroids, _ = cluster_ranges_centroids(to(x), x_labels)
    y_ranges, y_centroids, _ = cluster_ranges_centroids(to(y), y_labels)
    xs, x_labels = sort_clusters(to(x), x_labels)
    ys, y_labels = sort_clusters(to(y), y_labels)
    keep = ((x_centroids[:, None, :] - y_centroids[None, :, :]) ** 2).sum(2) < 0.2**2
    ranges = from_matrix(x_ranges, y_ranges, keep)
    K = (-((LazyTensor(xs[:, None, :]) - LazyTensor(ys[None, :, :])) ** 2).sum(2) / 0.01).exp()
    K.ranges = ranges
    b = RNG.standard_normal((250, 1))
    got = np.asarray(K @ to(b))

    xs_, ys_ = np.asarray(xs), np.asarray(ys)
    xl, yl = np.asarray(x_labels), np.asarray(y_labels)
    mask = np.asarray(keep)[xl[:, None], yl[None, :]]
    dense = np.exp(-((xs_[:, None] - ys_[None]) ** 2).sum(-1) / 0.01)
    np.testing.assert_allclose(got, np.where(mask, dense, 0.0) @ b, rtol=1e-12, atol=1e-14)
    # the transposed matrix keeps the (swapped) ranges
    w = RNG.standard_normal((300, 1))
    np.testing.assert_allclose(
        np.asarray(K.t() @ to(w)), np.where(mask, dense, 0.0).T @ w, rtol=1e-12, atol=1e-14
    )


def test_cluster_helpers_against_brute_force() -> None:
    x = RNG.random((200, 3)) * np.array([1.0, 2.0, 0.5])
    labels = grid_cluster(x, 0.25)
    cells = np.floor((x - x.min(0)) / 0.25).astype(int)
    same_cell = (cells[:, None] == cells[None]).all(-1)
    np.testing.assert_array_equal(labels[:, None] == labels[None], same_cell)
    _, first = np.unique(cells, axis=0, return_index=True)  # labels follow the cells' lexicographic order
    np.testing.assert_array_equal(labels[first], np.arange(len(first)))
    ranges, centroids, weights = cluster_ranges_centroids(x, labels)
    xs, ls = sort_clusters(x, labels)
    for c in range(len(first)):
        members = x[labels == c]
        np.testing.assert_allclose(centroids[c], members.mean(0), rtol=1e-13)
        assert weights[c] == len(members)
        np.testing.assert_array_equal(ls[ranges[c, 0] : ranges[c, 1]], c)
        np.testing.assert_allclose(np.sort(xs[ranges[c, 0] : ranges[c, 1]], 0), np.sort(members, 0))


# -- complex LazyTensors ------------------------------------------------------------------------


def test_complex_lazytensors_on_numpy() -> None:
    xc = RNG.standard_normal((8, 1, 2)) + 1j * RNG.standard_normal((8, 1, 2))
    yc = RNG.standard_normal((1, 6, 2)) + 1j * RNG.standard_normal((1, 6, 2))
    x, y = LazyTensor(xc), LazyTensor(yc)
    assert isinstance(x, ComplexLazyTensor)
    K = ((x * y) * y.real + x / (y + 2.0) + x.real - 0.5j * y.conj()).exp() * (1j * x.angle())
    dense = np.exp((xc * yc) * yc.real + xc / (yc + 2.0) + xc.real - 0.5j * np.conj(yc)) * (1j * np.angle(xc))
    np.testing.assert_allclose(K.sum(dim=1), dense.sum(1), rtol=1e-12)
    np.testing.assert_allclose(K.sum(axis=2).sum(dim=0), dense.sum(2).sum(0)[:, None], rtol=1e-12)
    np.testing.assert_allclose(abs(K).sum(dim=1), np.abs(dense).sum(1), rtol=1e-12)
    np.testing.assert_allclose(K.imag.sum(dim=0), dense.imag.sum(0), rtol=1e-12)


def test_complex_lazytensors_on_torch_with_gradients() -> None:
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 30, 1, dtype=torch.complex128, generator=g, requires_grad=True)
    p = torch.rand(1, 30, 1, dtype=torch.float64, generator=g)
    f = torch.rand(20, 1, 1, dtype=torch.float64, generator=g)

    def nudft(x: torch.Tensor, p: torch.Tensor, f: torch.Tensor, lazy: bool) -> torch.Tensor:
        if lazy:
            x, p, f = LazyTensor(x), LazyTensor(p), LazyTensor(f)  # type: ignore[assignment]
        return (x * (-2 * np.pi * 1j * p * f).exp()).sum(dim=0)

    got, ref = nudft(x, p, f, True), nudft(x, p, f, False)
    assert got.dtype == torch.complex128 and got.shape == (30, 1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    (g_got,) = torch.autograd.grad(got.abs().pow(2).sum(), x)
    (g_ref,) = torch.autograd.grad(ref.abs().pow(2).sum(), x)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-12, atol=1e-12)
