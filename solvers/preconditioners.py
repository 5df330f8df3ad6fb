"""Preconditioners for kernel systems (alpha I + K) x = b: Jacobi and Nystrom.

A preconditioner is any callable ``r -> z`` approximating ``z = (alpha I + K)^{-1} r`` on
arrays of shape (*batch, N, E), symmetric positive definite. Conjugate gradient then
converges at the rate of the preconditioned system's condition number.

**Nystrom** (Frangella, Tropp & Udell, "Randomized Nystrom preconditioning", 2023). A rank-r
approximation K ~ F F^T, with F of shape (N, r), from ``r`` landmark columns of K:

- ``method="rpcholesky"``: randomly pivoted Cholesky (Chen, Epperly, Tropp & Webber, 2023):
  each pivot is drawn with probability proportional to the diagonal of the residual
  K - F F^T, one kernel column per pivot. Adapts to the data; unbatched matrices only.
- ``method="uniform"``: r landmarks drawn uniformly; F = C L^{-T} with C = K[:, S] and
  L L^T = K[S, S] + shift (a small jitter keeps the Cholesky factorisation defined).

Then F = Q R (thin QR), R R^T = V diag(lam) V^T (an r x r eigendecomposition) and U = Q V
give K ~ U diag(lam) U^T with orthonormal U, and

    P^{-1} = U [(lam + alpha)^{-1} - 1/nu] U^T + I/nu,   nu = lam_min + alpha,

exact on the span of U and a scaled identity elsewhere. Eigenvalues below
``r * eps * lam_max`` carry no information and are dropped. Kernel columns come from
LazyMatrix reductions (O(N) memory per column); only N x r and r x r arrays are dense.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lazymat.lazymatrix import LazyMatrix

from .kernel_operator import KernelOperator

Preconditioner = Callable[[Any], Any]

#: landmarks used by ``precond="nystrom"`` when no rank is given
DEFAULT_RANK = 200


def _operator(K: LazyMatrix | KernelOperator, what: str) -> KernelOperator:
    op = K if isinstance(K, KernelOperator) else KernelOperator.from_lazymatrix(K, what=what)
    return op.detached()  # a preconditioner is a constant: never differentiated


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not alpha >= 0.0:
        raise ValueError(f"alpha (the ridge added to the diagonal) must be >= 0, got {alpha}")
    return alpha


def jacobi(K: LazyMatrix | KernelOperator, alpha: float = 0.0) -> Preconditioner:
    """Diagonal preconditioner: z = r / (diag(K) + alpha)."""
    alpha = _check_alpha(alpha)
    op = _operator(K, "jacobi")
    d = op.diagonal() + alpha
    low = float(op.xp.min(d))
    if not low > 0.0:
        raise ValueError(f"jacobi needs a positive diagonal, found min(diag(K) + alpha) = {low}")
    return lambda r: r / d


class NystromPreconditioner:
    """P^{-1} r = U [(lam + alpha)^{-1} - 1/nu] U^T r + r/nu (see the module doc)."""

    def __init__(self, U: Any, lam: Any, alpha: float, xp: Any) -> None:
        self.U = U  # (*batch, N, r), orthonormal columns
        self.lam = lam  # (*batch, r), descending
        self.alpha = alpha
        self.xp = xp
        nu = lam[..., -1:] + alpha  # (*batch, 1)
        self.nu = nu[..., None]  # (*batch, 1, 1)
        self.weights = (1.0 / (lam + alpha) - 1.0 / nu)[..., :, None]  # (*batch, r, 1)

    @property
    def rank(self) -> int:
        return int(self.U.shape[-1])

    def __call__(self, r: Any) -> Any:
        xp = self.xp
        coef = xp.matmul(xp.matrix_transpose(self.U), r)  # (*batch, r, E)
        return xp.matmul(self.U, self.weights * coef) + r / self.nu


def _rpcholesky(op: KernelOperator, rank: int, rng: np.random.Generator) -> Any:
    """F (N, r) with K ~ F F^T by randomly pivoted Cholesky, one kernel column per pivot."""
    xp = op.xp
    if op.batched:
        raise ValueError(
            "the rpcholesky Nystrom preconditioner needs an unbatched matrix; "
            "use method='uniform' for batches"
        )
    d = xp.reshape(op.diagonal(), (op.n,))
    total0 = float(xp.sum(d))
    # F keeps its final shape (N, rank), unfilled columns zero, and grows by one-hot updates:
    # arrays of one shape throughout, so libraries that compile per shape (jax) compile once
    F = xp.zeros((op.n, rank), dtype=op.dtype, device=op.device)
    slots = xp.arange(rank, device=op.device)
    found = 0
    for k in range(rank):
        cdf = xp.cumulative_sum(xp.clip(d, min=0.0))
        total = float(cdf[-1])
        if not total > 1e-14 * total0:  # the residual is numerically zero: rank reached
            break
        u = xp.asarray([rng.uniform(0.0, total)], dtype=op.dtype, device=op.device)
        s = min(int(xp.searchsorted(cdf, u)[0]), op.n - 1)
        idx = xp.asarray([s], dtype=xp.int64, device=op.device)
        c = xp.reshape(op.columns(idx), (op.n,)) - xp.matmul(F, F[s, :])
        pivot = float(c[s])
        if not pivot > 0.0:
            break
        f = c / pivot**0.5
        F, d = op.backend.materialize(F + f[:, None] * xp.astype(slots == k, op.dtype)[None, :], d - f * f)
        found = k + 1
    if not found:
        raise ValueError("the Nystrom preconditioner found a zero matrix (diagonal of K is zero)")
    return F[:, :found]


def _uniform(op: KernelOperator, rank: int, rng: np.random.Generator) -> Any:
    """F (*batch, N, r) with K ~ F F^T from r uniformly drawn landmark columns."""
    xp = op.xp
    picks = np.sort(rng.choice(op.n, size=rank, replace=False))
    idx = xp.asarray(picks.tolist(), dtype=xp.int64, device=op.device)
    C = op.columns(idx)  # (*batch, N, r)
    W = xp.take(C, idx, axis=-2)  # (*batch, r, r)
    W = (W + xp.matrix_transpose(W)) / 2
    eye = xp.eye(rank, dtype=op.dtype, device=op.device)
    trace = xp.sum(W * eye, axis=(-2, -1), keepdims=True)
    shift = float(xp.finfo(op.dtype).eps) * rank * trace
    L = xp.linalg.cholesky(W + shift * eye)
    return xp.matrix_transpose(xp.linalg.solve(L, xp.matrix_transpose(C)))  # C L^{-T}


def nystrom(
    K: LazyMatrix | KernelOperator,
    alpha: float = 0.0,
    *,
    rank: int | None = None,
    method: str = "rpcholesky",
    seed: int | None = 0,
) -> NystromPreconditioner:
    """Nystrom preconditioner of alpha I + K from ``rank`` landmark columns (module doc).

    ``rank`` defaults to min(N, 200); ``seed`` fixes the landmarks (None: fresh entropy).
    """
    alpha = _check_alpha(alpha)
    op = _operator(K, "nystrom")
    xp = op.xp
    rank = min(op.n, DEFAULT_RANK if rank is None else int(rank))
    if rank < 1:
        raise ValueError(f"nystrom needs rank >= 1, got {rank}")
    rng = np.random.default_rng(seed)
    if method == "rpcholesky":
        F = _rpcholesky(op, rank, rng)
    elif method == "uniform":
        F = _uniform(op, rank, rng)
    else:
        raise ValueError(f"nystrom method must be 'rpcholesky' or 'uniform', got {method!r}")
    Q, R = xp.linalg.qr(F)
    lam, V = xp.linalg.eigh(xp.matmul(R, xp.matrix_transpose(R)))
    lam, V = xp.flip(lam, axis=-1), xp.flip(V, axis=-1)  # descending
    keep = lam > float(xp.finfo(op.dtype).eps) * F.shape[-1] * lam[..., :1]
    kept = int(xp.min(xp.sum(xp.astype(keep, xp.int64), axis=-1)))
    if kept < 1:
        raise ValueError("the Nystrom approximation of K is numerically zero")
    return NystromPreconditioner(xp.matmul(Q, V[..., :kept]), lam[..., :kept], alpha, xp)
