"""The tiles of a block-sparse reduction for the ``torch-tiled`` engine (host-side planning).

A :class:`~lazymat.block_sparse.BlockSparsity` lists, per i-block, the column intervals it
visits (``BlockSparsity.intervals``). Tiling each (i-block, interval) pair alone gives
many small tiles, and each torch operation has a fixed cost (milliseconds on busy cores,
a kernel launch on CUDA): with clusters of a few dozen points, that cost dominates. So:

- an i-block's intervals are gathered into tiles of up to Tj columns (indices on the
  device), or sliced in place when there is a single interval;
- for reductions whose masked entries can be neutral values (sums add 0, log-sum-exps
  exp(-inf) = 0), consecutive i-blocks form one group over the union of their columns,
  as long as the group's tiles stay dense enough (``MIN_DENSITY`` of visited pairs) and
  within the tile budget; the pairs that the structure does not visit are masked out
  (each tile's mask is built on the fly from a small per-group block x segment table).
  min/max and K-min keep one group per i-block: a masked +inf would tie with real +inf
  values, and the index reported must be the real one.

Masked entries are replaced, not multiplied by zero, so a NaN or inf of the formula on a
masked pair never shows; a kernel product ``K @ w`` masks the kernel tile, so a NaN or inf
in the weights ``w`` of a column visited by another block of the group does propagate
(0 * NaN), where the dense masked reduction would not see it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from lazymat.plugin import BlockIntervals, BlockSparsity

#: least fraction of visited pairs in a group's tiles before a block joins the group
MIN_DENSITY = 0.5


@dataclass
class ColumnTile:
    """The columns ``j0:j1`` (``cols`` None) or the gathered indices ``cols`` (then
    ``j0, j1 = 0, len(cols)``); ``segments``: each column's mask segment in a grouped tile."""

    j0: int
    j1: int
    cols: Any = None
    segments: Any = None


