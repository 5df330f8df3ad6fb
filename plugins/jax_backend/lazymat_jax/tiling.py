"""Tiled online reductions as one traceable jax program (the ``jax-xla`` engine's body).

Row tiles of Ti points are mapped with ``lax.map``; inside each, ``lax.scan`` walks the
column tiles of Tj points and merges each tile's values into the reduction's running
state with the core's online merges (``lazymat.reductions``); a side that fits in one
tile has no loop. Tile sizes come from the
memory budget (``lazymat.engines.reference.tile_sizes``), so the largest intermediate is
one (Ti, Tj, width) tile: never an N*M array.

Shapes must be static under ``jax.jit``, so the arrays are padded to whole tiles. Padded
rows are computed and dropped; padded columns are masked with the reduction's neutral
value (0 for sums, -inf for log-sum-exp and max, +inf for min and K-min) and carry
indices >= M, which lose every tie: padding never wins.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from lazymat.engines.reference import tile_sizes
from lazymat.ir.leaves import Var
from lazymat.ir.transform import evaluate
from lazymat.reductions import Reduction
from lazymat.request import ReductionRequest

from .namespace import JaxNamespace, jax_namespace

#: value of padded columns, by reduction: it must not change the result
_NEUTRAL = {"sum": 0.0, "lse": -math.inf}


def _neutral(red: Reduction) -> float:
    if red.name in _NEUTRAL:
        return _NEUTRAL[red.name]
    return math.inf if red.name in ("min", "argmin", "min_argmin") or red.uses_k else -math.inf


class TileContext:
    """What ``Node.eval`` sees for one (row tile, column tile) pair, with traced offsets."""

    def __init__(
        self,
        xp: JaxNamespace,
        dtype: Any,
        cats: dict[int, str],
        tiles: dict[int, Any],
        offsets: tuple[Any, Any],
        widths: tuple[int, int],
    ) -> None:
        self.xp = xp
        self.dtype = dtype
        self.device = None  # under tracing, jax places constants with the computation
        self._cats = cats
        self._tiles = tiles
        self._offsets = offsets
        self._widths = widths

    def var(self, v: Var) -> Any:
        a = self._tiles[v.index]
        if self._cats[v.index] == "i":
            return a[..., :, None, :]
        if self._cats[v.index] == "j":
            return a[..., None, :, :]
        return a[..., None, None, :]

    def index(self, axis: str) -> Any:
        """Indices of the tile's columns (axis "j", shape (Tj, 1)) or rows ((Ti, 1, 1))."""
        i0, j0 = self._offsets
        ti, tj = self._widths
        if axis == "j":
            return (j0 + jnp.arange(tj, dtype=self.xp.int64))[:, None]
        return (i0 + jnp.arange(ti, dtype=self.xp.int64))[:, None, None]


def _split(a: Any, count: int, size: int) -> Any:
    """(*b, L, d) -> (count, *b, size, d), padding L to count * size with zeros."""
    pad = count * size - a.shape[-2]
    if pad:
        a = jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, pad), (0, 0)])
    a = jnp.reshape(a, (*a.shape[:-2], count, size, a.shape[-1]))
    return jnp.moveaxis(a, -3, 0)


def _join(a: Any, n: int) -> Any:
    """(count, *b, size, d) -> (*b, n, d): the inverse of ``_split``, padding dropped."""
    a = jnp.moveaxis(a, 0, -3)
    a = jnp.reshape(a, (*a.shape[:-3], a.shape[-3] * a.shape[-2], a.shape[-1]))
    return a[..., :n, :]


def _kmin_init(xp: JaxNamespace, shape: tuple[int, ...], k: int, dtype: Any) -> tuple[Any, Any]:
    rows = (*shape[:-1], k)
    last = jnp.iinfo(xp.int64).max  # padding's index: loses every tie
    return jnp.full(rows, jnp.inf, dtype=dtype), jnp.full(rows, last, dtype=xp.int64)


