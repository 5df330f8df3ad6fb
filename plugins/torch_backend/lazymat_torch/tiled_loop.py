"""The blocked loop of the ``torch-tiled`` engine.

For each block of Ti rows the loop walks the j-tiles of Tj columns, evaluates the formula
on the Ti x Tj tile (:class:`~lazymat_torch.evaluator.TilePlan`) and merges it into the
block's running reduction (:mod:`lazymat_torch.merges`). Nothing of size N x M exists:
the largest buffers are a few tiles and the O((N + M) * D) precomputed sides.

A block-sparse request (``ranges``) walks each i-block's column intervals only, with
short intervals gathered into one tile (:func:`row_blocks`); the merges are the same.

Tile sizes: on the CPU a tile of up to 2^22 pairs (16 MiB per float32 intermediate) stays
in the last-level cache across the few passes a formula makes over it (the steps work in
place), and is large enough that the fixed cost of each torch operation is amortised: every
operation wakes torch's intra-op threads and waits for all of them, which costs
milliseconds when other processes share the cores (measured on 2 busy cores: 9.9 s with
2^18-pair tiles, 4.5 s with 2^20, 2.4 s with 2^22 for one 10^4 x 10^4 kernel product). On
CUDA, tiles of up to 2^24 pairs give every streaming multiprocessor work. Both are
capped by ``tile_bytes``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from lazymat import ReductionRequest, ReductionSpec

from .evaluator import TileContext, TilePlan
from .gemm import rewrite_gemm, split_kernel_product
from .layout import compute_dtype, flat_args, restore
from .merges import KernelProductReducer, Reducer, reducer_for

#: pairs per tile on the CPU (cache) and on CUDA (occupancy), before the memory budget
CPU_TILE_PAIRS = 2**22
CUDA_TILE_PAIRS = 2**24
#: widest j-tile: long rows for the reductions over j, several row blocks per tile
MAX_TILE_J = 16384

#: reductions whose values tolerate the different rounding of GEMM (see lazymat_torch.gemm)
_GEMM_REDUCTIONS = ("sum", "lse")


@functools.lru_cache(maxsize=256)
def plan_for(spec: ReductionSpec) -> tuple[TilePlan, bool]:
    """The tile plan of a spec, and whether its sum runs as a kernel product (cached)."""
    formula = spec.formula
    if spec.reduction in _GEMM_REDUCTIONS:
        formula = rewrite_gemm(formula)
    if spec.reduction == "sum":
        split = split_kernel_product(formula)
        if split is not None:
            return TilePlan(split[0], extra=(split[1],)), True
    return TilePlan(formula), False


def tile_pairs(request: ReductionRequest, plan: TilePlan, itemsize: int) -> int:
    """Pairs per tile: the memory budget, capped by the device's preferred tile size."""
    per_pair = itemsize * math.prod(request.batch) * (plan.width + 1)
    pairs = max(1, request.tile_bytes // per_pair)
    return min(pairs, CUDA_TILE_PAIRS if request.device.type == "cuda" else CPU_TILE_PAIRS)


def tile_shape(request: ReductionRequest, plan: TilePlan, itemsize: int) -> tuple[int, int]:
    """(Ti, Tj) within the memory budget and the device's preferred tile size."""
    return split_pairs(request, tile_pairs(request, plan, itemsize))


def split_pairs(request: ReductionRequest, pairs: int) -> tuple[int, int]:
    """(Ti, Tj) of a dense tile of about ``pairs`` pairs: long rows, at least K wide."""
    tj = min(request.m, max(request.spec.k, min(pairs, MAX_TILE_J)))
    ti = min(request.n, max(1, pairs // tj))
    return ti, tj


#: a column tile: (j0, j1, None) for the contiguous columns j0:j1, or (0, width, indices)
#: for columns gathered from several intervals (increasing int64 indices on the device)
ColumnTile = tuple[int, int, Any]


def row_blocks(request: ReductionRequest, pairs: int) -> list[tuple[int, int, int, list[ColumnTile]]]:
    """(row start, row end, rows per tile, column tiles) per block of rows.

    Dense: one block of all rows and the column tiles of (Ti, Tj) = ``tile_shape``.
    Block-sparse: one block per i-block of ``request.ranges``; its column intervals are
    tiled in place when there is one, else gathered into tiles of up to Tj columns (one
    tile visits many short intervals); the rows per tile grow when the block visits few
    columns, so that small blocks still make tiles of about ``pairs`` pairs.
    """
    ti, tj = split_pairs(request, pairs)
    if request.ranges is None:
        return [(0, request.n, ti, [(j0, min(request.m, j0 + tj), None) for j0 in range(0, request.m, tj)])]
    iv = request.ranges.intervals
    blocks = []
    for b in range(len(iv.i_bounds) - 1):
        a, z = int(iv.i_bounds[b]), int(iv.i_bounds[b + 1])
        starts = iv.j_starts[iv.offsets[b] : iv.offsets[b + 1]]
        ends = iv.j_ends[iv.offsets[b] : iv.offsets[b + 1]]
        tiles: list[ColumnTile] = []
        if len(starts) == 1:
            c, d = int(starts[0]), int(ends[0])
            tiles = [(j0, min(d, j0 + tj), None) for j0 in range(c, d, tj)]
        elif len(starts) > 1:
            cols = np.concatenate([np.arange(c, d) for c, d in zip(starts, ends, strict=True)])
            on_device = torch.as_tensor(cols, dtype=torch.int64, device=request.device)
            tiles = [(0, len(cols[p : p + tj]), on_device[p : p + tj]) for p in range(0, len(cols), tj)]
        widest = max((j1 - j0 for j0, j1, _ in tiles), default=1)
        blocks.append((a, z, max(1, pairs // widest), tiles))
    return blocks


def run_tiled(request: ReductionRequest) -> tuple[Any, ...]:
    """Run a reduction request tile by tile; outputs as the engine interface describes.

    A block-sparse request (``request.ranges``) visits only the tiles of its column
    intervals; rows that visit no column get the reduction's initial values.
    """
    spec = request.spec
    plan, kernel_product = plan_for(spec)
    dtype = compute_dtype(request.dtype)
    device = request.device
    args = flat_args(request)
    ctx = TileContext(args, dtype, device, request.n, request.m)
    pre = plan.precompute(ctx)
    reducer: Reducer = KernelProductReducer() if kernel_product else reducer_for(spec.reduction, spec.k)
    weights = pre[plan.extra[0]][:, 0] if kernel_product else None  # (B|1, M, E)

    batch = math.prod(request.batch)
    width = spec.formula.dim
    pairs = tile_pairs(request, plan, torch.finfo(dtype).bits // 8)
    blocks: list[dict[str, Any]] = []
    for a, z, ti, columns in row_blocks(request, pairs):
        if not columns:
            blocks.append(reducer.empty((batch, z - a, width), dtype, device))
            continue
        for i0 in range(a, z, ti):
            i1 = min(z, i0 + ti)
            state = reducer.init((batch, i1 - i0, width), dtype, device)
            for j0, j1, cols in columns:
                ctx.i0, ctx.i1, ctx.j0, ctx.j1, ctx.cols = i0, i1, j0, j1, cols
                vals, owned = plan.tile(ctx, pre)
                full = (batch, i1 - i0, j1 - j0, vals.shape[-1])
                if tuple(vals.shape) != full:
                    vals, owned = vals.expand(full), False
                if weights is not None:
                    assert isinstance(reducer, KernelProductReducer)
                    reducer.weights = weights[:, ctx.j_select]
                state = reducer.merge(state, vals, owned, j0 if cols is None else cols)
            blocks.append(reducer.finish(state))
    outputs = {kind: torch.cat([b[kind] for b in blocks], dim=1) for kind in blocks[0]}
    return restore(request, outputs)
