"""Conjugate gradient for kernel systems (alpha I + K) x = b, differentiable by implicit function.

``cg(K, b, alpha=...)`` solves with a symmetric positive (semi-)definite LazyMatrix ``K``
(the symmetry rule is in :mod:`lazymat.solvers.kernel_operator`) or any callable linear
operator ``v -> A v``. Several right-hand sides (b of shape (N, E)) and batches
(b of shape (*batch, N, E) with a batched K) run as independent CG recursions in one
array: every iteration costs one reduction whatever E.

**Gradients** (torch, jax: backends with autodiff). The solve is one op of the backend's
autodiff hook (``Backend.custom_vjp``): the forward runs the iterations outside the graph,
and the backward applies the implicit-function rule to x = (alpha I + K)^{-1} b. For an
output cotangent g, one adjoint solve lambda = (alpha I + K)^{-1} g (K symmetric) gives

- dL/db = lambda,
- dL/dalpha = -<lambda, x>,
- dL/dtheta = -d/dtheta <lambda, K(theta) x> for the kernel's arrays theta (points,
  parameters): a reduction gradient ``Backend.reduce`` computes symbolically.

The adjoint solve calls :func:`cg` again, so gradients of any order follow. For a
callable operator, gradients reach ``b`` and ``alpha`` only; arrays the callable closes
over get none (use a LazyMatrix for those). The iterations stop on a test of the residual
read on the host, so ``cg`` runs eagerly: not inside ``jax.jit`` (differentiating it with
``jax.grad`` outside of jit works).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import lazymat
from lazymat.lazymatrix import LazyMatrix
from lazymat.progress import Progress, geometric_total

from .kernel_operator import KernelOperator
from .measures import check_finite
from .preconditioners import Preconditioner, jacobi, nystrom

logger = logging.getLogger(__name__)


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``maxiter`` before reaching its tolerance."""


@dataclass
class CGInfo:
    """Convergence record of a :func:`cg` call."""

    #: True when every right-hand side reached ||b - (alpha I + K) x|| <= tol ||b||
    converged: bool = False
    #: iterations run (matrix-vector products, besides the first residual with x0)
    iterations: int = 0
    #: the largest relative residual ||r|| / ||b|| over the right-hand sides, per iteration
    residual_norms: list[float] = field(default_factory=list)


Operator: TypeAlias = "LazyMatrix | KernelOperator | Callable[[Any], Any]"


def _as_scalar(alpha: Any) -> float:
    try:
        value = float(
            alpha if isinstance(alpha, (int, float)) else lazymat.backend_for(alpha).stop_gradient(alpha)
        )
    except (TypeError, ValueError):
        raise TypeError(
            f"alpha must be a number or a 0-d array, got {type(alpha).__name__} "
            f"of shape {getattr(alpha, 'shape', '?')}"
        ) from None
    if not value >= 0.0:
        raise ValueError(f"alpha (the ridge added to the diagonal) must be >= 0, got {value}")
    return value


