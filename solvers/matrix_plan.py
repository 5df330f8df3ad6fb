r"""The transport plan of a solve on a cost matrix the user holds, and the soft-mins on it.

When the cost is a dense array C (N, M) (or a batch (B, N, M)) given by the user, not a
formula, the plan

    pi_ij = exp(u_i + w_j - C_ij / eps),   u = log a + f / eps,   w = log b + g / eps,

is an operator on C and two vectors: :class:`MatrixPlan` answers ``plan @ v``, ``plan.T``,
the marginals and ``to_sparse`` (the queries of :class:`~.lazy_plan.PlanQueries`) without
storing pi. Every operation walks C by blocks of rows (:func:`row_blocks`, at most
:data:`BLOCK_ENTRIES` entries of C at a time), so that no array of size N*M is created
besides the user's C: the soft-min of the Sinkhorn loop (:func:`log_sum_exp`), the products,
the largest entries of each row. The transposed plan reads C's transpose (a view).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import array_api_compat

from .lazy_plan import PlanQueries

#: the most entries of C a block operation holds at once (temporaries of this size)
BLOCK_ENTRIES = 2**21


def row_blocks(n: int, m: int) -> Iterator[slice]:
    """Slices of consecutive rows of an (N, M) matrix, with at most BLOCK_ENTRIES entries each."""
    rows = max(1, BLOCK_ENTRIES // max(m, 1))
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def transposed(xp: Any, c: Any) -> Any:
    """C^T of a batch of matrices (B, N, M) -> (B, M, N), a view where the library has them."""
    return xp.permute_dims(c, (0, 2, 1))


def underflow_floor(xp: Any, dtype: Any) -> float:
    """log of e^10 times ``dtype``'s smallest normal number: exponents below it count as it
    (:func:`log_sum_exp`) or as 0 (:func:`exp`), a change below the smallest normal times e^10."""
    return math.log(float(xp.finfo(dtype).smallest_normal)) + 10


def exp(xp: Any, z: Any) -> Any:
    """exp(z), with exact zeros where exp(z) < e^10 times the dtype's smallest normal number.

    torch's CPU exp of float64 arguments whose result underflows (the log-weight LOG_ZERO of
    a zero mass, C_ij / eps >> 1) takes 20 to 50 times longer than of others (64 x 64, one
    thread: 0.15-0.47 ms at -1e5 and -745 against 0.008 ms at -698); the arguments are
    clamped before the exponential and the results below the threshold set to 0 (a change
    below the dtype's smallest normal number times e^10).
    """
    floor = underflow_floor(xp, z.dtype)
    return xp.where(z > floor, xp.exp(xp.maximum(z, floor)), xp.zeros_like(z))


def log_sum_exp(xp: Any, c: Any, h: Any, inv_eps: float) -> Any:
    """log sum_j exp(h_j - C_ij / eps) for C (B, N, M) and h (B, M): (B, N), block by block.

    The largest term of each row is factored out, so that no exponential overflows.
    """
    floor = underflow_floor(xp, c.dtype)  # see exp(): terms below it are
    out = []  # counted as e^floor, which changes the sum (>= 1, the largest term) by M e^floor at most
    for rows in row_blocks(int(c.shape[1]), int(c.shape[2])):
        z = c[:, rows, :] * (-inv_eps)
        z += h[:, None, :]
        top = xp.max(z, axis=-1)
        z -= top[..., None]
        out.append(top + xp.log(xp.sum(xp.exp(xp.maximum(z, floor)), axis=-1)))
    return out[0] if len(out) == 1 else xp.concat(out, axis=1)


class MatrixPlan(PlanQueries):
    """pi_ij = exp(u_i + w_j - C_ij / eps) for a user's cost matrix, never stored.

    ``c`` (B, N, M), ``u`` (B, N), ``w`` (B, M), cut from autodiff; ``a_shape`` and
    ``b_shape`` are the shapes of the user's weights (marginals come back in them),
    ``batched`` whether the user's C had a batch axis.
    """

    __slots__ = ("_a_shape", "_b_shape", "_batched", "_c", "_eps", "_u", "_w", "_xp")

    def __init__(
        self,
        c: Any,
        u: Any,
        w: Any,
        eps: float,
        a_shape: tuple[int, ...],
        b_shape: tuple[int, ...],
        batched: bool,
    ) -> None:
        self._c, self._u, self._w, self._eps = c, u, w, eps
        self._a_shape, self._b_shape, self._batched = a_shape, b_shape, batched
        self._xp = array_api_compat.array_namespace(c)

    def __repr__(self) -> str:
        n, m = self.shape
        batch = f"{self._c.shape[0]} x " if self._batched else ""
        return f"MatrixPlan({batch}{n} x {m}, eps={self._eps:g})"

    @property
    def shape(self) -> tuple[int, int]:
        """(N, M): the plan's rows and columns."""
        return int(self._c.shape[1]), int(self._c.shape[2])

    @property
    def T(self) -> MatrixPlan:  # noqa: N802
        """The transposed plan (from b's support to a's), on C's transpose."""
        xp = self._xp
        return MatrixPlan(
            transposed(xp, self._c), self._w, self._u, self._eps, self._b_shape, self._a_shape, self._batched
        )

    def _log_block(self, rows: slice) -> Any:
        """log pi on a block of rows: (B, rows, M)."""
        return self._u[:, rows, None] + self._w[:, None, :] - self._c[:, rows, :] * (1.0 / self._eps)

    def _product(self, v: Any) -> Any:
        """pi @ v for v (B' , M, E), block by block: (B, N, E)."""
        xp = self._xp
        n, m = self.shape
        out = [xp.matmul(exp(xp, self._log_block(rows)), v) for rows in row_blocks(n, m)]
        return out[0] if len(out) == 1 else xp.concat(out, axis=1)

    def __matmul__(self, v: Any) -> Any:
        """pi @ v for a dense v of shape (M,), (M, E) or, batched, (B, M, E)."""
        return self._apply(self._product, v)

    @staticmethod
    def _sums(plan: Any, m: int) -> Any:
        xp, c = plan._xp, plan._c
        return plan @ xp.ones((m,), dtype=c.dtype, device=array_api_compat.device(c))

    def _largest(self, k: int) -> tuple[Any, Any]:
        """The k largest entries of each row, in decreasing order, and their columns: (B, N, k)."""
        xp = self._xp
        n, m = self.shape
        values, cols = [], []
        for rows in row_blocks(n, m):
            log = self._log_block(rows)
            top = xp.argsort(log, axis=-1, descending=True, stable=False)[..., :k]
            values.append(exp(xp, xp.take_along_axis(log, top, axis=-1)))
            cols.append(top)
        if len(values) == 1:
            return values[0], cols[0]
        return xp.concat(values, axis=1), xp.concat(cols, axis=1)
