r"""The transport plan of an OT solve: a LazyMatrix that also knows its marginals.

Every entropic solver of this package (point clouds, grids) ends with dual potentials
f, g at a temperature eps, and its plan is

    pi_ij = exp(L_ij),   L_ij = log a_i + f_i / eps + log b_j + g_j / eps - C(x_i, y_j) / eps,

an N-by-M matrix that is never stored. :class:`TransportPlan` *is* that LazyMatrix (every
reduction, ``@``, ``.T``, ``argmax``, ... works on it, in linear memory) plus what OT users
ask of a plan (GeomLoss issues #61, #80, #83):

- :meth:`~TransportPlan.marginals`: pi 1 and pi^T 1, shaped like the weights a and b;
- :meth:`~TransportPlan.to_sparse`: the largest entries of each row, either a fixed number
  (``top_k``) or the fewest that hold a fraction ``mass`` of the row (K-min reductions on
  -L, doubling K until every row is covered), as ``scipy.sparse.csr_array`` for unbatched
  numpy plans and (indices, values) arrays otherwise;
- a faster product where the solver has one: on grids, ``plan @ v`` runs as separable
  log-sum-exp passes (:mod:`.separable`) instead of an N*M reduction.

Points, weights and potentials are laid out as the core expects, (B, N, D) and (B, N):
the plan is batched when the solve was. Formulas derived from a plan (``plan * 2``,
``plan.log()``) are plain LazyMatrices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from lazymat import LazyMatrix

#: a product v -> plan @ v on flattened (B, M, E) arrays, giving (B, N, E)
Product = Callable[[Any], Any]

#: to_sparse(mass=...) gives up beyond this many entries in all (the plan is too spread out)
MAX_SPARSE_ENTRIES = 2**26


class PlanQueries:
    """What OT users ask of a plan, for any plan that gives its row sums and largest entries.

    :class:`TransportPlan` (a LazyMatrix) and :class:`~.matrix_plan.MatrixPlan` (a user's
    cost matrix) implement ``_sums`` and ``_largest``, and hold ``_a_shape``,
    ``_b_shape``, ``_batched`` and a transpose ``T``.
    """

    __slots__ = ()

    _a_shape: tuple[int, ...]
    _b_shape: tuple[int, ...]
    _batched: bool

    shape: Any  # (N, M)
    T: Any  # the transposed plan, of the same kind

    @staticmethod
    def _sums(plan: Any, m: int) -> Any:
        """plan @ 1: row sums, (N,) or (B, N)."""
        raise NotImplementedError

    def _largest(self, k: int) -> tuple[Any, Any]:
        """The k largest entries of each row, in decreasing order, and their columns: (B, N, k)."""
        raise NotImplementedError

    def _apply(self, product: Product, v: Any) -> Any:
        """pi @ v through ``product`` (flat (B, M, E) -> (B, N, E)), in the layout of LazyMatrix's ``@``."""
        xp = array_api_compat.array_namespace(v)
        m = self.shape[1]
        if len(v.shape) not in (1, 2, 3) or v.shape[0 if len(v.shape) == 1 else -2] != m:
            raise ValueError(
                f"plan @ v needs v of shape ({m},), ({m}, E) or (B, {m}, E), got {tuple(v.shape)}"
            )
        flat = xp.reshape(v, (1, m, 1)) if len(v.shape) == 1 else v
        flat = flat if len(flat.shape) == 3 else xp.reshape(flat, (1, *flat.shape))
        out = product(flat)  # (B, N, E)
        if len(v.shape) == 1:
            out = out[..., 0]
        return out if (self._batched or len(v.shape) == 3) else out[0, ...]

    def marginals(self) -> tuple[Any, Any]:
        """(pi 1, pi^T 1): the plan's row and column sums, shaped like the weights a and b."""
        rows = self._sums(self, self.shape[1])
        cols = self._sums(self.T, self.shape[0])
        xp = array_api_compat.array_namespace(rows)
        return xp.reshape(rows, self._a_shape), xp.reshape(cols, self._b_shape)

    def to_sparse(self, top_k: int | None = None, mass: float | None = None) -> Any:
        """The largest entries of each row: ``top_k`` of them, or the fewest holding ``mass`` of the row.

        Returns a ``scipy.sparse.csr_array`` of shape (N, M) for an unbatched numpy plan,
        else ``(indices, values)``: int64 indices of shape (2, nnz) (row, column) or, batched,
        (3, nnz) (batch, row, column), and the values (nnz,), in the plan's array library.
        ``mass`` in (0, 1]: rows keep their largest entries until these sum to at least
        ``mass`` times the row's total (rows of total 0 keep none).
        """
        n, m = self.shape
        assert n is not None and m is not None
        if (top_k is None) == (mass is None):
            raise ValueError("to_sparse needs exactly one of top_k= (entries per row) or mass= (fraction)")
        if top_k is not None:
            if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= m:
                raise ValueError(f"top_k must be an integer in [1, {m}] (the plan's columns), got {top_k!r}")
            values, cols = self._largest(top_k)
            keep = None
        else:
            if not isinstance(mass, (int, float)) or isinstance(mass, bool) or not 0 < mass <= 1:
                raise ValueError(f"mass must be a number in (0, 1], got {mass!r}")
            values, cols, keep = self._holding(float(mass), n, m)
        return self._sparse(values, cols, keep, n, m)

    def _holding(self, mass: float, n: int, m: int) -> tuple[Any, Any, Any]:
        """Entries, columns and a keep-mask (B, N, K) with the fewest entries per row holding ``mass``."""
        rows = self._sums(self, m)  # (N,) or (B, N)
        xp = array_api_compat.array_namespace(rows)
        need = mass * xp.reshape(rows, (-1, n, 1))
        rows_in_all = need.shape[0] * n
        k = min(m, 16)
        while True:
            if rows_in_all * k > MAX_SPARSE_ENTRIES:
                raise ValueError(
                    f"to_sparse(mass={mass}) needs {k} or more entries per row ({rows_in_all} rows): "
                    "the plan is too spread out to store; pass a smaller mass, or top_k="
                )
            values, cols = self._largest(k)
            before = xp.cumulative_sum(values, axis=-1) - values  # mass of the larger entries
            keep = (before < need * (1 - 1e-12)) & (values > 0)
            covered = xp.all(before[..., -1:] + values[..., -1:] >= need * (1 - 1e-12))
            if k == m or bool(covered):
                return values, cols, keep
            k = min(m, 2 * k)

    def _sparse(self, values: Any, cols: Any, keep: Any, n: int, m: int) -> Any:
        xp = array_api_compat.array_namespace(values)
        device = array_api_compat.device(values)
        b, _, k = values.shape
        index = xp.arange(b * n * k, dtype=xp.int64, device=device)
        batch, row = index // (n * k), (index // k) % n
        flat = [xp.reshape(v, (-1,)) for v in (values, cols)]
        if keep is not None:
            mask = xp.reshape(keep, (-1,))
            batch, row, flat = batch[mask], row[mask], [v[mask] for v in flat]
        vals, col = flat
        col = xp.astype(col, xp.int64)
        if not self._batched and isinstance(vals, np.ndarray):
            from scipy.sparse import csr_array

            return csr_array((vals, (row, col)), shape=(n, m))
        parts = [batch, row, col] if self._batched else [row, col]
        return xp.stack(parts, axis=0), vals