def _iterate(
    apply: Callable[[Any], Any],
    b: Any,
    alpha: float,
    x0: Any,
    tol: float,
    maxiter: int,
    precond: Preconditioner | None,
    callback: Callable[[Any], None] | None,
    xp: Any,
    info: CGInfo,
    materialize: Callable[..., tuple[Any, ...]],
    progress: Progress,
) -> Any:
    """Preconditioned CG on (*batch, N, E) arrays, one independent recursion per column.

    Returns x and fills ``info``. ``materialize`` is the backend's (``Backend.materialize``):
    the state of each iteration holds its values before the next convergence test.
    ``progress`` gets the residual after each iteration, and the iterations its decay so far
    needs to reach ``tol``.
    """

    def dot(u: Any, v: Any) -> Any:
        return xp.sum(u * v, axis=-2, keepdims=True)  # (*batch, 1, E)

    def op(v: Any) -> Any:
        return apply(v) + alpha * v if alpha else apply(v)

    bnorm = xp.sqrt(dot(b, b))
    bnorm = xp.where(bnorm > 0, bnorm, xp.ones_like(bnorm))
    if x0 is None:
        x = xp.zeros_like(b)
        r = b
    else:
        x = x0
        r = b - op(x0)
    z = precond(r) if precond is not None else r
    p = z
    rz = dot(r, z)
    for k in range(maxiter + 1):
        rel = xp.sqrt(dot(r, r)) / bnorm
        worst = float(xp.max(rel))
        info.residual_norms.append(worst)
        if k:
            total = geometric_total(k, info.residual_norms[0], worst, tol, maxiter)
            progress.step(residual=worst, total=total)
        active = rel > tol
        if not worst > tol:  # NaN never converges
            info.converged = worst == worst
            break
        if k == maxiter:
            break
        Ap = op(p)
        pAp = dot(p, Ap)
        if bool(xp.any(active & (pAp <= 0))):
            raise ValueError(
                "cg needs a positive definite operator alpha I + K, but found a direction p with "
                f"p^T (alpha I + K) p = {float(xp.min(pAp)):.3g} <= 0; is the kernel positive definite? "
                "(adding a ridge alpha > 0 helps with semi-definite kernels)"
            )
        one = xp.ones_like(pAp)
        step = xp.where(active, rz / xp.where(active, pAp, one), xp.zeros_like(pAp))
        x = x + step * p
        r = r - step * Ap
        z = precond(r) if precond is not None else r
        rz_new = dot(r, z)
        beta = xp.where(active, rz_new / xp.where(active, rz, one), xp.zeros_like(rz))
        x, r, p, rz = materialize(x, r, z + beta * p, rz_new)
        info.iterations = k + 1
        if callback is not None:
            callback(x)
    return x


def _build_precond(precond: Any, op: KernelOperator | None, alpha: float) -> Preconditioner | None:
    if precond is None or callable(precond):
        return precond
    if op is None:
        raise ValueError(f"precond={precond!r} needs a LazyMatrix; with a callable operator pass a callable")
    if precond == "jacobi":
        return jacobi(op, alpha)
    if precond == "nystrom":
        return nystrom(op, alpha, method="uniform" if op.batched else "rpcholesky")
    raise ValueError(f"precond must be None, 'jacobi', 'nystrom' or a callable r -> z, got {precond!r}")