@dataclass
class RowGroup:
    """Rows ``start:stop`` reduced over ``tiles``, ``rows_per_tile`` rows at a time.

    A group of several i-blocks also has, per row, its block in the group (``row_block``)
    and, per (block, column segment), whether the structure skips it (``skipped``).
    """

    start: int
    stop: int
    rows_per_tile: int
    tiles: list[ColumnTile]
    row_block: Any = None
    skipped: Any = None

    def outside(self, tile: ColumnTile, i0: int, i1: int) -> Any:
        """The (rows, columns, 1) mask of the pairs of rows ``i0:i1`` x ``tile`` that the
        structure skips, or None when it visits them all."""
        if self.skipped is None:
            return None
        rows = self.row_block[i0 - self.start : i1 - self.start]
        return self.skipped[rows[:, None], tile.segments[None, :]][..., None]


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged union of column intervals."""
    out: list[tuple[int, int]] = []
    for c, d in sorted(spans):
        if out and c <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], d))
        else:
            out.append((c, d))
    return out


def group_blocks(iv: BlockIntervals, pairs: int, grouped: bool) -> list[list[int]]:
    """Consecutive i-blocks tiled together: each alone unless ``grouped``, then greedily
    while the group's visited pairs are at least ``MIN_DENSITY`` of rows x union columns
    and the group fits in ``pairs``."""
    n_blocks = len(iv.i_bounds) - 1
    if not grouped:
        return [[b] for b in range(n_blocks)]
    rows = np.diff(iv.i_bounds)
    starts, ends, offsets = iv.j_starts.tolist(), iv.j_ends.tolist(), iv.offsets.tolist()
    spans = [list(zip(starts[lo:hi], ends[lo:hi], strict=True)) for lo, hi in pairwise(offsets)]
    owner = np.repeat(np.arange(n_blocks), np.diff(iv.offsets))
    widths = np.bincount(owner, weights=iv.j_ends - iv.j_starts, minlength=n_blocks)
    visited = (rows * widths).tolist()
    groups: list[list[int]] = []
    members: list[int] = []
    covered: list[tuple[int, int]] = []
    for b in range(n_blocks):
        if members:
            union = _union(covered + spans[b])
            size = int(rows[members[0] : b + 1].sum()) * sum(d - c for c, d in union)
            if size <= pairs and sum(visited[m] for m in members) + visited[b] >= MIN_DENSITY * size:
                members.append(b)
                covered = union
                continue
            groups.append(members)
        members, covered = [b], _union(spans[b])
    if members:
        groups.append(members)
    return groups


@functools.lru_cache(maxsize=16)
def row_groups(ranges: BlockSparsity, pairs: int, tj: int, grouped: bool, device: Any) -> list[RowGroup]:
    """The row groups and column tiles of a block-sparse reduction (see the module doc).

    Rows per tile grow when a group visits few columns, so that small groups still make
    tiles of about ``pairs`` pairs. Cached: iterative solvers reduce with the same
    structure many times, and the plan holds O(N + M) integers per structure.
    """
    iv = ranges.intervals
    out = []
    for members in group_blocks(iv, pairs, grouped):
        a, z = int(iv.i_bounds[members[0]]), int(iv.i_bounds[members[-1] + 1])
        lo, hi = int(iv.offsets[members[0]]), int(iv.offsets[members[-1] + 1])
        union = _union(list(zip(iv.j_starts[lo:hi].tolist(), iv.j_ends[lo:hi].tolist(), strict=True)))
        tiles: list[ColumnTile] = []
        if len(union) == 1:
            c, d = union[0]
            tiles = [ColumnTile(j0, min(d, j0 + tj)) for j0 in range(c, d, tj)]
            cols = np.arange(c, d)
        elif union:
            cols = np.concatenate([np.arange(c, d) for c, d in union])
            on_device = torch.as_tensor(cols, dtype=torch.int64, device=device)
            tiles = [
                ColumnTile(0, len(cols[p : p + tj]), on_device[p : p + tj]) for p in range(0, len(cols), tj)
            ]
        group = RowGroup(a, z, max(1, pairs // max((t.j1 - t.j0 for t in tiles), default=1)), tiles)
        if len(members) > 1 and tiles:
            _add_mask(group, iv, members, cols, tj, device)
        out.append(group)
    return out


def _add_mask(
    group: RowGroup, iv: BlockIntervals, members: list[int], cols: np.ndarray, tj: int, device: Any
) -> None:
    """Give ``group`` the compact form of its mask: the group's columns fall in segments
    between the endpoints of its blocks' intervals, and ``skipped[block, segment]`` says
    which segments a block does not visit (O(rows + columns) memory, not rows x columns)."""
    lo, hi = int(iv.offsets[members[0]]), int(iv.offsets[members[-1] + 1])
    edges = np.unique(np.concatenate((iv.j_starts[lo:hi], iv.j_ends[lo:hi])))
    # +1 where an interval of block g starts, -1 where it ends: a running sum > 0 is visited
    owner = np.repeat(np.arange(len(members)), np.diff(iv.offsets[members[0] : members[-1] + 2]))
    steps = np.zeros((len(members), len(edges) + 1), dtype=np.int64)
    np.add.at(steps, (owner, np.searchsorted(edges, iv.j_starts[lo:hi])), 1)
    np.add.at(steps, (owner, np.searchsorted(edges, iv.j_ends[lo:hi])), -1)
    skipped = np.cumsum(steps, axis=1)[:, :-1] <= 0
    rows = np.diff(iv.i_bounds[members[0] : members[-1] + 2])
    group.row_block = torch.as_tensor(np.repeat(np.arange(len(members)), rows), device=device)
    group.skipped = torch.as_tensor(skipped, device=device)
    segments = torch.as_tensor(np.searchsorted(edges, cols, side="right") - 1, device=device)
    for p, tile in enumerate(group.tiles):
        tile.segments = segments[p * tj : p * tj + tile.j1 - tile.j0]
