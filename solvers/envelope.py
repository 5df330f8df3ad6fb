"""Gradients of Sinkhorn values in the points without autodiff (numpy, cupy, ...).

They are the very gradients that torch.autograd or jax.grad compute through
:func:`~lazymat.solvers.sinkhorn`'s last extrapolation, obtained from lazymat's
symbolic VJPs (``lazymat.vjp``) instead:

- balanced and KL: the value is a function of the extrapolated potentials, each a
  soft-min f_i = lam * (-eps) log sum_j exp(h_j - C(x_i, y_j) / eps) with h constant and
  lam the penalty's (linear) damping. With w = dvalue/df, the gradient in x is the VJP of
  that log-sum-exp reduction with cotangent -lam eps w;
- TV: the value is the dual objective at constant potentials, whose gradient is that of
  sum_ij pi_ij C(x_i, y_j) with the plan pi held constant
  (:func:`~lazymat.solvers.transport_plan.transport_cost_gradients`).
"""

from __future__ import annotations

from typing import Any

import lazymat
from lazymat import Vi, Vj

from .costs import evaluate_cost, soft_c_exponent
from .penalties import Balanced, KullbackLeibler, Penalty
from .sinkhorn_loop import Transport


def potential_weights(
    xp: Any, penalty: Penalty, eps: float, a: Any, b: Any, pots: list[tuple[Any, ...]], debias: bool
) -> list[tuple[Any, ...]]:
    """dvalue/dpotential for each potential of ``pots`` (balanced or KL values)."""
    if isinstance(penalty, Balanced):
        scale = [(a, b), (-a,), (-b,)]
    elif isinstance(penalty, KullbackLeibler):
        rho = penalty.rho
        assert rho is not None
        c = (rho + eps) / rho  # the value weighs rho + eps in its gradient (see .sinkhorn)
        f, g = pots[0]
        scale = [(c * a * xp.exp(-f / rho), c * b * xp.exp(-g / rho))]
        if debias:
            scale += [(-c * a * xp.exp(-pots[1][0] / rho),), (-c * b * xp.exp(-pots[2][0] / rho),)]
    else:
        raise TypeError(f"potential weights are defined for balanced and KL values, not {penalty!r}")
    return scale[: len(pots)]


def _column(xp: Any, v: Any) -> Any:
    return xp.reshape(v, (*v.shape, 1))


def extrapolation_vjp(
    t: Transport, pots: tuple[Any, ...], eps: float, penalty: Penalty, weights: tuple[Any, ...]
) -> tuple[Any, Any | None]:
    """Gradients of sum_i w_i f_i(x) (+ sum_j w'_j g_j(y)) through ``t.extrapolate``.

    Returns (gradient in x, gradient in y or None for a self-problem); ``penalty`` must be
    linear (balanced or KL), so that its update maps a cotangent like a potential.
    """
    xp, stop = t.xp, t.stop

    def frozen(v: Any) -> Any:  # a distinct array: the VJP must skip the constant side
        return xp.asarray(stop(v), copy=True)

    f = pots[0]
    g = f if t.symmetric else pots[1]
    h = _column(xp, stop(t.log_b + g / eps))
    rows = soft_c_exponent(
        Vj(h), evaluate_cost(t.cost, Vi(t.x), Vj(frozen(t.x if t.symmetric else t.y))), eps, h
    )
    cot = _column(xp, -eps * penalty.update(xp, weights[0], eps))
    (gx,) = lazymat.vjp(rows, cot, reduction="lse", axis=1, wrt=[t.x], ranges=t.ranges)
    if t.symmetric:
        return gx, None
    h = _column(xp, stop(t.log_a + f / eps))
    cols = soft_c_exponent(Vi(h), evaluate_cost(t.cost, Vi(frozen(t.x)), Vj(t.y)), eps, h)
    cot = _column(xp, -eps * penalty.update(xp, weights[1], eps))
    (gy,) = lazymat.vjp(cols, cot, reduction="lse", axis=0, wrt=[t.y], ranges=t.ranges)
    return gx, gy
