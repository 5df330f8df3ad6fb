"""Exact K-nearest neighbours of low-dimensional points through block-sparse reductions on a grid.

For points in dimension D <= 3 (or a little more), most pairs are far from the K nearest
ones. The search sorts queries and data by cell of a regular grid (one block of rows or
columns per occupied cell, :mod:`lazymat.block_sparse`) and runs two block-sparse K-min
reductions:

1. each query cell I visits the cube of (2R + 1)^D cells around it, R >= 1 the smallest
   radius whose cells hold at least K data points (cell counts only, no distance);
   the K-th smallest squared distance found there bounds the true one from above, and
   r_I^2 is the largest such bound over the queries of the cell;
2. each query cell visits every cell whose box lies within r_I of its own box (with a
   relative margin of 1e-4 for rounding), which holds all the K nearest neighbours of
   each of its queries: the result is the exact brute-force one, in distances.

Within a row, entries are re-sorted by (value, original index). Which of several data
points at exactly the K-th distance is kept depends on the sort by cells, so the caller
asks for one neighbour more than it needs and recomputes by brute force the rows where
the K-th and (K+1)-th values tie (:func:`lazymat.ml.neighbors.knn` does), which restores the
brute force's rule, ties by lower index. Cell structures are built on the host with
numpy (O(N + M) memory and work); the reductions run on the points' backend.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

import lazymat
from lazymat.backend import Backend
from lazymat.block_sparse import BlockSparsity

from .points import host

logger = logging.getLogger("lazymat.ml.neighbors_grid")

#: relative margin on the pruning radius (rounding of float32 keys and of the cell coordinates)
MARGIN = 1e-4
#: the widest cube of pass 1 (cells farther out: such a query cell visits every data cell)
MAX_RADIUS = 6


class Grid:
    """Occupied cells of a regular grid: sorted keys, integer coordinates, point order and bounds."""

    def __init__(self, points: np.ndarray, origin: np.ndarray, voxel: float, extent: np.ndarray):
        cells = np.floor((points - origin) / voxel).astype(np.int64)
        keys = np.ravel_multi_index(tuple(cells.T), tuple(int(e) for e in extent))
        self.order = np.argsort(keys, kind="stable")
        self.keys, counts = np.unique(keys[self.order], return_counts=True)
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self.coords = np.stack(np.unravel_index(self.keys, tuple(int(e) for e in extent)), axis=1)
        self.extent = extent

    def lookup(self, coords: np.ndarray) -> np.ndarray:
        """Index of the occupied cell at each row of integer ``coords``, -1 where none."""
        inside = np.all((coords >= 0) & (coords < self.extent), axis=1)
        keys = np.ravel_multi_index(tuple(np.where(inside[:, None], coords, 0).T), tuple(self.extent))
        pos = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        return np.where(inside & (self.keys[pos] == keys), pos, -1)


def _cube(d: int, radius: int) -> np.ndarray:
    return np.array(list(itertools.product(range(-radius, radius + 1), repeat=d)), dtype=np.int64)


def _neighbour_pairs(
    queries: Grid, data: Grid, cells: np.ndarray, offsets: np.ndarray, keep: np.ndarray | None = None
) -> np.ndarray:
    """(query cell, data cell) pairs: each of ``cells`` with the occupied cells at ``offsets``.

    ``keep`` (cells x offsets, boolean) selects the offsets of each cell; all of them if None.
    """
    coords = queries.coords[cells][:, None, :] + offsets[None, :, :]
    rows = np.broadcast_to(cells[:, None], coords.shape[:2])
    if keep is None:
        keep = np.ones(coords.shape[:2], dtype=bool)
    found = data.lookup(coords[keep])
    return np.stack([rows[keep][found >= 0], found[found >= 0]])


def _cube_radii(queries: Grid, data: Grid, k: int) -> np.ndarray:
    """Per query cell, the smallest cube radius R >= 1 whose data cells hold >= k points (0: none does)."""
    d = queries.coords.shape[1]
    counts = np.diff(data.bounds)
    radius = np.zeros(queries.keys.size, dtype=np.int64)
    todo = np.arange(queries.keys.size)
    for r in range(1, MAX_RADIUS + 1):
        if todo.size == 0:
            break
        rows, cols = _neighbour_pairs(queries, data, todo, _cube(d, r))
        held = np.bincount(rows, weights=counts[cols], minlength=queries.keys.size)[todo]
        radius[todo[held >= k]] = r
        todo = todo[held < k]
    return radius


def _pass1_pairs(queries: Grid, data: Grid, radius: np.ndarray) -> np.ndarray:
    d = queries.coords.shape[1]
    pairs = [np.zeros((2, 0), dtype=np.int64)]
    for r in np.unique(radius[radius > 0]):
        pairs.append(_neighbour_pairs(queries, data, np.flatnonzero(radius == r), _cube(d, int(r))))
    pairs.append(_all_cells(np.flatnonzero(radius == 0), data.keys.size))
    return np.concatenate(pairs, axis=1)


def _all_cells(cells: np.ndarray, n_data: int) -> np.ndarray:
    return np.stack([np.repeat(cells, n_data), np.tile(np.arange(n_data), cells.size)])


def _pass2_pairs(queries: Grid, data: Grid, reach: np.ndarray) -> np.ndarray:
    """Pairs of cells whose boxes lie within ``reach`` (per query cell, in cell widths) of each other."""
    d = queries.coords.shape[1]
    span = np.ceil(reach).astype(np.int64) + 1
    pairs = [np.zeros((2, 0), dtype=np.int64)]
    for s in np.unique(span):
        cells = np.flatnonzero(span == s)
        if s > MAX_RADIUS + 1:
            pairs.append(_all_cells(cells, data.keys.size))
            continue
        offsets = _cube(d, int(s))
        gap = np.sqrt((np.maximum(np.abs(offsets) - 1, 0) ** 2).sum(axis=1))  # box-to-box, exact
        pairs.append(_neighbour_pairs(queries, data, cells, offsets, gap[None, :] <= reach[cells][:, None]))
    return np.concatenate(pairs, axis=1)


def grid_kmin(px: Any, py: Any, k: int, backend: Backend, voxel: float | None = None) -> tuple[Any, Any]:
    """(squared distances, indices) of the ``k`` nearest of the points ``py`` to each of ``px``.

    Rows sorted by (distance, index); exact in the set of distances (see the module docstring).
    """
    xp = backend.namespace(px)
    hx, hy = host(px).astype(np.float64), host(py).astype(np.float64)
    dim = hx.shape[1]
    lo = np.minimum(hx.min(axis=0), hy.min(axis=0))
    hi = np.maximum(hx.max(axis=0), hy.max(axis=0))
    if voxel is None:
        volume = float(np.prod(np.maximum(hi - lo, 1e-12)))
        voxel = (volume * max(k, 8) / hy.shape[0]) ** (1.0 / dim)
    extent = np.floor((hi - lo) / voxel).astype(np.int64) + 1
    if float(np.prod(extent.astype(np.float64))) >= 2.0**62:
        raise ValueError(f"voxel {voxel} is too small for the extent of the points: choose a larger one")
    queries, data = Grid(hx, lo, voxel, extent), Grid(hy, lo, voxel, extent)
    device = backend.device(px)
    qperm = backend.from_numpy(queries.order, device)
    dperm = backend.from_numpy(data.order, device)
    xs, ys = xp.take(px, qperm, axis=0), xp.take(py, dperm, axis=0)
    d2 = lazymat.Vi(xs).sqdist(lazymat.Vj(ys))

    first = _pass1_pairs(queries, data, _cube_radii(queries, data, k))
    ranges = BlockSparsity.from_block_pairs(queries.bounds, data.bounds, first[0], first[1])
    bound = host(d2.Kmin(k, axis=1, ranges=ranges)[:, -1]).astype(np.float64)
    cell_bound = np.maximum.reduceat(bound, queries.bounds[:-1])
    reach = np.sqrt(cell_bound) * (1 + MARGIN) / voxel + 1e-9
    second = _pass2_pairs(queries, data, reach)
    ranges = BlockSparsity.from_block_pairs(queries.bounds, data.bounds, second[0], second[1])
    logger.debug(
        "grid k-NN: %d query cells, %d data cells, voxel %.3g, pass-2 density %.2e",
        queries.keys.size,
        data.keys.size,
        voxel,
        ranges.density(),
    )
    values, idx = d2.Kmin_argKmin(k, axis=1, ranges=ranges)
    idx = xp.take(dperm, xp.reshape(idx, (-1,)), axis=0)
    idx = xp.reshape(idx, values.shape)
    back = backend.from_numpy(np.argsort(queries.order), device)
    values, idx = xp.take(values, back, axis=0), xp.take(idx, back, axis=0)
    by_index = xp.argsort(idx, axis=1, stable=True)
    values, idx = xp.take_along_axis(values, by_index, axis=1), xp.take_along_axis(idx, by_index, axis=1)
    by_value = xp.argsort(values, axis=1, stable=True)
    return xp.take_along_axis(values, by_value, axis=1), xp.take_along_axis(idx, by_value, axis=1)
