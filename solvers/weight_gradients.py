r"""Gradients of Sinkhorn values in the weights a, b, without autodiff (numpy, cupy, ...).

The values of :mod:`.sinkhorn_divergence` are written with the final potentials, which do not depend
on the weights (the last extrapolation holds them constant), so their gradients in a and
b are those of the value formulas at constant potentials: exactly what torch.autograd or
jax.grad give, and at convergence the derivatives of the value (envelope theorem):

- balanced: f - f_aa and g - g_bb (f and g without debiasing);
- KL: (rho + eps) (e^{-f_aa/rho} - e^{-f/rho}), likewise for b; without debiasing
  (rho + eps) (1 - e^{-f/rho}) - eps/2;
- TV: the dual objective's f - eps R_ab - (f_aa - eps R_aa), with the plan's row densities
  R_ab,i = sum_j b_j exp((f_i + g_j - C_ij) / eps) = exp((f_i - s_i) / eps) (s the soft-min of
  g over (y, b)) and R_aa likewise for OT(a, a); without debiasing f - eps R_ab + eps m_b.

The gradients in the points are :meth:`~.ot_result.OTResult.gradients`.
"""

from __future__ import annotations

from typing import Any

from lazymat import Vi, Vj

from .costs import Cost, evaluate_cost
from .measures import Measures
from .ot_result import OTResult
from .penalties import Balanced, KullbackLeibler, Penalty
from .sinkhorn_loop import log_weights, softmin


def _row_density(m: Measures, x: Any, y: Any, b: Any, f: Any, g: Any, eps: float, cost: Cost) -> Any:
    """sum_j b_j exp((f_i + g_j - C(x_i, y_j)) / eps), (B, N)."""
    xp = m.xp
    s = softmin(xp, evaluate_cost(cost, Vi(x), Vj(y)), log_weights(xp, b) + g / eps, eps, axis=1)
    return xp.exp((f - s) / eps)


def sinkhorn_weight_gradients(
    r: OTResult, m: Measures, cost: Cost, penalty: Penalty, debias: bool
) -> tuple[Any, Any]:
    """(dS/da, dS/db) of the module docstring, batched layout (B, N), (B, M)."""
    xp, eps = m.xp, r.eps

    def batched(v: Any, like: Any) -> Any:
        return xp.reshape(v, like.shape)

    f, g = batched(r.f, m.a), batched(r.g, m.b)
    f_aa = batched(r.f_aa, m.a) if debias else None
    g_bb = batched(r.g_bb, m.b) if debias else None
    if isinstance(penalty, Balanced):
        if f_aa is None or g_bb is None:
            return f, g
        return f - f_aa, g - g_bb
    if isinstance(penalty, KullbackLeibler):
        rho = penalty.rho
        assert rho is not None
        c = rho + eps
        if f_aa is None or g_bb is None:
            return c * (1 - xp.exp(-f / rho)) - eps / 2, c * (1 - xp.exp(-g / rho)) - eps / 2
        return c * (xp.exp(-f_aa / rho) - xp.exp(-f / rho)), c * (xp.exp(-g_bb / rho) - xp.exp(-g / rho))
    ga = f - eps * _row_density(m, m.x, m.y, m.b, f, g, eps, cost)
    gb = g - eps * _row_density(m, m.y, m.x, m.a, g, f, eps, cost)
    if f_aa is None or g_bb is None:
        mass_a, mass_b = xp.sum(m.a, axis=-1, keepdims=True), xp.sum(m.b, axis=-1, keepdims=True)
        return ga + eps * mass_b, gb + eps * mass_a
    ga = ga - (f_aa - eps * _row_density(m, m.x, m.x, m.a, f_aa, f_aa, eps, cost))
    gb = gb - (g_bb - eps * _row_density(m, m.y, m.y, m.b, g_bb, g_bb, eps, cost))
    return ga, gb
