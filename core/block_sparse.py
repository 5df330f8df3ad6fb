"""Block-sparse reductions: restrict a reduction to chosen (i-block, j-block) pairs.

Points are sorted so that each cluster is a contiguous block of rows; a
:class:`BlockSparsity` then lists, for each i-block, the j-blocks it interacts with
(KeOps calls this ``ranges``). A reduction with a block-sparsity visits only those
pairs: entries outside them count as absent (0 for a sum, -inf for a log-sum-exp, +inf
for a min). Gradients keep the same sparsity (the j-side gradient uses the transposed
structure), so a block-sparse reduction is exactly the dense reduction of the masked
matrix, up to summation order.

The helpers build the structure on the host with numpy (cluster labels, sorting, block
masks): they are not traceable by jax.jit, and are meant to run once per problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

#: block boundaries: a sequence of ints or an int array, starting at 0, increasing
Bounds = Sequence[int] | np.ndarray


@dataclass(frozen=True, eq=False)
class BlockIntervals:
    """A :class:`BlockSparsity` as arrays: i-block ``b`` is rows ``i_bounds[b]:i_bounds[b+1]``
    and visits the columns ``j_starts[k]:j_ends[k]`` for ``k`` in ``offsets[b]:offsets[b+1]``."""

    i_bounds: np.ndarray
    offsets: np.ndarray
    j_starts: np.ndarray
    j_ends: np.ndarray


class BlockSparsity:
    """Block boundaries on both sides and, per i-block, the sorted j-blocks it visits.

    Stored as arrays in compressed rows: the j-blocks of i-block ``b`` are
    ``blocks[offsets[b]:offsets[b+1]]``, so that structures of millions of block pairs
    (multiscale Sinkhorn at N = 10^6) build in vectorised numpy. Immutable, compared and
    hashed by content, so that it can sit in a :class:`~lazymat.request.ReductionSpec`.
    ``BlockSparsity(i_bounds, j_bounds, pairs)`` takes the j-blocks of each i-block as
    nested sequences; :meth:`from_block_pairs` and :meth:`from_mask` take arrays.
    """

    def __init__(self, i_bounds: Bounds, j_bounds: Bounds, pairs: Sequence[Sequence[int]]):
        rows = [np.asarray(row, dtype=np.int64).reshape(-1) for row in pairs]
        offsets = np.cumsum([0, *(len(row) for row in rows)], dtype=np.int64)
        blocks = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self._set(i_bounds, j_bounds, offsets, blocks.astype(np.int64))

    @classmethod
    def from_block_pairs(
        cls, i_bounds: Bounds, j_bounds: Bounds, block_i: Any, block_j: Any
    ) -> BlockSparsity:
        """From arrays of (i-block, j-block) pairs in any order; duplicates are refused."""
        bi = np.asarray(block_i, dtype=np.int64).reshape(-1)
        bj = np.asarray(block_j, dtype=np.int64).reshape(-1)
        if bi.shape != bj.shape:
            raise ValueError(f"block_i and block_j differ in length: {bi.shape[0]} and {bj.shape[0]}")
        n_i = len(i_bounds) - 1
        if bi.size and (bi.min() < 0 or bi.max() >= n_i):
            raise ValueError(f"i-block indices must lie in [0, {n_i}), got {bi.min()}..{bi.max()}")
        step_i, step_j = np.diff(bi), np.diff(bj)
        if not np.all((step_i > 0) | ((step_i == 0) & (step_j > 0))):  # sorted pairs skip the sort
            order = np.lexsort((bj, bi))
            bi, bj = bi[order], bj[order]
        else:
            bj = bj.copy()  # frozen below: not the caller's array
        self = cls.__new__(cls)
        offsets = np.searchsorted(bi, np.arange(n_i + 1))
        self._set(i_bounds, j_bounds, offsets, bj)
        return self

    @classmethod
    def from_mask(cls, i_bounds: Bounds, j_bounds: Bounds, mask: Any) -> BlockSparsity:
        """From a boolean cluster matrix: ``mask[I, J]`` says whether blocks I and J interact."""
        mask = np.asarray(mask, dtype=bool)
        expected = (len(i_bounds) - 1, len(j_bounds) - 1)
        if mask.shape != expected:
            raise ValueError(f"cluster mask of shape {mask.shape}, expected {expected} (i-blocks, j-blocks)")
        bi, bj = np.nonzero(mask)
        return cls.from_block_pairs(i_bounds, j_bounds, bi, bj)

    def _set(self, i_bounds: Any, j_bounds: Any, offsets: np.ndarray, blocks: np.ndarray) -> None:
        bounds = []
        for name, b in (("i_bounds", i_bounds), ("j_bounds", j_bounds)):
            arr = np.array(b, dtype=np.int64).reshape(-1)  # a copy: frozen below
            if arr.size < 2 or arr[0] != 0 or np.any(np.diff(arr) <= 0):
                raise ValueError(f"{name} must start at 0 and increase strictly, got {arr[:8].tolist()}...")
            bounds.append(arr)
        n_i, n_j = bounds[0].size - 1, bounds[1].size - 1
        if offsets.size != n_i + 1:
            raise ValueError(f"pairs lists the j-blocks of {offsets.size - 1} i-blocks, expected {n_i}")
        if blocks.size and (blocks.min() < 0 or blocks.max() >= n_j):
            raise ValueError(f"j-block indices must lie in [0, {n_j}), got {blocks.min()}..{blocks.max()}")
        unsorted = np.flatnonzero((np.diff(blocks, prepend=-1) <= 0) & ~_row_starts(offsets, blocks.size))
        if unsorted.size:
            bad = int(np.searchsorted(offsets, unsorted[0], "right")) - 1
            row = blocks[offsets[bad] : offsets[bad + 1]].tolist()
            raise ValueError(f"the j-blocks of i-block {bad} must be sorted, distinct, got {row[:16]}")
        for arr in (*bounds, offsets, blocks):
            arr.flags.writeable = False
        self.i_bounds, self.j_bounds = bounds
        self.offsets, self.blocks = offsets, blocks

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle the four arrays (the cached hash and transpose are per process)."""
        return _rebuild, (self.i_bounds, self.j_bounds, self.offsets, self.blocks)

    def submatrix(self, rows: tuple[int, int], cols: tuple[int, int]) -> BlockSparsity:
        """The structure of the block ``[rows[0]:rows[1], cols[0]:cols[1]]`` of the matrix.

        Blocks that cross the edges are clipped, those outside dropped; an engine that splits
        a block-sparse request in tiles gives each tile this structure.
        """
        (i0, i1), (j0, j1) = rows, cols
        n, m = self.shape
        if not (0 <= i0 < i1 <= n and 0 <= j0 < j1 <= m):
            raise ValueError(f"block rows {rows}, columns {cols} outside a {n} x {m} structure")
        first_i = int(np.searchsorted(self.i_bounds, i0, "right")) - 1
        last_i = int(np.searchsorted(self.i_bounds, i1, "left"))
        first_j = int(np.searchsorted(self.j_bounds, j0, "right")) - 1
        last_j = int(np.searchsorted(self.j_bounds, j1, "left"))
        i_bounds = np.clip(self.i_bounds[first_i : last_i + 1], i0, i1) - i0
        j_bounds = np.clip(self.j_bounds[first_j : last_j + 1], j0, j1) - j0
        row_of = np.repeat(np.arange(self.n_blocks[0]), np.diff(self.offsets))
        keep = (row_of >= first_i) & (row_of < last_i) & (self.blocks >= first_j) & (self.blocks < last_j)
        return BlockSparsity.from_block_pairs(
            i_bounds, j_bounds, row_of[keep] - first_i, self.blocks[keep] - first_j
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockSparsity):
            return NotImplemented
        return self is other or all(
            np.array_equal(a, b) for a, b in zip(self._arrays, other._arrays, strict=True)
        )

    def __hash__(self) -> int:
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(tuple(a.tobytes() for a in self._arrays))

    @property
    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.i_bounds, self.j_bounds, self.offsets, self.blocks

    def __repr__(self) -> str:
        return f"BlockSparsity(shape={self.shape}, blocks={self.n_blocks}, pairs={self.n_pairs})"

    @property
    def shape(self) -> tuple[int, int]:
        """(N, M) of the matrices this structure applies to."""
        return int(self.i_bounds[-1]), int(self.j_bounds[-1])

    @property
    def n_blocks(self) -> tuple[int, int]:
        """Numbers of i-blocks and j-blocks."""
        return self.i_bounds.size - 1, self.j_bounds.size - 1

    @property
    def n_pairs(self) -> int:
        return int(self.blocks.size)

    @property
    def pairs(self) -> tuple[tuple[int, ...], ...]:
        """The j-blocks of each i-block, as nested tuples (small structures, tests)."""
        return tuple(
            tuple(self.blocks[a:z].tolist()) for a, z in zip(self.offsets[:-1], self.offsets[1:], strict=True)
        )

    def density(self) -> float:
        """Fraction of the N*M entries that the reduction visits."""
        rows = np.repeat(np.diff(self.i_bounds), np.diff(self.offsets))
        visited = float(np.dot(rows, np.diff(self.j_bounds)[self.blocks]))
        n, m = self.shape
        return visited / (n * m)

    @cached_property
    def intervals(self) -> BlockIntervals:
        """The structure as flat int64 arrays for engines (computed once per structure).

        Runs of consecutive j-blocks are merged into one column interval, so an engine
        loops over few, long, contiguous ranges of j.
        """
        starts = _row_starts(self.offsets, self.blocks.size) | (np.diff(self.blocks, prepend=-2) != 1)
        first = np.flatnonzero(starts)
        last = np.append(first[1:], self.blocks.size) - 1
        offsets = np.concatenate([[0], np.cumsum(starts)])[self.offsets]
        return BlockIntervals(
            self.i_bounds,
            offsets.astype(np.int64, copy=False),
            self.j_bounds[self.blocks[first]],
            self.j_bounds[self.blocks[last] + 1],
        )

    def transpose(self) -> BlockSparsity:
        """The structure of the transposed matrix (for reductions over i and gradients).

        Built once per structure (every reduction over i asks for it) and linked both ways.
        """
        return self._transposed

    @cached_property
    def _transposed(self) -> BlockSparsity:
        rows = np.repeat(np.arange(self.n_blocks[0]), np.diff(self.offsets))
        order = np.argsort(self.blocks, kind="stable")  # rows are sorted: by column, then row
        t = BlockSparsity.from_block_pairs(self.j_bounds, self.i_bounds, self.blocks[order], rows[order])
        t.__dict__["_transposed"] = self
        return t

    def dense_mask(self) -> np.ndarray:
        """The (N, M) boolean mask of visited entries (for tests on small problems)."""
        n, m = self.shape
        mask = np.zeros((n, m), dtype=bool)
        for i, row in enumerate(self.pairs):
            for j in row:
                mask[self.i_bounds[i] : self.i_bounds[i + 1], self.j_bounds[j] : self.j_bounds[j + 1]] = True
        return mask


