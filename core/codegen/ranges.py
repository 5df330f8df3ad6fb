"""A block-sparsity as the generated kernels take it: chunks of rows and their j intervals.

The compiled "ranged" kernels do not depend on the structure: it arrives at run time as
int64 arrays. :class:`~lazymat.block_sparse.BlockIntervals` gives, per i-block, the merged
column intervals ``j_starts[k]:j_ends[k]``; the kernels work on *chunks* of at most
``rows`` consecutive rows of one i-block (a tile of rows on the CPU, a thread block on
CUDA), so that all the rows of a chunk visit the same columns. :func:`row_chunks` lists
them as an (C, 4) array ``(i0, i1, k0, k1)``: rows ``i0:i1``, intervals ``k0:k1``. Every
row is in exactly one chunk, rows that visit nothing included (the kernel writes the
reduction's identity there).
"""

from __future__ import annotations

import numpy as np

from ..block_sparse import BlockIntervals

__all__ = ["row_chunks", "visited_columns", "visited_pairs"]


def row_chunks(intervals: BlockIntervals, rows: int) -> np.ndarray:
    """(C, 4) int64 rows ``(i0, i1, k0, k1)``: chunks of at most ``rows`` rows of one i-block."""
    if rows < 1:
        raise ValueError(f"chunks need at least one row each, got rows={rows}")
    bounds = intervals.i_bounds
    sizes = np.diff(bounds)
    per_block = -(-sizes // rows)
    block = np.repeat(np.arange(len(sizes)), per_block)
    first = np.cumsum(per_block) - per_block  # chunk number of each block's first chunk
    i0 = bounds[block] + (np.arange(len(block)) - first[block]) * rows
    i1 = np.minimum(i0 + rows, bounds[block + 1])
    chunks = np.stack([i0, i1, intervals.offsets[block], intervals.offsets[block + 1]], axis=1)
    return np.ascontiguousarray(chunks, dtype=np.int64)


def visited_columns(intervals: BlockIntervals) -> np.ndarray:
    """Number of columns each i-block visits (0 for a block that visits nothing)."""
    lengths = np.concatenate([[0], np.cumsum(intervals.j_ends - intervals.j_starts)])
    return lengths[intervals.offsets[1:]] - lengths[intervals.offsets[:-1]]


def visited_pairs(intervals: BlockIntervals) -> int:
    """Number of (i, j) pairs a block-sparse reduction visits (per batch element)."""
    return int(np.dot(np.diff(intervals.i_bounds), visited_columns(intervals)))
