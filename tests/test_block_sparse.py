"""Block-sparse reductions equal the dense reduction of the masked matrix (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

import lazymat as lm
from lazymat.block_sparse import (
    BlockSparsity,
    cluster_centroids,
    grid_cluster,
    mask_from_cost,
    sort_clusters,
)

RNG = np.random.default_rng(0)
X = RNG.random((57, 2))
Y = RNG.random((43, 2))
SPARSITY = BlockSparsity((0, 10, 30, 41, 57), (0, 5, 25, 43), ((0, 2), (), (1,), (0, 1, 2)))
MASK = SPARSITY.dense_mask()
D = ((X[:, None] - Y[None]) ** 2).sum(-1) / 0.1


def masked(fill: float, axis: int) -> np.ndarray:
    m = np.where(MASK, -D, fill)
    return m if axis == 1 else m.T


@pytest.mark.parametrize("axis", [0, 1])
def test_sum_lse_min_match_masked_dense(axis: int) -> None:
    F = -lm.Vi(X).sqdist(lm.Vj(Y)) / 0.1
    s = F.exp().sum(axis=axis, ranges=SPARSITY)[:, 0]
    np.testing.assert_allclose(s, np.exp(masked(-np.inf, axis)).sum(1), rtol=1e-12, atol=1e-300)
    lse = F.logsumexp(axis=axis, ranges=SPARSITY)[:, 0]
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(lse, logsumexp(masked(-np.inf, axis), axis=1), rtol=1e-12)
    v, i = F.max_argmax(axis=axis, ranges=SPARSITY)
    ref = masked(-np.inf, axis)
    # equal to rounding: a compiled engine may fuse the formula's multiply-adds (FMA)
    np.testing.assert_allclose(v[:, 0], ref.max(1), rtol=1e-14)
    visited = np.isfinite(ref).any(1)
    np.testing.assert_array_equal(i[visited, 0], ref.argmax(1)[visited])
    assert np.all(i[~visited] == -1), "rows that visit no block report index -1"


def test_kmin_matches_masked_dense() -> None:
    F = lm.Vi(X).sqdist(lm.Vj(Y)) / 0.1
    v, i = F.Kmin_argKmin(4, axis=1, ranges=SPARSITY)
    ref = np.where(MASK, D, np.inf)
    np.testing.assert_allclose(v, np.sort(ref, 1)[:, :4], rtol=1e-14)  # to rounding, as above
    order = np.argsort(ref, 1, kind="stable")[:, :4]
    finite = np.isfinite(v)
    np.testing.assert_array_equal(i[finite], order[finite])
    assert np.all(i[~finite] == -1)


@pytest.mark.parametrize("reduction", ["sum", "lse"])
def test_gradients_respect_the_sparsity(reduction: str) -> None:
    K = (-lm.Vi(X).sqdist(lm.Vj(Y)) / 0.1).exp() if reduction == "sum" else -lm.Vi(X).sqdist(lm.Vj(Y)) / 0.1
    g = RNG.random((57, 1))
    gx, gy = lm.vjp(K, g, reduction=reduction, wrt=[X, Y], ranges=SPARSITY)
    k = np.where(MASK, np.exp(-D), 0.0)
    if reduction == "lse":  # softmax weights of each row
        k = k / np.maximum(k.sum(1, keepdims=True), 1e-300)
    w = (g * k)[:, :, None] * (-2 / 0.1) * (X[:, None] - Y[None])
    np.testing.assert_allclose(gx, w.sum(1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gy, -w.sum(0), rtol=1e-10, atol=1e-12)


def test_grid_cluster_labels_cells_in_row_major_order() -> None:
    """One label per occupied cell, numbered in the cells' lexicographic order (what
    numpy's unique over rows gives), whatever the cell keys' encoding."""
    pts = np.random.default_rng(3).normal(size=(2000, 3)) * [1.0, 5.0, 0.2]
    labels = grid_cluster(pts, 0.37)
    cells = np.floor((pts - pts.min(axis=0)) / 0.37).astype(np.int64)
    _, expected = np.unique(cells, axis=0, return_inverse=True)
    np.testing.assert_array_equal(labels, expected.reshape(-1))


def test_structure_helpers() -> None:
    pts = np.array([[0.1, 0.1], [0.8, 0.8], [0.15, 0.12], [0.85, 0.82], [0.5, 0.5]])
    labels = grid_cluster(pts, 0.3)
    assert labels[0] == labels[2] and labels[1] == labels[3] and len(set(labels.tolist())) == 3
    perm, bounds = sort_clusters(labels)
    assert bounds[-1] == 5 and len(bounds) == 4
    sorted_labels = labels[perm]
    for c in range(3):
        assert len(set(sorted_labels[bounds[c] : bounds[c + 1]].tolist())) == 1
    cent, mass = cluster_centroids(pts[perm], bounds)
    for c in range(3):
        np.testing.assert_allclose(cent[c], pts[perm][bounds[c] : bounds[c + 1]].mean(0))
    np.testing.assert_array_equal(mass, np.diff(bounds))
    cost = ((cent[:, None] - cent[None]) ** 2).sum(-1)
    bs = BlockSparsity.from_mask(bounds, bounds, mask_from_cost(cost, 0.1))
    assert bs.pairs == tuple((c,) for c in range(3))  # only each cluster with itself
    assert bs.transpose().transpose() == bs
    assert 0 < bs.density() < 1


def test_bad_structures_are_refused() -> None:
    with pytest.raises(ValueError, match="increase strictly"):
        BlockSparsity((0, 5, 5), (0, 3), ((0,), (0,)))
    with pytest.raises(ValueError, match="sorted, distinct"):
        BlockSparsity((0, 5), (0, 3, 6), ((1, 0),))
    with pytest.raises(ValueError, match="cluster mask of shape"):
        BlockSparsity.from_mask((0, 5), (0, 3), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"applied to a \(57, 43\)"):
        lm.Vi(X).sqdist(lm.Vj(Y)).sum(axis=1, ranges=BlockSparsity((0, 10), (0, 5), ((0,),)))
    with pytest.raises(ValueError, match="voxel size must be positive"):
        grid_cluster(X, 0.0)


def test_intervals_merge_consecutive_blocks_and_cover_the_mask() -> None:
    iv = SPARSITY.intervals
    assert iv.offsets.tolist() == [0, 2, 2, 3, 4]  # (0, 2) stays two intervals; (0, 1, 2) is one
    mask = np.zeros(SPARSITY.shape, dtype=bool)
    for b in range(len(iv.i_bounds) - 1):
        for k in range(iv.offsets[b], iv.offsets[b + 1]):
            mask[iv.i_bounds[b] : iv.i_bounds[b + 1], iv.j_starts[k] : iv.j_ends[k]] = True
    np.testing.assert_array_equal(mask, MASK)
    assert SPARSITY.intervals is iv, "computed once per structure"


def test_array_constructors_agree_with_nested_pairs() -> None:
    rng = np.random.default_rng(5)
    mask = rng.random((30, 40)) < 0.3
    mask[3] = False  # an i-block with no pair
    i_bounds = np.cumsum([0, *rng.integers(1, 5, 30)])
    j_bounds = np.cumsum([0, *rng.integers(1, 5, 40)])
    nested = BlockSparsity(i_bounds, j_bounds, [np.flatnonzero(row) for row in mask])
    bi, bj = np.nonzero(mask)
    shuffled = rng.permutation(bi.size)
    from_pairs = BlockSparsity.from_block_pairs(i_bounds, j_bounds, bi[shuffled], bj[shuffled])
    assert from_pairs == nested and hash(from_pairs) == hash(nested)
    assert BlockSparsity.from_mask(i_bounds, j_bounds, mask) == nested
    assert nested.transpose() == BlockSparsity.from_mask(j_bounds, i_bounds, mask.T)
    assert nested.transpose().transpose() == nested
    np.testing.assert_array_equal(nested.transpose().dense_mask(), nested.dense_mask().T)
    assert nested.density() == nested.dense_mask().mean()
    with pytest.raises(ValueError, match="sorted, distinct"):
        BlockSparsity.from_block_pairs((0, 2, 4), (0, 1, 2), [0, 0], [1, 1])
    with pytest.raises(ValueError, match=r"i-block indices must lie in \[0, 2\)"):
        BlockSparsity.from_block_pairs((0, 2, 4), (0, 1, 2), [2], [0])
