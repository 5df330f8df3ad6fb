"""Online merges over column tiles laid out for XLA: the reduced (column) axis last.

The core's merges (``lazymat.reductions``) reduce a tile of shape (..., Ti, Tj, dim)
over its second-last axis. XLA on CPU compiles that reduction, with the formula fused
into it, to scalar loops about 30 times slower than a reduction over the last axis, so
this engine evaluates the formula as usual, lays each tile out as (..., Ti, dim, Tj) and
merges it here. The semantics are the core's, which the conformance suite checks:
block-wise sums, (shift, scaled sum) pairs for log-sum-exp with all -inf rows handled,
ties to the lowest index and NaN winning for min/max and K-min. Initial states and
``finalize`` are the core's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import lax

from lazymat.plugin import Reduction

from .namespace import JaxNamespace

Merge = Callable[[JaxNamespace, Any, Any, Any], Any]

MINIMA = ("min", "argmin", "min_argmin")
MAXIMA = ("max", "argmax", "max_argmax")


def column_index(pos: Any, j0: Any) -> Any:
    """Column indices of tile positions: ``j0`` is the first column's index, or (block-sparse
    tiles) the index of each of the tile's columns."""
    return pos + j0 if jnp.ndim(j0) == 0 else jnp.take(j0, pos)


def merge_sum(xp: JaxNamespace, state: Any, vals: Any, j0: Any) -> Any:
    return state + jnp.sum(vals, axis=-1)


def merge_lse(xp: JaxNamespace, state: Any, vals: Any, j0: Any) -> Any:
    m, s = state
    new_m = jnp.maximum(m, jnp.max(vals, axis=-1))
    shift_old = jnp.where(jnp.isfinite(m), m, 0.0)
    shift_new = jnp.where(jnp.isfinite(new_m), new_m, 0.0)
    # rows still empty (m = -inf, s = 0) stay 0: exp(0 - shift_new) may overflow to inf
    rescale = jnp.exp(jnp.where(m == -jnp.inf, -jnp.inf, shift_old - shift_new))
    s = s * rescale + jnp.sum(jnp.exp(vals - shift_new[..., None]), axis=-1)
    return new_m, s


def _merge_extremum(sign: int) -> Merge:
    pick = jnp.argmin if sign > 0 else jnp.argmax

    def merge(xp: JaxNamespace, state: Any, vals: Any, j0: Any) -> Any:
        best, idx = state
        nan = jnp.isnan(vals)
        t_idx = jnp.where(jnp.any(nan, axis=-1), jnp.argmax(nan, axis=-1), pick(vals, axis=-1))
        t_val = jnp.take_along_axis(vals, t_idx[..., None], axis=-1)[..., 0]
        t_idx = column_index(t_idx.astype(xp.int64), j0)
        better = (t_val < best) if sign > 0 else (t_val > best)
        better = better | (jnp.isnan(t_val) & ~jnp.isnan(best)) | (idx < 0)  # idx -1: nothing seen
        return jnp.where(better, t_val, best), jnp.where(better, t_idx, idx)

    return merge


def init_kmin(xp: JaxNamespace, shape: tuple[int, ...], k: int, dtype: Any, device: Any) -> Any:
    """K slots of +inf whose index (the largest integer) loses every tie."""
    rows = (*shape[:-1], k)
    last = jnp.iinfo(xp.int64).max
    return jnp.full(rows, jnp.inf, dtype=dtype), jnp.full(rows, last, dtype=xp.int64)


def merge_kmin(xp: JaxNamespace, state: Any, vals: Any, j0: Any) -> Any:
    """K smallest of (state, tile), ordered by (value, index); NaN counts as -inf (it wins).

    The tile's own K best come from ``lax.top_k`` (ties to the lower index), then the
    2K candidates are sorted on the key pair (value, index).
    """
    best, idx = state
    k = best.shape[-1]
    v = vals[..., 0, :]
    key = jnp.where(jnp.isnan(v), -jnp.inf, v) + 0.0  # + 0.0: -0.0 ties with 0.0
    _, pos = lax.top_k(-key, k)
    t_val = jnp.take_along_axis(v, pos, axis=-1)
    t_key = jnp.take_along_axis(key, pos, axis=-1)
    t_idx = column_index(pos.astype(xp.int64), j0)
    best_key = jnp.where(jnp.isnan(best), -jnp.inf, best) + 0.0
    keys = jnp.concat((best_key, t_key), axis=-1)
    order = jnp.concat((idx, t_idx), axis=-1)
    values = jnp.concat((best, t_val), axis=-1)
    _, order, values = lax.sort((keys, order, values), dimension=keys.ndim - 1, num_keys=2)
    return values[..., :k], order[..., :k]


def for_reduction(red: Reduction) -> tuple[Callable[..., Any], Merge, float] | None:
    """(init, merge, padding value) for a reduction kind; None for a kind unknown here.

    The padding value fills the padded columns of the last tile: it must never change
    the result (0 for sums, -inf for log-sum-exp and max, +inf for min and K-min).
    """
    if red.name == "sum":
        return red.init, merge_sum, 0.0
    if red.name == "lse":
        return red.init, merge_lse, -jnp.inf
    if red.name in MINIMA:
        return red.init, _merge_extremum(+1), jnp.inf
    if red.name in MAXIMA:
        return red.init, _merge_extremum(-1), -jnp.inf
    if red.name in ("kmin", "argkmin", "kmin_argkmin"):
        return init_kmin, merge_kmin, jnp.inf
    return None
