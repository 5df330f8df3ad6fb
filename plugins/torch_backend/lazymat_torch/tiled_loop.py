"""The blocked loop of the ``torch-tiled`` engine.

For each block of Ti rows the loop walks the j-tiles of Tj columns, evaluates the formula
on the Ti x Tj tile (:class:`~lazymat_torch.evaluator.TilePlan`) and merges it into the
block's running reduction (:mod:`lazymat_torch.merges`). Nothing of size N x M exists:
the largest buffers are a few tiles and the O((N + M) * D) precomputed sides.

A dense K-min or min of a squared distance picks GEMM candidates and recomputes them
exactly, in its own loop (:mod:`lazymat_torch.sqdist_kmin`). A dense log-sum-exp of
``s * |x - y|^2 + t_j`` runs in its own loop too, each row shifted by a sampled maximum
that rides on the GEMM (:mod:`lazymat_torch.lse_gemm`).

A block-sparse request (``ranges``) walks the column intervals of each i-block, or group of
i-blocks, only (:mod:`lazymat_torch.sparse_tiles`); the merges are the same.

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

import torch

from lazymat.plugin import Node, ReductionRequest, ReductionSpec

from .evaluator import TileContext, TilePlan
from .gemm import ExpArgGemm, SqDistGemm, fold_exp_arguments, rewrite_gemm, split_kernel_product
from .layout import compute_dtype, flat_args, restore
from .lse_gemm import lse_exp_gemm
from .merges import KernelProductReducer, Reducer, reducer_for
from .sparse_tiles import ColumnTile, RowGroup, row_groups
from .sqdist_kmin import sqdist_kmin, sqdist_operands, usable

#: pairs per tile on the CPU (cache) and on CUDA (occupancy), before the memory budget
CPU_TILE_PAIRS = 2**22
CUDA_TILE_PAIRS = 2**24
#: widest j-tile: long rows for the reductions over j, several row blocks per tile
MAX_TILE_J = 16384

#: reductions whose values tolerate the different rounding of GEMM (see lazymat_torch.gemm)
_GEMM_REDUCTIONS = ("sum", "lse")
#: reductions of a squared distance that pick GEMM candidates (lazymat_torch.sqdist_kmin): K-min, min
_CANDIDATE_REDUCTIONS = ("kmin", "argkmin", "kmin_argkmin", "min", "argmin", "min_argmin")


@functools.lru_cache(maxsize=256)
def plan_for(spec: ReductionSpec) -> tuple[TilePlan, bool]:
    """The tile plan of a spec, and whether its sum runs as a kernel product (cached)."""
    formula = spec.formula
    if spec.reduction in _GEMM_REDUCTIONS:
        formula = fold_exp_arguments(rewrite_gemm(formula), lse=spec.reduction == "lse")
    if spec.reduction == "sum":
        split = split_kernel_product(formula)
        if split is not None:
            return TilePlan(split[0], extra=(split[1],)), True
    return TilePlan(formula), False


@functools.lru_cache(maxsize=256)
def candidate_operands(spec: ReductionSpec) -> tuple[Node, Node] | None:
    """(a, b) of a K-min or min of |a_i - b_j|^2 (cached), else None."""
    return sqdist_operands(spec.formula) if spec.reduction in _CANDIDATE_REDUCTIONS else None


def run_candidates(request: ReductionRequest, ctx: TileContext) -> dict[str, Any] | None:
    """The outputs of a dense K-min (or min) of a squared distance without batch
    dimensions and with usable operands (lazymat_torch.sqdist_kmin), else None."""
    operands = candidate_operands(request.spec)
    if operands is None or request.ranges is not None or math.prod(request.batch) != 1:
        return None
    plan = TilePlan(SqDistGemm(*operands))
    pair = plan.precompute(ctx)[plan.root].pair
    if not usable(pair):
        return None
    k = request.spec.k if request.spec.reduction in ("kmin", "argkmin", "kmin_argkmin") else 1
    value, index = sqdist_kmin(pair, k, request.tile_bytes)
    return {"value": value[None], "index": index[None]}


def shifted_lse(request: ReductionRequest, plan: TilePlan) -> bool:
    """Whether a log-sum-exp runs in three passes per tile (:mod:`lazymat_torch.lse_gemm`):
    a dense one of a folded GEMM argument, without batch dimensions."""
    return (
        request.spec.reduction == "lse"
        and isinstance(plan.root, ExpArgGemm)
        and request.ranges is None
        and math.prod(request.batch) == 1
    )


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


def row_groups_of(request: ReductionRequest, pairs: int, grouped: bool) -> list[RowGroup]:
    """Dense: one group of all rows over column tiles of (Ti, Tj) = ``split_pairs``.
    Block-sparse: the groups of :func:`lazymat_torch.sparse_tiles.row_groups`."""
    ti, tj = split_pairs(request, pairs)
    if request.ranges is None:
        return [
            RowGroup(
                0, request.n, ti, [ColumnTile(j0, min(request.m, j0 + tj)) for j0 in range(0, request.m, tj)]
            )
        ]
    return row_groups(request.ranges, pairs, tj, grouped, request.device)


def run_tiled(request: ReductionRequest) -> tuple[Any, ...]:
    """Run a reduction request tile by tile; outputs as the engine interface describes.

    A block-sparse request (``request.ranges``) visits only the tiles of its column
    intervals, with the pairs it skips masked by the reducer's neutral value where
    i-blocks are grouped; rows that visit no column get the reduction's initial values.
    """
    spec = request.spec
    dtype = compute_dtype(request.dtype)
    device = request.device
    args = flat_args(request)
    ctx = TileContext(args, dtype, device, request.n, request.m)
    outputs = run_candidates(request, ctx)
    if outputs is not None:
        return restore(request, outputs)
    plan, kernel_product = plan_for(spec)
    pre = plan.precompute(ctx)
    if shifted_lse(request, plan):
        ti, tj = tile_shape(request, plan, torch.finfo(dtype).bits // 8)
        value = lse_exp_gemm(pre[plan.root], ti, tj)
        return restore(request, {"value": value[None, :, None]})
    reducer: Reducer = KernelProductReducer() if kernel_product else reducer_for(spec.reduction, spec.k)
    weights = pre[plan.extra[0]][:, 0] if kernel_product else None  # (B|1, M, E)

    batch = math.prod(request.batch)
    width = spec.formula.dim
    pairs = tile_pairs(request, plan, torch.finfo(dtype).bits // 8)
    blocks: list[dict[str, Any]] = []
    for group in row_groups_of(request, pairs, reducer.neutral is not None):
        a, z = group.start, group.stop
        if not group.tiles:
            blocks.append(reducer.empty((batch, z - a, width), dtype, device))
            continue
        for i0 in range(a, z, group.rows_per_tile):
            i1 = min(z, i0 + group.rows_per_tile)
            state = reducer.init((batch, i1 - i0, width), dtype, device)
            for tile in group.tiles:
                j0, j1, cols = tile.j0, tile.j1, tile.cols
                ctx.i0, ctx.i1, ctx.j0, ctx.j1, ctx.cols = i0, i1, j0, j1, cols
                vals, owned = plan.tile(ctx, pre)
                full = (batch, i1 - i0, j1 - j0, vals.shape[-1])
                if tuple(vals.shape) != full:
                    vals, owned = vals.expand(full), False
                outside = group.outside(tile, i0, i1)  # pairs of the group the structure skips
                if outside is not None:
                    fill = reducer.neutral
                    vals = vals.masked_fill_(outside, fill) if owned else vals.masked_fill(outside, fill)
                    owned = True
                if weights is not None:
                    assert isinstance(reducer, KernelProductReducer)
                    reducer.weights = weights[:, ctx.j_select]
                state = reducer.merge(state, vals, owned, j0 if cols is None else cols)
            blocks.append(reducer.finish(state))
    outputs = {kind: torch.cat([b[kind] for b in blocks], dim=1) for kind in blocks[0]}
    return restore(request, outputs)
