r"""Log-sum-exp against the squared distance on Cartesian grids, one axis at a time.

On a grid, the points are x_i = (s^1_{i_1}, ..., s^D_{i_D}) and y_j = (t^1_{j_1}, ..., t^D_{j_D})
(one coordinate array per axis), and the squared distance splits into a sum over axes:
|x_i - y_j|^2 / 2 = sum_d (s^d_{i_d} - t^d_{j_d})^2 / 2. The reduction at the heart of
Sinkhorn, the soft-min or C-transform,

    lse_i = log sum_j exp(h_j - |x_i - y_j|^2 / (2 eps)),

therefore factors into D one-dimensional log-sum-exps, one per axis:

    lse = L_1 L_2 ... L_D h,
    (L_d u)_{.., i_d, ..} = log sum_{j_d} exp(u_{.., j_d, ..} - (s^d_{i_d} - t^d_{j_d})^2 / (2 eps)).

For a grid of N = n^D points each pass costs N * n terms, so a soft-min costs D N^(1 + 1/D)
instead of N^2 (J. Feydy's "separable distance transform", thesis section 3.3.5). Every
pass is exact (a max-shifted log-sum-exp, not a product with exp(-C / eps), which
underflows at small eps, nor an FFT, whose round-off swamps small entries): the result
is the point-cloud soft-min on the grid's points up to float round-off.

Each pass is one lazymat reduction, ``(Vj(u) - |s_i - t_j|^2 / (2 eps)).logsumexp()``,
batched over the other axes (the grid is rotated so that the reduced axis is the last):
it runs on the fastest engine, in linear memory, and is differentiable by the array
library's autodiff through lazymat's symbolic VJPs. Grids of different coordinates on the
two sides (a coarse grid and a fine one, a barycenter's grid) work alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat

from lazymat import Vi, Vj

from .costs import half_sqdist, soft_c_exponent


def axis_logsumexp(u: Any, rows: Any, cols: Any, eps: float) -> Any:
    """log sum_j exp(u_.j - (rows_i - cols_j)^2 / (2 eps)) over the last axis of ``u``.

    ``u`` has shape (..., m), ``rows`` (n,) and ``cols`` (m,); the result (..., n).
    """
    xp = array_api_compat.array_namespace(u)
    lead = tuple(u.shape[:-1])
    n, m = rows.shape[0], cols.shape[0]
    h = xp.reshape(u, (-1, m, 1))
    s = xp.reshape(rows, (1, n, 1))
    t = xp.reshape(cols, (1, m, 1))
    lse = soft_c_exponent(Vj(h), half_sqdist(Vi(s), Vj(t)), eps, u).logsumexp(axis=1)
    return xp.reshape(lse, (*lead, n))


def grid_logsumexp(h: Any, rows: Sequence[Any], cols: Sequence[Any], eps: float) -> Any:
    """log sum_j exp(h_j - |x_i - y_j|^2 / (2 eps)) for x on the grid ``rows``, y on ``cols``.

    ``h`` has shape (*batch, m_1, ..., m_D), ``rows[d]`` (n_d,) and ``cols[d]`` (m_d,)
    are the coordinates along axis d; the result has shape (*batch, n_1, ..., n_D).
    """
    xp = array_api_compat.array_namespace(h)
    dims = len(rows)
    lead = len(h.shape) - dims
    order = (*range(lead), len(h.shape) - 1, *range(lead, len(h.shape) - 1))
    for d in reversed(range(dims)):  # reduce the last axis, then rotate it to the front
        h = xp.permute_dims(axis_logsumexp(h, rows[d], cols[d], eps), order)
    return h


def flat_logsumexp(h: Any, rows: Sequence[Any], cols: Sequence[Any], eps: float) -> Any:
    """:func:`grid_logsumexp` on grids flattened in C order: h (..., M) -> (..., N)."""
    xp = array_api_compat.array_namespace(h)
    lead = tuple(h.shape[:-1])
    out = grid_logsumexp(xp.reshape(h, (*lead, *(int(t.shape[0]) for t in cols))), rows, cols, eps)
    return xp.reshape(out, (*lead, -1))
