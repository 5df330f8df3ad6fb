"""Tiled online reductions as one traceable jax program (the ``jax-xla`` engine's body).

Row tiles of Ti points are mapped with ``lax.map``; inside each, ``lax.scan`` walks the
column tiles of Tj points and merges each tile's values into the reduction's running
state (:mod:`lazymat_jax.merges`, the core's semantics with the reduced axis last); a
side that fits in one tile has no loop. Tile sizes come from the memory budget
(``lazymat.builtin_engines.reference.tile_sizes``), so the largest intermediate is one
(Ti, Tj, width) tile: never an N*M array.

Shapes must be static under ``jax.jit``, so the arrays are padded to whole tiles. Padded
rows are computed and dropped; padded columns are masked with the reduction's neutral
value and carry indices >= M, which lose every tie: padding never wins.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from lazymat.plugin import ReductionRequest, Var, evaluate, tile_sizes

from .merges import for_reduction
from .namespace import JaxNamespace, jax_namespace

#: inner dimensions up to this size are summed by unrolled additions, and tiles of
#: formulas up to this dimension are laid out column-last by stacking their components
SMALL_DIM = 16


class TileNamespace(JaxNamespace):
    """The namespace formulas are evaluated with: sums over short inner axes are unrolled.

    XLA on CPU compiles a small reduction (the inner sum of a squared distance, D = 3)
    nested inside the large reduction over a tile's columns into a scalar loop; the same
    sum written as D - 1 additions of slices fuses into vectorised element-wise code.
    """

    def sum(self, a: Any, axis: Any = None, keepdims: bool = False, dtype: Any = None) -> Any:
        if isinstance(axis, int) and dtype is None and 1 < a.shape[axis] <= SMALL_DIM:
            total = lax.slice_in_dim(a, 0, 1, axis=axis)
            for k in range(1, a.shape[axis]):
                total = total + lax.slice_in_dim(a, k, k + 1, axis=axis)
            return total if keepdims else jnp.squeeze(total, axis)
        return jnp.sum(a, axis=axis, keepdims=keepdims, dtype=dtype)


class TileContext:
    """What ``Node.eval`` sees for one (row tile, column tile) pair, with traced offsets."""

    def __init__(
        self,
        xp: TileNamespace,
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


def columns_last(vals: Any) -> Any:
    """(..., Ti, Tj, dim) -> (..., Ti, dim, Tj), in the form XLA fuses best."""
    dim = vals.shape[-1]
    if dim <= SMALL_DIM:
        return jnp.stack([vals[..., c] for c in range(dim)], axis=-2)
    return jnp.moveaxis(vals, -1, -2)


def _first(tree: Any) -> Any:
    return jax.tree.map(lambda a: a[0], tree)


def _scan(step: Any, init: Any, xs: Any, count: int) -> Any:
    """The final carry of ``lax.scan``; a single tile needs no loop (faster to compile and run)."""
    return step(init, _first(xs))[0] if count == 1 else lax.scan(step, init, xs)[0]


def _map(f: Any, xs: Any, count: int) -> Any:
    """``lax.map``; a single tile needs no loop."""
    return jax.tree.map(lambda a: a[None], f(_first(xs))) if count == 1 else lax.map(f, xs)


def supported(request: ReductionRequest) -> bool:
    return for_reduction(request.spec.kind) is not None


def run_tiled(request: ReductionRequest) -> tuple[Any, ...]:
    """Every output of the request, ``(*batch, N, out_dim)``, as a traceable jax program."""
    xp = jax_namespace()
    tile_xp = TileNamespace()
    spec, red, formula = request.spec, request.spec.kind, request.spec.formula
    rules = for_reduction(red)
    if rules is None:
        raise NotImplementedError(f"the jax-xla engine has no merge for the {red.name} reduction")
    init, merge, pad = rules
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
    tile_shape = (*batch, ti, tj, formula.dim)

    def row_tile(xs: Any) -> Any:
        row_block, i0 = xs

        def step(state: Any, ys: Any) -> tuple[Any, None]:
            col_block, j0 = ys
            ctx = TileContext(tile_xp, dtype, cats, {**row_block, **col_block, **params}, (i0, j0), (ti, tj))
            vals = columns_last(xp.broadcast_to(evaluate(formula, ctx), tile_shape))
            if m % tj:
                vals = jnp.where(j0 + jnp.arange(tj) < m, vals, jnp.asarray(pad, dtype=dtype))
            return merge(xp, state, vals, j0), None

        state = init(xp, (*batch, ti, formula.dim), spec.k, dtype, None)
        return red.finalize(xp, _scan(step, state, (cols, j_offsets), count_j))

    outs = _map(row_tile, (rows, i_offsets), count_i)
    return tuple(_join(o, n) for o in outs)