def cg(
    A: Operator,
    b: Any,
    *,
    alpha: Any = 0.0,
    x0: Any = None,
    tol: float = 1e-6,
    maxiter: int | None = None,
    precond: str | Preconditioner | None = None,
    callback: Callable[[Any], None] | None = None,
    progress: bool = False,
) -> tuple[Any, CGInfo]:
    """Solve (alpha I + A) x = b by (preconditioned) conjugate gradient; returns (x, info).

    ``A``: a square symmetric scalar LazyMatrix (same points on both sides, see
    :class:`~lazymat.solvers.kernel_operator.KernelOperator`) or a callable ``v -> A v`` on
    ``(*batch, N, E)`` arrays. ``b``: shape ``(N,)``, ``(N, E)`` or ``(*batch, N, E)``.
    ``alpha``: a number or a 0-d array (>= 0; differentiable). ``tol``: relative residual
    ``||b - (alpha I + A) x|| <= tol ||b||`` for every column. ``maxiter``: defaults to 10 N.
    ``precond``: None, "jacobi", "nystrom" (rank 200, randomly pivoted Cholesky; uniform
    landmarks for a batched matrix; see :func:`nystrom`) or a callable ``r -> z``.
    ``callback(x)`` runs after every iteration (forward pass only). ``progress``: a progress
    bar (tqdm; else log lines) of the iterations, the residual and the time left, the residual's
    decay extrapolated to ``tol`` (logger ``lazymat.solvers.conjugate_gradient``, see
    :mod:`lazymat.progress`).

    Warns :class:`ConvergenceWarning` when the tolerance is not reached. Differentiable with
    respect to ``b``, ``alpha`` and the kernel's arrays (module doc).
    """
    backend = lazymat.backend_for(b)
    xp = backend.namespace(b)
    alpha_value = _as_scalar(alpha)
    check_finite(xp, "b", b, "right-hand side values")
    if x0 is not None:
        check_finite(xp, "x0", x0, "initial values")
    if isinstance(A, LazyMatrix):  # its points and parameters, before the symmetry check reads them
        for v, arr in A.bindings.items():
            check_finite(backend.namespace(arr), f"A (its V{v.cat} array)", arr, "values")
    op: KernelOperator | None = None
    user_op: Callable[[Any], Any] | None = None
    if isinstance(A, (LazyMatrix, KernelOperator)):
        op = A if isinstance(A, KernelOperator) else KernelOperator.from_lazymatrix(A, what="cg")
        if op.backend.name != backend.name:
            raise TypeError(f"cg got a {op.backend.name} matrix and a {backend.name} right-hand side")
        n = op.n
    elif callable(A):
        user_op = A
        n = int(b.shape[-2] if len(b.shape) >= 2 else b.shape[0] if len(b.shape) == 1 else 0)
    else:
        raise TypeError(f"cg expects a LazyMatrix or a callable v -> A v, got {type(A).__name__}")
    vector = len(b.shape) == 1
    if len(b.shape) == 0 or int(b.shape[0 if vector else -2]) != n:
        raise ValueError(
            f"b must have shape (N,), (N, E) or (*batch, N, E) with N = {n} (the matrix is {n} x {n}), "
            f"got shape {tuple(b.shape)}"
        )
    if op is not None and b.dtype != op.dtype:
        raise TypeError(f"b has dtype {b.dtype} but the matrix has dtype {op.dtype}; cast one of them")
    if maxiter is None:
        maxiter = 10 * n
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    B = xp.reshape(b, (n, 1)) if vector else b
    X0 = None if x0 is None else backend.stop_gradient(xp.reshape(x0, B.shape))
    P = _build_precond(precond, op, alpha_value)
    info = CGInfo()

    def solve(op_: KernelOperator | None, rhs: Any) -> Any:
        apply = op_.matvec if op_ is not None else user_op
        assert apply is not None
        with Progress(logger, "cg", maxiter, progress=progress) as report:
            return _iterate(
                apply, rhs, alpha_value, X0, tol, maxiter, P, callback, xp, info, backend.materialize, report
            )

    differentiable_alpha = not isinstance(alpha, (int, float))
    kernel_args = list(op.args) if op is not None else []
    inputs = [B, *([alpha] if differentiable_alpha else []), *kernel_args]

    def forward(*arrays: Any) -> tuple[Any, ...]:
        rhs, rest = arrays[0], arrays[1 + differentiable_alpha :]
        return (solve(op.with_args(rest) if op is not None else None, rhs),)

    def backward(
        ins: Sequence[Any], outs: Sequence[Any], cots: Sequence[Any | None], wanted: Sequence[bool]
    ) -> list[Any | None]:
        g, x = cots[0], outs[0]
        grads: list[Any | None] = [None] * len(ins)
        if g is None:
            return grads
        a_in = ins[1] if differentiable_alpha else alpha_value
        rest = list(ins[1 + differentiable_alpha :])
        K = op.with_args(rest) if op is not None else None
        # the adjoint solve is a differentiable cg call itself: gradients of any order
        lam = cg(A if K is None else K, g, alpha=a_in, tol=tol, maxiter=maxiter, precond=P)[0]
        grads[0] = lam
        if differentiable_alpha and wanted[1]:
            ns = backend.namespace(lam)
            grads[1] = ns.reshape(-ns.sum(lam * x), tuple(ins[1].shape))
        if K is not None and any(wanted[1 + differentiable_alpha :]):
            for k, gk in enumerate(K.matvec_vjp(x, lam)):
                grads[1 + differentiable_alpha + k] = None if gk is None else -gk
        return grads

    if backend.has_autodiff:
        (x,) = backend.custom_vjp(forward, backward, inputs)
    else:
        x = solve(op, B)
    if not info.converged:
        warnings.warn(
            f"cg did not converge: relative residual {info.residual_norms[-1]:.3g} > tol={tol:g} "
            f"after {info.iterations} iterations (raise maxiter, add a ridge alpha, or precondition)",
            ConvergenceWarning,
            stacklevel=2,
        )
    return (xp.reshape(x, (n,)) if vector else x), info