def _kmin_merge(xp: JaxNamespace, state: tuple[Any, Any], vals: Any, j0: Any) -> tuple[Any, Any]:
    """K smallest of (state, tile), ordered by (value, index); NaN counts as -inf (it wins).

    The tile's own K best come from ``lax.top_k`` (ties to the lower index), then the
    2K candidates are sorted on the key pair (value, index).
    """
    best, idx = state
    k = best.shape[-1]
    v = vals[..., 0]
    key = jnp.where(jnp.isnan(v), -jnp.inf, v) + 0.0  # + 0.0: -0.0 ties with 0.0
    _, pos = lax.top_k(-key, k)
    t_val = jnp.take_along_axis(v, pos, axis=-1)
    t_key = jnp.take_along_axis(key, pos, axis=-1)
    t_idx = jnp.astype(pos, xp.int64) + j0
    best_key = jnp.where(jnp.isnan(best), -jnp.inf, best) + 0.0
    keys = jnp.concat((best_key, t_key), axis=-1)
    order = jnp.concat((idx, t_idx), axis=-1)
    values = jnp.concat((best, t_val), axis=-1)
    _, order, values = lax.sort((keys, order, values), dimension=keys.ndim - 1, num_keys=2)
    return values[..., :k], order[..., :k]


def run_tiled(request: ReductionRequest) -> tuple[Any, ...]:
    """Every output of the request, ``(*batch, N, out_dim)``, as a traceable jax program."""
    xp = jax_namespace()
    spec, red, formula = request.spec, request.spec.kind, request.spec.formula
    n, m, batch, dtype = request.n, request.m, request.batch, request.dtype
    ti, tj = tile_sizes(request, jnp.dtype(dtype).itemsize)
    count_i, count_j = -(-n // ti), -(-m // tj)
    cats = {v.index: v.cat for v in spec.variables}
    args = request.args
    rows = {k: _split(args[k], count_i, ti) for k, c in cats.items() if c == "i"}
    cols = {k: _split(args[k], count_j, tj) for k, c in cats.items() if c == "j"}
    params = {k: args[k] for k, c in cats.items() if c == "p"}
    i_offsets = jnp.arange(count_i, dtype=xp.int64) * ti
    j_offsets = jnp.arange(count_j, dtype=xp.int64) * tj
    shape = (*batch, ti, formula.dim)
    tile_shape = (*batch, ti, tj, formula.dim)
    pad = _neutral(red)
    if red.uses_k:

        def init() -> Any:
            return _kmin_init(xp, shape, spec.k, dtype)

        merge = _kmin_merge
    else:

        def init() -> Any:
            return red.init(xp, shape, spec.k, dtype, None)

        merge = red.merge

    def row_tile(xs: Any) -> Any:
        row_block, i0 = xs

        def step(state: Any, ys: Any) -> tuple[Any, None]:
            col_block, j0 = ys
            ctx = TileContext(xp, dtype, cats, {**row_block, **col_block, **params}, (i0, j0), (ti, tj))
            vals = xp.broadcast_to(evaluate(formula, ctx), tile_shape)
            if m % tj:
                inside = (j0 + jnp.arange(tj)) < m
                vals = jnp.where(inside[:, None], vals, jnp.asarray(pad, dtype=dtype))
            return merge(xp, state, vals, j0), None

        return red.finalize(xp, _scan(step, init(), (cols, j_offsets), count_j))

    outs = _map(row_tile, (rows, i_offsets), count_i)
    return tuple(_join(o, n) for o in outs)


def _first(tree: Any) -> Any:
    return jax.tree.map(lambda a: a[0], tree)


def _scan(step: Any, init: Any, xs: Any, count: int) -> Any:
    """The final carry of ``lax.scan``; a single tile needs no loop (faster to compile and run)."""
    return step(init, _first(xs))[0] if count == 1 else lax.scan(step, init, xs)[0]


def _map(f: Any, xs: Any, count: int) -> Any:
    """``lax.map``; a single tile needs no loop."""
    return jax.tree.map(lambda a: a[None], f(_first(xs))) if count == 1 else lax.map(f, xs)
