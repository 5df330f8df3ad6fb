"""KeOps' cluster helpers (``pykeops.torch.cluster``, ``pykeops.numpy.cluster``) and its
block-sparsity ``ranges`` read as a :class:`~lazymat.block_sparse.BlockSparsity`.

The helpers take and return arrays of the caller's library (numpy or torch, on its device);
they compute on the host with numpy, once per problem, as lazymat's own
:mod:`lazymat.block_sparse` helpers do. Labels and ranges are int64.

KeOps' ``ranges`` is a 6-tuple ``(ranges_i, slices_i, redranges_j, ranges_j, slices_j,
redranges_i)``: for a reduction over j, i-cluster k (rows ``ranges_i[k, 0]:ranges_i[k, 1]``)
visits the column intervals ``redranges_j[l]`` for ``l`` in ``slices_i[k-1]:slices_i[k]``
(the last three describe the transposed problem). :func:`block_sparsity` cuts rows and
columns at every interval end, which gives lazymat's block boundaries, and lists the block
pairs; rows outside every cluster visit nothing (a sum gives 0 there, as in KeOps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lazymat.block_sparse import BlockSparsity
from lazymat.block_sparse import grid_cluster as _grid_cluster
from lazymat.plugin_manager import get_registry

__all__ = [
    "block_sparsity",
    "cluster_centroids",
    "cluster_ranges",
    "cluster_ranges_centroids",
    "from_matrix",
    "grid_cluster",
    "sort_clusters",
    "swap_axes",
]


def _host(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return np.asarray(get_registry().backend_for(a).to_numpy(a))


def _like(a: np.ndarray, like: Any) -> Any:
    """``a`` as an array of ``like``'s library, on its device."""
    if isinstance(like, np.ndarray):
        return a
    backend = get_registry().backend_for(like)
    return backend.from_numpy(np.ascontiguousarray(a), device=backend.device(like))


def grid_cluster(x: Any, size: Any) -> Any:
    """Labels 0..C-1 of the cubic cells of side ``size`` holding the points x (M, D), in the
    lexicographic order of the cells (KeOps' order)."""
    size_host = np.asarray(_host(size) if not isinstance(size, (int, float)) else size, dtype=np.float64)
    points = _host(x).astype(np.float64) / size_host  # a (D,) size gives anisotropic cells
    return _like(_grid_cluster(points, 1.0).astype(np.int64), x)


def sort_clusters(x: Any, lab: Any) -> tuple[Any, Any]:
    """x (an array or a tuple/list of arrays) and the labels, sorted by label (stable)."""
    order = np.argsort(_host(lab).reshape(-1), kind="stable")
    idx = _like(order, lab)
    sorted_lab = lab[idx]
    if isinstance(x, (tuple, list)):
        return type(x)(a[_like(order, a)] for a in x), sorted_lab
    return x[_like(order, x)], sorted_lab


def _counts(lab: Any, Nlab: Any) -> np.ndarray:
    if Nlab is not None:
        return _host(Nlab).reshape(-1).astype(np.int64)
    return np.bincount(_host(lab).reshape(-1).astype(np.int64))


def cluster_ranges(lab: Any, Nlab: Any = None) -> Any:
    """(C, 2) intervals [start, end) of the clusters once the points are sorted by label."""
    pivots = np.concatenate([[0], np.cumsum(_counts(lab, Nlab))])
    return _like(np.stack([pivots[:-1], pivots[1:]], axis=1).astype(np.int64), lab)


def cluster_centroids(x: Any, lab: Any, Nlab: Any = None, weights: Any = None, weights_c: Any = None) -> Any:
    """(C, D) (weighted) barycenters of the clusters."""
    points = _host(x).astype(np.float64)
    labels = _host(lab).reshape(-1).astype(np.int64)
    n_clusters = len(_counts(lab, Nlab))
    w = np.ones(len(labels)) if weights is None else _host(weights).reshape(-1).astype(np.float64)
    mass = np.bincount(labels, weights=w, minlength=n_clusters)
    if weights_c is not None:
        mass = _host(weights_c).reshape(-1).astype(np.float64)
    sums = np.stack(
        [np.bincount(labels, weights=w * points[:, d], minlength=n_clusters) for d in range(points.shape[1])],
        axis=1,
    )
    centroids = sums / np.where(mass > 0, mass, 1.0)[:, None]
    return _like(centroids.astype(_host(x).dtype), x)


