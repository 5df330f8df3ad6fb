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
from itertools import pairwise
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class BlockIntervals:
    """A :class:`BlockSparsity` as arrays: i-block ``b`` is rows ``i_bounds[b]:i_bounds[b+1]``
    and visits the columns ``j_starts[k]:j_ends[k]`` for ``k`` in ``offsets[b]:offsets[b+1]``."""

    i_bounds: np.ndarray
    offsets: np.ndarray
    j_starts: np.ndarray
    j_ends: np.ndarray


@dataclass(frozen=True)
class BlockSparsity:
    """Block boundaries on both sides and, per i-block, the sorted j-blocks it visits."""

    i_bounds: tuple[int, ...]
    j_bounds: tuple[int, ...]
    pairs: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        for name, bounds in (("i_bounds", self.i_bounds), ("j_bounds", self.j_bounds)):
            if len(bounds) < 2 or bounds[0] != 0 or any(b <= a for a, b in pairwise(bounds)):
                raise ValueError(f"{name} must start at 0 and increase strictly, got {bounds[:8]}...")
        if len(self.pairs) != len(self.i_bounds) - 1:
            raise ValueError(
                f"pairs lists the j-blocks of {len(self.pairs)} i-blocks, expected {len(self.i_bounds) - 1}"
            )
        n_j = len(self.j_bounds) - 1
        for row in self.pairs:
            if any(not 0 <= j < n_j for j in row) or list(row) != sorted(set(row)):
                raise ValueError(f"j-block indices must be sorted, distinct and in [0, {n_j}), got {row}")

    @property
    def shape(self) -> tuple[int, int]:
        """(N, M) of the matrices this structure applies to."""
        return self.i_bounds[-1], self.j_bounds[-1]

    @property
    def n_pairs(self) -> int:
        return sum(len(row) for row in self.pairs)

    def density(self) -> float:
        """Fraction of the N*M entries that the reduction visits."""
        iw = np.diff(self.i_bounds)
        jw = np.diff(self.j_bounds)
        visited = sum(int(iw[i]) * int(jw[list(row)].sum()) for i, row in enumerate(self.pairs))
        n, m = self.shape
        return visited / (n * m)

    @cached_property
    def intervals(self) -> BlockIntervals:
        """The structure as flat int64 arrays for engines (computed once per structure).

        Runs of consecutive j-blocks are merged into one column interval, so an engine
        loops over few, long, contiguous ranges of j.
        """
        starts: list[int] = []
        ends: list[int] = []
        offsets = [0]
        for row in self.pairs:
            for j in row:
                if starts and offsets[-1] < len(starts) and ends[-1] == self.j_bounds[j]:
                    ends[-1] = self.j_bounds[j + 1]
                else:
                    starts.append(self.j_bounds[j])
                    ends.append(self.j_bounds[j + 1])
            offsets.append(len(starts))
        return BlockIntervals(
            np.asarray(self.i_bounds, dtype=np.int64),
            np.asarray(offsets, dtype=np.int64),
            np.asarray(starts, dtype=np.int64),
            np.asarray(ends, dtype=np.int64),
        )

    def transpose(self) -> BlockSparsity:
        """The structure of the transposed matrix (for reductions over i)."""
        rows: list[list[int]] = [[] for _ in range(len(self.j_bounds) - 1)]
        for i, row in enumerate(self.pairs):
            for j in row:
                rows[j].append(i)
        return BlockSparsity(self.j_bounds, self.i_bounds, tuple(tuple(r) for r in rows))

    def dense_mask(self) -> np.ndarray:
        """The (N, M) boolean mask of visited entries (for tests on small problems)."""
        n, m = self.shape
        mask = np.zeros((n, m), dtype=bool)
        for i, row in enumerate(self.pairs):
            for j in row:
                mask[self.i_bounds[i] : self.i_bounds[i + 1], self.j_bounds[j] : self.j_bounds[j + 1]] = True
        return mask

    @classmethod
    def from_mask(cls, i_bounds: Sequence[int], j_bounds: Sequence[int], mask: Any) -> BlockSparsity:
        """From a boolean cluster matrix: ``mask[I, J]`` says whether blocks I and J interact."""
        mask = np.asarray(mask, dtype=bool)
        expected = (len(i_bounds) - 1, len(j_bounds) - 1)
        if mask.shape != expected:
            raise ValueError(f"cluster mask of shape {mask.shape}, expected {expected} (i-blocks, j-blocks)")
        pairs = tuple(tuple(int(j) for j in np.flatnonzero(row)) for row in mask)
        return cls(tuple(int(b) for b in i_bounds), tuple(int(b) for b in j_bounds), pairs)


def grid_cluster(points: Any, voxel: float) -> np.ndarray:
    """Cluster labels of points (N, D) on a regular grid of cell size ``voxel`` (numpy, int64)."""
    if voxel <= 0:
        raise ValueError(f"voxel size must be positive, got {voxel}")
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"grid_cluster expects points of shape (N, D) with N >= 1, got {x.shape}")
    cells = np.floor((x - x.min(axis=0)) / voxel).astype(np.int64)
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
