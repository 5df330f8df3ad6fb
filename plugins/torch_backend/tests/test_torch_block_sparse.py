"""torch-tiled on block-sparse reductions of a realistic structure vs dense masked float64.

A few thousand points clustered on a grid, sorted by cluster, with the block pairs whose
centroids are close: hundreds of blocks, most i-blocks visiting several column intervals
(gathered tiles, groups of i-blocks with masks). A small tile budget also splits the
groups into several row and column tiles.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import lazymat as lm
from lazymat.block_sparse import BlockSparsity, cluster_centroids, grid_cluster, mask_from_cost, sort_clusters

SIGMA2 = 0.02


def _clustered(rng: np.random.Generator, n: int) -> tuple[np.ndarray, tuple[int, ...]]:
    x = rng.random((n, 2))
    perm, bounds = sort_clusters(grid_cluster(x, 0.08))
    return x[perm], bounds


RNG = np.random.default_rng(11)
X, X_BOUNDS = _clustered(RNG, 2600)
Y, Y_BOUNDS = _clustered(RNG, 2100)
B = RNG.standard_normal((2100, 2))
CX, CY = cluster_centroids(X, X_BOUNDS)[0], cluster_centroids(Y, Y_BOUNDS)[0]
SPARSITY = BlockSparsity.from_mask(
    X_BOUNDS, Y_BOUNDS, mask_from_cost(((CX[:, None] - CY[None]) ** 2).sum(-1), 0.03)
)
MASK = SPARSITY.dense_mask()
D2 = ((X[:, None] - Y[None]) ** 2).sum(-1)  # dense float64 reference (test data only)
TILE_BUDGETS = [None, 2**18]  # the default, and one that splits groups of blocks into several tiles


def _run(fn, budget):  # type: ignore[no-untyped-def]
    with lm.config(engine="torch-tiled", **({} if budget is None else {"tile_bytes": budget})):
        return fn()


def _masked(values: np.ndarray, fill: float, axis: int) -> np.ndarray:
    out = np.where(MASK, values, fill)
    return out if axis == 1 else out.T


def test_structure_is_many_blocks_and_sparse() -> None:
    iv = SPARSITY.intervals
    assert len(X_BOUNDS) > 100 and len(Y_BOUNDS) > 100
    assert 0.02 < SPARSITY.density() < 0.3
    assert np.mean(np.diff(iv.offsets) > 1) > 0.5, "most i-blocks visit several column intervals"


@pytest.mark.parametrize("budget", TILE_BUDGETS)
@pytest.mark.parametrize("axis", [0, 1])
def test_kernel_product_and_lse(axis: int, budget: int | None) -> None:
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    b = torch.from_numpy(B if axis == 1 else RNG.standard_normal((2600, 2)))
    F = -lm.Vi(x).sqdist(lm.Vj(y)) / SIGMA2
    weights = lm.Vj(b) if axis == 1 else lm.Vi(b)
    s = _run(lambda: (F.exp() * weights).sum(axis=axis, ranges=SPARSITY), budget)
    ref = _masked(np.exp(-D2 / SIGMA2), 0.0, axis) @ b.numpy()
    np.testing.assert_allclose(s.numpy(), ref, rtol=1e-10, atol=1e-12)
    lse = _run(lambda: F.logsumexp(axis=axis, ranges=SPARSITY), budget)
    with np.errstate(divide="ignore"):
        ref_lse = logsumexp(_masked(-D2 / SIGMA2, -np.inf, axis), axis=1)
    np.testing.assert_allclose(lse.numpy()[:, 0], ref_lse, rtol=1e-12)


@pytest.mark.parametrize("budget", TILE_BUDGETS)
def test_min_and_kmin(budget: int | None) -> None:
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    F = lm.Vi(x).sqdist(lm.Vj(y))
    ref = _masked(D2, np.inf, 1)
    v, i = _run(lambda: F.min_argmin(axis=1, ranges=SPARSITY), budget)
    np.testing.assert_array_equal(v.numpy()[:, 0], ref.min(1))
    visited = np.isfinite(ref).any(1)
    np.testing.assert_array_equal(i.numpy()[visited, 0], ref.argmin(1)[visited])
    assert np.all(i.numpy()[~visited] == -1)
    kv, ki = _run(lambda: F.Kmin_argKmin(5, axis=1, ranges=SPARSITY), budget)
    np.testing.assert_array_equal(kv.numpy(), np.sort(ref, 1)[:, :5])
    finite = np.isfinite(kv.numpy())
    np.testing.assert_array_equal(ki.numpy()[finite], np.argsort(ref, 1, kind="stable")[:, :5][finite])
    assert np.all(ki.numpy()[~finite] == -1)


def test_gradient_of_kernel_product() -> None:
    """torch autograd through a block-sparse sum: d/dx and d/dy of sum_ij g_i K_ij b_j, masked."""
    x = torch.from_numpy(X).requires_grad_(True)
    y = torch.from_numpy(Y).requires_grad_(True)
    g = RNG.standard_normal((2600, 2))
    K = (-lm.Vi(x).sqdist(lm.Vj(y)) / SIGMA2).exp() * lm.Vj(torch.from_numpy(B))
    out = _run(lambda: K.sum(axis=1, ranges=SPARSITY), None)
    gx, gy = torch.autograd.grad(out, [x, y], torch.from_numpy(g))
    k = np.where(MASK, np.exp(-D2 / SIGMA2), 0.0) * (g @ B.T)  # g_i . b_j K_ij
    w = k[:, :, None] * (-2 / SIGMA2) * (X[:, None] - Y[None])
    scale = np.abs(w.sum(1)).max()
    np.testing.assert_allclose(gx.numpy(), w.sum(1), rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(gy.numpy(), -w.sum(0), rtol=1e-10, atol=1e-12 * scale)


def test_nan_on_a_skipped_pair_does_not_leak() -> None:
    """A NaN point poisons the rows that visit it, not the other rows tiled with them."""
    y = Y.copy()
    y[Y_BOUNDS[40] + 1] = np.nan
    F = -lm.Vi(torch.from_numpy(X)).sqdist(lm.Vj(torch.from_numpy(y))) / SIGMA2
    lse = _run(lambda: F.logsumexp(axis=1, ranges=SPARSITY), None).numpy()[:, 0]
    d2 = ((X[:, None] - y[None]) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = logsumexp(np.where(MASK, -d2 / SIGMA2, -np.inf), axis=1)
    assert 0 < np.isnan(ref).sum() < len(ref) / 4
    np.testing.assert_allclose(lse, ref, rtol=1e-12)  # NaN exactly where the reference has NaN