def _rebuild(i_bounds: Any, j_bounds: Any, offsets: Any, blocks: Any) -> BlockSparsity:
    self = BlockSparsity.__new__(BlockSparsity)
    self._set(i_bounds, j_bounds, np.array(offsets, dtype=np.int64), np.array(blocks, dtype=np.int64))
    return self


def _row_starts(offsets: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask of the entries that begin a row of a compressed-rows array."""
    starts = np.zeros(size, dtype=bool)
    starts[offsets[:-1][offsets[:-1] < size]] = True
    return starts


def grid_cluster(points: Any, voxel: float) -> np.ndarray:
    """Cluster labels of points (N, D) on a regular grid of cell size ``voxel`` (numpy, int64)."""
    if voxel <= 0:
        raise ValueError(f"voxel size must be positive, got {voxel}")
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"grid_cluster expects points of shape (N, D) with N >= 1, got {x.shape}")
    cells = np.floor((x - x.min(axis=0)) / voxel).astype(np.int64)
    extent = cells.max(axis=0) + 1
    if float(np.prod(extent.astype(np.float64))) < 2.0**62:  # one int64 key per cell, in row-major order
        key = np.ravel_multi_index(tuple(cells.T), tuple(int(e) for e in extent))
        _, labels = np.unique(key, return_inverse=True)
    else:
        _, labels = np.unique(cells, axis=0, return_inverse=True)
    return labels.reshape(-1)


def sort_clusters(labels: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """(perm, bounds): ``x[perm]`` puts each cluster in a contiguous block ``bounds[c]:bounds[c+1]``.

    Clusters are numbered 0..C-1 by label order; empty labels are dropped.
    """
    labels = np.asarray(labels).reshape(-1)
    perm = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    bounds = (0, *np.cumsum(counts).tolist())
    return perm, tuple(int(b) for b in bounds)


def cluster_centroids(
    points: Any, bounds: Sequence[int], weights: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted centroids and total weights of contiguous clusters of sorted points."""
    x = np.asarray(points, dtype=np.float64)
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    starts = np.asarray(bounds[:-1])
    mass = np.add.reduceat(w, starts)
    safe = np.where(mass > 0, mass, 1.0)
    centroids = np.add.reduceat(x * w[:, None], starts, axis=0) / safe[:, None]
    return centroids, mass


def mask_from_cost(cost: Any, threshold: float) -> np.ndarray:
    """Cluster mask keeping the block pairs whose cluster-level cost is at most ``threshold``."""
    return np.asarray(cost) <= threshold
