"""Block-sparse reductions (``ranges``) as one traceable jax program (the ``jax-xla`` engine).

The structure (:class:`lazymat.block_sparse.BlockSparsity`) is part of the spec, so it is
static under ``jax.jit``: this module turns it, on the host, into a fixed list of work
items, each a tile of Ti rows of one i-block by Tj columns of one of its column
intervals, and ``lax.scan`` walks them, merging each tile into the running state of its
row tile. All tiles have the same static shape: rows past the block's end are computed
and dropped, columns past the interval's end are masked with the reduction's neutral
value and carry an index that loses every tie (K-min slots never filled report -1, as in
the core). The state holds one (Ti, dim) slot per row tile, O(N) memory; nothing of size
N*M exists. Ti and Tj follow the block and interval sizes (powers of two chosen to waste
little padding), within the memory budget of ``tile_sizes``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lazymat.plugin import BlockSparsity, ReductionRequest, evaluate, tile_sizes

from .merges import for_reduction
from .namespace import jax_namespace
from .tiling import TileContext, TileNamespace, columns_last

#: the cost of one more tile, in padded rows or columns (loop step and launch overheads)
TILE_OVERHEAD = 32


def _tile_width(lengths: np.ndarray, weights: np.ndarray, floor: int, cap: int) -> int:
    """The power of two in [floor, cap] (or ``cap``) that covers ``lengths`` in tiles at the
    least cost: sum of weight * tiles * (width + TILE_OVERHEAD)."""
    cap = max(floor, cap)
    widths = [w for w in (2**e for e in range(31)) if floor <= w < cap] + [cap]
    costs = [float(np.sum(weights * -(-lengths // w)) * (w + TILE_OVERHEAD)) for w in widths]
    return widths[int(np.argmin(costs))]


def work_items(ranges: BlockSparsity, ti: int, tj: int) -> tuple[np.ndarray, np.ndarray]:
    """(items, row_map): one row (first row, slot, first column, columns) per tile to
    visit, and for each of the N rows its place in the (slots * Ti) state."""
    iv = ranges.intervals
    items: list[tuple[int, int, int, int]] = []
    row_map = np.empty(ranges.shape[0], dtype=np.int64)
    slot = 0
    for b in range(len(iv.i_bounds) - 1):
        a, z = int(iv.i_bounds[b]), int(iv.i_bounds[b + 1])
        lo, hi = iv.offsets[b], iv.offsets[b + 1]
        spans = list(zip(iv.j_starts[lo:hi], iv.j_ends[lo:hi], strict=True))
        for r0 in range(a, z, ti):
            rows = min(z, r0 + ti) - r0
            row_map[r0 : r0 + rows] = slot * ti + np.arange(rows)
            for c, d in spans:
                items.extend((r0, slot, int(c0), int(min(d, c0 + tj) - c0)) for c0 in range(c, d, tj))
            slot += 1
    return np.asarray(items, dtype=np.int64).reshape(-1, 4), row_map


def tile_shape(request: ReductionRequest, ranges: BlockSparsity) -> tuple[int, int]:
    """(Ti, Tj) for the blocks and intervals of ``ranges`` within the memory budget."""
    ti_max, tj_max = tile_sizes(request, jnp.dtype(request.dtype).itemsize)
    pairs = ti_max * tj_max
    iv = ranges.intervals
    spans = iv.j_ends - iv.j_starts
    k = max(1, request.spec.k)
    if spans.size == 0:
        return 1, k
    tj = _tile_width(spans, np.ones_like(spans), k, max(k, min(tj_max, int(spans.max()))))
    rows = np.diff(iv.i_bounds)
    chunks = np.add.reduceat(-(-spans // tj), iv.offsets[:-1]) * (np.diff(iv.offsets) > 0)
    ti = _tile_width(rows, chunks, 1, max(1, min(pairs // tj, int(rows.max()))))
    return ti, tj


def _slice_rows(a: Any, start: Any, size: int) -> Any:
    return lax.dynamic_slice_in_dim(a, start, size, axis=a.ndim - 2)


def _put_rows(a: Any, rows: Any, start: Any) -> Any:
    return lax.dynamic_update_slice_in_dim(a, rows, start, axis=a.ndim - 2)


def _pad_rows(a: Any, size: int) -> Any:
    return jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, size), (0, 0)])


def run_block_sparse(request: ReductionRequest) -> tuple[Any, ...]:
    """Every output of a block-sparse request, ``(*batch, N, out_dim)``, traceable."""
    xp = jax_namespace()
    tile_xp = TileNamespace()
    spec, red, formula = request.spec, request.spec.kind, request.spec.formula
    ranges: BlockSparsity = request.ranges
    rules = for_reduction(red)
    if rules is None:
        raise NotImplementedError(f"the jax-xla engine has no merge for the {red.name} reduction")
    init, merge, pad = rules
    batch, dtype = request.batch, request.dtype
    ti, tj = tile_shape(request, ranges)
    items, row_map = work_items(ranges, ti, tj)
    slots = int(row_map.max()) // ti + 1
    state = init(xp, (*batch, slots * ti, formula.dim), spec.k, dtype, None)
    cats = {v.index: v.cat for v in spec.variables}
    args = request.args
    rows = {k: _pad_rows(args[k], ti) for k, c in cats.items() if c == "i"}
    cols = {k: _pad_rows(args[k], tj) for k, c in cats.items() if c == "j"}
    params = {k: args[k] for k, c in cats.items() if c == "p"}
    tile_shape_ = (*batch, ti, tj, formula.dim)
    last = jnp.iinfo(xp.int64).max
    with_indices = red.name in ("kmin", "argkmin", "kmin_argkmin")

    def step(state: Any, item: Any) -> tuple[Any, None]:
        r0, slot, c0, count = item[0], item[1], item[2], item[3]
        tiles = {k: _slice_rows(a, r0, ti) for k, a in rows.items()}
        tiles.update({k: _slice_rows(a, c0, tj) for k, a in cols.items()})
        ctx = TileContext(tile_xp, dtype, cats, {**tiles, **params}, (r0, c0), (ti, tj))
        vals = columns_last(xp.broadcast_to(evaluate(formula, ctx), tile_shape_))
        inside = jnp.arange(tj) < count
        vals = jnp.where(inside, vals, jnp.asarray(pad, dtype=dtype))
        # K-min keeps masked columns among its candidates: give them an index losing every tie
        j0 = jnp.where(inside, c0 + jnp.arange(tj, dtype=xp.int64), last) if with_indices else c0
        start = slot * ti
        sub = jax.tree.map(lambda s: _slice_rows(s, start, ti), state)
        sub = merge(xp, sub, vals, j0)
        state = jax.tree.map(lambda s, u: _put_rows(s, u, start), state, sub)
        return state, None

    if len(items):
        state = lax.scan(step, state, jnp.asarray(items, dtype=xp.int64))[0]
    outs = []
    for kind, out in zip(red.outputs, red.finalize(xp, state), strict=True):
        out = jnp.take(out, jnp.asarray(row_map, dtype=xp.int64), axis=out.ndim - 2)
        if kind == "index" and with_indices:  # slots no column filled: -1, as in the core
            out = jnp.where(out == last, -1, out)
        outs.append(out)
    return tuple(outs)
