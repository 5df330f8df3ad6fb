"""The normalised kernel cometric K_mu = diag(l) K diag(l) of points q carrying a measure mu.

For points q_1..q_N with weights mu_i > 0 (default uniform, 1/N) and a kernel k, the
scaling field l > 0 solves the symmetric Sinkhorn equation

    l_i sum_j k(q_i, q_j) l_j mu_j = 1      for every i,

so that diag(l) K diag(l) diag(mu) is row-stochastic. It is found by the symmetric
Sinkhorn iteration l <- sqrt(l / K(l mu)) (plain domain: every kernel here has
k(q, q) > 0, so K(l mu) > 0), which contracts the error in log l by a factor 1/2 or better
for a positive semi-definite kernel, and stops when max_i |l_i (K(l mu))_i - 1| <= tol.

**The Hamiltonian.** With u = l p (per point),

    H(q, p) = 1/2 <p, K_mu p> = 1/2 sum_ij l_i(q) k(q_i, q_j) l_j(q) <p_i, p_j>,

where l = l(q) is a function of the points: H is differentiated *through* l, so the
flow dq/dt = dH/dp = l (K u), dp/dt = -dH/dq is Hamiltonian and conserves H. By the
implicit-function rule on F(l, q) = l (K(l mu)) - 1 = 0,

    dH/dq = dH/dq|_l - (dF/dq)^T w,    (dF/dl)^T w = g,  g_i = dH/dl_i = <p_i, (K u)_i>,

and with w = sqrt(mu) v the adjoint system is the symmetric positive definite

    (I + M) v = (l / sqrt(mu)) g,     M = diag(l sqrt(mu)) K diag(l sqrt(mu)),

whose spectrum lies in [1, 2] (M is similar to the stochastic matrix diag(l) K diag(l mu), of
spectral radius 1): conjugate gradient (:func:`lazymat.solvers.cg`) converges in a dozen
iterations. Both terms of dH/dq come from one reduction of the symmetric formula
k_ij (<u_i, u_j> - a_i b_j - a_j b_i), with a = w l and b = l mu.

**Autodiff** (torch, jax). The Sinkhorn iterations run outside the autodiff graph; their
limit l* then takes one Newton step l = l* - J^{-1} F(l*, q) on the graph, J = dF/dl,
solved by the same (I + M) system. Its value is l* (F(l*, q) = 0 to the tolerance) and its
derivative is the exact implicit derivative dl/dq, so the field above (and hence the
shooting) is differentiable, with exact first derivatives of l; derivatives of higher order
of l (grad of grad of the *shooting*) neglect the dependence of J on l.

**Carried points** x (:func:`lazymat.solvers.flow`) move with the extension of the velocity
through l(x) = 1 / sum_j k(x, q_j) l_j mu_j (which equals l_i at x = q_i):

    v(x) = sum_j k(x, q_j) l_j p_j / sum_j k(x, q_j) l_j mu_j,

a kernel average of the scaled momenta.
"""

from __future__ import annotations

from typing import Any

import lazymat
from lazymat.lazymatrix import LazyMatrix, Vi, Vj

from .conjugate_gradient import cg
from .row_reduction import RowReduction