def cluster_ranges_centroids(
    x: Any, lab: Any, weights: Any = None, min_weight: float = 1e-9
) -> tuple[Any, ...]:
    """(ranges, centroids, weights per cluster): what a block-sparse reduction needs."""
    labels = _host(lab).reshape(-1).astype(np.int64)
    w = np.ones(len(labels)) if weights is None else _host(weights).reshape(-1).astype(np.float64)
    mass = np.bincount(labels, weights=w)
    counts = np.bincount(labels)
    centroids = cluster_centroids(
        x, lab, weights=weights, weights_c=None if weights is None else np.maximum(mass, min_weight)
    )
    mass_out = _like(mass.astype(_host(x).dtype), x)
    return cluster_ranges(lab, counts), centroids, mass_out


def swap_axes(ranges: Sequence[Any] | None) -> tuple[Any, ...] | None:
    """The ranges of the transposed problem."""
    return None if ranges is None else (*ranges[3:6], *ranges[0:3])


def from_matrix(ranges_i: Any, ranges_j: Any, keep: Any) -> tuple[Any, ...]:
    """KeOps' 6-tuple of ranges from the cluster intervals and a boolean (C_i, C_j) mask."""
    mask = _host(keep).astype(bool)
    ri, rj = _host(ranges_i).astype(np.int64), _host(ranges_j).astype(np.int64)
    _, bj = np.nonzero(mask)  # row-major: grouped by i-cluster
    _, tj = np.nonzero(mask.T)  # grouped by j-cluster
    out = (
        ri,
        np.cumsum(mask.sum(1)).astype(np.int64),
        rj[bj].reshape(-1, 2),
        rj,
        np.cumsum(mask.sum(0)).astype(np.int64),
        ri[tj].reshape(-1, 2),
    )
    return tuple(_like(a, ranges_i) for a in out)


def _structure(
    ranges: np.ndarray, slices: np.ndarray, redranges: np.ndarray, n: int, m: int
) -> BlockSparsity:
    """One triple (ranges_i, slices_i, redranges_j) of an n x m problem as a BlockSparsity."""
    ranges, redranges = ranges.reshape(-1, 2), redranges.reshape(-1, 2)
    if (ranges.size and (ranges.min() < 0 or ranges.max() > n)) or (
        redranges.size and (redranges.min() < 0 or redranges.max() > m)
    ):
        raise ValueError(f"KeOps ranges outside the {n} x {m} matrix")
    i_bounds = np.unique(np.concatenate([[0, n], ranges.reshape(-1)]))
    j_bounds = np.unique(np.concatenate([[0, m], redranges.reshape(-1)]))
    starts = np.concatenate([[0], slices.reshape(-1)[:-1]]).astype(np.int64)
    pairs_i: list[np.ndarray] = []
    pairs_j: list[np.ndarray] = []
    for k, (r0, r1) in enumerate(ranges):
        if r1 <= r0:
            continue
        blocks_i = np.arange(np.searchsorted(i_bounds, r0), np.searchsorted(i_bounds, r1))
        for s0, s1 in redranges[starts[k] : slices.reshape(-1)[k]]:
            if s1 <= s0:
                continue
            blocks_j = np.arange(np.searchsorted(j_bounds, s0), np.searchsorted(j_bounds, s1))
            pairs_i.append(np.repeat(blocks_i, len(blocks_j)))
            pairs_j.append(np.tile(blocks_j, len(blocks_i)))
    if not pairs_i:
        return BlockSparsity(i_bounds, j_bounds, [[] for _ in range(len(i_bounds) - 1)])
    key = np.unique(np.concatenate(pairs_i) * len(j_bounds) + np.concatenate(pairs_j))
    return BlockSparsity.from_block_pairs(i_bounds, j_bounds, key // len(j_bounds), key % len(j_bounds))


def block_sparsity(ranges: Sequence[Any], n: int, m: int, axis: int) -> BlockSparsity:
    """KeOps' ranges of an n x m matrix (rows i, columns j) as lazymat's structure of that
    matrix, read from the triple that a reduction over ``axis`` uses (1: over j)."""
    if len(ranges) != 6:
        raise ValueError(
            "KeOps ranges are a 6-tuple (ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i), "
            f"got {len(ranges)} arrays"
        )
    parts = [_host(r).astype(np.int64) for r in ranges]
    if axis == 1:
        return _structure(parts[0], parts[1], parts[2], n, m)
    return _structure(parts[3], parts[4], parts[5], m, n).transpose()
