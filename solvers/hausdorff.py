r"""The eps-Hausdorff divergence between weighted point clouds (Feydy, Trouve 2018), and its exact gradient.

A soft, debiased weighted Hausdorff (chamfer / ICP) distance. Let phi be the potential
of OT(a, a) after the annealed Sinkhorn loop (:mod:`.sinkhorn_loop`, the self-problem
only), a fixed point phi = T_a(phi) of its symmetric update, and the soft-min from the
cloud (x, a)

    S_a(z; phi) = pen(-eps log sum_k a_k exp((phi_k - C(z, x_k)) / eps)),

pen the penalty's update (:mod:`.penalties`: identity, KL damping or TV clamp), so that
T_a(phi) = S_a(x; phi) is the extrapolated self-potential f_aa; likewise psi, T_b, S_b
on (y, b). The divergence is

    H(a, b) = 1/2 <a, S_b(x; psi) - T_a(phi)> + 1/2 <b, S_a(y; phi) - T_b(psi)>.

As blur -> 0, S_a(z) tends to the distance min_k C(x_k, z) to the cloud and H to the
symmetric chamfer distance; as blur -> +infinity, to the kernel norm -1/2 <a - b, C (a - b)>
(the energy distance for p = 1).

**Gradients.** H depends on (x, a) directly (every soft-min has x, a live, in both slots
of T_a) and through phi, whose dependence is implicit: no envelope theorem applies, as H
is not an optimum over phi. By the implicit-function theorem, with w = dH/dphi (at fixed
points and weights) and J = d T_a / d phi = -D Q (Q_ik = a_k exp((s_i + phi_k - C_ik) / eps)
the soft-min's row-stochastic weights, s its raw value, D = pen's slope),

    dH/d(x, a) = explicit part + v^T dT_a/d(x, a),   (I + Q^T D) v = w.

The eigenvalues of Q^T D lie in [0, 1] for a positive definite kernel exp(-C / eps) (p = 1
and 2): Q is similar to a positive semi-definite matrix with rows summing to 1; so the
adjoint system is solved by Richardson iterations v <- v + 2/3 (w - v - Q^T D v), which
contract by 1/3 at least, one reduction each. Products Q^T u are sum reductions over i of
u_i exp((s_i + phi_k - C_ik) / eps) (:func:`_transposed_sum`), which also give the gradient in
the weights a_k (exact at a_k = 0, unlike a derivative through log a_k).

On backends with autodiff (torch, jax) phi and psi come out of one op of the backend's
autodiff hook (``Backend.custom_vjp``): its backward solves the adjoint system for the
cotangent w that autodiff brings, and adds v^T dT_a/d(x, a); the explicit part is autodiff
through the soft-min reductions. :func:`hausdorff_gradients` gives the same gradients
without autodiff (numpy, cupy), from lazymat's symbolic VJPs.

GeomLoss 0.3.1 lists a "hausdorff" loss but its routine fails (KeyError), so this follows
the paper's definition.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat

import lazymat
from lazymat import Vi, Vj

from .conjugate_gradient import ConvergenceWarning
from .costs import Cost, evaluate_cost, soft_c_exponent
from .measures import Measures
from .penalties import Penalty
from .sinkhorn_loop import Transport, log_weights, softmin
from .stacked_softmins import stacked_sinkhorn_loop

#: Richardson step of the adjoint solve: optimal for eigenvalues of I + Q^T D in [1, 2]
ADJOINT_STEP = 2.0 / 3.0
#: the adjoint solve stops when its residual is below this fraction of its right-hand side
ADJOINT_TOL = 1e-13
#: ... or after this many iterations (each contracts the error by 1/3 at least)
ADJOINT_MAX_ITER = 80


def _column(xp: Any, v: Any) -> Any:
    return xp.reshape(v, (*v.shape, 1))


@dataclass
class SoftMin:
    """s_i = -eps log sum_k w_k exp((phi_k - C(z_i, u_k)) / eps) and its penalised value.

    ``z`` (B, N, D) on the rows, ``u`` (B, M, D) and weights ``w`` (B, M) on the columns;
    ``own``: a cloud's soft-min on itself (z is u: both slots carry the same array).
    """

    z: Any
    u: Any
    w: Any
    phi: Any
    eps: float
    cost: Cost
    penalty: Penalty
    own: bool = False

    def __post_init__(self) -> None:
        xp = self.xp = array_api_compat.array_namespace(self.z)
        h = log_weights(xp, self.w) + self.phi / self.eps
        self.raw = softmin(xp, evaluate_cost(self.cost, Vi(self.z), Vj(self.u)), h, self.eps, axis=1)
        self.value = self.penalty.update(xp, self.raw, self.eps)

    def slope(self) -> Any:
        return self.penalty.slope(self.xp, self.raw, self.eps)

    def transposed_sum(self, c: Any) -> Any:
        """R(c)_k = sum_i c_i exp((s_i + phi_k - C(z_i, u_k)) / eps), (B, M): Q^T c / w, and
        -1/eps times the gradient in w of <c, s>."""
        return _transposed_sum(self.xp, self.cost, self.z, self.u, self.raw, self.phi, c, self.eps)

    def vjp(self, cot: Any) -> tuple[Any, Any | None, Any, Any]:
        """Gradients of <cot, value> in z, u (None for ``own``: z's gradient has both slots),
        w and phi, all other arrays held constant."""
        xp, eps = self.xp, self.eps
        c = cot * self.slope()
        r = self.transposed_sum(c)
        g_w, g_phi = -eps * r, -self.w * r
        h = log_weights(xp, self.w) + self.phi / eps
        u = self.z if self.own else xp.asarray(self.u, copy=True)  # distinct arrays for wrt
        rows = soft_c_exponent(Vj(_column(xp, h)), evaluate_cost(self.cost, Vi(self.z), Vj(u)), eps, h)
        wrt = [self.z] if self.own else [self.z, u]
        grads = lazymat.vjp(rows, _column(xp, -eps * c), reduction="lse", axis=1, wrt=wrt)
        return grads[0], (None if self.own else grads[1]), g_w, g_phi


def _transposed_sum(xp: Any, cost: Cost, z: Any, u: Any, s: Any, phi: Any, c: Any, eps: float) -> Any:
    """sum_i c_i exp((s_i + phi_k - C(z_i, u_k)) / eps) as a sum reduction over i: (B, M).
    The exponent is log Q_ik - log w_k <= -log w_k: no overflow."""
    log_q = Vi(_column(xp, s / eps)) + Vj(_column(xp, phi / eps))
    exponent = soft_c_exponent(log_q, evaluate_cost(cost, Vi(z), Vj(u)), eps, s)
    out = (exponent.exp() * Vi(_column(xp, c))).sum(axis=0)
    return xp.reshape(out, tuple(out.shape[:-1]))


def _max_abs(xp: Any, v: Any) -> float | None:
    """sup |v|, or None for traced arrays without values (jax.jit): iterate to the cap."""
    try:
        return float(xp.max(xp.abs(v)))
    except TypeError:  # jax's ConcretizationTypeError
        return None


def adjoint_solve(own: SoftMin, w: Any) -> Any:
    """v with v + Q^T (D v) = w for the cloud's own soft-min T (module docstring)."""
    xp = own.xp
    slope = own.slope()
    scale = _max_abs(xp, w)
    if scale == 0.0:
        return xp.zeros_like(w)
    v = w
    residual: float | None = None
    for _ in range(ADJOINT_MAX_ITER):
        r = w - v - own.w * own.transposed_sum(slope * v)
        residual = _max_abs(xp, r)
        if residual is not None and scale is not None and residual <= ADJOINT_TOL * scale:
            return v
        v = v + ADJOINT_STEP * r
    if residual is not None and scale is not None:
        warnings.warn(
            f"hausdorff gradient: the adjoint solve stopped at a relative residual {residual / scale:.2g} "
            f"after {ADJOINT_MAX_ITER} iterations (a cost whose kernel exp(-C/eps) is not positive "
            "definite?); the gradient is inexact",
            ConvergenceWarning,
            stacklevel=3,
        )
    return v


def _implicit_vjp(own: SoftMin, w: Any) -> tuple[Any, Any]:
    """v^T dT/d(x, a) for the adjoint v of the cotangent w of phi: gradients in x and a."""
    v = adjoint_solve(own, w)
    gx, _, ga, _ = own.vjp(v)
    return gx, ga


def _self_loop(
    m: Measures, cost: Cost, eps_list: list[float], penalty: Penalty, tol: float | None, verbose: bool
) -> tuple[Any, Any]:
    """phi and psi, the potentials of OT(a, a) and OT(b, b) after the loop.

    With autodiff, one op of the backend's hook whose backward is the implicit gradient.
    """
    eps = eps_list[-1]

    def forward(x: Any, a: Any, y: Any, b: Any) -> tuple[Any, Any]:
        problems = [Transport(x, x, a, a, True, cost), Transport(y, y, b, b, True, cost)]
        out = stacked_sinkhorn_loop(problems, eps_list, penalty, tol=tol, verbose=verbose)
        (phi,), (psi,) = out.potentials
        return phi, psi

    def backward(
        ins: Sequence[Any], outs: Sequence[Any], cots: Sequence[Any | None], wanted: Sequence[bool]
    ) -> list[Any | None]:
        x, a, y, b = ins
        grads: list[Any | None] = [None] * 4
        for side, (pts, w, pot, cot) in enumerate(((x, a, outs[0], cots[0]), (y, b, outs[1], cots[1]))):
            if cot is None or not (wanted[2 * side] or wanted[2 * side + 1]):
                continue
            grads[2 * side], grads[2 * side + 1] = _implicit_vjp(
                SoftMin(pts, pts, w, pot, eps, cost, penalty, own=True), cot
            )
        return grads

    backend = lazymat.backend_for(m.x)
    if backend.has_autodiff:
        phi, psi = backend.custom_vjp(forward, backward, [m.x, m.a, m.y, m.b])
        return phi, psi
    return forward(m.x, m.a, m.y, m.b)


@dataclass
class _Terms:
    """The four soft-mins of H: T_a, S_b(x), S_a(y), T_b."""

    own_a: SoftMin
    b_on_x: SoftMin
    a_on_y: SoftMin
    own_b: SoftMin

    def value(self, m: Measures) -> Any:
        xp = m.xp
        big_f = self.b_on_x.value - self.own_a.value
        big_g = self.a_on_y.value - self.own_b.value
        return 0.5 * (xp.sum(m.a * big_f, axis=-1) + xp.sum(m.b * big_g, axis=-1))


def _terms(m: Measures, phi: Any, psi: Any, cost: Cost, eps: float, penalty: Penalty) -> _Terms:
    return _Terms(
        SoftMin(m.x, m.x, m.a, phi, eps, cost, penalty, own=True),
        SoftMin(m.x, m.y, m.b, psi, eps, cost, penalty),
        SoftMin(m.y, m.x, m.a, phi, eps, cost, penalty),
        SoftMin(m.y, m.y, m.b, psi, eps, cost, penalty, own=True),
    )


def hausdorff_loss(
    m: Measures,
    cost: Cost,
    eps_list: list[float],
    penalty: Penalty,
    *,
    potentials: bool = False,
    verbose: bool = False,
    tol: float | None = None,
) -> Any:
    """H(a, b) of the module docstring, shape (B,), differentiable (exactly) by the backend's
    autodiff; with ``potentials=True`` the pair (S_b(x) - f_aa, S_a(y) - g_bb), such that
    H = (<a, F> + <b, G>) / 2. ``tol``: iterate the self-problems to convergence
    (:func:`~.sinkhorn_loop.sinkhorn_loop`), where the gradient is that of the value."""
    phi, psi = _self_loop(m, cost, eps_list, penalty, tol, verbose)
    t = _terms(m, phi, psi, cost, eps_list[-1], penalty)
    if potentials:
        return t.b_on_x.value - t.own_a.value, t.a_on_y.value - t.own_b.value
    return t.value(m)


def hausdorff_gradients(
    m: Measures, cost: Cost, eps_list: list[float], penalty: Penalty, *, tol: float | None = None
) -> tuple[Any, Any, Any, Any, Any]:
    """(H, dH/da, dH/dx, dH/db, dH/dy) without autodiff (numpy, cupy; any backend), batched
    layout: the gradients that autodiff gives through :func:`hausdorff_loss` (module docstring)."""
    xp = m.xp
    stop = lazymat.backend_for(m.x).stop_gradient
    m = Measures(x=stop(m.x), y=stop(m.y), a=stop(m.a), b=stop(m.b), batched=m.batched, xp=xp)
    phi, psi = _self_loop(m, cost, eps_list, penalty, tol, False)
    t = _terms(m, phi, psi, cost, eps_list[-1], penalty)
    half_a, half_b = 0.5 * m.a, 0.5 * m.b
    # explicit parts, the potentials held constant
    gx, _, ga, w_phi = t.own_a.vjp(-half_a)
    gx_i, gy_j, gb, w_psi = t.b_on_x.vjp(half_a)
    gy_i, gx_j, ga_j, w_phi_y = t.a_on_y.vjp(half_b)
    gy, _, gb_own, w_psi_own = t.own_b.vjp(-half_b)
    ga = ga + ga_j + 0.5 * (t.b_on_x.value - t.own_a.value)
    gb = gb + gb_own + 0.5 * (t.a_on_y.value - t.own_b.value)
    gx, gy = gx + gx_i + gx_j, gy + gy_i + gy_j
    # implicit parts, through phi(x, a) and psi(y, b)
    ix, ia = _implicit_vjp(t.own_a, w_phi + w_phi_y)
    iy, ib = _implicit_vjp(t.own_b, w_psi + w_psi_own)
    return t.value(m), ga + ia, gx + ix, gb + ib, gy + iy