class NormalizedKernel:
    """The cometric K_mu = diag(l) K diag(l) of a kernel (module doc); pass it wherever a
    kernel is expected by :func:`shoot`, :func:`flow` and :func:`hamiltonian`.

    ``weights``: the measure mu carried by the points, shape ``(N,)`` or ``(*batch, N)``, positive
    (default: uniform 1/N). ``tol``: on ``max_i |l_i (K(l mu))_i - 1|`` (raised to 100 machine
    epsilons in low precision), also the relative tolerance of the conjugate gradient solves.
    ``maxiter``: Sinkhorn iterations before giving up with an error.
    """

    def __init__(self, kernel: Any, weights: Any = None, *, tol: float = 1e-10, maxiter: int = 1000):
        if not callable(kernel):
            raise TypeError(f"normalized() expects a kernel (Vi(x), Vj(y)) -> LazyMatrix, got {kernel!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if not isinstance(maxiter, int) or maxiter < 1:
            raise ValueError(f"maxiter must be a positive integer, got {maxiter!r}")
        self.kernel = kernel
        self.weights = weights
        self.tol = tol
        self.maxiter = maxiter

    def __call__(self, x: LazyMatrix, y: LazyMatrix) -> Any:
        """The underlying kernel k (not normalised): used for the formula only."""
        return self.kernel(x, y)

    def __repr__(self) -> str:
        return f"normalized({self.kernel!r})"

    def measure(self, q: Any) -> Any:
        """mu as an array of shape ``(*batch, N, 1)`` of q's library and dtype; clear errors."""
        backend = lazymat.backend_for(q)
        xp = backend.namespace(q)
        n = int(q.shape[-2])
        if self.weights is None:
            return xp.full((*q.shape[:-1], 1), 1.0 / n, dtype=q.dtype, device=backend.device(q))
        w = self.weights
        if not hasattr(w, "shape") or lazymat.backend_for(w).name != backend.name:
            raise TypeError(
                f"weights must be a {backend.name} array of shape (N,) or (*batch, N) like the points, "
                f"got {type(w).__name__}"
            )
        shape = tuple(w.shape)
        if len(shape) == 0 or shape[-1] != n or shape[:-1] not in ((), tuple(q.shape[:-2])):
            raise ValueError(
                f"weights must have shape ({n},) or {(*tuple(q.shape[:-2]), n)} for points of shape "
                f"{tuple(q.shape)}, got {shape}"
            )
        if w.dtype != q.dtype:
            raise TypeError(f"weights have dtype {w.dtype} but the points have {q.dtype}")
        if not bool(xp.all(backend.stop_gradient(w) > 0)):
            raise ValueError("weights must be positive (a measure with a positive mass on every point)")
        return xp.broadcast_to(w[..., None], (*q.shape[:-1], 1))


def normalized(
    kernel: Any, weights: Any = None, *, tol: float = 1e-10, maxiter: int = 1000
) -> NormalizedKernel:
    """The normalised cometric of ``kernel`` for points carrying ``weights`` (module doc)."""
    return NormalizedKernel(kernel, weights, tol=tol, maxiter=maxiter)


def _template(q: Any, width: int) -> Any:
    xp = lazymat.backend_for(q).namespace(q)
    return xp.zeros((*q.shape[:-1], width), dtype=q.dtype)


class NormalizedField:
    """The Hamiltonian vector field (dH/dp, -dH/dq) of a :class:`NormalizedKernel`."""

    def __init__(self, cometric: NormalizedKernel, q: Any, p: Any) -> None:
        self.cometric = cometric
        self.backend = lazymat.backend_for(q)
        self.xp = self.backend.namespace(q)
        self.mu = cometric.measure(q)
        eps = float(self.xp.finfo(q.dtype).eps)
        self.tol = max(cometric.tol, 100 * eps)
        k = cometric.kernel
        q_, u_, a_, b_ = self.xp.zeros_like(q), self.xp.zeros_like(p), _template(q, 1), _template(q, 1)
        probe = k(Vi(q_), Vj(q_))
        if not isinstance(probe, LazyMatrix) or probe.dim != 1:
            raise TypeError("kernel(Vi(x), Vj(y)) must return a scalar LazyMatrix")
        self.k_times_scalar = RowReduction(k(Vi(q_), Vj(q_)) * Vj(b_), [q_, b_], wrt=[], value=True)
        self.k_times_vector = RowReduction(k(Vi(q_), Vj(q_)) * Vj(u_), [q_, u_], wrt=[], value=True)
        energy = k(Vi(q_), Vj(q_)) * ((Vi(u_) | Vj(u_)) - Vi(a_) * Vj(b_) - Vj(a_) * Vi(b_))
        self.grad_q = RowReduction(energy, [q_, u_, a_, b_], wrt=[0])
        self._warm: Any = None
        self._last: tuple[Any, Any] | None = None  # (q, l(q)): the field and the carrier share it

    # -- the scaling field ------------------------------------------------------------------
    def _system(self, q: Any, d: Any) -> LazyMatrix:
        """M = diag(d) K diag(d) as a symmetric LazyMatrix (solved as (I + M) v = rhs)."""
        return Vi(d) * self.cometric.kernel(Vi(q), Vj(q)) * Vj(d)

    def _solve(self, q: Any, d: Any, rhs: Any) -> Any:
        return cg(self._system(q, d), rhs, alpha=1.0, tol=self.tol, maxiter=200)[0]

    def scaling(self, q: Any) -> Any:
        """l(q) of shape (*batch, N, 1) (module doc): differentiable on torch and jax."""
        if self._last is not None and self._last[0] is q:
            return self._last[1]
        lam = self._scaling(q)
        self._last = (q, lam)
        return lam

    def _scaling(self, q: Any) -> Any:
        xp, mu = self.xp, self.mu
        qd, mud = self.backend.stop_gradient(q), self.backend.stop_gradient(mu)
        lam = self._warm if self._warm is not None else 1.0 / xp.sqrt(self.k_times_scalar(qd, mud)[0])
        for _ in range(self.cometric.maxiter):
            s = self.k_times_scalar(qd, lam * mud)[0]
            err = float(xp.max(xp.abs(lam * s - 1.0)))
            if err <= self.tol:
                break
            lam = xp.sqrt(lam / s)
        else:
            raise RuntimeError(
                f"the normalised cometric's scaling did not converge: max |l K(l mu) - 1| = {err:.3g} > "
                f"tol={self.tol:g} after {self.cometric.maxiter} Sinkhorn iterations (raise maxiter or tol)"
            )
        self._warm = lam
        if not self.backend.has_autodiff:
            return lam
        # one Newton step on the graph: value l*, derivative the implicit one (module doc)
        root = xp.sqrt(mu)
        residual = lam * self.k_times_scalar(q, lam * mu)[0] - 1.0
        return lam - (lam / root) * self._solve(q, lam * root, root * residual)

    # -- the field --------------------------------------------------------------------------
    def gradients(self, q: Any, p: Any) -> tuple[Any, Any]:
        """(dH/dq, dH/dp) at (q, p), through l(q)."""
        xp, mu = self.xp, self.mu
        lam = self.scaling(q)
        u = lam * p
        ku = self.k_times_vector(q, u)[0]
        g = xp.sum(p * ku, axis=-1, keepdims=True)
        root = xp.sqrt(mu)
        w = root * self._solve(q, lam * root, (lam / root) * g)
        (gq,) = self.grad_q(q, u, w * lam, lam * mu)
        return gq, lam * ku

    def __call__(self, y: tuple[Any, ...]) -> tuple[Any, Any]:
        gq, gp = self.gradients(y[0], y[1])
        return (gp, -gq)

    def vjp(self, y: tuple[Any, ...], cot: tuple[Any, ...]) -> tuple[Any, Any]:
        raise NotImplementedError(
            "the adjoint sweep (shoot_with_adjoint, register on numpy) does not support the normalised "
            "cometric: differentiate shoot() with torch or jax instead"
        )

    def carrier(self, points: Any, q: Any, p: Any) -> Any:
        """(x, q, p) -> v(x) = sum_j k(x, q_j) l_j p_j / sum_j k(x, q_j) l_j mu_j."""
        xp, k = self.xp, self.cometric.kernel
        x_, q_, ub_ = xp.zeros_like(points), xp.zeros_like(q), _template(q, int(q.shape[-1]) + 1)
        carry = RowReduction(k(Vi(x_), Vj(q_)) * Vj(ub_), [x_, q_, ub_], wrt=[], value=True)

        def velocity(x: Any, q: Any, p: Any) -> Any:
            lam = self.scaling(q)
            (out,) = carry(x, q, xp.concat([lam * p, lam * self.mu], axis=-1))
            return out[..., :-1] / out[..., -1:]

        return velocity
