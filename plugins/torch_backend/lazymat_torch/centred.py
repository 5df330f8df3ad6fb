"""Centred operands of the GEMM form of ``|a_i - b_j|^2``, and a rigorous bound of its rounding.

``|a - b|^2 = |a|^2 + |b|^2 - 2 <a, b>`` cancels catastrophically when the points lie far
from the origin compared with their distances: float32 points 10^4 from the origin carry
roundings of about 10 in ``|a|^2`` alone, a float64 cloud 10^7 away about 10^-2. The
distance is invariant under a common translation of both sides, so both are moved by one
point ``c`` first: the midpoint of the bounding box of all their finite rows
(:class:`CentredPair`). The GEMM's error then depends on the clouds' extent, not on where
they lie. (Far from the origin, ``a - c`` is even exact: Sterbenz's lemma.)

The bound. With ``u`` the unit roundoff, ``g_n = n u / (1 - n u)`` and
``r_i = |a_i - c| + max_j |b_j - c|``, the GEMM value of ``s |a_i - b_j|^2 + t_j``, on
augmented rows ``[a - c, |a - c|^2, 1] . [-2 s (b - c), s, s |b - c|^2 + t]``, differs from
the true value by at most ``|s| e_i + g_(D+3) |t_j|``, with ``e_i = g_(2D+8) r_i^2``
(:func:`gemm_error`): the norms carry ``g_D`` relative errors, each term of the (D + 2)-term
dot product ``g_(D+2)`` more (its terms' magnitudes add up to at most ``|s| (|a - c| +
|b - c|)^2 + |t|``, Cauchy-Schwarz), the scale and the shift a few roundings each, and the
rounding of ``a - c`` and ``b - c`` (``u |a - c|`` each) moves the distance by at most
``(2u + u^2) r_i^2``; ``g_(2D+8)`` covers them all (and the base-2 scaling of
:mod:`lazymat_torch.lse_gemm`). The ``|t_j|`` part is a relative error of the shift, which
the exact evaluation makes too; ``|s| e_i`` is the GEMM's own.

Where the GEMM stands, with :func:`tolerance` ``= 64 sqrt(u)`` (1.6e-2 in float32, 6.7e-7
in float64): a folded exponential's argument ``s d + t`` (the Gaussian kernel, the
softmin; s a constant or a parameter's value) takes the GEMM for row i while
``|s| e_i <= tolerance``, the kernel's scale being ``1 / |s|``: the GEMM then moves every
exponential by that fraction at most. A bare squared distance, whose scale the node
cannot know (what reads it may be any function), keeps the GEMM value of a pair while
``e_i <= tolerance`` times that value, and its other pairs (the near ones, where the
expansion cancels) are evaluated exactly: a pass of row minima finds the rows that hold
any. Rows
or columns with a non-finite coordinate are always evaluated exactly (their GEMM would mix
``inf - inf``), so that +inf in x_i and -inf in y_j give what the exact evaluation gives.
The bound is a worst case (every rounding with the same sign); typical errors are orders
of magnitude smaller.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: the GEMM's bound may reach this times sqrt(unit roundoff) of the kernel's scale
TOLERANCE_FACTOR = 64.0


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the machine epsilon of ``dtype``."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """``n u / (1 - n u)``: the relative error bound of n roundings in ``dtype``."""
    nu = n * unit_roundoff(dtype)
    return nu / (1.0 - nu) if nu < 0.5 else math.inf


def tolerance(dtype: torch.dtype) -> float:
    """The largest error of the GEMM, as a fraction of the kernel's scale or of a bare
    distance (``64 sqrt(u)``, see the module)."""
    return TOLERANCE_FACTOR * math.sqrt(unit_roundoff(dtype))


def gemm_error(radius: Any, dim: int, dtype: torch.dtype) -> Any:
    """``e_i = g_(2D+8) r_i^2`` (float64) for ``r_i`` (``radius``, float64): a bound on the
    GEMM's rounding of ``|a_i - b_j|^2`` on centred operands, over every j."""
    return gamma(2 * dim + 8, dtype) * radius.square()


def exact_sqdist(a: Any, b: Any) -> Any:
    """sum_d (a_d - b_d)^2 of broadcast (..., D) arrays, summed over d in order (as the
    exact evaluation does), without a D-wide intermediate."""
    out = torch.sub(a[..., 0], b[..., 0])
    out.mul_(out)
    if a.shape[-1] > 1:
        tmp = torch.empty_like(out)
        for d in range(1, a.shape[-1]):
            torch.sub(a[..., d], b[..., d], out=tmp)
            out.add_(tmp.mul_(tmp))
    return out


def _finite_rows(x: Any) -> Any:
    """Which rows of ``x`` (..., L, D) have finite coordinates only, over any batch: (L,)."""
    finite = torch.isfinite(x).all(-1)
    return finite.reshape(-1, finite.shape[-1]).all(0)


class CentredPair:
    """``a`` (B|1, N, D) and ``b`` (B|1, M, D), both moved by their common centre.

    ``a_c``, ``b_c``: the centred operands (the input dtype); ``radius`` (N,), float64:
    r_i, the largest over the batch (inf for a row with a non-finite coordinate), and
    ``error`` the bound e_i of :func:`gemm_error`; ``bad_rows`` (N,) and ``bad_cols``
    (M,): the rows and columns with a non-finite coordinate. The originals ``a`` and ``b``
    serve the exact evaluation.
    """

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b
        dim = a.shape[-1]
        self.bad_rows, self.bad_cols = ~_finite_rows(a), ~_finite_rows(b)
        centre = self.centre(a, b, self.bad_rows, self.bad_cols)
        self.a_c, self.b_c = a - centre, b - centre
        a_norm = torch.linalg.vector_norm(self.a_c.double(), dim=-1).reshape(-1, a.shape[-2]).amax(0)
        b_norm = torch.linalg.vector_norm(self.b_c.double(), dim=-1).reshape(-1, b.shape[-2]).amax(0)
        b_max = b_norm[~self.bad_cols].amax() if bool((~self.bad_cols).any()) else b_norm.new_zeros(())
        self.radius = torch.where(self.bad_rows, math.inf, a_norm + b_max)
        self.error = gemm_error(self.radius, dim, a.dtype)

    @staticmethod
    def centre(a: Any, b: Any, bad_rows: Any, bad_cols: Any) -> Any:
        """The midpoint of the bounding box of the finite rows of ``a`` and ``b`` (D,) in
        their dtype (the origin when there is none)."""
        dim = a.shape[-1]
        rows = torch.cat((a[..., ~bad_rows, :].reshape(-1, dim), b[..., ~bad_cols, :].reshape(-1, dim)))
        if rows.shape[0] == 0:
            return a.new_zeros(a.shape[-1])
        rows = rows.double()
        return ((rows.amin(0) + rows.amax(0)) / 2).to(a.dtype)

    def exact(self, rows: Any, cols: Any) -> Any:
        """The exact ``|a_i - b_j|^2`` (B|1, k, l) for the rows ``rows`` and the columns
        ``cols`` (each a slice or an index tensor), from the original operands."""
        return exact_sqdist(self.a[:, rows, None, :], self.b[:, None, cols, :])
