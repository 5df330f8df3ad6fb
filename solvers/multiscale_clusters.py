"""Nested grid clusterings of a point cloud and the kernel truncation between two of them.

Multiscale Sinkhorn (:mod:`.multiscale`) solves the transport problem on coarse
representations of the clouds first. This module builds them on the host, with numpy,
once per problem:

- :func:`cloud_hierarchy` clusters a cloud on grids of voxel sizes s_0 > s_1 > ... with
  ratios powers of 2 and one origin, so that every cell of level k + 1 lies in one cell
  of level k; sorting the points by their cells at every level, coarsest first, makes
  each cluster of every level a contiguous run of points, and the clusters of level
  k + 1 contiguous runs inside their parent of level k. Level L (the last) is the
  points themselves.
- :func:`kept_pairs` is the kernel truncation: the pairs (I, J) of clusters whose plan
  may be non-negligible at temperature eps, from potentials f_I, g_J at the centroids:
  h_IJ = f_I + g_J - C(X_I, Y_J) > -truncate * eps (GeomLoss's test), corrected for the
  clusters' radii r_I, r_J, since h varies over the block I x J. For p = 1, f and g are
  1-Lipschitz (soft-mins of distances) and C too: h grows by at most 2 (r_I + r_J). For
  p = 2, the gradient of h(x, y) = f(x) + g(y) - |x - y|^2 / 2 in x is y - T(x) (T the
  transport map), which near the optimum is about sqrt(-2 h) in size (h is about
  -|y - T(x)|^2 / 2): h grows by about (r_I + r_J) sqrt(-2 h_IJ) over the block.
- :func:`block_structure` turns kept pairs into the :class:`~lazymat.block_sparse.BlockSparsity`
  of the next level (its points grouped by their parent cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lazymat.block_sparse import BlockSparsity, cluster_centroids, grid_cluster


@dataclass(frozen=True)
class Level:
    """One representation of a cloud: ``size`` points (centroids), their weights and radii.

    ``starts`` (size + 1): the point runs of the sorted cloud that each cluster holds;
    ``parents`` (size of the coarser level + 1): the runs of this level's clusters that
    each coarser cluster holds (None for the coarsest level).
    """

    points: np.ndarray
    weights: np.ndarray
    radii: np.ndarray
    starts: np.ndarray
    parents: np.ndarray | None

    @property
    def size(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True)
class CloudHierarchy:
    """``perm`` sorts the cloud by nested clusters; ``levels`` coarsest first, the points last."""

    perm: np.ndarray
    levels: list[Level]


def cloud_hierarchy(x: np.ndarray, w: np.ndarray, scales: list[float]) -> CloudHierarchy:
    """Nested grid clusters of x (N, D) with weights w (N,), voxel sizes ``scales`` (decreasing,
    ratios powers of 2), then the points; see the module docstring."""
    labels = [grid_cluster(x, s) for s in scales]  # one origin (x.min): nested cells
    perm = np.lexsort(tuple(reversed(labels))) if labels else np.arange(x.shape[0])
    xs, ws = x[perm], w[perm]
    n = xs.shape[0]
    levels: list[Level] = []
    previous: np.ndarray | None = None
    for lab in labels:
        sorted_lab = lab[perm]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_lab)) + 1, [n]))
        centroids, mass = cluster_centroids(xs, tuple(starts.tolist()), ws)
        spread = np.sqrt(((xs - np.repeat(centroids, np.diff(starts), axis=0)) ** 2).sum(axis=1))
        radii = np.maximum.reduceat(spread, starts[:-1])
        parents = None if previous is None else np.searchsorted(starts, previous)
        levels.append(Level(centroids, mass, radii, starts, parents))
        previous = starts
    fine_starts = np.arange(n + 1)
    parents = None if previous is None else previous.copy()
    levels.append(Level(xs, ws, np.zeros(n), fine_starts, parents))
    return CloudHierarchy(perm, levels)


def candidate_pairs(
    kept: tuple[np.ndarray, np.ndarray] | None, rows: Level, cols: Level
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j) of ``rows`` x ``cols`` points, or those whose parents are ``kept``.

    Sorted by i, then j.
    """
    if kept is None:
        i, j = np.meshgrid(np.arange(rows.size), np.arange(cols.size), indexing="ij")
        return i.reshape(-1), j.reshape(-1)
    assert rows.parents is not None and cols.parents is not None
    pi, pj = kept
    i0, j0 = rows.parents[pi], cols.parents[pj]
    ni, nj = rows.parents[pi + 1] - i0, cols.parents[pj + 1] - j0
    sizes = ni * nj
    owner = np.repeat(np.arange(sizes.shape[0]), sizes)
    local = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    i = i0[owner] + local // nj[owner]
    j = j0[owner] + local % nj[owner]
    order = np.lexsort((j, i))
    return i[order], j[order]


def kept_pairs(
    rows: Level,
    cols: Level,
    f: np.ndarray,
    g: np.ndarray,
    candidates: tuple[np.ndarray, np.ndarray],
    eps: float,
    truncate: float | None,
    p: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs (i, j) whose plan may matter (module docstring), sorted by i, j.

    Each row's and each column's best pair is always kept, so that no point of the next
    level is left with an empty soft-min. ``truncate=None`` keeps every candidate.
    """
    i, j = candidates
    if truncate is None:
        return i, j
    dist = np.sqrt(((rows.points[i] - cols.points[j]) ** 2).sum(axis=1))
    h = f[i] + g[j] - (dist * dist / 2 if p == 2 else dist)
    widths = rows.radii[i] + cols.radii[j]
    # the exponent's largest value on the block: first-order growth over the clusters' radii
    slack = h + widths * (np.sqrt(2 * np.maximum(-h, 0.0)) if p == 2 else 2.0)
    keep = slack > -truncate * eps
    for side, count in ((i, rows.size), (j, cols.size)):
        best = np.full(count, -np.inf)
        np.maximum.at(best, side, slack)
        keep |= slack >= best[side]
    return i[keep], j[keep]


def block_structure(
    kept: tuple[np.ndarray, np.ndarray], rows: Level, cols: Level | None, n_cols: int | None = None
) -> BlockSparsity:
    """The block-sparsity of the next level's rows x cols from kept pairs of parent clusters.

    ``rows``, ``cols``: the next level (grouped by parent); ``cols=None`` makes every one
    of ``n_cols`` columns its own block (a soft-min over the coarse points themselves).
    """
    i, j = kept
    assert rows.parents is not None
    n_blocks = rows.parents.shape[0] - 1
    splits = np.searchsorted(i, np.arange(1, n_blocks))
    pairs = tuple(tuple(r.tolist()) for r in np.split(j, splits))
    if cols is None:
        assert n_cols is not None
        j_bounds: tuple[int, ...] = tuple(range(n_cols + 1))
    else:
        assert cols.parents is not None
        j_bounds = tuple(cols.parents.tolist())
    return BlockSparsity(tuple(rows.parents.tolist()), j_bounds, pairs)