class TransportPlan(PlanQueries, LazyMatrix):
    """pi = exp(L), never stored; built by the solvers (see the module docstring).

    ``a_shape`` and ``b_shape`` are the shapes of the user's weights (``(N,)``, ``(B, N)``,
    an image ``(n1, n2)``, ...): :meth:`~lazymat.solvers.lazy_plan.PlanQueries.marginals`
    returns arrays of these shapes.
    """

    __slots__ = ("_a_shape", "_b_shape", "_batched", "_log", "_product", "_product_t")

    _log: LazyMatrix
    _a_shape: tuple[int, ...]
    _b_shape: tuple[int, ...]
    _batched: bool
    _product: Product | None
    _product_t: Product | None

    @classmethod
    def _new(cls, formula: Any, bindings: dict[Any, Any], backend: Any) -> Any:
        # formulas derived from a plan (plan * v, plan.T's formula, ...) are plain LazyMatrices
        return LazyMatrix._new(formula, bindings, backend)

    @classmethod
    def build(
        cls,
        log_plan: LazyMatrix,
        a_shape: tuple[int, ...],
        b_shape: tuple[int, ...],
        batched: bool,
        product: Product | None = None,
        product_t: Product | None = None,
    ) -> TransportPlan:
        """The plan exp(``log_plan``); ``product`` / ``product_t``: fast plan @ v and plan.T @ v."""
        matrix = log_plan.exp()
        plan: TransportPlan = object.__new__(cls)
        plan.formula, plan.bindings, plan.backend = matrix.formula, matrix.bindings, matrix.backend
        plan._log, plan._a_shape, plan._b_shape, plan._batched = log_plan, a_shape, b_shape, batched
        plan._product, plan._product_t = product, product_t
        return plan

    @property
    def log_plan(self) -> LazyMatrix:
        """The LazyMatrix L = log pi (log a_i + f_i/eps + log b_j + g_j/eps - C_ij/eps)."""
        return self._log

    @property
    def T(self) -> TransportPlan:  # noqa: N802
        """The transposed plan (from y to x), a TransportPlan too."""
        return TransportPlan.build(
            self._log.T, self._b_shape, self._a_shape, self._batched, self._product_t, self._product
        )

    def __matmul__(self, v: Any) -> Any:
        """pi @ v for a dense v of shape (M,), (M, E) or, batched, (B, M, E): as LazyMatrix's ``@``."""
        if self._product is None or isinstance(v, LazyMatrix):
            return LazyMatrix.__matmul__(self, v)
        return self._apply(self._product, v)

    @staticmethod
    def _sums(plan: Any, m: int) -> Any:
        x = next(iter(plan.bindings.values()))
        xp = array_api_compat.array_namespace(x)
        return plan @ xp.ones((m,), dtype=x.dtype, device=array_api_compat.device(x))

    def _largest(self, k: int) -> tuple[Any, Any]:
        """The k largest entries of each row, in decreasing order, and their columns: (B, N, k)."""
        neg, cols = (-self._log).Kmin_argKmin(k, axis=1)
        xp = array_api_compat.array_namespace(neg)
        n = self.shape[0]
        return xp.reshape(xp.exp(-neg), (-1, n, k)), xp.reshape(cols, (-1, n, k))
