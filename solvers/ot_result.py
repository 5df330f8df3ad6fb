"""What every OT solve returns: one result object for point clouds, grids and cost matrices.

:class:`OTResult` holds the value (the debiased divergence, or the entropic OT value), the
dual potentials f, g of OT(a, b) and f_aa, g_bb of OT(a, a), OT(b, b) (debiasing), the
iteration count, convergence flag, temperature and annealing schedule, all in the user's
layout (batched or not, clouds (N,) or grids (n1, n2, ...)). The rest is computed on first
access, from what the solver left behind (a :class:`Solution`, one per geometry):

- ``plan``: the transport plan as a :class:`~.lazy_plan.TransportPlan` (a LazyMatrix with
  marginals and ``to_sparse``), or for a user's cost matrix (:func:`~.matrix_ot.solve`) a
  :class:`~.matrix_plan.MatrixPlan` answering the same queries;
- ``marginals`` and ``marginal_errors``: pi 1, pi^T 1 and their L1 distances to a and b;
- ``barycentric_map()``: x_i -> sum_j pi_ij y_j / a_i, the Brenier map estimate, shaped
  like the points (clouds (N, D), grids (n1, ..., nD, D));
- ``gradients()``: the value's gradients in the points without autodiff (clouds).

This is GeomLoss 0.3.1's ``geomloss.ot.OTResult`` idea (a result whose plan is a lazy
operator) with lazymat's LazyMatrix as the operator.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

from .lazy_plan import TransportPlan
from .matrix_plan import MatrixPlan

#: a plan of clouds and grids (a LazyMatrix), or of a user's cost matrix
Plan = TransportPlan | MatrixPlan


class Solution:
    """What a solver leaves behind for :class:`OTResult`: one subclass per geometry."""

    def plan(self) -> Plan:
        """The transport plan of OT(a, b)."""
        raise NotImplementedError

    def weights(self) -> tuple[Any, Any]:
        """The weights a, b in the user's layout."""
        raise NotImplementedError

    def target_points(self) -> Any:
        """The points y_j, flattened as the plan's columns: (B or 1, M, D)."""
        raise NotImplementedError

    def map_shape(self, d: int) -> tuple[int, ...]:
        """The shape of the barycentric map in the user's layout (a's shape, then D)."""
        raise NotImplementedError

    def gradients(self) -> tuple[Any, Any]:
        """The value's gradients in the points, without autodiff."""
        raise NotImplementedError(f"gradients() is not available for {type(self).__name__}")


@dataclass
class OTResult:
    """What the OT solvers return (see the module docstring). Arrays keep the user's layout.

    Attributes: ``value`` (shape () or (B,)), potentials ``f`` (on a's support) and ``g``
    (on b's) of OT(a, b), ``f_aa`` and ``g_bb`` of OT(a, a) and OT(b, b) (None without
    debiasing), ``n_iter`` Sinkhorn iterations, ``converged`` (None unless ``tol`` was
    given), ``eps`` (the final temperature), ``rho`` (None: balanced), ``schedule`` (the
    temperatures of the annealing, one per iteration).
    """

    value: Any
    f: Any
    g: Any
    f_aa: Any
    g_bb: Any
    n_iter: int
    converged: bool | None
    eps: float
    rho: float | None
    schedule: list[float]
    _solution: Solution = field(repr=False)

    @functools.cached_property
    def plan(self) -> Plan:
        """The transport plan pi_ij = a_i b_j exp((f_i + g_j - C_ij) / eps), never stored.

        For batched inputs, a batched LazyMatrix: reductions give (B, N, ...) arrays. Rows
        and columns run over the flattened supports (grids in C order). GeomLoss's short
        schedule (``tol=None``) gives an accurate value, but at small blur a plan whose
        marginals may be tens of percent off: pass ``tol`` for a plan that transports a
        onto b, and check :attr:`marginal_errors`.
        """
        return self._solution.plan()

    @functools.cached_property
    def marginals(self) -> tuple[Any, Any]:
        """(pi 1, pi^T 1), shaped like a and b."""
        return self.plan.marginals()

    @functools.cached_property
    def marginal_errors(self) -> tuple[Any, Any]:
        """``(|pi 1 - a|_1, |pi^T 1 - b|_1)``, shape () or (B,) (one per problem of a batched plan).

        Zero at convergence for balanced transport; for unbalanced transport the
        marginals differ from a, b by design.
        """
        rows, cols = self.marginals
        a, b = self._solution.weights()
        xp = array_api_compat.array_namespace(rows)
        batched = self.plan._batched

        def l1(v: Any) -> Any:  # per batch; an array of shape () when unbatched
            total = xp.sum(xp.abs(xp.reshape(v, (v.shape[0] if batched else 1, -1))), axis=-1)
            return total if batched else total[0, ...]

        return l1(rows - a), l1(cols - b)

    def barycentric_map(self) -> Any:
        """x_i -> sum_j pi_ij y_j / a_i: where the plan sends each point of a's support on average.

        Shaped like the points: (N, D) / (B, N, D) for clouds, (n1, ..., nD, D) (with a
        leading B if batched) for grids. NaN where a_i = 0 (no mass to send). With a
        balanced plan at convergence this is the barycentric projection (the Brenier map
        estimate, Feydy's thesis section 3.4); otherwise it divides by a_i, not by the
        plan's row sums.
        """
        y = self._solution.target_points()
        a, _ = self._solution.weights()
        xp = array_api_compat.array_namespace(y)
        moved = self.plan @ y
        d = y.shape[-1]
        moved = xp.reshape(moved, self._solution.map_shape(d))
        a_col = xp.reshape(a, (*a.shape, 1))
        nan = xp.asarray(float("nan"), dtype=moved.dtype, device=array_api_compat.device(moved))
        return xp.where(a_col > 0, moved / xp.where(a_col > 0, a_col, xp.ones_like(a_col)), nan)

    def gradients(self) -> tuple[Any, Any]:
        """(dS/dx, dS/dy), shaped like x and y, for array libraries without autodiff (clouds).

        The gradients that torch.autograd or jax.grad give for ``value`` (see
        ``lazymat.solvers.envelope``), from lazymat's symbolic VJPs; at convergence, the derivatives
        of the value (envelope theorem). Divided by the weights: the velocity field of a
        Wasserstein gradient flow.
        """
        return self._solution.gradients()
