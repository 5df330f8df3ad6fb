r"""The derivative of free-support barycenter points: the implicit function theorem on the
barycenter's stationarity *and* the K Sinkhorn problems' optimality, solved together.

The points x* of :func:`~.free_barycenter.free_support_barycenter` are a stationary point of
E(x) = sum_k lambda_k OT_k(x), and each entropic OT value is the maximum of its dual,

    OT_k(x) = max_z D_k(x, z),  z = (f, g),
    D(x, f, g) = <b, f> + <a, g> - eps sum_ij b_i a_j (exp((f_i + g_j - C_ij) / eps) - 1),

C_ij = |x_i - y_j|^2 / 2, theta = (y^k, a^k, b, lambda) the data. With the plan
P_ij = b_i a_j exp((f_i + g_j - C_ij) / eps), r = P 1, c = P^T 1, Delta_ij = x_i - y_j:

    D_x,i = sum_j P_ij Delta_ij                               (the gradient of OT in x_i)
    (D_xx v)_i = r_i v_i - S_i v_i / eps,  S_i = sum_j P_ij Delta_ij Delta_ij^T
    D_zx v = (sum_j P_ij Delta_ij . v_i, sum_i P_ij Delta_ij . v_i) / eps
    -D_zz = J / eps,  J = [[diag r, P], [P^T, diag c]]   (the Sinkhorn Jacobian)

The optimal potentials z_k*(x, theta) move with x and theta, so the Hessian of E is the Schur
complement (the envelope gradient with f, g frozen has the wrong second derivative: its
Hessian lacks the second term)

    H = sum_k lambda_k (D_xx + D_xz (-D_zz)^{-1} D_zx),  symmetric, positive at a minimum,

and the implicit function theorem on grad_x E(x*, theta) = 0 gives x*'(theta) =
-H^{-1} d/dtheta grad_x E. For a cotangent v on x*: solve H w = v (conjugate gradient,
preconditioned by 1 / sum_k lambda_k r), then u_k = (-D_zz)^{-1} D_zx w (one solve with J
per problem), and

    v . dx*/dtheta = -d/dtheta sum_k lambda_k (w . D^k_x + u_k . D^k_z)   (x*, z*, w, u held),

the derivative of one lazymat sum reduction (``lazymat.vjp``, symbolic: every backend, with
autodiff of its own or not). Nothing of size N x M is stored: P is a LazyMatrix, and each
product with H costs two plan products and a CG solve with J.

**Solves with J.** J has the null vector (1, -1) (the gauge f + t, g - t); every right-hand
side here is orthogonal to it. Eliminating f (u_f = (e_f - P u_g) / r) leaves the Schur
complement A = diag c - P^T diag(1 / r) P, positive semi-definite with null vector 1; we solve
(A + c c^T) u_g = e_g - P^T (e_f / r), positive definite, whose solution is the solution of
A u_g = ... with c . u_g = 0 (dot the equation with 1). No damping: the gauge is fixed
exactly. CG preconditioned by 1 / c; its iterations grow as eps shrinks (J's spectral gap
is the Sinkhorn contraction rate).

Exact where the forward solve is: at a stationary point (the fixed point converged,
``stop``), with potentials that satisfy the marginals (``tol``). The weights a^k, b and
lambda live on simplices: their gradients are defined up to a constant (only perturbations
that keep the sums count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

import lazymat
from lazymat import Vi, Vj

from .conjugate_gradient import cg
from .costs import half_sqdist
from .sinkhorn_loop import log_weights
from .transport_plan import transport_plan


def _column(xp: Any, v: Any) -> Any:
    return xp.reshape(v, (*v.shape, 1))


def spread(xp: Any, v: Any, k: int) -> Any:
    """(B, ...) -> (B k, ...): each of the B arrays repeated k times, in a row."""
    n_batch = int(v.shape[0])
    return xp.reshape(
        xp.broadcast_to(v[:, None, ...], (n_batch, k, *v.shape[1:])), (n_batch * k, *v.shape[1:])
    )


@dataclass
class Problems:
    """P entropic problems at the barycenter's points, batched (everything held constant).

    x (P, N, D), y (P, M, D), weights b (P, N) on x and a (P, M) on y, potentials f (P, N)
    and g (P, M) of P_ij = b_i a_j exp((f_i + g_j - |x_i - y_j|^2 / 2) / eps), lam (P,)
    the problems' lambdas; problem p is problem p % k of barycenter p // k (P = B k).
    """

    xp: Any
    x: Any
    y: Any
    a: Any
    b: Any
    f: Any
    g: Any
    lam: Any
    eps: float
    tol: float
    k: int

    def __post_init__(self) -> None:
        xp, x, y = self.xp, self.x, self.y
        d = int(x.shape[-1])
        self.plan = transport_plan(
            x, y, log_weights(xp, self.b), log_weights(xp, self.a), self.f, self.g, self.eps, half_sqdist
        )
        ones = xp.ones((*y.shape[:2], 1), dtype=y.dtype, device=_device(y))
        outer = xp.reshape(y[..., :, None] * y[..., None, :], (*y.shape[:2], d * d))
        rows = self.plan @ xp.concat([ones, y, outer], axis=-1)
        self.r = rows[..., 0]
        py = rows[..., 1 : 1 + d]
        self.c = (self.plan.T @ xp.ones((*x.shape[:2], 1), dtype=x.dtype, device=_device(x)))[..., 0]
        #: sum_j P_ij Delta_ij (P, N, D): the gradients of the OT values in the points
        self.dbar = _column(xp, self.r) * x - py
        xx = x[..., :, None] * x[..., None, :]
        xpy = x[..., :, None] * py[..., None, :]
        pyy = xp.reshape(rows[..., 1 + d :], (*x.shape[:2], d, d))
        #: S_i = sum_j P_ij Delta_ij Delta_ij^T (P, N, D, D)
        self.s = self.r[..., None, None] * xx - xpy - xp.permute_dims(xpy, (0, 1, 3, 2)) + pyy

    def spread(self, v: Any) -> Any:
        """(B, N, ...) -> (B k, N, ...): the barycenters' arrays, once per problem."""
        return spread(self.xp, v, self.k)

    def unspread(self, v: Any) -> Any:
        """(B k, ...) -> (B, k, ...)."""
        return self.xp.reshape(v, (-1, self.k, *v.shape[1:]))

    def gather(self, v: Any) -> Any:
        """(B k, N, ...) -> (B, N, ...): the sum over each barycenter's problems."""
        return self.xp.sum(self.unspread(v), axis=1)

    def solve_jacobian(self, e_f: Any, e_g: Any) -> tuple[Any, Any]:
        """(u_f, u_g) with J (u_f, u_g) = (e_f, e_g) and c . u_g = 0 (module docstring)."""
        xp, plan, r, c = self.xp, self.plan, self.r, self.c

        def schur(v: Any) -> Any:  # (A + c c^T) v on (P, M, 1)
            cv = _column(xp, c)
            through = plan.T @ ((plan @ v) / _column(xp, r))
            return cv * v - through + cv * xp.sum(cv * v, axis=-2, keepdims=True)

        rhs = _column(xp, e_g) - plan.T @ _column(xp, e_f / r)
        u_g, _ = cg(schur, rhs, tol=self.tol, precond=lambda v: v / _column(xp, c))
        u_f = (e_f - (plan @ u_g)[..., 0]) / r
        return u_f, u_g[..., 0]

    def potentials_response(self, v: Any) -> tuple[Any, Any]:
        """u = (-D_zz)^{-1} D_zx v = J^{-1} (eps D_zx v) for v (P, N, D)."""
        xp = self.xp
        e_f = xp.sum(self.dbar * v, axis=-1)
        pt = self.plan.T @ xp.concat([v, _column(xp, xp.sum(self.x * v, axis=-1))], axis=-1)
        e_g = pt[..., -1] - xp.sum(self.y * pt[..., :-1], axis=-1)
        return self.solve_jacobian(e_f, e_g)

    def hessian_product(self, v: Any) -> Any:
        """lambda (D_xx + D_xz (-D_zz)^{-1} D_zx) v for v (P, N, D), per problem (P, N, D)."""
        xp, eps = self.xp, self.eps
        u_f, u_g = self.potentials_response(v)
        pu = self.plan @ xp.concat([_column(xp, u_g), _column(xp, u_g) * self.y], axis=-1)
        coupling = _column(xp, u_f) * self.dbar + pu[..., :1] * self.x - pu[..., 1:]
        sv = xp.sum(self.s * v[..., None, :], axis=-1)
        out = _column(xp, self.r) * v + (coupling - sv) / eps
        return _column(xp, _column(xp, self.lam)) * out

    def pullback(self, w: Any, want_a: bool, want_b: bool) -> tuple[Any, Any, Any, Any]:
        """d/dtheta of lam (w . D_x + u . D_z) in (y, a, b, lam), u = (-D_zz)^{-1} D_zx w.

        Shapes (P, M, D), (P, M), (P, N), (P,); a and b None unless wanted.
        """
        xp, eps, x, y, a, b = self.xp, self.eps, self.x, self.y, self.a, self.b
        u_f, u_g = self.potentials_response(w)
        lam = self.lam
        # the same plan as self.plan, with a, b and y live for the symbolic VJP
        inv_eps = 1.0 / eps
        exponent = (Vi(_column(xp, self.f)) + Vj(_column(xp, self.g)) - half_sqdist(Vi(x), Vj(y))) * inv_eps
        weight = Vi(_column(xp, xp.sum(w * x, axis=-1) - u_f)) - (Vi(w) | Vj(y)) - Vj(_column(xp, u_g))
        a_col, b_col = _column(xp, a), _column(xp, b)  # the arrays bound in the formula, for wrt
        summand = Vi(b_col) * Vj(a_col) * exponent.exp() * weight
        cot = xp.broadcast_to(lam[:, None, None], (*x.shape[:2], 1))
        wrt = [y, *([a_col] if want_a else []), *([b_col] if want_b else [])]
        grads = list(lazymat.vjp(summand, cot, reduction="sum", axis=1, wrt=wrt))
        gy = grads.pop(0)
        ga = grads.pop(0)[..., 0] + lam[:, None] * u_g if want_a else None
        gb = grads.pop(0)[..., 0] + lam[:, None] * u_f if want_b else None
        # D_z = (b - r, a - c) vanishes at the optimum; kept so that lam's derivative is the
        # derivative of the same expression as the others
        glam = (
            xp.sum(w * self.dbar, axis=(-2, -1))
            + xp.sum(u_f * (b - self.r), axis=-1)
            + xp.sum(u_g * (a - self.c), axis=-1)
        )
        return gy, ga, gb, glam


def _device(v: Any) -> Any:
    return array_api_compat.device(v)


def points_vjp(
    groups: list[Problems], v: Any, wanted: tuple[bool, bool], tol: float
) -> list[tuple[Any, ...]]:
    """The gradients of v . x* in each group's (y, a, b, lambda) (module docstring).

    ``v`` (B, N, D); ``wanted``: whether the weights a, b need theirs (else None). Returns, per
    group, (B, k, M, D), (B, k, M), (B, N) (summed over the group's problems) and (B, k).
    """
    xp = groups[0].xp

    def hessian(u: Any) -> Any:
        total = None
        for g in groups:
            hu = g.gather(g.hessian_product(g.spread(u)))
            total = hu if total is None else total + hu
        return total

    diagonal = None
    for g in groups:
        d = g.gather(_column(xp, g.lam) * g.r)
        diagonal = d if diagonal is None else diagonal + d
    n_batch, n, dim = (int(s) for s in v.shape)

    def flat(u: Any) -> Any:
        return xp.reshape(hessian(xp.reshape(u, (n_batch, n, dim))), (n_batch, n * dim, 1))

    scale = xp.reshape(xp.broadcast_to(_column(xp, diagonal), (n_batch, n, dim)), (n_batch, n * dim, 1))
    try:
        w, _ = cg(flat, xp.reshape(v, (n_batch, n * dim, 1)), tol=tol, precond=lambda r: r / scale)
    except ValueError as err:
        raise ValueError(
            "free_support_barycenter: the Hessian of the barycenter's objective is not positive "
            "definite at the returned points (a saddle, or a fixed point that has not converged: "
            f"lower stop, raise max_iter), so the points have no derivative ({err})"
        ) from None
    w = xp.reshape(w, (n_batch, n, dim))
    out = []
    for g in groups:
        gy, ga, gb, glam = g.pullback(g.spread(w), *wanted)
        out.append(
            (
                -g.unspread(gy),
                None if ga is None else -g.unspread(ga),
                None if gb is None else -g.gather(gb),
                -g.unspread(glam),
            )
        )
    return out
